"""The carrier simulator's pure parts: the Phone state machine fed literal ticks and messages, the
TwiML and webhook helpers, caller-audio loading and the report. No event loop, no sockets.

Tick arithmetic in these tests: one tick is 20 ms of audio time and plays 160 mu-law bytes.
"""

from __future__ import annotations

import base64
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.audio.codec import pcm16_to_ulaw, ulaw_to_pcm16
from agent.audio.dtmf import tones
from agent.errors import AudioError, TelephonyError
from agent.sim.carrier import (
    BUNDLED_CALLER_CLIPS,
    CallReport,
    CarrierOptions,
    Phone,
    UtteranceReport,
    load_caller_audio,
    new_sid,
    parse_next_twiml,
    parse_stream_twiml,
    voice_webhook_params,
)
from agent.sim.carrier.rest import UpdateTwiml, read_update_twiml

CALL_SID = "CA" + "c" * 32
ACCOUNT_SID = "AC" + "a" * 32
STREAM_SID = "MZ" + "5" * 32
SILENCE = b"\xff" * 160

Message = dict[str, Any]


def make_phone(utterances: list[bytes], **options: Any) -> Phone:
    return Phone(
        CarrierOptions(**options),
        utterances,
        call_sid=CALL_SID,
        account_sid=ACCOUNT_SID,
        stream_sid=STREAM_SID,
    )


def media(payload: bytes, stream_sid: str = STREAM_SID) -> str:
    return json.dumps(
        {
            "event": "media",
            "streamSid": stream_sid,
            "media": {"payload": base64.b64encode(payload).decode()},
        }
    )


def mark(name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": STREAM_SID, "mark": {"name": name}})


CLEAR = json.dumps({"event": "clear", "streamSid": STREAM_SID})


def ticks(phone: Phone, n: int) -> list[Message]:
    out: list[Message] = []
    for _ in range(n):
        out.extend(phone.tick())
    return out


def inbound_payload(message: Message) -> bytes:
    assert message["event"] == "media"
    return base64.b64decode(message["media"]["payload"])


def marks(messages: list[Message]) -> list[str]:
    return [m["mark"]["name"] for m in messages if m["event"] == "mark"]


def tick_until_stop(phone: Phone, limit: int = 10_000) -> int:
    """Tick until the phone hangs up; the index of the tick that sent ``stop``."""
    for _ in range(limit):
        index = phone.ticks
        if any(m["event"] == "stop" for m in phone.tick()):
            return index
    raise AssertionError("the phone never hung up")


# -- the stream's opening and the inbound frames ---------------------------------------------------


def test_connect_sends_connected_then_start_with_sequence_one() -> None:
    phone = make_phone([])
    assert phone.connect({"agent": "acme-support", "token": "t.1"}) == [
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": STREAM_SID,
            "start": {
                "accountSid": ACCOUNT_SID,
                "streamSid": STREAM_SID,
                "callSid": CALL_SID,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"agent": "acme-support", "token": "t.1"},
            },
        },
    ]


def test_every_tick_sends_one_frame_with_counters_as_strings() -> None:
    phone = make_phone([b"\x10" * 160], lead_ms=40)
    phone.connect({})
    sent = ticks(phone, 4)
    assert [m["event"] for m in sent] == ["media"] * 4
    assert sent[0] == {
        "event": "media",
        "sequenceNumber": "2",
        "streamSid": STREAM_SID,
        "media": {
            "track": "inbound",
            "chunk": "1",
            "timestamp": "0",
            "payload": base64.b64encode(SILENCE).decode(),
        },
    }
    assert [m["sequenceNumber"] for m in sent] == ["2", "3", "4", "5"]
    assert [m["media"]["chunk"] for m in sent] == ["1", "2", "3", "4"]
    assert [m["media"]["timestamp"] for m in sent] == ["0", "20", "40", "60"]
    # lead_ms=40: two frames of silence, then the utterance, then silence again (never a gap).
    assert [inbound_payload(m) for m in sent] == [SILENCE, SILENCE, b"\x10" * 160, SILENCE]


