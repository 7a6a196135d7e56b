"""The softphone's media-stream protocol, with literal frames: the same events as Twilio's."""

from __future__ import annotations

import pytest

from agent.errors import TelephonyError
from agent.telephony.browser import BrowserMediaStream
from agent.telephony.carrier import CarrierStream
from agent.telephony.twilio import (
    DtmfReceived,
    MarkPlayed,
    MediaReceived,
    ProtocolError,
    StreamStarted,
    StreamStopped,
)

SID = "CO0123456789abcdef0123456789abcdef"
START = (
    '{"event":"start","callSid":"' + SID + '","ticket":"ct1.abc.def",'
    '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}'
)


def started() -> BrowserMediaStream:
    stream = BrowserMediaStream()
    assert isinstance(stream.receive_text(START), StreamStarted)
    return stream


def test_it_is_a_carrier_stream() -> None:
    stream: CarrierStream = BrowserMediaStream()  # mypy checks the protocol; this, at run time
    assert callable(stream.receive_text)


def test_start_carries_the_ticket_as_twilio_carries_its_token() -> None:
    event = BrowserMediaStream().receive_text(START)
    assert event == StreamStarted(
        stream_sid="BS0123456789abcdef0123456789abcdef",
        call_sid=SID,
        account_sid="console",
        tracks=("inbound",),
        encoding="audio/x-mulaw",
        sample_rate=8000,
        channels=1,
        custom_parameters={"token": "ct1.abc.def"},
    )


def test_media_mark_dtmf_and_stop_become_the_session_events() -> None:
    stream = started()
    # "/w==" is 0xff, mu-law silence, twice: 2 bytes.
    assert stream.receive_text('{"event":"media","payload":"//8="}') == MediaReceived(
        payload=b"\xff\xff", track="inbound", chunk=1, timestamp_ms=0
    )
    second = stream.receive_text('{"event":"media","payload":"' + "/" * 320 + '"}')
    assert isinstance(second, MediaReceived)
    assert (second.chunk, second.timestamp_ms) == (2, 0)  # 2 bytes were a quarter millisecond
    assert stream.receive_text('{"event":"mark","name":"m7"}') == MarkPlayed(name="m7")
    assert stream.receive_text('{"event":"dtmf","digit":"#"}') == DtmfReceived("#", "inbound")
    assert stream.receive_text('{"event":"stop"}') == StreamStopped(call_sid=SID)
    after = stream.receive_text('{"event":"mark","name":"m8"}')
    assert isinstance(after, ProtocolError)
    assert after.reason == "mark: stream already stopped"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "invalid JSON"),
        ("[1]", "message is not a JSON object"),
        ('{"event":"media","payload":"//8="}', "media: stream not started"),
        ('{"event":"start","callSid":"CA123","ticket":"t"}', "start: 'callSid' is not a console"),
        ('{"event":"start","callSid":"' + SID + '"}', "start: 'ticket' is missing"),
        (
            '{"event":"start","callSid":"' + SID + '","ticket":"t","mediaFormat":{"encoding":"x"}}',
            "start: 'mediaFormat' is not 8 kHz mono mu-law",
        ),
        ('{"event":"connected"}', "unknown event 'connected'"),
    ],
)
def test_anything_malformed_before_start_is_a_protocol_error(frame: str, reason: str) -> None:
    event = BrowserMediaStream().receive_text(frame)
    assert isinstance(event, ProtocolError)
    assert event.reason.startswith(reason)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ('{"event":"media","payload":"not base64!"}', "media: 'payload' is not valid base64"),
        ('{"event":"media"}', "media: 'payload' is missing or not a string"),
        ('{"event":"dtmf","digit":"12"}', "dtmf: 'digit' is not a keypad digit"),
        ('{"event":"mark","name":"' + "m" * 65 + '"}', "mark: 'name' is too long"),
        (START, "start: stream already started"),
    ],
)
def test_anything_malformed_after_start_is_a_protocol_error(frame: str, reason: str) -> None:
    event = started().receive_text(frame)
    assert isinstance(event, ProtocolError)
    assert event.reason.startswith(reason)
    assert len(event.raw) <= 200


def test_a_binary_frame_is_a_protocol_error() -> None:
    assert started().receive_bytes(b"\x00\x01").reason == "unexpected binary frame"


def test_what_the_bridge_sends_the_page() -> None:
    stream = started()
    assert stream.media(b"\xff\xff") == '{"event":"media","payload":"//8="}'
    assert stream.mark('m"1') == '{"event":"mark","name":"m\\"1"}'
    assert stream.clear() == '{"event":"clear"}'


def test_nothing_is_sent_before_start() -> None:
    with pytest.raises(TelephonyError):
        BrowserMediaStream().media(b"\xff")


def test_a_malformed_start_is_not_echoed_it_carries_a_ticket() -> None:
    frame = '{"event":"start","callSid":"CA1","ticket":"ct1.still-good-for-a-minute"}'
    event = BrowserMediaStream().receive_text(frame)
    assert isinstance(event, ProtocolError)
    assert event.raw == ""
