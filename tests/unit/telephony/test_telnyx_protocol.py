"""Telnyx's media stream, TeXML and webhook signatures, on literal payloads."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.errors import TelephonyError
from agent.telephony.telnyx import (
    TelnyxMediaStream,
    stream_texml,
    telnyx_tickets,
    verify_signature,
)
from agent.telephony.twilio import (
    Connected,
    DtmfReceived,
    MarkPlayed,
    MediaReceived,
    ProtocolError,
    StreamStarted,
    StreamStopped,
)
from agent.telephony.webhooks import StreamTokens, console_tickets

STREAM_ID = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"
CALL_ID = "v3:nYkSGPQjY6y-dW0rTVWgL3uCJ2oOK7cDfaDa0qz5"
# The shapes of Telnyx's documented frames
# (https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket).
CONNECTED = '{"event": "connected", "version": "1.0.0"}'
START = json.dumps(
    {
        "event": "start",
        "sequence_number": "1",
        "start": {
            "user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
            "call_control_id": CALL_ID,
            "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
            "custom_parameters": {"token": "tx1.abc"},
        },
        "stream_id": STREAM_ID,
    }
)
MEDIA = json.dumps(
    {
        "event": "media",
        "sequence_number": "4",
        "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": "//7+/w=="},
        "stream_id": STREAM_ID,
    }
)


def started() -> TelnyxMediaStream:
    stream = TelnyxMediaStream()
    assert isinstance(stream.receive_text(CONNECTED), Connected)
    assert isinstance(stream.receive_text(START), StreamStarted)
    return stream


def test_start_names_the_call_by_its_call_control_id_and_carries_the_parameters() -> None:
    stream = TelnyxMediaStream()
    event = stream.receive_text(START)
    assert isinstance(event, StreamStarted)
    assert (event.call_sid, event.stream_sid) == (CALL_ID, STREAM_ID)
    assert event.custom_parameters == {"token": "tx1.abc"}
    assert (event.encoding, event.sample_rate, event.channels) == ("audio/x-mulaw", 8000, 1)


def test_media_dtmf_mark_and_stop_become_the_sessions_events() -> None:
    stream = started()
    assert stream.receive_text(MEDIA) == MediaReceived(
        payload=b"\xff\xfe\xfe\xff", track="inbound", chunk=2, timestamp_ms=5
    )
    dtmf = {"event": "dtmf", "stream_id": STREAM_ID, "dtmf": {"digit": "1"}}
    assert stream.receive_text(json.dumps(dtmf)) == DtmfReceived(digit="1", track="inbound")
    mark = {"event": "mark", "stream_id": STREAM_ID, "mark": {"name": "m1"}}
    assert stream.receive_text(json.dumps(mark)) == MarkPlayed(name="m1")
    stop = {"event": "stop", "stream_id": STREAM_ID, "stop": {"call_control_id": CALL_ID}}
    assert stream.receive_text(json.dumps(stop)) == StreamStopped(call_sid=CALL_ID)
    assert isinstance(stream.receive_text(MEDIA), ProtocolError)  # after stop


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[]",
        '{"event": "nope"}',
        MEDIA.replace(STREAM_ID, "0000"),  # another stream's
        MEDIA.replace("//7+/w==", "***"),  # bad base64
        START.replace('"PCMU"', '"OPUS"'),  # a codec the TeXML never asks for
        '{"event": "error", "payload": {"code": 100002, "title": "Unknown error"}}',
    ],
)
def test_anything_malformed_is_a_protocol_error_not_an_exception(frame: str) -> None:
    stream = TelnyxMediaStream()
    if "stream_id" in frame and '"start"' not in frame:
        stream.receive_text(START)
    assert isinstance(stream.receive_text(frame), ProtocolError)


def test_a_malformed_start_does_not_log_its_ticket() -> None:
    event = TelnyxMediaStream().receive_text(START.replace('"PCMU"', '"G722"'))
    assert isinstance(event, ProtocolError)
    assert "tx1.abc" not in event.raw


def test_media_before_start_is_refused_and_builders_need_a_start() -> None:
    stream = TelnyxMediaStream()
    assert isinstance(stream.receive_text(MEDIA), ProtocolError)
    with pytest.raises(TelephonyError):
        stream.media(b"\xff")


def test_what_we_send_is_telnyxs_documented_client_frames() -> None:
    stream = started()
    assert json.loads(stream.media(b"\xff\xfe")) == {"event": "media", "media": {"payload": "//4="}}
    assert json.loads(stream.mark('m"1')) == {"event": "mark", "mark": {"name": 'm"1'}}
    assert json.loads(stream.clear()) == {"event": "clear"}


def test_texml_starts_a_bidirectional_pcmu_stream_and_holds_the_call() -> None:
    texml = stream_texml("wss://bridge.example/telnyx/stream", {"token": "tx1.a&b"})
    root = ET.fromstring(texml)
    stream = root.find("./Start/Stream")
    assert stream is not None
    assert stream.attrib["url"] == "wss://bridge.example/telnyx/stream"
    assert stream.attrib["bidirectionalMode"] == "rtp"
    assert stream.attrib["bidirectionalCodec"] == "PCMU"
    assert stream.attrib["codec"] == "PCMU"
    (param,) = stream.findall("Parameter")
    assert param.attrib == {"name": "token", "value": "tx1.a&b"}
    assert root.find("./Pause") is not None  # the call stays up while the stream runs
    with pytest.raises(ValueError, match="query"):
        stream_texml("wss://bridge.example/telnyx/stream?x=1", {})


KEY = Ed25519PrivateKey.generate()
PUBLIC = base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
BODY = b"CallSid=v3%3Aabc&From=%2B15555550100"


def sign(timestamp: str, body: bytes = BODY) -> str:
    return base64.b64encode(KEY.sign(timestamp.encode() + b"|" + body)).decode()


def test_a_good_signature_verifies() -> None:
    assert verify_signature(PUBLIC, BODY, sign("1700000000"), "1700000000", now=1700000010.0)


def test_a_bad_or_expired_or_missing_signature_does_not() -> None:
    good = sign("1700000000")
    assert not verify_signature(PUBLIC, BODY + b"x", good, "1700000000", now=1700000010.0)
    assert not verify_signature(PUBLIC, BODY, good, "1700000001", now=1700000010.0)
    # Ten minutes late: outside the five-minute window, a replay.
    assert not verify_signature(PUBLIC, BODY, good, "1700000000", now=1700000600.0)
    assert not verify_signature(PUBLIC, BODY, None, "1700000000", now=1700000010.0)
    assert not verify_signature(PUBLIC, BODY, "not base64!", "1700000000", now=1700000010.0)
    assert not verify_signature(PUBLIC, BODY, good, "-1", now=1700000010.0)
    assert not verify_signature("garbage", BODY, good, "1700000000", now=1700000010.0)


def test_a_telnyx_ticket_opens_no_other_carriers_stream_nor_theirs_a_telnyx_one() -> None:
    secret = b"s" * 32
    telnyx, twilio, console = telnyx_tickets(secret), StreamTokens(secret), console_tickets(secret)
    token = telnyx.issue(CALL_ID, 1000.0, agent="acme")
    assert telnyx.open(token, CALL_ID, 1001.0) is not None
    assert twilio.open(token, CALL_ID, 1001.0) is None
    assert console.open(token, CALL_ID, 1001.0) is None
    assert telnyx.open(twilio.issue(CALL_ID, 1000.0), CALL_ID, 1001.0) is None
