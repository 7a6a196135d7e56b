"""Plivo's audio stream, XML and V3 signatures, on literal payloads (the official ``plivo``
library checks the signatures in tests/conformance/test_plivo_sdk.py)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from agent.errors import TelephonyError
from agent.telephony.plivo import (
    PlivoMediaStream,
    compute_signature,
    dial_xml,
    plivo_tickets,
    stream_xml,
    verify_signature,
)
from agent.telephony.telnyx import telnyx_tickets
from agent.telephony.twilio import (
    Connected,
    DtmfReceived,
    MarkPlayed,
    MediaReceived,
    ProtocolError,
    StreamStarted,
    StreamStopped,
)
from agent.telephony.webhooks import StreamTokens

CALL_ID = "12345678-1234-1234-1234-123456789abc"
STREAM_ID = "87654321-4321-4321-4321-cba987654321"
# Plivo's documented frames
# (https://www.plivo.com/docs/voice-agents/audio-streaming/concepts/audio-streaming-reference).
START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": CALL_ID,
            "streamId": STREAM_ID,
            "accountId": "MAXXXXXXXXXXXXXXXXXX",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
        "extra_headers": "userId=12345;sessionId=abc-xyz",
    }
)
MEDIA = json.dumps(
    {
        "event": "media",
        "sequenceNumber": 42,
        "streamId": STREAM_ID,
        "media": {
            "track": "inbound",
            "timestamp": "1705312200000",
            "chunk": 41,
            "payload": "//7+/w==",
        },
        "extra_headers": "userId=12345;sessionId=abc-xyz",
    }
)


def started() -> PlivoMediaStream:
    stream = PlivoMediaStream(ticket="pv1.abc")
    assert isinstance(stream.receive_text(START), StreamStarted)
    return stream


def test_start_carries_the_call_and_the_ticket_from_the_stream_url() -> None:
    event = PlivoMediaStream(ticket="pv1.abc").receive_text(START)
    assert isinstance(event, StreamStarted)
    assert (event.call_sid, event.stream_sid) == (CALL_ID, STREAM_ID)
    assert event.account_sid == "MAXXXXXXXXXXXXXXXXXX"
    assert event.custom_parameters == {"token": "pv1.abc"}


def test_media_dtmf_checkpoints_and_clears_become_the_sessions_events() -> None:
    stream = started()
    event = stream.receive_text(MEDIA)
    assert event == MediaReceived(
        payload=b"\xff\xfe\xfe\xff", track="inbound", chunk=41, timestamp_ms=1705312200000
    )
    dtmf = {"event": "dtmf", "streamId": STREAM_ID, "dtmf": {"digit": "#"}}
    assert stream.receive_text(json.dumps(dtmf)) == DtmfReceived(digit="#", track="inbound")
    played = {"event": "playedStream", "streamId": STREAM_ID, "name": "m7"}
    assert stream.receive_text(json.dumps(played)) == MarkPlayed(name="m7")
    cleared = {"event": "clearedAudio", "streamId": STREAM_ID}
    assert isinstance(stream.receive_text(json.dumps(cleared)), Connected)  # nothing to act on
    stop = {"event": "stop", "streamId": STREAM_ID}
    assert stream.receive_text(json.dumps(stop)) == StreamStopped(call_sid=CALL_ID)


@pytest.mark.parametrize(
    "frame",
    [
        "{",
        '{"event": "connected"}',
        MEDIA.replace(STREAM_ID, "another-stream"),
        MEDIA.replace("//7+/w==", "%%"),
        '{"event": "playedStream", "streamId": "' + STREAM_ID + '", "name": 5}',
    ],
)
def test_anything_malformed_is_a_protocol_error(frame: str) -> None:
    assert isinstance(started().receive_text(frame), ProtocolError)


def test_an_l16_stream_is_refused() -> None:
    frame = START.replace("audio/x-mulaw", "audio/x-l16")
    assert isinstance(PlivoMediaStream().receive_text(frame), ProtocolError)


def test_what_we_send_is_plivos_documented_events() -> None:
    stream = started()
    assert json.loads(stream.media(b"\xff\xfe")) == {
        "event": "playAudio",
        "streamId": STREAM_ID,
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": "//4="},
    }
    assert json.loads(stream.mark("m1")) == {
        "event": "checkpoint",
        "streamId": STREAM_ID,
        "name": "m1",
    }
    assert json.loads(stream.clear()) == {"event": "clearAudio", "streamId": STREAM_ID}
    with pytest.raises(TelephonyError):
        PlivoMediaStream().clear()


def test_the_answer_xml_streams_bidirectional_mulaw_and_keeps_the_call_alive() -> None:
    root = ET.fromstring(stream_xml("wss://bridge.example/plivo/stream?ticket=pv1.a_b-c"))
    stream = root.find("./Stream")
    assert stream is not None
    assert stream.text == "wss://bridge.example/plivo/stream?ticket=pv1.a_b-c"
    assert stream.attrib["bidirectional"] == "true"
    assert stream.attrib["keepCallAlive"] == "true"
    assert stream.attrib["contentType"] == "audio/x-mulaw;rate=8000"
    number = ET.fromstring(dial_xml("+15555550142")).find("./Dial/Number")
    assert number is not None
    assert number.text == "+15555550142"


def test_a_bad_or_missing_signature_is_refused_and_a_rotated_one_accepted() -> None:
    url, form = "https://bridge.example/plivo/answer", {"CallUUID": CALL_ID}
    good = compute_signature("token-1", "POST", url, form, "n1")
    assert not verify_signature("token-2", "POST", url, form, "n1", good)
    assert not verify_signature("token-1", "POST", url, form, "n2", good)
    assert not verify_signature("token-1", "POST", url, {"CallUUID": "x"}, "n1", good)
    assert not verify_signature("token-1", "POST", url, form, None, good)
    assert not verify_signature("token-1", "POST", url, form, "n1", None)
    assert verify_signature("token-1", "POST", url, form, "n1", f"c3RhbGU=,{good}")


def test_a_plivo_ticket_opens_only_plivo_streams() -> None:
    secret = b"k" * 32
    plivo, telnyx, twilio = plivo_tickets(secret), telnyx_tickets(secret), StreamTokens(secret)
    token = plivo.issue(CALL_ID, 10.0)
    assert plivo.open(token, CALL_ID, 11.0) is not None
    assert telnyx.open(token, CALL_ID, 11.0) is None
    assert twilio.open(token, CALL_ID, 11.0) is None
    assert plivo.open(telnyx.issue(CALL_ID, 10.0), CALL_ID, 11.0) is None