def test_last_partial_frame_is_padded_with_mulaw_silence() -> None:
    phone = make_phone([b"\x10" * 200], lead_ms=0)
    sent = ticks(phone, 2)
    assert inbound_payload(sent[0]) == b"\x10" * 160
    assert inbound_payload(sent[1]) == b"\x10" * 40 + b"\xff" * 120
    assert phone.report().utterances == [
        UtteranceReport(start_ms=0, end_ms=40, first_reply_ms=None)
    ]


# -- playback: media, marks, clear -----------------------------------------------------------------


def test_mark_is_echoed_at_once_when_nothing_is_buffered() -> None:
    phone = make_phone([])
    phone.connect({})
    assert phone.receive_text(mark("m0")) == [
        {"event": "mark", "sequenceNumber": "2", "streamSid": STREAM_SID, "mark": {"name": "m0"}}
    ]
    assert phone.report().marks_echoed == [("m0", True)]


def test_an_echo_that_never_left_the_phone_is_not_reported() -> None:
    # The stream closed between the phone making the echoes and the writer sending them: only
    # the one that went out is in the report, as only it is in Twilio's log.
    phone = make_phone([])
    phone.connect({})
    (sent,) = phone.receive_text(mark("m0"))
    (lost,) = phone.receive_text(mark("m1"))
    phone.undelivered(lost)
    assert sent["mark"]["name"] == "m0"
    assert phone.report().marks_echoed == [("m0", True)]


def test_mark_is_echoed_only_after_the_audio_before_it_has_played() -> None:
    phone = make_phone([], lead_ms=10_000)
    assert phone.receive_text(media(b"\x30" * 400)) == []  # 2.5 frames
    assert phone.receive_text(mark("m1")) == []
    assert phone.receive_text(media(b"\x40" * 160)) == []
    assert phone.receive_text(mark("m2")) == []
    assert marks(phone.tick()) == []
    assert marks(phone.tick()) == []
    # The third frame finishes the 400 bytes before m1 and starts the audio after it.
    assert marks(phone.tick()) == ["m1"]
    assert marks(phone.tick()) == ["m2"]
    assert marks(phone.tick()) == []
    report = phone.report()
    assert report.marks_echoed == [("m1", True), ("m2", True)]
    expected = b"\x30" * 400 + b"\x40" * 160 + b"\xff" * 240
    assert report.heard == ulaw_to_pcm16(expected)


def test_media_of_any_size_is_played_in_order_and_recorded_on_arrival() -> None:
    phone = make_phone([], lead_ms=10_000)
    phone.receive_text(media(b"\x01" * 7))
    ticks(phone, 1)
    phone.receive_text(media(b"\x02" * 500))
    phone.receive_text(media(b""))
    ticks(phone, 4)
    report = phone.report()
    assert report.media_received == [(0, 7), (1, 500), (1, 0)]
    expected = b"\x01" * 7 + b"\xff" * 153 + b"\x02" * 500 + b"\xff" * 140
    assert report.heard == ulaw_to_pcm16(expected)


def test_clear_empties_the_buffer_and_echoes_pending_marks_unplayed() -> None:
    phone = make_phone([], lead_ms=10_000)
    phone.connect({})
    phone.receive_text(media(b"\x30" * 480))
    phone.receive_text(mark("a"))
    phone.receive_text(media(b"\x31" * 160))
    phone.receive_text(mark("b"))
    ticks(phone, 1)
    echoes = phone.receive_text(CLEAR)
    assert echoes == [
        {"event": "mark", "sequenceNumber": "3", "streamSid": STREAM_SID, "mark": {"name": "a"}},
        {"event": "mark", "sequenceNumber": "4", "streamSid": STREAM_SID, "mark": {"name": "b"}},
    ]
    assert marks(ticks(phone, 3)) == []
    report = phone.report()
    assert report.marks_echoed == [("a", False), ("b", False)]
    assert report.clears == [1]
    assert report.heard == ulaw_to_pcm16(b"\x30" * 160 + SILENCE * 3)
    # After a clear the buffer is empty, so a new mark comes straight back.
    assert marks(phone.receive_text(mark("c"))) == ["c"]


