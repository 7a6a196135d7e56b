"""The sans-I/O Twilio Media Streams protocol, fed literal frames from the wire reference."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest

from agent.errors import TelephonyError
from agent.telephony.twilio import (
    RAW_LIMIT,
    Connected,
    DtmfReceived,
    MarkPlayed,
    MediaReceived,
    ProtocolError,
    StreamStarted,
    StreamStopped,
    TwilioMediaStream,
)

STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL_SID = "CA5e9b7b3a0c1f4d2a8b6e0f1a2b3c4d5e"
ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"

CONNECTED = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
START = (
    '{"event":"start","sequenceNumber":"1","streamSid":"' + STREAM_SID + '",'
    '"start":{"accountSid":"' + ACCOUNT_SID + '","streamSid":"' + STREAM_SID + '",'
    '"callSid":"' + CALL_SID + '","tracks":["inbound"],'
    '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},'
    '"customParameters":{"agent":"acme-support","token":"tok-123"}}}'
)
# 160 bytes of mu-law silence (0xFF) = one 20 ms frame.
SILENCE = b"\xff" * 160
SILENCE_B64 = base64.b64encode(SILENCE).decode()
MEDIA = (
    '{"event":"media","sequenceNumber":"4","streamSid":"' + STREAM_SID + '",'
    '"media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"' + SILENCE_B64 + '"}}'
)
DTMF = (
    '{"event":"dtmf","sequenceNumber":"5","streamSid":"' + STREAM_SID + '",'
    '"dtmf":{"track":"inbound_track","digit":"1"}}'
)
MARK = (
    '{"event":"mark","sequenceNumber":"6","streamSid":"'
    + STREAM_SID
    + '","mark":{"name":"resp-7"}}'
)
STOP = (
    '{"event":"stop","sequenceNumber":"7","streamSid":"' + STREAM_SID + '",'
    '"stop":{"accountSid":"' + ACCOUNT_SID + '","callSid":"' + CALL_SID + '"}}'
)


def started() -> TwilioMediaStream:
    """A stream that has received `connected` and `start`."""
    stream = TwilioMediaStream()
    assert isinstance(stream.receive_text(CONNECTED), Connected)
    assert isinstance(stream.receive_text(START), StreamStarted)
    return stream


def start_msg() -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(START)
    return msg


def media_msg() -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(MEDIA)
    return msg


def assert_error(event: object, reason_part: str) -> None:
    assert isinstance(event, ProtocolError), event
    assert reason_part in event.reason


# -- events from Twilio ----------------------------------------------------------------------------


def test_connected_is_parsed() -> None:
    assert TwilioMediaStream().receive_text(CONNECTED) == Connected(
        protocol="Call", version="1.0.0"
    )


def test_start_is_parsed_and_sets_stream_sid() -> None:
    stream = TwilioMediaStream()
    assert stream.stream_sid is None
    event = stream.receive_text(START)
    assert isinstance(event, StreamStarted)
    assert event.stream_sid == STREAM_SID
    assert event.call_sid == CALL_SID
    assert event.account_sid == ACCOUNT_SID
    assert event.tracks == ("inbound",)
    assert event.encoding == "audio/x-mulaw"
    assert event.sample_rate == 8000
    assert event.channels == 1
    assert dict(event.custom_parameters) == {"agent": "acme-support", "token": "tok-123"}
    assert stream.stream_sid == STREAM_SID


def test_start_custom_parameters_are_read_only() -> None:
    event = TwilioMediaStream().receive_text(START)
    assert isinstance(event, StreamStarted)
    with pytest.raises(TypeError):
        event.custom_parameters["agent"] = "other"  # type: ignore[index]


def test_start_accepts_numbers_as_strings_and_missing_custom_parameters() -> None:
    msg = start_msg()
    msg["start"]["mediaFormat"].update(sampleRate="8000", channels="1")
    del msg["start"]["customParameters"]
    event = TwilioMediaStream().receive_text(json.dumps(msg))
    assert isinstance(event, StreamStarted)
    assert (event.sample_rate, event.channels) == (8000, 1)
    assert dict(event.custom_parameters) == {}


def test_start_accepts_stream_sid_in_only_one_place() -> None:
    outer_only = start_msg()
    del outer_only["start"]["streamSid"]
    inner_only = start_msg()
    del inner_only["streamSid"]
    for msg in (outer_only, inner_only):
        event = TwilioMediaStream().receive_text(json.dumps(msg))
        assert isinstance(event, StreamStarted)
        assert event.stream_sid == STREAM_SID


def test_media_is_decoded_to_mulaw_bytes() -> None:
    event = started().receive_text(MEDIA)
    assert event == MediaReceived(payload=SILENCE, track="inbound", chunk=2, timestamp_ms=5)


def test_media_accepts_numbers_for_chunk_and_timestamp() -> None:
    msg = media_msg()
    msg["media"].update(chunk=3, timestamp=60)
    event = started().receive_text(json.dumps(msg))
    assert isinstance(event, MediaReceived)
    assert (event.chunk, event.timestamp_ms) == (3, 60)


def test_media_of_any_size_including_empty() -> None:
    stream = started()
    for audio in (b"", b"\x00", bytes(range(256)) * 5):
        msg = media_msg()
        msg["media"]["payload"] = base64.b64encode(audio).decode()
        event = stream.receive_text(json.dumps(msg))
        assert isinstance(event, MediaReceived)
        assert event.payload == audio


def test_dtmf_is_parsed() -> None:
    assert started().receive_text(DTMF) == DtmfReceived(digit="1", track="inbound_track")


def test_mark_is_parsed() -> None:
    assert started().receive_text(MARK) == MarkPlayed(name="resp-7")


def test_stop_is_parsed() -> None:
    assert started().receive_text(STOP) == StreamStopped(call_sid=CALL_SID)


def test_a_whole_call_in_order() -> None:
    stream = TwilioMediaStream()
    events = [stream.receive_text(t) for t in (CONNECTED, START, MEDIA, DTMF, MARK, MEDIA, STOP)]
    assert [type(e) for e in events] == [
        Connected,
        StreamStarted,
        MediaReceived,
        DtmfReceived,
        MarkPlayed,
        MediaReceived,
        StreamStopped,
    ]


# -- malformed input becomes ProtocolError, never an exception -------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "invalid JSON"),
        ("{", "invalid JSON"),
        ("not json", "invalid JSON"),
        ("[" * 100_000, "invalid JSON"),  # deep nesting
        ('{"event":"media","n":' + "9" * 5000 + "}", "invalid JSON"),  # a huge integer
        # What Python's json writes for float("nan") and float("inf"): JavaScript, not JSON.
        ('{"event":"media","media":{"timestamp":NaN}}', "invalid JSON"),
        ('{"event":"media","media":{"timestamp":Infinity}}', "invalid JSON"),
        ("[]", "not a JSON object"),
        ('"media"', "not a JSON object"),
        ("null", "not a JSON object"),
        ("42", "not a JSON object"),
        ("{}", "unknown event None"),
        ('{"event":"bogus"}', "unknown event 'bogus'"),
        ('{"event":42}', "unknown event 42"),
        ('{"event":["media"]}', "unknown event"),  # unhashable: must not reach a dict lookup
        ('{"event":{"a":1}}', "unknown event"),
        ('{"event":"clear","streamSid":"MZ1"}', "unknown event 'clear'"),  # ours, not Twilio's
    ],
)
def test_bad_frames_are_protocol_errors(text: str, reason: str) -> None:
    assert_error(TwilioMediaStream().receive_text(text), reason)
    assert_error(started().receive_text(text), reason)


def test_connected_with_missing_or_mistyped_fields() -> None:
    stream = TwilioMediaStream()
    assert_error(stream.receive_text('{"event":"connected","protocol":"Call"}'), "'version'")
    assert_error(
        stream.receive_text('{"event":"connected","protocol":1,"version":"1.0.0"}'), "'protocol'"
    )


def _start_variants() -> list[tuple[str, str, str]]:
    """(id, frame, reason) for start messages that must be rejected."""
    variants: list[tuple[str, str, str]] = []

    def add(case_id: str, reason: str, edit: Any) -> None:
        msg = start_msg()
        edit(msg)
        variants.append((case_id, json.dumps(msg), reason))

    add("no start object", "'start' is missing", lambda m: m.pop("start"))
    add("start not object", "'start' is missing", lambda m: m.update(start=[1]))
    add("no stream sid", "'streamSid'", lambda m: (m.pop("streamSid"), m["start"].pop("streamSid")))
    add("sids differ", "differ", lambda m: m["start"].update(streamSid="MZother"))
    add(
        "sid not string",
        "'streamSid'",
        lambda m: (m.update(streamSid=5), m["start"].pop("streamSid")),
    )
    add(
        "sid empty",
        "'streamSid'",
        lambda m: (m.update(streamSid=""), m["start"].update(streamSid="")),
    )
    # A SID that would break the JSON we splice it into.
    add(
        "sid with quote",
        "not alphanumeric",
        lambda m: (m.update(streamSid='MZ"x'), m["start"].update(streamSid='MZ"x')),
    )
    add(
        "sid non-ascii",
        "not alphanumeric",
        lambda m: (m.update(streamSid="MZé"), m["start"].update(streamSid="MZé")),
    )
    add("no call sid", "'start.callSid'", lambda m: m["start"].pop("callSid"))
    add("call sid number", "'start.callSid'", lambda m: m["start"].update(callSid=1))
    add("no account sid", "'start.accountSid'", lambda m: m["start"].pop("accountSid"))
    add("no tracks", "'start.tracks'", lambda m: m["start"].pop("tracks"))
    add("tracks string", "'start.tracks'", lambda m: m["start"].update(tracks="inbound"))
    add("tracks of numbers", "'start.tracks'", lambda m: m["start"].update(tracks=[1]))
    add("no media format", "'start.mediaFormat'", lambda m: m["start"].pop("mediaFormat"))
    add("no encoding", "encoding", lambda m: m["start"]["mediaFormat"].pop("encoding"))
    add("no sample rate", "sampleRate", lambda m: m["start"]["mediaFormat"].pop("sampleRate"))
    add(
        "sample rate word",
        "sampleRate",
        lambda m: m["start"]["mediaFormat"].update(sampleRate="eight thousand"),
    )
    add(
        "sample rate bool",
        "sampleRate",
        lambda m: m["start"]["mediaFormat"].update(sampleRate=True),
    )
    add(
        "sample rate frac",
        "sampleRate",
        lambda m: m["start"]["mediaFormat"].update(sampleRate=8e3 + 0.5),
    )
    add("channels negative", "negative", lambda m: m["start"]["mediaFormat"].update(channels=-1))
    add("channels null", "channels", lambda m: m["start"]["mediaFormat"].update(channels=None))
    add("params list", "customParameters", lambda m: m["start"].update(customParameters=[]))
    add("params null", "customParameters", lambda m: m["start"].update(customParameters=None))
    add(
        "param not string",
        "customParameters",
        lambda m: m["start"].update(customParameters={"n": 1}),
    )
    return variants


@pytest.mark.parametrize(
    ("text", "reason"),
    [(t, r) for _, t, r in _start_variants()],
    ids=[i for i, _, _ in _start_variants()],
)
def test_malformed_start_is_rejected_and_does_not_start_the_stream(text: str, reason: str) -> None:
    stream = TwilioMediaStream()
    assert_error(stream.receive_text(text), reason)
    assert stream.stream_sid is None
    # A good start can still follow.
    assert isinstance(stream.receive_text(START), StreamStarted)


def test_second_start_is_rejected_and_keeps_the_first_stream() -> None:
    stream = started()
    other = START.replace(STREAM_SID, "MZ0000")
    assert_error(stream.receive_text(other), "already started")
    assert_error(stream.receive_text(START), "already started")
    assert stream.stream_sid == STREAM_SID


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda m: m.pop("media"), id="no media object"),
        pytest.param(lambda m: m.update(media="x"), id="media not object"),
        pytest.param(lambda m: m["media"].pop("payload"), id="no payload"),
        pytest.param(lambda m: m["media"].update(payload=None), id="payload null"),
        pytest.param(lambda m: m["media"].update(payload=[1]), id="payload list"),
        pytest.param(lambda m: m["media"].update(payload="not base64!"), id="payload bad alphabet"),
        pytest.param(lambda m: m["media"].update(payload="/w="), id="payload bad padding"),
        pytest.param(lambda m: m["media"].update(payload="/w==/w=="), id="payload data after pad"),
        pytest.param(lambda m: m["media"].update(payload="/w\n=="), id="payload newline"),
        pytest.param(lambda m: m["media"].update(payload="ÿÿÿÿ"), id="payload non-ascii"),
        pytest.param(lambda m: m["media"].pop("track"), id="no track"),
        pytest.param(lambda m: m["media"].pop("chunk"), id="no chunk"),
        pytest.param(lambda m: m["media"].update(chunk="two"), id="chunk word"),
        pytest.param(lambda m: m["media"].update(chunk="-2"), id="chunk negative string"),
        pytest.param(lambda m: m["media"].update(chunk=" 2"), id="chunk with space"),
        pytest.param(lambda m: m["media"].update(chunk="2_0"), id="chunk underscore"),
        pytest.param(lambda m: m["media"].update(chunk="²"), id="chunk superscript digit"),
        pytest.param(lambda m: m["media"].update(chunk="9" * 5000), id="chunk huge string"),
        pytest.param(lambda m: m["media"].update(timestamp={}), id="timestamp object"),
        pytest.param(lambda m: m.pop("streamSid"), id="no stream sid"),
        pytest.param(lambda m: m.update(streamSid="MZother"), id="foreign stream sid"),
    ],
)
def test_malformed_media_is_rejected(edit: Any) -> None:
    msg = media_msg()
    edit(msg)
    event = started().receive_text(json.dumps(msg))
    assert_error(event, "media")


def test_media_error_reasons_name_the_field() -> None:
    stream = started()
    msg = media_msg()
    msg["media"]["payload"] = "***"
    assert_error(stream.receive_text(json.dumps(msg)), "'media.payload' is not valid base64")
    msg = media_msg()
    msg["media"]["chunk"] = "x"
    assert_error(stream.receive_text(json.dumps(msg)), "'media.chunk'")
    msg = media_msg()
    msg["streamSid"] = "MZother"
    assert_error(stream.receive_text(json.dumps(msg)), "not the started stream's")


@pytest.mark.parametrize("text", [MEDIA, DTMF, MARK, STOP], ids=["media", "dtmf", "mark", "stop"])
def test_stream_events_before_start_are_rejected(text: str) -> None:
    stream = TwilioMediaStream()
    stream.receive_text(CONNECTED)
    assert_error(stream.receive_text(text), "stream not started")


@pytest.mark.parametrize("text", [MEDIA, DTMF, MARK, STOP], ids=["media", "dtmf", "mark", "stop"])
def test_stream_events_after_stop_are_rejected(text: str) -> None:
    stream = started()
    assert isinstance(stream.receive_text(STOP), StreamStopped)
    assert_error(stream.receive_text(text), "already stopped")


@pytest.mark.parametrize("text", [DTMF, MARK, STOP], ids=["dtmf", "mark", "stop"])
def test_other_stream_events_with_a_foreign_stream_sid_are_rejected(text: str) -> None:
    assert_error(started().receive_text(text.replace(STREAM_SID, "MZother")), "started stream's")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"event":"mark","streamSid":"' + STREAM_SID + '"}', "'mark' is missing"),
        ('{"event":"mark","streamSid":"' + STREAM_SID + '","mark":{}}', "'mark.name'"),
        ('{"event":"mark","streamSid":"' + STREAM_SID + '","mark":{"name":7}}', "'mark.name'"),
        ('{"event":"dtmf","streamSid":"' + STREAM_SID + '","dtmf":null}', "'dtmf' is missing"),
        ('{"event":"dtmf","streamSid":"' + STREAM_SID + '","dtmf":{"digit":"1"}}', "'dtmf.track'"),
        (
            '{"event":"dtmf","streamSid":"' + STREAM_SID + '","dtmf":{"track":"inbound_track"}}',
            "'dtmf.digit'",
        ),
        ('{"event":"stop","streamSid":"' + STREAM_SID + '"}', "'stop' is missing"),
        ('{"event":"stop","streamSid":"' + STREAM_SID + '","stop":{}}', "'stop.callSid'"),
        (
            '{"event":"stop","streamSid":"' + STREAM_SID + '","stop":{"callSid":"CAother"}}',
            "not the started call's",
        ),
    ],
)
def test_malformed_mark_dtmf_and_stop_are_rejected(text: str, reason: str) -> None:
    stream = started()
    assert_error(stream.receive_text(text), reason)
    # A rejected stop does not end the stream.
    assert isinstance(stream.receive_text(MEDIA), MediaReceived)


def test_binary_frames_are_protocol_errors() -> None:
    event = started().receive_bytes(b"\x00\x01" * 500)
    assert_error(event, "binary frame")
    assert isinstance(event, ProtocolError)
    assert event.raw.startswith(r"b'\x00\x01")
    assert len(event.raw) <= RAW_LIMIT


def test_protocol_error_raw_is_truncated_and_reason_carries_the_event() -> None:
    text = '{"event":"' + "x" * 1000 + '"}'
    event = TwilioMediaStream().receive_text(text)
    assert isinstance(event, ProtocolError)
    assert event.raw == text[:RAW_LIMIT]
    assert len(event.reason) < RAW_LIMIT + 50


def test_errors_leave_the_stream_usable() -> None:
    stream = started()
    assert isinstance(stream.receive_text("garbage"), ProtocolError)
    assert isinstance(stream.receive_bytes(b"x"), ProtocolError)
    assert stream.receive_text(MEDIA) == MediaReceived(SILENCE, "inbound", 2, 5)


def test_random_mutations_of_valid_frames_never_raise() -> None:
    """Byte-level mutations of every valid frame: the parser must return an event, never raise."""
    rng = random.Random(20240611)
    frames = [CONNECTED, START, MEDIA, DTMF, MARK, STOP]
    alphabet = '{}[]":,0123456789 -.eE\\ntrufals/+=ÿ\u2028\ud800'
    for _ in range(3000):
        text = list(rng.choice(frames))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(text))
            op = rng.random()
            if op < 0.4:
                text[i] = rng.choice(alphabet)
            elif op < 0.7:
                del text[i]
            else:
                text.insert(i, rng.choice(alphabet))
        stream = TwilioMediaStream()
        stream.receive_text(START)
        event = stream.receive_text("".join(text))
        assert isinstance(
            event,
            Connected
            | StreamStarted
            | MediaReceived
            | MarkPlayed
            | DtmfReceived
            | StreamStopped
            | ProtocolError,
        )


# -- frames we send --------------------------------------------------------------------------------


def test_media_builder_output() -> None:
    text = started().media(b"\x00\x7f\xff")
    assert json.loads(text) == {
        "event": "media",
        "streamSid": STREAM_SID,
        "media": {"payload": "AH//"},
    }
    assert text == '{"event":"media","streamSid":"' + STREAM_SID + '","media":{"payload":"AH//"}}'


def test_media_builder_round_trips_a_frame_and_empty_audio() -> None:
    stream = started()
    for audio in (SILENCE, b""):
        payload = json.loads(stream.media(audio))["media"]["payload"]
        assert base64.b64decode(payload, validate=True) == audio


def test_mark_builder_output() -> None:
    assert json.loads(started().mark("resp-7")) == {
        "event": "mark",
        "streamSid": STREAM_SID,
        "mark": {"name": "resp-7"},
    }


@pytest.mark.parametrize(
    "name", ['say "hi"', "back\\slash", "naïve ✓ 日本", "line\nbreak\ttab", "\u2028", "}{", ""]
)
def test_mark_names_are_json_escaped(name: str) -> None:
    text = started().mark(name)
    assert json.loads(text)["mark"]["name"] == name
    assert text.isascii()


def test_clear_builder_output() -> None:
    text = started().clear()
    assert json.loads(text) == {"event": "clear", "streamSid": STREAM_SID}
    assert text == '{"event":"clear","streamSid":"' + STREAM_SID + '"}'


def test_builders_before_start_raise() -> None:
    stream = TwilioMediaStream()
    stream.receive_text(CONNECTED)
    with pytest.raises(TelephonyError):
        stream.media(SILENCE)
    with pytest.raises(TelephonyError):
        stream.mark("m")
    with pytest.raises(TelephonyError):
        stream.clear()


def test_builders_before_start_raise_even_after_a_rejected_start() -> None:
    stream = TwilioMediaStream()
    stream.receive_text(START.replace('"callSid"', '"callSidX"'))
    with pytest.raises(TelephonyError):
        stream.clear()


def test_our_media_frame_is_what_the_parser_accepts_for_the_same_stream() -> None:
    """Symmetry check useful to the carrier simulator: the payload survives base64 both ways."""
    stream = started()
    sent = json.loads(stream.media(SILENCE))
    sent["media"].update(track="inbound", chunk="1", timestamp="0")
    event = stream.receive_text(json.dumps(sent))
    assert event == MediaReceived(SILENCE, "inbound", 1, 0)


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ('"encoding":"audio/x-mulaw"', '"encoding":"audio/l16"', "not 8 kHz mono mu-law"),
        ('"sampleRate":8000', '"sampleRate":16000', "not 8 kHz mono mu-law"),
        ('"channels":1', '"channels":2', "not 8 kHz mono mu-law"),
    ],
)
def test_a_stream_in_another_media_format_is_refused(old: str, new: str, reason: str) -> None:
    stream = TwilioMediaStream()
    stream.receive_text(CONNECTED)
    event = stream.receive_text(START.replace(old, new))
    assert isinstance(event, ProtocolError)
    assert reason in event.reason
    assert stream.stream_sid is None


@pytest.mark.parametrize("digit", ["", "12", "x", "\u0661", "**"])
def test_a_keypress_that_is_not_a_keypad_digit_is_refused(digit: str) -> None:
    stream = started()
    event = stream.receive_text(DTMF.replace('"digit":"1"', f'"digit":{json.dumps(digit)}'))
    assert isinstance(event, ProtocolError)
    assert "keypad digit" in event.reason


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_every_keypad_digit_is_accepted(digit: str) -> None:
    event = started().receive_text(DTMF.replace('"digit":"1"', f'"digit":"{digit}"'))
    assert event == DtmfReceived(digit=digit, track="inbound_track")


def test_media_of_an_unknown_track_is_refused() -> None:
    event = started().receive_text(MEDIA.replace('"track":"inbound"', '"track":"sideways"'))
    assert isinstance(event, ProtocolError)
    assert "media.track" in event.reason