# -- the caller's script ---------------------------------------------------------------------------


def test_caller_waits_for_the_reply_and_the_gap_before_the_next_utterance() -> None:
    phone = make_phone([b"\x10" * 320, b"\x20" * 160], lead_ms=40, gap_ms=40, reply_timeout_ms=100)
    sent = ticks(phone, 4)  # 2 ticks of lead, then the 2-frame utterance (ticks 2-3)
    assert [inbound_payload(m) for m in sent] == [SILENCE, SILENCE, b"\x10" * 160, b"\x10" * 160]
    phone.receive_text(media(b"\x30" * 240))
    phone.receive_text(mark("r1"))
    assert marks(phone.tick()) == []  # tick 4 plays the first reply frame
    assert marks(phone.tick()) == ["r1"]  # tick 5 plays the rest
    sent = ticks(phone, 2)  # ticks 6-7: the 40 ms gap of silence
    assert [inbound_payload(m) for m in sent] == [SILENCE, SILENCE]
    assert inbound_payload(phone.tick()[0]) == b"\x20" * 160  # tick 8: the second utterance
    # No reply to it: the caller gives up 100 ms after it ended (tick 9 + 5) and hangs up.
    assert tick_until_stop(phone) == 14
    report = phone.report()
    assert report.utterances == [
        UtteranceReport(start_ms=40, end_ms=80, first_reply_ms=80),
        UtteranceReport(start_ms=160, end_ms=180, first_reply_ms=None),
    ]
    assert report.reply_latencies_ms() == [0, None]
    assert report.ended_by == "caller hung up"
    assert len(report.heard) == 14 * 320
    assert report.barge_ins == 0


def test_reply_latency_counts_ticks_from_the_end_of_the_utterance() -> None:
    phone = make_phone([b"\x10" * 160], lead_ms=0, gap_ms=20)
    ticks(phone, 4)  # utterance at tick 0, then three ticks of silence
    phone.receive_text(media(b"\x30" * 160))
    ticks(phone, 1)
    assert phone.report().reply_latencies_ms() == [60]


def test_lead_waits_for_a_greeting_to_finish() -> None:
    phone = make_phone([b"\x10" * 160], lead_ms=40)
    phone.receive_text(media(b"\x30" * 320))  # a 40 ms greeting before the first tick
    sent = ticks(phone, 5)
    # Greeting plays on ticks 0-1, then 40 ms of silence (ticks 2-3), then the caller speaks.
    assert [inbound_payload(m) for m in sent] == [SILENCE] * 4 + [b"\x10" * 160]
    assert phone.report().utterances[0].start_ms == 80


def test_barge_in_interrupts_the_reply_and_counts_when_a_clear_follows() -> None:
    phone = make_phone(
        [b"\x10" * 160, b"\x20" * 320, b"\x30" * 160],
        lead_ms=0,
        gap_ms=40,
        barge_in_ms=40,
        reply_timeout_ms=100,
    )
    phone.connect({})
    ticks(phone, 1)  # tick 0: the first utterance
    phone.receive_text(media(b"\x40" * 800))  # a 100 ms reply
    phone.receive_text(mark("long"))
    sent = ticks(phone, 3)  # reply starts on tick 1; the caller cuts in 40 ms later (tick 3)
    assert [inbound_payload(m) for m in sent] == [SILENCE, SILENCE, b"\x20" * 160]
    echoes = phone.receive_text(CLEAR)
    assert marks(echoes) == ["long"]
    ticks(phone, 1)  # tick 4: end of the second utterance
    phone.receive_text(media(b"\x50" * 160))
    phone.receive_text(mark("short"))
    assert marks(phone.tick()) == ["short"]  # tick 5
    sent = ticks(phone, 3)  # the next barge-in is due at tick 7 (40 ms after tick 5)
    assert [inbound_payload(m) for m in sent] == [SILENCE, b"\x30" * 160, SILENCE]
    assert tick_until_stop(phone) == 13  # no reply to the last one: 100 ms after its end
    report = phone.report()
    assert report.utterances == [
        UtteranceReport(start_ms=0, end_ms=20, first_reply_ms=20),
        UtteranceReport(start_ms=60, end_ms=100, first_reply_ms=100),
        UtteranceReport(start_ms=140, end_ms=160, first_reply_ms=None),
    ]
    assert report.barge_ins == 1
    assert report.clears == [4]
    assert report.marks_echoed == [("long", False), ("short", True)]
    heard = ulaw_to_pcm16(SILENCE + b"\x40" * 480 + SILENCE + b"\x50" * 160)
    assert report.heard.startswith(heard)


def test_the_last_utterance_waits_for_the_whole_reply_even_with_barge_in() -> None:
    phone = make_phone([b"\x10" * 160], lead_ms=0, gap_ms=40, barge_in_ms=20)
    ticks(phone, 1)
    phone.receive_text(media(b"\x40" * 480))
    # Reply on ticks 1-3, 40 ms of quiet on ticks 4-5, hang up on tick 6.
    assert tick_until_stop(phone) == 6
    assert phone.report().ended_by == "caller hung up"


def test_a_reply_that_talks_over_the_caller_and_is_cleared_is_not_the_answer() -> None:
    phone = make_phone([b"\x10" * 480], lead_ms=0, gap_ms=20)
    ticks(phone, 1)
    phone.receive_text(media(b"\x40" * 160))  # the agent starts talking over the caller
    ticks(phone, 1)
    phone.receive_text(CLEAR)  # ... and yields
    ticks(phone, 1)  # the utterance ends with tick 2
    phone.receive_text(media(b"\x50" * 160))  # the real answer
    ticks(phone, 1)
    report = phone.report()
    assert report.utterances == [UtteranceReport(start_ms=0, end_ms=60, first_reply_ms=60)]
    assert report.barge_ins == 1


def test_reply_timeout_moves_on_to_the_next_utterance() -> None:
    phone = make_phone([b"\x10" * 160, b"\x20" * 160], lead_ms=0, reply_timeout_ms=60)
    sent = ticks(phone, 5)
    # Utterance on tick 0 ends at 20 ms; no reply by 80 ms, so the next one starts on tick 4.
    assert [inbound_payload(m) for m in sent] == [b"\x10" * 160] + [SILENCE] * 3 + [b"\x20" * 160]


def test_max_duration_hangs_up_even_mid_utterance() -> None:
    phone = make_phone([b"\x10" * 1600], lead_ms=0, max_duration_s=0.1)
    phone.connect({})
    sent = ticks(phone, 6)
    assert [m["event"] for m in sent] == ["media"] * 5 + ["stop"]
    assert sent[-1] == {
        "event": "stop",
        "sequenceNumber": "7",
        "streamSid": STREAM_SID,
        "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID},
    }
    assert phone.finished
    assert phone.tick() == []
    report = phone.report()
    assert report.ended_by == "max duration"
    assert report.utterances == [UtteranceReport(start_ms=0, end_ms=100, first_reply_ms=None)]


def test_no_utterances_hangs_up_after_the_lead() -> None:
    phone = make_phone([], lead_ms=40)
    assert tick_until_stop(phone) == 2


def test_server_hang_up_ends_the_call_without_a_stop() -> None:
    phone = make_phone([b"\x10" * 160])
    ticks(phone, 3)
    phone.server_hung_up()
    assert phone.finished
    assert phone.tick() == []
    assert phone.receive_text(mark("late")) == []
    assert phone.report().ended_by == "server hung up"


# -- what Twilio would reject ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"event": "playAudio", "streamSid": STREAM_SID}), "unknown event 'playAudio'"),
        (json.dumps({"streamSid": STREAM_SID}), "unknown event None"),
        (media(b"\x00", stream_sid="MZwrong"), "streamSid 'MZwrong'"),
        (json.dumps({"event": "media", "streamSid": STREAM_SID}), "without a payload"),
        (
            json.dumps({"event": "media", "streamSid": STREAM_SID, "media": {"payload": "**"}}),
            "not base64",
        ),
        (json.dumps({"event": "mark", "streamSid": STREAM_SID, "mark": {}}), "without a name"),
    ],
)
def test_malformed_server_messages_become_protocol_errors(text: str, fragment: str) -> None:
    phone = make_phone([])
    assert phone.receive_text(text) == []
    errors = phone.report().protocol_errors
    assert len(errors) == 1
    assert fragment in errors[0]
    assert phone.report().media_received == []


def test_binary_frames_are_recorded_not_played() -> None:
    phone = make_phone([], lead_ms=10_000)
    phone.receive_binary(b"\x30" * 160)
    ticks(phone, 1)
    report = phone.report()
    assert report.protocol_errors == ["at 0 ms: binary frame of 160 bytes (Twilio warning 31950)"]
    assert report.heard == ulaw_to_pcm16(SILENCE)


# -- TwiML and the voice webhook -------------------------------------------------------------------


def test_parse_stream_twiml_reads_url_and_parameters() -> None:
    stream = parse_stream_twiml(
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://h/twilio/stream"><Parameter name="agent" value="acme-support"/>'
        '<Parameter name="token" value="a&amp;b"/></Stream></Connect></Response>'
    )
    assert stream.url == "wss://h/twilio/stream"
    assert stream.parameters == {"agent": "acme-support", "token": "a&b"}
    assert stream.problems == ()


def test_parse_stream_twiml_reports_what_twilio_would_refuse() -> None:
    stream = parse_stream_twiml(
        '<Response><Connect><Stream url="ws://h/s?x=1"/></Connect></Response>'
    )
    assert stream.url == "ws://h/s?x=1"
    assert len(stream.problems) == 1
    assert "query string" in stream.problems[0]


@pytest.mark.parametrize(
    ("twiml", "fragment"),
    [
        ("<Response><Say>hello</Say></Response>", "no <Response><Connect><Stream>"),
        ("<Response><Connect><Stream/></Connect></Response>", "no url"),
        ('<Response><Connect><Stream url="https://h/s"/></Connect></Response>', "ws://"),
        ('<Other><Connect><Stream url="wss://h/s"/></Connect></Other>', "no <Response>"),
        ("<Response>", "invalid XML"),
        ("", "invalid XML"),
    ],
)
def test_parse_stream_twiml_rejects_twiml_without_a_stream(twiml: str, fragment: str) -> None:
    with pytest.raises(TelephonyError, match=fragment):
        parse_stream_twiml(twiml)


def test_voice_webhook_params_are_twilios_inbound_fields() -> None:
    params = voice_webhook_params(
        call_sid=CALL_SID, account_sid=ACCOUNT_SID, from_number="+1555", to_number="+1666"
    )
    assert params == {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": CALL_SID,
        "CallStatus": "ringing",
        "Called": "+1666",
        "Caller": "+1555",
        "Direction": "inbound",
        "From": "+1555",
        "To": "+1666",
    }


def test_new_sid_is_twilio_shaped() -> None:
    sid = new_sid("CA")
    assert len(sid) == 34
    assert sid.startswith("CA")
    int(sid[2:], 16)
    assert new_sid("CA") != sid


# -- options, caller audio, report -----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"speed": 0},
        {"speed": float("nan")},
        {"max_duration_s": 0},
        {"lead_ms": -1},
        {"gap_ms": -1},
        {"reply_timeout_ms": -1},
        {"barge_in_ms": -1},
    ],
)
def test_options_are_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        CarrierOptions(**bad)


@pytest.mark.parametrize("name", BUNDLED_CALLER_CLIPS)
def test_bundled_clips_load_as_8k_pcm(name: str) -> None:
    pcm = load_caller_audio(name)
    assert len(pcm) > 8000  # more than half a second
    assert len(pcm) % 2 == 0


def _write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())


def test_a_wav_at_another_rate_is_resampled_to_8k(tmp_path: Path) -> None:
    path = tmp_path / "caller.wav"
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype("<i2")
    _write_wav(path, tone, 16000)
    pcm = load_caller_audio(str(path))
    assert len(pcm) == 8000 * 2  # one second at 8 kHz


def test_an_8k_wav_is_returned_as_is(tmp_path: Path) -> None:
    path = tmp_path / "caller.wav"
    samples = np.arange(800, dtype="<i2")
    _write_wav(path, samples, 8000)
    assert load_caller_audio(str(path)) == samples.tobytes()


def test_unknown_caller_audio_names_the_bundled_clips() -> None:
    with pytest.raises(FileNotFoundError, match="order-status, interrupt, goodbye, transfer"):
        load_caller_audio("no-such-clip")


def test_stereo_caller_audio_is_an_audio_error(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    _write_wav(path, np.zeros(1600, dtype="<i2"), 8000, channels=2)
    with pytest.raises(AudioError):
        load_caller_audio(str(path))


def test_summary_reports_latencies_barge_ins_audio_and_ending() -> None:
    tone = ulaw_to_pcm16(b"\x30" * 160)
    report = CallReport(
        call_sid=CALL_SID,
        stream_sid=STREAM_SID,
        heard=ulaw_to_pcm16(SILENCE) * 3 + tone * 50,
        utterances=[
            UtteranceReport(start_ms=500, end_ms=1500, first_reply_ms=2140),
            UtteranceReport(start_ms=3000, end_ms=3500, first_reply_ms=None),
        ],
        media_received=[(70, 8000)],
        clears=[90],
        arrivals=[(70, "media"), (90, "clear")],
        marks_echoed=[("a", True), ("b", False)],
        barge_ins=1,
        protocol_errors=["at 0 ms: binary frame of 1 bytes (Twilio warning 31950)"],
        ended_by="caller hung up",
    )
    assert report.reply_latencies_ms() == [640, None]
    summary = report.summary()
    assert CALL_SID in summary
    assert "caller hung up after 1.1 s" in summary
    assert "utterance 1 (0.50-1.50 s): reply audio 640 ms after its end" in summary
    assert "utterance 2 (3.00-3.50 s): no reply" in summary
    assert "barge-ins: 1, clears: 1, marks echoed: 2 (1 by a clear)" in summary
    assert "heard 1.0 s of agent audio" in summary
    assert "binary frame" in summary


def test_keypad_presses_go_out_as_dtmf_events_at_their_audio_time() -> None:
    phone = make_phone([b"\x00" * 1600], lead_ms=0, keypad=((40, "4"), (40, "2"), (100, "#")))
    phone.connect({})
    digits = [
        (tick, m["dtmf"]["digit"])
        for tick in range(8)
        for m in phone.tick()
        if m["event"] == "dtmf"
    ]
    assert digits == [(2, "4"), (2, "2"), (5, "#")]


def test_a_lingering_caller_stays_silent_on_the_line_before_hanging_up() -> None:
    phone = make_phone([b"\x00" * 160], lead_ms=0, gap_ms=0, reply_timeout_ms=20, linger_ms=200)
    phone.connect({})
    sent = ticks(phone, 14)
    events = [m["event"] for m in sent]
    assert "stop" not in events[:-1]
    # One spoken frame, one tick waiting for a reply, ten silent ticks, then the hang-up.
    assert events.count("media") == 12
    assert events[-1] == "stop"
    assert all(inbound_payload(m) == SILENCE for m in sent[1:] if m["event"] == "media")


# -- the call ended or moved through the REST API --------------------------------------------------


def test_a_rest_hang_up_sends_stop_and_ends_the_call() -> None:
    phone = make_phone([b"\x10" * 1600], lead_ms=0)
    phone.connect({})
    ticks(phone, 3)
    [stop] = phone.hang_up_via_rest()
    assert stop == {
        "event": "stop",
        "sequenceNumber": stop["sequenceNumber"],
        "streamSid": STREAM_SID,
        "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID},
    }
    assert phone.finished
    assert phone.tick() == []
    assert phone.hang_up_via_rest() == []  # a second update finds the call over
    report = phone.report()
    assert report.ended_by == "hung up via REST"
    assert report.transferred_to is None


def test_a_rest_dial_ends_the_stream_and_records_the_number() -> None:
    phone = make_phone([b"\x10" * 160], lead_ms=0)
    phone.connect({})
    ticks(phone, 2)
    [stop] = phone.redirect_via_rest("+15555550123")
    assert stop["event"] == "stop"
    report = phone.report()
    assert report.ended_by == "transferred via REST"
    assert report.transferred_to == "+15555550123"
    summary = report.summary()
    assert "transferred via REST after 0.0 s" in summary
    assert "transferred to +15555550123" in summary


def test_other_rest_twiml_is_a_redirect_without_a_number() -> None:
    phone = make_phone([])
    phone.connect({})
    assert [m["event"] for m in phone.redirect_via_rest(None)] == ["stop"]
    report = phone.report()
    assert report.ended_by == "redirected via REST"
    assert report.transferred_to is None
    assert "transferred to" not in report.summary()


def test_a_call_that_already_ended_ignores_rest_updates() -> None:
    phone = make_phone([])
    phone.server_hung_up()
    assert phone.hang_up_via_rest() == []
    assert phone.redirect_via_rest("+15555550123") == []
    assert phone.report().ended_by == "server hung up"
    assert phone.report().transferred_to is None


@pytest.mark.parametrize(
    ("twiml", "followed"),
    [
        (
            "<Response><Dial>+15555550123</Dial></Response>",
            UpdateTwiml((), "Dial", "+15555550123"),
        ),
        (
            "<Response><Dial> <Number>+15555550124</Number></Dial></Response>",
            UpdateTwiml((), "Dial", "+15555550124"),
        ),
        ("<Response><Hangup/></Response>", UpdateTwiml((), "Hangup")),
        (
            "<Response><Say>Bye</Say><Hangup/><Say>never</Say></Response>",
            UpdateTwiml(("Bye",), "Hangup"),
        ),
        (
            "<Response><Say>Hold on.</Say><Pause/><Dial>+15555550125</Dial></Response>",
            UpdateTwiml(("Hold on.",), "Dial", "+15555550125"),
        ),
        # The document runs out: Twilio ends the call.
        (
            "<Response><Say>Sorry,\n  goodbye.</Say></Response>",
            UpdateTwiml(("Sorry, goodbye.",), "Hangup"),
        ),
        (
            "<Response><Say>One</Say><Redirect>/next</Redirect></Response>",
            UpdateTwiml(("One",), "Redirect"),
        ),
        # A warm transfer's join: the call goes into a conference, not to a number.
        (
            '<Response><Say>Ada</Say><Dial><Conference beep="false">room-1</Conference>'
            "</Dial></Response>",
            UpdateTwiml(("Ada",), "Dial", None, "room-1"),
        ),
    ],
)
def test_rest_twiml_is_followed_verb_by_verb(twiml: str, followed: UpdateTwiml) -> None:
    assert read_update_twiml(twiml) == followed


def test_what_twilio_said_is_in_the_report() -> None:
    phone = make_phone([])
    phone.connect({})
    phone.said_by_twilio("Sorry, one moment.")
    [stop] = phone.redirect_via_rest("+15555550123")
    assert stop["event"] == "stop"
    phone.said_by_twilio("too late: the call has moved on")
    report = phone.report()
    assert report.twilio_said == ("Sorry, one moment.",)
    assert "Twilio said: 'Sorry, one moment.'" in report.summary()


def test_a_call_moved_into_a_conference_stops_its_stream_and_says_where_it_went() -> None:
    phone = make_phone([])
    phone.connect({})
    [stop] = phone.join_conference_via_rest("transfer-CA1")
    assert stop["event"] == "stop"
    assert phone.join_conference_via_rest("again") == []
    report = phone.report()
    assert (report.ended_by, report.conference) == ("joined a conference via REST", "transfer-CA1")


def test_keys_played_to_a_listening_phone_are_heard_in_order() -> None:
    phone = make_phone([], detect_keys=True, lead_ms=0, linger_ms=2000)
    phone.connect({})
    phone.receive_text(media(pcm16_to_ulaw(tones("9*"))))
    for _ in range(40):
        phone.tick()
    assert phone.report().keys_heard == "9*"


@pytest.mark.parametrize("twiml", ["<Response><Dial>", "<Dial>+1</Dial>", "<Response/>"])
def test_rest_twiml_that_twilio_could_not_parse_is_refused(twiml: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the message depends on the parser)
        read_update_twiml(twiml)


# -- a stream lost while the call is up, and the next one ------------------------------------------

SECOND_STREAM = "MZ" + "6" * 32


def test_between_streams_the_caller_hears_silence_and_nothing_is_sent() -> None:
    phone = make_phone([b"\x10" * 1600], lead_ms=0, max_duration_s=60)
    phone.connect({})
    ticks(phone, 2)
    phone.receive_text(media(b"\x20" * 320))
    phone.receive_text(mark("m1"))
    phone.stream_lost()
    assert not phone.streaming
    assert not phone.finished
    assert ticks(phone, 3) == []  # no socket: no frames, and the pending mark is never echoed
    report = phone.report()
    assert report.heard[-3 * 320 :] == ulaw_to_pcm16(SILENCE * 3)  # the buffer went with it
    assert report.marks_echoed == []


def test_the_next_stream_starts_its_own_numbering_and_the_report_has_both() -> None:
    phone = make_phone([b"\x10" * 1600], lead_ms=0, max_duration_s=60)
    phone.connect({"token": "a"})
    ticks(phone, 4)
    phone.stream_lost()
    ticks(phone, 5)  # the gap: 100 ms
    connected, start = phone.new_stream(SECOND_STREAM, {"token": "b"})
    assert connected["event"] == "connected"
    assert start["sequenceNumber"] == "1"
    assert start["streamSid"] == start["start"]["streamSid"] == SECOND_STREAM
    assert start["start"]["callSid"] == CALL_SID
    assert start["start"]["customParameters"] == {"token": "b"}
    (frame,) = phone.tick()
    assert frame["sequenceNumber"] == "2"
    assert frame["streamSid"] == SECOND_STREAM
    assert (frame["media"]["chunk"], frame["media"]["timestamp"]) == ("1", "0")
    report = phone.report()
    assert report.stream_sids == [STREAM_SID, SECOND_STREAM]
    assert report.stream_gaps == [(4, 9)]
    # What the caller said during the gap reached no one: the next frame is 180 ms into the clip.
    assert inbound_payload(frame) == b"\x10" * 160


def test_a_caller_who_hangs_up_between_streams_ends_the_call() -> None:
    phone = make_phone([], lead_ms=0, max_duration_s=60)
    phone.connect({})
    phone.stream_lost()
    tick_count = 0
    while not phone.finished and tick_count < 100:
        phone.tick()
        tick_count += 1
    assert phone.finished
    assert phone.new_stream(SECOND_STREAM, {}) == []
    assert phone.report().ended_by == "caller hung up"


def test_connect_action_is_read_and_resolved_and_hangup_means_no_stream() -> None:
    twiml = (
        '<Response><Connect action="/twilio/continue"><Stream url="wss://h/twilio/stream">'
        '<Parameter name="token" value="t"/></Stream></Connect></Response>'
    )
    stream = parse_stream_twiml(twiml, "https://h/twilio/voice")
    assert stream.action == "https://h/twilio/continue"
    assert parse_stream_twiml(twiml.replace(' action="/twilio/continue"', "")).action is None
    assert parse_next_twiml("<Response><Hangup/></Response>") is None
    assert parse_next_twiml("<Response/>") is None
    with pytest.raises(TelephonyError, match="no <Response>"):
        parse_next_twiml("<Hangup/>")
