"""The Live API emulator's sans-I/O core, fed literal client frames and audio; no event loop.

Time is whatever the test says it is: ``now_ms`` goes into :meth:`LiveEmulatorCore.receive` and
:meth:`LiveEmulatorCore.poll`, and the VAD counts samples.
"""

from __future__ import annotations

import base64
import json
import math
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from agent.errors import ConfigError
from agent.sim.live.core import Clip, LiveEmulatorCore
from agent.sim.live.options import (
    AbortConnection,
    AnswerClips,
    CloseConnection,
    EmulatorOptions,
    Fault,
    HistoryEntry,
    SendMessage,
    Stall,
    ToolCancellationRecord,
    ToolResponseRecord,
)
from agent.sim.live.resumption import ResumptionStore
from agent.sim.live.scenario import (
    Scenario,
    ScriptedCall,
    Speech,
    Step,
    bundled_scenarios,
    load_scenario,
    render_template,
    scenario_from_data,
)
from agent.sim.live.server import create_emulator_app, load_bundled_clips
from agent.sim.live.vad import EmulatorVad, SpeechEnded, SpeechStarted, VadSettings
from agent.sim.live.wire import (
    DEADLINE_EXPIRED,
    EXPLICIT_ACTIVITY_WITH_VAD,
    INTERNAL_ERROR,
    INVALID_ARGUMENT,
    camel_case,
    decode_base64,
    duration_string,
    normalise_keys,
    pcm_rate,
    snake_case,
    truncate_reason,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
RATE = 16000
Samples = npt.NDArray[np.int16]

# Tiny clips keep the schedules short enough to reason about: 200 ms = 5 chunks of 40 ms.
GREETING = Clip(b"\x01\x00" * 4800, 24000, "Hello there friend")
REPLY = Clip(b"\x02\x00" * 4800, 24000, "Your order shipped")
CLIPS = AnswerClips(greeting=GREETING, reply=REPLY)

NO_LIMITS: dict[str, Any] = {"connection_lifetime_s": math.inf, "session_limit_s": math.inf}
SETUP = '{"setup":{"model":"models/gemini-2.5-flash-native-audio-preview-12-2025"}}'
# What google-genai 3.4 sends for a typical config: camelCase outside, snake_case inside.
SDK_SETUP = (
    '{"setup": {"model": "models/x", "generationConfig": {"responseModalities": ["AUDIO"], '
    '"speechConfig": {"voice_config": {"prebuilt_voice_config": {"voice_name": "Puck"}}}}, '
    '"systemInstruction": {"parts": [{"text": "hi"}], "role": "user"}, "sessionResumption": {}, '
    '"inputAudioTranscription": {}, "outputAudioTranscription": {}, "realtimeInputConfig": '
    '{"automatic_activity_detection": {"disabled": false, "start_of_speech_sensitivity": '
    '"START_SENSITIVITY_HIGH", "silence_duration_ms": 300}, "activity_handling": '
    '"NO_INTERRUPTION"}, "contextWindowCompression": {"sliding_window": {}}}}'
)


def tone(ms: float, dbfs: float = -20.0, rate: int = RATE, hz: float = 440.0) -> Samples:
    """A sine at ``dbfs`` RMS."""
    t = np.arange(int(rate * ms / 1000)) / rate
    amplitude = 32768 * 10 ** (dbfs / 20) * 2**0.5
    samples: Samples = (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    return samples


def silence(ms: float, rate: int = RATE) -> Samples:
    return np.zeros(int(rate * ms / 1000), dtype=np.int16)


def noise(ms: float, dbfs: float, rate: int = RATE, seed: int = 7) -> Samples:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(rate * ms / 1000)) * 32768 * 10 ** (dbfs / 20)).astype(np.int16)


def fixture(name: str) -> tuple[Samples, int]:
    with wave.open(str(FIXTURES / name), "rb") as wav:
        samples: Samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        return samples, wav.getframerate()


def caller_speech_16k(name: str = "caller-order-status.wav") -> Samples:
    """An 8 kHz telephone fixture upsampled to 16 kHz by sample repetition (fine for a VAD)."""
    samples, rate = fixture(name)
    assert rate == 8000
    return np.repeat(samples, 2)


def audio_frame(samples: Samples, rate: int = RATE, *, urlsafe: bool = False) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    data = encode(samples.astype("<i2").tobytes()).decode()
    return json.dumps(
        {"realtimeInput": {"audio": {"data": data, "mimeType": f"audio/pcm;rate={rate}"}}}
    )


def new_core(setup: str = SETUP, **options: Any) -> LiveEmulatorCore:
    """A core past its setup. Connection and session limits are off unless a test sets them, so
    ``next_deadline()`` speaks only of answers."""
    options.setdefault("connection_lifetime_s", math.inf)
    options.setdefault("session_limit_s", math.inf)
    core = LiveEmulatorCore(EmulatorOptions(**options), CLIPS)
    core.receive(setup, 0.0)
    out = messages(core)
    assert out[0] == {"setupComplete": {}}
    assert all("sessionResumptionUpdate" in message for message in out[1:]), out
    return core


def setup_with(**fields: Any) -> str:
    return json.dumps({"setup": {"model": "models/m", **fields}})


def messages(core: LiveEmulatorCore) -> list[dict[str, Any]]:
    """What the core has to send, asserting it is only messages (no close)."""
    out = core.data_to_send()
    assert all(isinstance(item, SendMessage) for item in out), out
    return [item.message for item in out if isinstance(item, SendMessage)]


def close_of(core: LiveEmulatorCore) -> CloseConnection:
    out = core.data_to_send()
    assert out, "nothing to send"
    assert isinstance(out[-1], CloseConnection), out
    return out[-1]


def stream(
    core: LiveEmulatorCore, samples: Samples, now_ms: float, chunk_ms: int = 20, rate: int = RATE
) -> list[dict[str, Any]]:
    """Send ``samples`` in ``chunk_ms`` chunks, all at ``now_ms``; return what came back."""
    step = rate * chunk_ms // 1000
    out: list[dict[str, Any]] = []
    for start in range(0, len(samples), step):
        core.receive(audio_frame(samples[start : start + step], rate), now_ms)
        out += messages(core)
    return out


def run_answer(core: LiveEmulatorCore) -> list[tuple[float, dict[str, Any]]]:
    """Poll at each deadline until the answer is done; each message with the time it was due."""
    timeline: list[tuple[float, dict[str, Any]]] = []
    while (deadline := core.next_deadline()) is not None:
        core.poll(deadline)
        timeline += [(deadline, message) for message in messages(core)]
    return timeline


def is_audio(message: dict[str, Any]) -> bool:
    return "modelTurn" in message.get("serverContent", {})


def audio_of(message: dict[str, Any]) -> bytes:
    part = message["serverContent"]["modelTurn"]["parts"][0]["inlineData"]
    assert part["mimeType"] == "audio/pcm;rate=24000"
    return base64.b64decode(part["data"])


def vad_events(
    samples: Samples, settings: VadSettings | None = None, rate: int = RATE, chunk_ms: int = 20
) -> list[SpeechStarted | SpeechEnded]:
    vad = EmulatorVad(settings or VadSettings())
    step = max(1, rate * chunk_ms // 1000)
    events: list[SpeechStarted | SpeechEnded] = []
    for start in range(0, len(samples), step):
        events += vad.feed(samples[start : start + step], rate)
    return events


# ------------------------------------------------------------------------------------------
# Setup, keys and encodings
# ------------------------------------------------------------------------------------------


def test_setup_is_answered_with_setup_complete_and_recorded() -> None:
    core = new_core()
    assert core.record.setup == {"model": "models/gemini-2.5-flash-native-audio-preview-12-2025"}
    assert core.record.client_messages == ["setup"]


def test_sdk_setup_with_nested_snake_case_is_normalised_and_honoured() -> None:
    core = new_core(SDK_SETUP)
    setup = core.record.setup
    assert setup["generationConfig"]["speechConfig"] == {
        "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Puck"}}
    }
    assert setup["realtimeInputConfig"] == {
        "automaticActivityDetection": {
            "disabled": False,
            "startOfSpeechSensitivity": "START_SENSITIVITY_HIGH",
            "silenceDurationMs": 300,
        },
        "activityHandling": "NO_INTERRUPTION",
    }
    assert setup["contextWindowCompression"] == {"slidingWindow": {}}


def test_snake_case_top_level_keys_are_accepted() -> None:
    core = new_core('{"setup":{"model":"models/m","input_audio_transcription":{}}}')
    core.receive(
        '{"client_content":{"turns":[{"parts":[{"text":"Greet the caller"}]}],'
        '"turn_complete":true}}',
        0.0,
    )
    core.receive('{"realtime_input":{"audio_stream_end":true}}', 0.0)
    assert core.record.client_messages == ["setup", "clientContent", "realtimeInput.audioStreamEnd"]
    assert core.next_deadline() == 0.0  # the clientContent turn is being answered


def test_normalise_keys_leaves_user_data_alone() -> None:
    value = {
        "tool_response": {
            "function_responses": [
                {"id": "function-call-1", "response": {"order_id": "A17", "scheduling": "SILENT"}}
            ]
        },
        "function_declarations": [
            {"parameters": {"type": "OBJECT", "properties": {"order_id": {"max_length": 8}}}}
        ],
        "args": {"snake_key": 1},
    }
    assert normalise_keys(value) == {
        "toolResponse": {
            "functionResponses": [
                {"id": "function-call-1", "response": {"order_id": "A17", "scheduling": "SILENT"}}
            ]
        },
        "functionDeclarations": [
            {"parameters": {"type": "OBJECT", "properties": {"order_id": {"maxLength": 8}}}}
        ],
        "args": {"snake_key": 1},
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("realtime_input", "realtimeInput"),
        ("realtimeInput", "realtimeInput"),
        ("start_of_speech_sensitivity", "startOfSpeechSensitivity"),
        ("model", "model"),
    ],
)
def test_camel_case(name: str, expected: str) -> None:
    assert camel_case(name) == expected


@pytest.mark.parametrize("encoded", ["//79+w==", "__79-w==", "__79-w", "//79+w"])
def test_base64_in_both_alphabets_padded_or_not(encoded: str) -> None:
    assert decode_base64(encoded) == b"\xff\xfe\xfd\xfb"


def test_invalid_base64_is_rejected() -> None:
    with pytest.raises(ValueError, match="base64"):
        decode_base64("not base64!")


@pytest.mark.parametrize(
    ("mime", "rate"),
    [
        ("audio/pcm;rate=16000", 16000),
        ("audio/pcm; rate=8000", 8000),
        ("audio/pcm;rate=24000", 24000),
        ("audio/pcm", 16000),
        (None, 16000),
    ],
)
def test_pcm_rate_comes_from_the_mime_type(mime: str | None, rate: int) -> None:
    assert pcm_rate(mime) == rate


def test_url_safe_audio_from_the_sdk_is_counted() -> None:
    core = new_core()
    # Bytes whose standard base64 has "+" and "/", so URL-safe encoding differs.
    samples = np.frombuffer(b"\xfb\xff\xfe\xff" * 160, dtype="<i2")
    frame = audio_frame(samples, urlsafe=True)
    assert "-" in frame or "_" in frame
    core.receive(
        frame.replace('"mimeType"', '"mime_type"').replace("realtimeInput", "realtime_input"), 0
    )
    assert messages(core) == []
    assert core.record.audio_bytes_received == 640
    assert core.record.audio_chunks_received == 1
    assert core.record.client_messages == ["setup", "realtimeInput.audio"]


# ------------------------------------------------------------------------------------------
# Protocol errors become close frames
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        '{"realtimeInput":{"audioStreamEnd":true}}',
        '{"clientContent":{"turnComplete":true}}',
        "not json",
        "[1, 2]",
        '{"setup":"models/m"}',
        '{"setup":{}}',
    ],
)
def test_anything_but_a_valid_setup_first_closes_1007(first: str) -> None:
    core = LiveEmulatorCore(EmulatorOptions(), CLIPS)
    core.receive(first, 0)
    assert close_of(core) == CloseConnection(1007, INVALID_ARGUMENT)
    assert core.closed


def test_second_setup_closes_1007() -> None:
    core = new_core()
    core.receive(SETUP, 10)
    assert close_of(core) == CloseConnection(1007, INVALID_ARGUMENT)


def test_invalid_json_after_setup_closes_1007() -> None:
    core = new_core()
    core.receive(b"\xff\xfe{", 10)
    assert close_of(core) == CloseConnection(1007, INVALID_ARGUMENT)
    assert core.record.client_messages == ["setup", "<invalid>"]


def test_unknown_setup_field_is_named_in_the_close_reason() -> None:
    core = LiveEmulatorCore(EmulatorOptions(), CLIPS)
    core.receive('{"setup":{"model":"models/m","x":1}}', 0)
    assert close_of(core) == CloseConnection(
        1007, "Invalid JSON payload received. Unknown name \"x\" at 'setup': Cannot find field."
    )


def test_unknown_top_level_field_closes_1007() -> None:
    core = new_core()
    core.receive('{"toolCall":{}}', 0)
    assert close_of(core) == CloseConnection(
        1007, 'Invalid JSON payload received. Unknown name "toolCall": Cannot find field.'
    )


@pytest.mark.parametrize(
    ("model", "version", "reason"),
    [
        (
            "gemini-live",
            "v1beta",
            "models/gemini-live is not found for API version v1beta, "
            "or is not supported for bidiGenerateContent.",
        ),
        (
            "models/gemini-2.0-flash-live-001",
            "v1",
            "models/gemini-2.0-flash-live-001 is not found for API version v1, "
            "or is not supported for bidiGenerateContent.",
        ),
    ],
)
def test_unknown_model_closes_1008_naming_model_and_version(
    model: str, version: str, reason: str
) -> None:
    core = LiveEmulatorCore(EmulatorOptions(), CLIPS, api_version=version)
    core.receive(json.dumps({"setup": {"model": model}}), 0)
    assert close_of(core) == CloseConnection(1008, reason)


def test_with_a_list_of_models_any_other_model_is_refused_like_an_unknown_one() -> None:
    served = EmulatorOptions(models=frozenset({"models/gemini-3.8-live"}))
    assert served.models == frozenset({"gemini-3.8-live"})
    core = LiveEmulatorCore(served, CLIPS)
    core.receive(json.dumps({"setup": {"model": "models/gemini-3.8-live"}}), 0)
    assert messages(core)[0] == {"setupComplete": {}}
    other = LiveEmulatorCore(served, CLIPS)
    other.receive(json.dumps({"setup": {"model": "models/gemini-9-live"}}), 0)
    assert close_of(other) == CloseConnection(
        1008,
        "models/gemini-9-live is not found for API version v1beta, "
        "or is not supported for bidiGenerateContent.",
    )


def test_close_reason_fits_a_close_frame() -> None:
    core = LiveEmulatorCore(EmulatorOptions(), CLIPS)
    core.receive(json.dumps({"setup": {"model": "é" * 100}}), 0)
    close = close_of(core)
    assert close.code == 1008
    assert len(close.reason.encode()) <= 123
    assert close.reason.startswith("models/éé")


def test_invalid_audio_base64_closes_1007() -> None:
    core = new_core()
    core.receive('{"realtimeInput":{"audio":{"data":"@@@","mimeType":"audio/pcm;rate=16000"}}}', 0)
    assert close_of(core) == CloseConnection(1007, INVALID_ARGUMENT)


def test_nothing_is_sent_after_a_close() -> None:
    core = new_core()
    core.receive('{"clientContent":{"turnComplete":true}}', 0)
    core.receive("garbage", 0)
    assert close_of(core).code == 1007
    core.poll(10_000)
    core.receive('{"clientContent":{"turnComplete":true}}', 0)
    assert core.data_to_send() == []
    assert core.next_deadline() is None


# ------------------------------------------------------------------------------------------
# Voice activity detection
# ------------------------------------------------------------------------------------------


def test_vad_finds_a_tone_between_silences_on_audio_time() -> None:
    events = vad_events(np.concatenate([silence(300), tone(400), silence(700)]))
    assert events == [SpeechStarted(300.0), SpeechEnded(700.0, 400.0)]


def test_vad_ignores_digital_silence_and_quiet_noise() -> None:
    assert vad_events(silence(3000)) == []
    assert vad_events(noise(3000, -55)) == []
    assert vad_events(noise(3000, -45)) == []


def test_vad_needs_prefix_padding_of_speech_to_start() -> None:
    blip = np.concatenate([silence(100), tone(10), silence(600)])
    assert vad_events(blip) == []  # 10 ms < the default 20 ms
    assert len(vad_events(blip, VadSettings(prefix_padding_ms=10))) == 2
    word = np.concatenate([silence(100), tone(150), silence(600)])
    assert vad_events(word, VadSettings(prefix_padding_ms=200)) == []


def test_vad_silence_duration_decides_when_a_turn_ends() -> None:
    two_words = np.concatenate([tone(300), silence(400), tone(300), silence(1000)])
    # The default 500 ms bridges the 400 ms pause: one turn.
    assert vad_events(two_words) == [SpeechStarted(0.0), SpeechEnded(1000.0, 1000.0)]
    # 300 ms does not: two turns.
    short = vad_events(two_words, VadSettings(silence_duration_ms=300))
    assert short == [
        SpeechStarted(0.0),
        SpeechEnded(300.0, 300.0),
        SpeechStarted(700.0),
        SpeechEnded(1000.0, 300.0),
    ]


def test_start_sensitivity_low_needs_louder_speech() -> None:
    quiet_speech = np.concatenate([silence(200), tone(500, dbfs=-36), silence(800)])
    assert len(vad_events(quiet_speech, VadSettings(start_sensitivity="HIGH"))) == 2
    assert vad_events(quiet_speech, VadSettings(start_sensitivity="LOW")) == []


def test_end_sensitivity_high_ends_on_a_quieter_tail() -> None:
    # A word followed by a 600 ms murmur 5 dB under the start threshold, on a quiet line.
    tail = np.concatenate([silence(200), tone(300), tone(600, dbfs=-45), silence(800)])
    assert vad_events(tail, VadSettings(end_sensitivity="HIGH")) == [
        SpeechStarted(200.0),
        SpeechEnded(500.0, 300.0),
    ]
    assert vad_events(tail, VadSettings(end_sensitivity="LOW")) == [
        SpeechStarted(200.0),
        SpeechEnded(1100.0, 900.0),
    ]


def test_vad_clock_follows_the_sample_rate() -> None:
    at_8k = np.concatenate([silence(300, 8000), tone(400, rate=8000), silence(700, 8000)])
    assert vad_events(at_8k, rate=8000) == [SpeechStarted(300.0), SpeechEnded(700.0, 400.0)]


@pytest.mark.parametrize(
    "name",
    [
        "caller-order-status.wav",
        "caller-librivox-0870.wav",
        "caller-cards-004.wav",
        "caller-goforward.wav",
        "caller-numbers.wav",
    ],
)
def test_vad_hears_one_turn_in_each_telephone_fixture(name: str) -> None:
    speech = caller_speech_16k(name)
    padded = np.concatenate([silence(500), speech, silence(1000)])
    events = vad_events(padded)
    assert [type(event) for event in events] == [SpeechStarted, SpeechEnded]
    started, ended = events
    assert isinstance(started, SpeechStarted)
    assert isinstance(ended, SpeechEnded)
    assert 500 <= started.at_ms < 1100
    assert ended.at_ms <= 500 + len(speech) / RATE * 1000
    assert ended.duration_ms > 0.5 * len(speech) / RATE * 1000


def test_vad_on_a_fixture_with_line_noise_still_ends_the_turn() -> None:
    speech = caller_speech_16k("caller-librivox-0880.wav")
    line = noise(len(speech) / RATE * 1000 + 1500, -45)
    mixed = line.copy()
    mixed[: len(speech)] += speech
    assert [type(event) for event in vad_events(mixed)] == [SpeechStarted, SpeechEnded]


def test_vad_works_with_odd_chunk_sizes() -> None:
    samples = np.concatenate([silence(300), tone(400), silence(700)])
    assert vad_events(samples, chunk_ms=3) == vad_events(samples, chunk_ms=100)


# ------------------------------------------------------------------------------------------
# Turns and answers
# ------------------------------------------------------------------------------------------


def test_caller_turn_is_answered_with_paced_reply_and_a_multi_field_final_frame() -> None:
    core = new_core(
        setup_with(inputAudioTranscription={}, outputAudioTranscription={}), think_ms=300
    )
    out = stream(core, np.concatenate([tone(1000), silence(600)]), now_ms=5000)
    assert out == [{"serverContent": {"inputTranscription": {"text": "[caller speech 1.0 s]"}}}]
    assert core.record.caller_turns == 1
    assert core.next_deadline() == 5300.0  # think_ms after the turn ended

    timeline = run_answer(core)
    audio = [(at, m) for at, m in timeline if is_audio(m)]
    assert [at for at, _ in audio] == [5300.0, 5340.0, 5380.0, 5420.0, 5460.0]
    assert b"".join(audio_of(m) for _, m in audio) == REPLY.pcm
    assert audio[0][1]["serverContent"]["modelTurn"]["role"] == "model"
    words = [
        m["serverContent"]["outputTranscription"]["text"]
        for _, m in timeline
        if "outputTranscription" in m.get("serverContent", {})
    ]
    assert "".join(words) == "Your order shipped"
    # The last word, then generationComplete, then ONE frame with turnComplete and usageMetadata.
    tail = [m for _, m in timeline[-3:]]
    assert tail[0] == {"serverContent": {"outputTranscription": {"text": " shipped"}}}
    assert tail[1] == {"serverContent": {"generationComplete": True}}
    assert tail[2]["serverContent"] == {"turnComplete": True}
    usage = tail[2]["usageMetadata"]
    assert usage["promptTokenCount"] == 25  # one second of caller audio
    assert usage["responseTokenCount"] == 5  # 200 ms of audio
    assert usage["totalTokenCount"] == 30
    assert usage["promptTokensDetails"] == [{"modality": "AUDIO", "tokenCount": 25}]
    assert usage["responseTokensDetails"] == [{"modality": "AUDIO", "tokenCount": 5}]
    # The first word rides with the first chunk.
    assert timeline[1] == (5300.0, {"serverContent": {"outputTranscription": {"text": "Your"}}})
    assert core.record.answers_started == core.record.answers_completed == 1


def test_without_transcription_config_no_transcriptions_are_sent() -> None:
    core = new_core()
    stream(core, np.concatenate([tone(500), silence(600)]), now_ms=0)
    kinds = [next(iter(m["serverContent"])) for _, m in run_answer(core)]
    assert set(kinds) == {"modelTurn", "generationComplete", "turnComplete"}


def test_poll_catches_up_when_the_loop_is_late() -> None:
    core = new_core()
    core.receive('{"clientContent":{"turnComplete":true}}', 0)
    core.poll(10_000)  # long after the whole answer was due
    out = messages(core)
    assert sum(map(is_audio, out)) == 5
    assert out[-1]["serverContent"] == {"turnComplete": True}
    assert core.next_deadline() is None


def test_client_content_gets_the_greeting_and_text_gets_the_reply() -> None:
    core = new_core()
    core.receive(
        '{"clientContent":{"turns":[{"role":"user","parts":[{"text":"Greet the caller."}]}],'
        '"turnComplete":true}}',
        0,
    )
    greeting = b"".join(audio_of(m) for _, m in run_answer(core) if is_audio(m))
    assert greeting == GREETING.pcm
    core.receive('{"realtimeInput":{"text":"Where is my order?"}}', 1000)
    reply = b"".join(audio_of(m) for _, m in run_answer(core) if is_audio(m))
    assert reply == REPLY.pcm
    assert core.record.caller_turns == 1  # the greeting request is not the caller's


def test_client_content_without_turn_complete_is_context_only() -> None:
    core = new_core()
    core.receive('{"clientContent":{"turns":[{"parts":[{"text":"Earlier: hello"}]}]}}', 0)
    assert core.next_deadline() is None
    core.receive('{"clientContent":{"turnComplete":true}}', 0)
    usage = run_answer(core)[-1][1]["usageMetadata"]
    assert usage["promptTokensDetails"] == [{"modality": "TEXT", "tokenCount": 4}]


def test_prompt_tokens_grow_with_the_conversation() -> None:
    setup = setup_with(systemInstruction={"parts": [{"text": "You are a phone agent." * 4}]})
    core = new_core(setup)
    prompts = []
    for turn in range(3):
        stream(core, np.concatenate([tone(1000), silence(600)]), now_ms=turn * 10_000)
        prompts.append(run_answer(core)[-1][1]["usageMetadata"]["promptTokenCount"])
    assert prompts[0] == 22 + 25  # system instruction + one second of caller audio
    assert prompts[1] == prompts[0] + 5 + 25  # + the model's answer + the next caller turn
    assert prompts[2] == prompts[1] + 5 + 25


def test_bundled_clips_are_24k_speech_with_their_transcripts() -> None:
    clips = load_bundled_clips()
    assert clips.greeting.rate == clips.reply.rate == 24000
    assert 3000 < clips.greeting.duration_ms < 6000
    assert clips.reply.transcript.startswith("Thanks for calling Acme.")
    core = LiveEmulatorCore(EmulatorOptions(chunk_ms=100, **NO_LIMITS), clips)
    core.receive('{"setup":{"model":"models/m","outputAudioTranscription":{}}}', 0)
    core.receive('{"clientContent":{"turnComplete":true}}', 0)
    timeline = run_answer(core)
    words = "".join(
        m["serverContent"]["outputTranscription"]["text"]
        for _, m in timeline
        if "outputTranscription" in m.get("serverContent", {})
    )
    assert words == clips.greeting.transcript
    assert sum(map(is_audio, (m for _, m in timeline))) == -(-len(clips.greeting.pcm) // 4800)


# ------------------------------------------------------------------------------------------
# Barge-in
# ------------------------------------------------------------------------------------------


def answering_core(setup: str = SETUP) -> LiveEmulatorCore:
    """A core that is 2 chunks into answering a clientContent turn at t=0."""
    core = new_core(setup)
    core.receive('{"clientContent":{"turnComplete":true}}', 0)
    core.poll(40)
    assert sum(map(is_audio, messages(core))) == 2
    return core


def test_caller_speech_interrupts_the_answer_at_once() -> None:
    core = answering_core()
    out = stream(core, tone(100), now_ms=50)
    assert out == [
        {"serverContent": {"interrupted": True}},
        {"serverContent": {"turnComplete": True}},
    ]
    assert core.next_deadline() is None  # not one more chunk of that answer
    core.poll(10_000)
    assert messages(core) == []
    assert core.record.interruptions == 1
    assert core.record.answers_completed == 0
    # The interrupting speech is a turn of its own, answered when it ends.
    stream(core, silence(600), now_ms=60)
    assert core.record.caller_turns == 1
    assert core.next_deadline() == 60


def test_interrupted_answer_counts_only_the_audio_sent_in_later_prompts() -> None:
    core = answering_core()
    stream(core, np.concatenate([tone(1000), silence(600)]), now_ms=50)
    messages(core)
    usage = run_answer(core)[-1][1]["usageMetadata"]
    assert usage["promptTokenCount"] == 2 + 25  # 80 ms of the greeting + one second of caller


def test_no_interruption_lets_the_answer_finish_then_answers_the_caller() -> None:
    core = answering_core(setup_with(realtimeInputConfig={"activityHandling": "NO_INTERRUPTION"}))
    assert stream(core, np.concatenate([tone(300), silence(600)]), now_ms=50) == []
    timeline = run_answer(core)
    finals = [at for at, m in timeline if m.get("serverContent", {}).get("turnComplete")]
    assert len(finals) == 2  # the greeting, then the reply to the caller
    assert not any("interrupted" in m.get("serverContent", {}) for _, m in timeline)
    audio = b"".join(audio_of(m) for _, m in timeline if is_audio(m))
    assert audio == GREETING.pcm[2 * 1920 :] + REPLY.pcm
    # The reply starts where the greeting's schedule ended, not whenever poll happened to run.
    assert finals == [160.0, 320.0]
    assert core.record.interruptions == 0
    assert core.record.answers_completed == 2


def test_audio_stream_end_ends_the_turn_in_progress() -> None:
    core = new_core()
    stream(core, tone(800), now_ms=0)
    assert core.next_deadline() is None
    core.receive('{"realtimeInput":{"audioStreamEnd":true}}', 900)
    assert core.next_deadline() == 900
    assert core.record.caller_turns == 1


# ------------------------------------------------------------------------------------------
# Manual activity (automatic VAD disabled)
# ------------------------------------------------------------------------------------------

MANUAL = setup_with(
    realtimeInputConfig={"automaticActivityDetection": {"disabled": True}},
    inputAudioTranscription={},
)


def test_with_vad_disabled_only_activity_signals_make_turns() -> None:
    core = new_core(MANUAL)
    assert stream(core, np.concatenate([tone(1000), silence(1000)]), now_ms=0) == []
    core.receive('{"realtimeInput":{"activityStart":{}}}', 100)
    stream(core, tone(1500), now_ms=100)
    assert core.next_deadline() is None
    core.receive('{"realtime_input":{"activity_end":{}}}', 200)
    assert messages(core) == [
        {"serverContent": {"inputTranscription": {"text": "[caller speech 1.5 s]"}}}
    ]
    assert core.next_deadline() == 200
    assert core.record.caller_turns == 1


def test_with_vad_disabled_activity_start_interrupts() -> None:
    core = answering_core(MANUAL)
    core.receive('{"realtimeInput":{"activityStart":{}}}', 50)
    assert messages(core) == [
        {"serverContent": {"interrupted": True}},
        {"serverContent": {"turnComplete": True}},
    ]
    assert core.next_deadline() is None


def test_activity_signals_with_automatic_vad_close_1007() -> None:
    core = new_core()
    core.receive('{"realtimeInput":{"activityStart":{}}}', 0)
    assert close_of(core) == CloseConnection(1007, EXPLICIT_ACTIVITY_WITH_VAD)


def test_legacy_media_chunks_are_heard() -> None:
    core = new_core(
        setup_with(realtimeInputConfig={"automaticActivityDetection": {"silenceDurationMs": 200}})
    )
    speech = np.concatenate([tone(500), silence(300)]).astype("<i2").tobytes()
    chunk = {"data": base64.b64encode(speech).decode(), "mimeType": "audio/pcm;rate=16000"}
    core.receive(json.dumps({"realtimeInput": {"mediaChunks": [chunk]}}), 0)
    assert core.record.client_messages[-1] == "realtimeInput.mediaChunks"
    assert core.record.audio_bytes_received == len(speech)
    assert core.next_deadline() == 0


def test_vad_settings_from_setup_accept_string_numbers_and_reject_nonsense() -> None:
    core = new_core(
        setup_with(realtimeInputConfig={"automaticActivityDetection": {"silenceDurationMs": "200"}})
    )
    stream(core, np.concatenate([tone(300), silence(250)]), now_ms=0)
    assert core.record.caller_turns == 1
    bad = LiveEmulatorCore(EmulatorOptions(), CLIPS)
    bad.receive(
        setup_with(
            realtimeInputConfig={"automaticActivityDetection": {"startOfSpeechSensitivity": "LOUD"}}
        ),
        0,
    )
    assert close_of(bad) == CloseConnection(1007, INVALID_ARGUMENT)


def test_an_infinite_duration_closes_1007_rather_than_crashing() -> None:
    core = LiveEmulatorCore(EmulatorOptions(), CLIPS)
    # Python's json reads 1e999 as inf, which int() cannot convert.
    core.receive(
        setup_with(
            realtimeInputConfig={"automaticActivityDetection": {"silenceDurationMs": 1e999}}
        ),
        0,
    )
    assert close_of(core) == CloseConnection(1007, INVALID_ARGUMENT)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="speed"):
        EmulatorOptions(speed=0)
    with pytest.raises(ValueError, match="chunk_ms"):
        EmulatorOptions(chunk_ms=0)


# ------------------------------------------------------------------------------------------
# Unknown fields in nested setup objects
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (
            {"generationConfig": {"temperature": 0.5, "x": 1}},
            "Invalid JSON payload received. Unknown name \"x\" at 'setup.generation_config': "
            "Cannot find field.",
        ),
        (
            {"realtime_input_config": {"automatic_activity_detection": {"silence_ms": 5}}},
            'Invalid JSON payload received. Unknown name "silence_ms" at '
            "'setup.realtime_input_config.automatic_activity_detection': Cannot find field.",
        ),
        (
            {"generationConfig": {"speechConfig": {"voiceConfig": {"voice": "Puck"}}}},
            'Invalid JSON payload received. Unknown name "voice" at '
            "'setup.generation_config.speech_config.voice_config': Cannot find field.",
        ),
        (
            {"tools": [{"googleSearch": {}}, {"functionDeclarations": [{"name": "f", "mode": 1}]}]},
            'Invalid JSON payload received. Unknown name "mode" at '
            "'setup.tools[1].function_declarations[0]': Cannot find field.",
        ),
        (
            {"sessionResumption": {"transparent": True}},  # Vertex only
            'Invalid JSON payload received. Unknown name "transparent" at '
            "'setup.session_resumption': Cannot find field.",
        ),
        (
            {"contextWindowCompression": {"slidingWindow": {"target": 10}}},
            'Invalid JSON payload received. Unknown name "target" at '
            "'setup.context_window_compression.sliding_window': Cannot find field.",
        ),
    ],
)
def test_unknown_nested_setup_fields_close_1007_naming_the_snake_case_path(
    setup: dict[str, Any], reason: str
) -> None:
    core = LiveEmulatorCore(EmulatorOptions(), CLIPS)
    core.receive(setup_with(**setup), 0)
    # Like Google's, a long reason is cut to the 123 bytes a close frame carries.
    assert close_of(core) == CloseConnection(1007, truncate_reason(reason))


def test_every_documented_setup_field_is_accepted() -> None:
    core = new_core(
        setup_with(
            generationConfig={
                "responseModalities": ["AUDIO"],
                "temperature": 0.7,
                "topP": 0.9,
                "topK": 40,
                "maxOutputTokens": 512,
                "seed": 7,
                "mediaResolution": "MEDIA_RESOLUTION_LOW",
                "speechConfig": {
                    "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}},
                    "languageCode": "en-US",
                },
                "thinkingConfig": {"thinkingBudget": 0, "includeThoughts": False},
                "enable_affective_dialog": True,
            },
            systemInstruction={"parts": [{"text": "Be brief."}], "role": "user"},
            tools=[
                {
                    "functionDeclarations": [
                        {
                            "name": "lookup_order",
                            "description": "Find an order",
                            "parameters": {"type": "OBJECT", "anything": {"goes": "here"}},
                            "behavior": "NON_BLOCKING",
                        }
                    ]
                },
                {"googleSearch": {}},
                {"codeExecution": {}},
                {"urlContext": {}},
            ],
            realtimeInputConfig={
                "automaticActivityDetection": {"disabled": False, "prefixPaddingMs": 20},
                "activityHandling": "START_OF_ACTIVITY_INTERRUPTS",
                "turnCoverage": "TURN_INCLUDES_ONLY_ACTIVITY",
            },
            inputAudioTranscription={},
            outputAudioTranscription={},
            contextWindowCompression={
                "triggerTokens": 1000,
                "slidingWindow": {"targetTokens": 500},
            },
            proactivity={"proactiveAudio": True},
            historyConfig={"initialHistoryInClientContent": True},
        )
    )
    assert not core.closed


def test_an_unknown_response_modality_closes_1007() -> None:
    core = LiveEmulatorCore(EmulatorOptions(), CLIPS, api_version="v1alpha")
    core.receive(setup_with(generationConfig={"responseModalities": ["SPEECH"]}), 0)
    assert close_of(core) == CloseConnection(
        1007,
        truncate_reason(
            "Invalid value at 'setup.generation_config.response_modalities[0]' "
            "(type.googleapis.com/google.ai.generativelanguage.v1alpha.GenerationConfig.Modality), "
            '"SPEECH"'
        ),
    )


def test_text_and_audio_together_close_1007_as_a_configuration_error() -> None:
    core = LiveEmulatorCore(EmulatorOptions(), CLIPS)
    core.receive(setup_with(generationConfig={"responseModalities": ["TEXT", "AUDIO"]}), 0)
    close = close_of(core)
    assert close.code == 1007
    assert "Multiple response modalities" in close.reason


@pytest.mark.parametrize(
    ("name", "expected"),
    [("generationConfig", "generation_config"), ("model", "model"), ("topP", "top_p")],
)
def test_snake_case(name: str, expected: str) -> None:
    assert snake_case(name) == expected


# ------------------------------------------------------------------------------------------
# TEXT response modality
# ------------------------------------------------------------------------------------------

TEXT_SETUP = setup_with(
    generationConfig={"responseModalities": ["TEXT"]},
    outputAudioTranscription={},
)


def test_text_modality_answers_with_text_parts_and_text_usage() -> None:
    core = new_core(TEXT_SETUP)
    core.receive(
        '{"clientContent":{"turns":[{"parts":[{"text":"Hi there"}]}],"turnComplete":true}}', 0
    )
    timeline = run_answer(core)
    assert timeline == [
        (
            0.0,
            {
                "serverContent": {
                    "modelTurn": {"role": "model", "parts": [{"text": "Hello there friend"}]}
                }
            },
        ),
        (0.0, {"serverContent": {"generationComplete": True}}),
        (
            0.0,
            {
                "serverContent": {"turnComplete": True},
                "usageMetadata": {
                    "promptTokenCount": 2,
                    "responseTokenCount": 5,
                    "totalTokenCount": 7,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 2}],
                    "responseTokensDetails": [{"modality": "TEXT", "tokenCount": 5}],
                },
            },
        ),
    ]
    assert core.record.history == [
        HistoryEntry("user", "text", "Hi there"),
        HistoryEntry("model", "text", "Hello there friend"),
    ]


def test_text_modality_streams_a_long_answer_in_paced_chunks() -> None:
    long = Clip(b"", 24000, "one two three four five six seven")
    core = LiveEmulatorCore(EmulatorOptions(**NO_LIMITS), AnswerClips(greeting=long, reply=REPLY))
    core.receive(TEXT_SETUP, 0)
    core.data_to_send()
    core.receive('{"clientContent":{"turnComplete":true}}', 100)
    timeline = run_answer(core)
    texts = [
        (at, m["serverContent"]["modelTurn"]["parts"][0]["text"])
        for at, m in timeline
        if is_audio(m)
    ]
    assert texts == [(100.0, "one two three"), (140.0, " four five six"), (180.0, " seven")]
    assert not any("outputTranscription" in m.get("serverContent", {}) for _, m in timeline)


# ------------------------------------------------------------------------------------------
# Session resumption
# ------------------------------------------------------------------------------------------

RESUMABLE = setup_with(sessionResumption={}, outputAudioTranscription={})


def resume_setup(handle: str, **fields: Any) -> str:
    return setup_with(sessionResumption={"handle": handle}, **fields)


def handles_in(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["sessionResumptionUpdate"] for m in out if "sessionResumptionUpdate" in m]


def test_resumable_setup_gets_a_handle_right_after_setup_complete() -> None:
    core = LiveEmulatorCore(EmulatorOptions(**NO_LIMITS), CLIPS)
    core.receive(RESUMABLE, 0)
    out = messages(core)
    assert out[0] == {"setupComplete": {}}
    assert out[1] == {
        "sessionResumptionUpdate": {
            "newHandle": core.record.resumption_handles[0],
            "resumable": True,
        }
    }
    assert len(out) == 2


def test_without_session_resumption_no_updates_are_sent() -> None:
    core = new_core()
    core.receive('{"clientContent":{"turnComplete":true}}', 0)
    assert handles_in(run_answer_messages(core)) == []
    assert core.record.resumption_handles == []


def run_answer_messages(core: LiveEmulatorCore) -> list[dict[str, Any]]:
    return [message for _, message in run_answer(core)]


def test_a_turn_is_not_resumable_and_its_end_brings_a_new_handle_after_turn_complete() -> None:
    core = new_core(RESUMABLE)
    core.receive('{"clientContent":{"turnComplete":true}}', 0)
    first = messages(core)
    assert first == [{"sessionResumptionUpdate": {"resumable": False}}]
    out = run_answer_messages(core)
    assert out[-2]["serverContent"] == {"turnComplete": True}
    assert out[-1] == {
        "sessionResumptionUpdate": {
            "newHandle": core.record.resumption_handles[-1],
            "resumable": True,
        }
    }
    assert len(set(core.record.resumption_handles)) == 2


def test_resuming_restores_the_conversation_and_usage_goes_on() -> None:
    store = ResumptionStore()
    first = LiveEmulatorCore(EmulatorOptions(**NO_LIMITS), CLIPS, store=store)
    first.receive(RESUMABLE, 0)
    first.receive('{"realtimeInput":{"text":"Where is my order?"}}', 0)
    usage_before = run_answer(first)[-2][1]["usageMetadata"]
    handle = first.record.resumption_handles[-1]
    first.connection_lost()

    second = LiveEmulatorCore(EmulatorOptions(**NO_LIMITS), CLIPS, store=store, connection=1)
    second.receive(resume_setup(handle), 1000)
    assert messages(second)[0] == {"setupComplete": {}}
    assert second.record.resumed_from == handle
    assert second.record.history == [
        HistoryEntry("user", "text", "Where is my order?"),
        HistoryEntry("model", "audio", "Your order shipped"),
    ]
    second.receive('{"realtimeInput":{"text":"Thanks"}}', 1000)
    usage_after = run_answer(second)[-2][1]["usageMetadata"]
    # The earlier question, the earlier answer (200 ms of audio) and the new question.
    assert usage_before["promptTokenCount"] == 5
    assert usage_after["promptTokenCount"] == 5 + 5 + 2
    assert usage_after["promptTokensDetails"] == [
        {"modality": "TEXT", "tokenCount": 7},
        {"modality": "AUDIO", "tokenCount": 5},
    ]


def test_a_resume_while_the_old_socket_is_open_is_refused_1011() -> None:
    store = ResumptionStore()
    first = LiveEmulatorCore(EmulatorOptions(**NO_LIMITS), CLIPS, store=store)
    first.receive(RESUMABLE, 0)
    handle = first.record.resumption_handles[0]
    early = LiveEmulatorCore(EmulatorOptions(**NO_LIMITS), CLIPS, store=store, connection=1)
    early.receive(resume_setup(handle), 10)
    assert close_of(early) == CloseConnection(1011, INTERNAL_ERROR)
    first.close(1000, "")
    late = LiveEmulatorCore(EmulatorOptions(**NO_LIMITS), CLIPS, store=store, connection=2)
    late.receive(resume_setup(handle), 20)
    assert messages(late)[0] == {"setupComplete": {}}
    assert late.record.resumed_from == handle


@pytest.mark.parametrize(("handle", "now_ms"), [("no-such-handle", 10.0), (None, 2 * 3600_000.0)])
def test_an_unknown_or_expired_handle_closes_1007(handle: str | None, now_ms: float) -> None:
    store = ResumptionStore()
    first = LiveEmulatorCore(EmulatorOptions(**NO_LIMITS), CLIPS, store=store)
    first.receive(RESUMABLE, 0)
    first.connection_lost()
    second = LiveEmulatorCore(EmulatorOptions(**NO_LIMITS), CLIPS, store=store)
    second.receive(resume_setup(handle or first.record.resumption_handles[0]), now_ms)
    assert close_of(second) == CloseConnection(1007, INVALID_ARGUMENT)


# ------------------------------------------------------------------------------------------
# Connection lifetime, goAway and the session limit
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(50, "50s"), (0.5, "0.500s"), (1.25, "1.250s"), (0, "0s"), (2.000001, "2.000001s")],
)
def test_duration_strings_follow_proto_json(seconds: float, text: str) -> None:
    assert duration_string(seconds) == text


def test_go_away_comes_50_s_before_the_10_minute_cap_which_closes_1011() -> None:
    core = LiveEmulatorCore(EmulatorOptions(session_limit_s=math.inf), CLIPS, now_ms=1000)
    core.receive(SETUP, 1000)
    messages(core)
    assert core.next_deadline() == 551_000
    core.poll(550_999)
    assert messages(core) == []
    core.poll(551_000)
    assert messages(core) == [{"goAway": {"timeLeft": "50s"}}]
    assert core.next_deadline() == 601_000
    core.poll(601_000)
    assert close_of(core) == CloseConnection(1011, DEADLINE_EXPIRED)
    assert core.record.go_aways == ["50s"]


def test_session_limit_without_compression_counts_connected_time_across_resumptions() -> None:
    options = EmulatorOptions(connection_lifetime_s=math.inf, session_limit_s=900)
    store = ResumptionStore()
    first = LiveEmulatorCore(options, CLIPS, store=store)
    first.receive(RESUMABLE, 0)
    handle = first.record.resumption_handles[0]
    first.poll(600_000)
    first.connection_lost()
    # Ten minutes offline do not count; the 300 s left do.
    second = LiveEmulatorCore(options, CLIPS, store=store, connection=1, now_ms=1_200_000)
    second.receive(resume_setup(handle), 1_200_000)
    messages(second)
    assert second.next_deadline() == 1_500_000
    second.poll(1_500_000)
    assert close_of(second) == CloseConnection(1011, DEADLINE_EXPIRED)


def test_context_window_compression_lifts_the_session_limit() -> None:
    options = EmulatorOptions(connection_lifetime_s=math.inf, session_limit_s=900)
    core = LiveEmulatorCore(options, CLIPS)
    core.receive(setup_with(contextWindowCompression={"slidingWindow": {}}), 0)
    messages(core)
    assert core.next_deadline() is None
    core.poll(10**9)
    assert messages(core) == []


def test_runtime_go_away_announces_the_time_left_then_closes() -> None:
    core = new_core()
    core.go_away(2.5, 1000)
    assert messages(core) == [{"goAway": {"timeLeft": "2.500s"}}]
    core.poll(3499)
    assert messages(core) == []
    core.poll(3500)
    assert close_of(core) == CloseConnection(1011, DEADLINE_EXPIRED)


# ------------------------------------------------------------------------------------------
# Faults
# ------------------------------------------------------------------------------------------


def fault_core(*faults: Fault, connection: int = 0) -> LiveEmulatorCore:
    core = LiveEmulatorCore(
        EmulatorOptions(faults=faults, **NO_LIMITS), CLIPS, connection=connection, now_ms=100
    )
    return core


def test_a_close_fault_closes_with_its_code_after_its_time() -> None:
    core = fault_core(
        Fault.close(after_s=5, code=1011, reason="The service is currently unavailable.")
    )
    core.receive(SETUP, 100)
    messages(core)
    assert core.next_deadline() == 5100
    core.poll(5100)
    assert close_of(core) == CloseConnection(1011, "The service is currently unavailable.")
    assert core.record.faults == ["close"]


def test_a_fault_for_another_connection_does_not_strike() -> None:
    core = fault_core(Fault.abort(after_s=1, connection=1), connection=0)
    assert core.next_deadline() is None
    other = fault_core(Fault.abort(after_s=1, connection=1), connection=1)
    other.poll(1100)
    assert other.data_to_send() == [AbortConnection()]
    assert other.closed


def test_a_stall_fault_tells_the_adapter_how_long() -> None:
    core = fault_core(Fault.stall(after_s=2, for_s=3))
    core.poll(2100)
    assert core.data_to_send() == [Stall(until_ms=5100)]
    assert not core.closed


def test_a_muted_model_sends_no_content_but_the_connection_lives_and_reads() -> None:
    core = fault_core(Fault.mute(after_s=0, for_s=5))
    core.poll(100)  # the fault strikes as the connection opens
    core.receive(SETUP, 100)
    assert "setupComplete" in messages(core)[0]  # setup still answered
    core.receive('{"clientContent":{"turnComplete":true}}', 200)
    for now in range(200, 4000, 20):
        core.poll(now)
        assert not [m for m in messages(core) if "serverContent" in m or "toolCall" in m]
    assert not core.closed
    assert core.record.client_messages == ["setup", "clientContent"]
    # Once it ends, the model answers again (what it would have said meanwhile is lost).
    core.receive('{"clientContent":{"turnComplete":true}}', 6000)
    said = []
    for now in range(6000, 9000, 20):
        core.poll(now)
        said += messages(core)
    assert any("serverContent" in m for m in said)


def test_a_delayed_setup_complete() -> None:
    core = fault_core(Fault.delay_setup(delay_ms=250))
    core.receive(RESUMABLE, 100)
    assert core.data_to_send() == []
    assert core.next_deadline() == 350
    core.poll(350)
    out = messages(core)
    assert out[0] == {"setupComplete": {}}
    assert "sessionResumptionUpdate" in out[1]


def test_a_go_away_fault() -> None:
    core = fault_core(Fault.go_away(after_s=1, time_left_s=0.5))
    core.poll(1100)
    assert messages(core) == [{"goAway": {"timeLeft": "0.500s"}}]
    core.poll(1600)
    assert close_of(core) == CloseConnection(1011, DEADLINE_EXPIRED)


def test_a_fault_after_setup_counts_from_setup_complete() -> None:
    # Every connection accepted, then told to go at once: goAway timeLeft 0s right after setup.
    core = fault_core(Fault.go_away(after_s=0, time_left_s=0, after_setup=True))
    assert core.next_deadline() is None  # nothing before the setup
    core.receive(SETUP, 300)
    assert messages(core)[0] == {"setupComplete": {}}
    assert core.next_deadline() == 300
    core.poll(300)
    assert core.data_to_send() == [
        SendMessage({"goAway": {"timeLeft": "0s"}}),
        CloseConnection(1011, DEADLINE_EXPIRED),
    ]
    closing = fault_core(Fault.close(after_s=0.5, after_setup=True), connection=3)
    closing.receive(SETUP, 200)
    messages(closing)
    assert closing.next_deadline() == 700
    closing.poll(700)
    assert close_of(closing) == CloseConnection(1011, "Internal error occurred.")


def test_an_oversized_frame_fault_sends_one_frame_of_that_size() -> None:
    core = fault_core(Fault.oversized(after_s=0.1, size=100_000, after_setup=True))
    core.receive(SETUP, 0)
    messages(core)
    core.poll(100)
    (frame,) = core.data_to_send()
    assert isinstance(frame, SendMessage)
    assert 99_000 < len(json.dumps(frame.message)) <= 100_000
    assert core.record.faults == ["oversized"]


def test_options_reject_nonsense_limits_and_faults() -> None:
    with pytest.raises(ValueError, match="connection_lifetime_s"):
        EmulatorOptions(connection_lifetime_s=0)
    with pytest.raises(ValueError, match="after_s"):
        Fault.close(after_s=-1)
    with pytest.raises(ValueError, match="close code"):
        Fault.close(after_s=1, code=99)
    assert EmulatorOptions(faults=[Fault.abort(1)]).faults == (Fault.abort(1),)


# ------------------------------------------------------------------------------------------
# Scenarios: function calls and their scheduling
# ------------------------------------------------------------------------------------------

LOOKUP = ScriptedCall("lookup_order", {"order_id": "A17"}, wait=True)
TOOLS_SETUP = setup_with(
    tools=[{"functionDeclarations": [{"name": "lookup_order"}, {"name": "send_sms"}]}],
    outputAudioTranscription={},
    sessionResumption={},
)


def scripted(*steps: Step, setup: str = TOOLS_SETUP, **options: Any) -> LiveEmulatorCore:
    return new_core(setup, scenario=Scenario(steps=steps), **options)


def tool_response(call_id: str, response: dict[str, Any], **fields: Any) -> str:
    answer = {"id": call_id, "name": "f", "response": response, **fields}
    return json.dumps({"tool_response": {"function_responses": [answer]}})


def words_of(out: list[dict[str, Any]]) -> str:
    return "".join(
        m["serverContent"]["outputTranscription"]["text"]
        for m in out
        if "outputTranscription" in m.get("serverContent", {})
    )


def test_a_blocking_call_keeps_the_model_silent_until_the_response() -> None:
    core = scripted(
        Step(
            say=Speech("reply", "Your order {result.status}, arriving {result.eta}."),
            calls=(LOOKUP,),
        ),
        think_ms=100,
    )
    core.receive('{"realtimeInput":{"text":"Where is my order?"}}', 1000)
    assert messages(core) == [{"sessionResumptionUpdate": {"resumable": False}}]
    core.poll(1100)
    (call,) = messages(core)
    call_id = call["toolCall"]["functionCalls"][0]["id"]
    assert call == {
        "toolCall": {
            "functionCalls": [{"id": call_id, "name": "lookup_order", "args": {"order_id": "A17"}}]
        }
    }
    assert call_id.startswith("function-call-")
    assert core.next_deadline() is None  # waiting: not a word
    core.receive(tool_response(call_id, {"result": {"status": "shipped", "eta": "Friday"}}), 3000)
    assert messages(core) == []
    out = run_answer_messages(core)
    assert words_of(out) == "Your order shipped, arriving Friday."
    assert out[-2]["serverContent"] == {"turnComplete": True}
    assert "newHandle" in out[-1]["sessionResumptionUpdate"]
    assert run_answer(core) == []
    assert core.record.tool_responses == [
        ToolResponseRecord(
            call_id, "f", {"result": {"status": "shipped", "eta": "Friday"}}, None, False, 3000
        )
    ]
    assert [c.name for c in core.record.tool_calls] == ["lookup_order"]
    assert core.record.history[1].kind == "function_call"
    assert core.record.history[2].kind == "function_response"


def nonblocking_core(scheduling_say: Speech | None = None) -> tuple[LiveEmulatorCore, str]:
    """A core speaking its filler (2 chunks sent) while a NON_BLOCKING send_sms is pending."""
    sms = ScriptedCall("send_sms", {"to": "+1555"}, wait=False, say=scheduling_say)
    core = scripted(Step(say=Speech("greeting", "One moment please"), calls=(sms,)))
    core.receive('{"clientContent":{"turnComplete":true}}', 0)
    core.poll(40)
    out = messages(core)
    call_id = out[1]["toolCall"]["functionCalls"][0]["id"]
    assert sum(map(is_audio, out)) == 2
    return core, call_id


RESULT_SAY = Speech("reply", "Text sent: {result.status}")


def test_when_idle_result_is_spoken_after_the_filler_ends() -> None:
    core, call_id = nonblocking_core(RESULT_SAY)
    core.receive(
        tool_response(call_id, {"result": {"status": "delivered"}}, scheduling="WHEN_IDLE"), 50
    )
    assert messages(core) == []
    out = run_answer_messages(core)
    finals = [i for i, m in enumerate(out) if m.get("serverContent", {}).get("turnComplete")]
    assert len(finals) == 2
    assert words_of(out[: finals[0]]) == " moment please"
    assert words_of(out[finals[0] :]) == "Text sent: delivered"
    assert not any("interrupted" in m.get("serverContent", {}) for m in out)
    # Resumable only once nothing is pending and the result has been spoken.
    assert handles_in(out) == [{"newHandle": core.record.resumption_handles[-1], "resumable": True}]
    assert core.record.answers_completed == 2


def test_interrupt_result_cuts_the_filler_without_interrupted_and_speaks_at_once() -> None:
    core, call_id = nonblocking_core(RESULT_SAY)
    # The scheduling may come inside the response, as in the docs' examples.
    core.receive(
        tool_response(call_id, {"result": {"status": "sent"}, "scheduling": "INTERRUPT"}), 50
    )
    cut = messages(core)
    assert cut == [
        {
            "serverContent": {"turnComplete": True},
            "usageMetadata": {
                "promptTokenCount": cut[0]["usageMetadata"]["promptTokenCount"],
                "responseTokenCount": 2,  # the 80 ms of filler that went out
                "totalTokenCount": cut[0]["usageMetadata"]["promptTokenCount"] + 2,
                "promptTokensDetails": cut[0]["usageMetadata"]["promptTokensDetails"],
                "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 2}],
            },
        }
    ]
    out = run_answer_messages(core)
    assert is_audio(out[0])
    assert words_of(out) == "Text sent: sent"
    assert core.record.answers_cut == 1
    assert core.record.interruptions == 0
    assert core.record.tool_responses[0].scheduling == "INTERRUPT"


def test_silent_result_is_context_only_and_makes_the_session_resumable() -> None:
    core, call_id = nonblocking_core(RESULT_SAY)
    out = run_answer_messages(core)
    assert handles_in(out) == []  # the filler is done but the call is still pending
    core.receive(tool_response(call_id, {"result": "ok"}, scheduling="SILENT"), 5000)
    assert messages(core) == [
        {
            "sessionResumptionUpdate": {
                "newHandle": core.record.resumption_handles[-1],
                "resumable": True,
            }
        }
    ]
    assert core.next_deadline() is None
    assert core.record.history[-1] == HistoryEntry(
        "user", "function_response", 'send_sms: {"result":"ok"}'
    )


def test_when_idle_result_arriving_when_idle_is_spoken_at_once() -> None:
    core, call_id = nonblocking_core()
    run_answer(core)
    core.receive(tool_response(call_id, {"result": "ok"}), 5000)  # no scheduling: WHEN_IDLE
    assert messages(core) == []  # not resumable since the call: nothing new to say about it
    out = run_answer_messages(core)
    assert words_of(out) == "Your order shipped"  # no say: the bundled reply


def test_caller_barging_in_cancels_pending_calls() -> None:
    core = scripted(Step(say=Speech("reply", "Done"), calls=(LOOKUP,)), setup=setup_with(tools=[]))
    stream(core, np.concatenate([tone(500), silence(600)]), now_ms=0)
    core.poll(0)
    call_id = messages(core)[0]["toolCall"]["functionCalls"][0]["id"]
    out = stream(core, tone(100), now_ms=2000)
    assert out == [
        {"toolCallCancellation": {"ids": [call_id]}},
        {"serverContent": {"interrupted": True}},
        {"serverContent": {"turnComplete": True}},
    ]
    assert core.record.tool_cancellations == [ToolCancellationRecord((call_id,), 2000)]
    # A late response is recorded and otherwise ignored.
    core.receive(tool_response(call_id, {"result": "late"}), 2100)
    assert messages(core) == []
    assert core.next_deadline() is None
    assert len(core.record.tool_responses) == 1


def test_scenario_steps_follow_every_turn_then_fall_back_to_the_defaults() -> None:
    core = scripted(
        Step(say=Speech("reply", "First")),
        Step(),  # a silent turn
        setup=setup_with(outputAudioTranscription={}),
    )
    core.receive('{"clientContent":{"turnComplete":true}}', 0)
    assert words_of(run_answer_messages(core)) == "First"
    core.receive('{"realtimeInput":{"text":"hm"}}', 1000)
    silent = run_answer_messages(core)
    assert [m["serverContent"] for m in silent] == [{"turnComplete": True}]
    core.receive('{"realtimeInput":{"text":"hello?"}}', 2000)
    assert words_of(run_answer_messages(core)) == "Your order shipped"
    assert core.record.turns == 3
    assert core.record.caller_turns == 2


def test_a_resumed_session_continues_the_scenario() -> None:
    store = ResumptionStore()
    scenario = Scenario(steps=(Step(say=Speech("reply", "One")), Step(say=Speech("reply", "Two"))))
    options = EmulatorOptions(scenario=scenario, **NO_LIMITS)
    first = LiveEmulatorCore(options, CLIPS, store=store)
    first.receive(RESUMABLE, 0)
    first.receive('{"clientContent":{"turnComplete":true}}', 0)
    assert words_of(run_answer_messages(first)) == "One"
    first.connection_lost()
    second = LiveEmulatorCore(options, CLIPS, store=store)
    second.receive(
        resume_setup(first.record.resumption_handles[-1], outputAudioTranscription={}), 0
    )
    second.receive('{"clientContent":{"turnComplete":true}}', 0)
    assert words_of(run_answer_messages(second)) == "Two"


def test_a_tool_response_without_an_id_closes_1007() -> None:
    core = new_core()
    core.receive('{"toolResponse":{"functionResponses":[{"name":"f","response":{}}]}}', 0)
    assert close_of(core) == CloseConnection(1007, INVALID_ARGUMENT)


def test_an_invalid_scheduling_beside_the_response_closes_1007() -> None:
    core = new_core()
    core.receive(tool_response("function-call-1", {}, scheduling="LATER"), 0)
    assert close_of(core) == CloseConnection(1007, INVALID_ARGUMENT)


# ------------------------------------------------------------------------------------------
# Scenario files and templates
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Your order {result.status}.", "Your order shipped."),
        ("{result}", '{"status":"shipped","items":["a","b"]}'),
        ("First item {result.items.0}", "First item a"),
        ("{name} said {missing.key}", "lookup_order said {missing.key}"),
        ("{{literal}}", "{literal}"),
    ],
)
def test_render_template(template: str, expected: str) -> None:
    context = {"result": {"status": "shipped", "items": ["a", "b"]}, "name": "lookup_order"}
    assert render_template(template, context) == expected


def test_every_bundled_scenario_loads() -> None:
    names = bundled_scenarios()
    assert "order-status" in names
    for name in names:
        assert load_scenario(name).steps


def test_a_scenario_from_yaml_with_a_wav_of_its_own(tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "hold.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(24000)
        wav.writeframes(b"\x00\x00" * 2400)
    (tmp_path / "s.yaml").write_text(
        "name: test\n"
        "steps:\n"
        "  - say: greeting\n"
        "  - calls:\n"
        "      - {name: lookup_order, args: {order_id: A17}}\n"
        "      - name: send_sms\n"
        "        wait: false\n"
        "        say: {text: 'Sent {result}'}\n"
        "    say: {clip: hold.wav, text: 'Please hold'}\n"
    )
    scenario = load_scenario(tmp_path / "s.yaml")
    assert scenario.name == "test"
    assert scenario.steps[0] == Step(say=Speech("greeting"))
    step = scenario.steps[1]
    assert step.calls == (
        ScriptedCall("lookup_order", {"order_id": "A17"}, wait=True),
        ScriptedCall("send_sms", {}, wait=False, say=Speech("reply", "Sent {result}")),
    )
    assert step.say is not None
    assert step.say.audio is not None
    assert step.say.audio.duration_ms == 100


def test_scenario_mistakes_name_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("steps:\n  - say: reply\n  - calls:\n      - name: f\n        wait: maybe\n")
    with pytest.raises(ConfigError) as error:
        load_scenario(path)
    assert error.value.line == 5
    assert error.value.key == "steps[1].calls[0].wait"
    assert str(path) in str(error.value)
    with pytest.raises(ConfigError, match="unknown key"):
        scenario_from_data({"steps": [{"speak": "reply"}]})
    with pytest.raises(ConfigError, match="neither a bundled clip"):
        scenario_from_data({"steps": [{"say": "goodbye"}]})
    with pytest.raises(ConfigError, match="no bundled scenario"):
        load_scenario("no-such-scenario")


def test_every_scenario_mistake_is_reported_at_once_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "steps:\n  - sya: reply\n  - calls:\n      - name: f\n        wait: maybe\n"
        "      - args: {}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_scenario(path)
    message = str(error.value)
    assert (error.value.line, error.value.key) == (2, "steps[0].sya")
    assert "unknown key 'sya' (did you mean 'say'?)" in message
    assert "steps[1].calls[0].wait: must be true or false, got 'maybe'" in message
    assert "steps[1].calls[1].name: missing required key 'name'" in message


def test_a_json_scenario(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"steps": [{"say": {"text": "Hi"}}, None]}))
    assert load_scenario(path).steps == (Step(say=Speech("reply", "Hi")), Step())


def test_the_emulator_app_can_be_built_before_any_event_loop_runs() -> None:
    # `agent emulate` builds the app, then hands it to aiohttp's run_app, which starts the loop.
    app = create_emulator_app(EmulatorOptions())
    assert app.on_startup


def model_setup(model: str, **fields: Any) -> str:
    return json.dumps({"setup": {"model": f"models/{model}", **fields}})


def set_up(setup: str) -> LiveEmulatorCore:
    """A core that has received ``setup``, whatever it answered."""
    core = LiveEmulatorCore(
        EmulatorOptions(connection_lifetime_s=math.inf, session_limit_s=math.inf), CLIPS
    )
    core.receive(setup, 0.0)
    return core


@pytest.mark.parametrize(
    ("model", "fields", "reason"),
    [
        (
            "gemini-3.8-live",
            {"proactivity": {"proactiveAudio": False}},
            "proactive_audio cannot be disabled for gemini-3.8-live.",
        ),
        (
            "gemini-3.8-live",
            {"generationConfig": {"responseModalities": ["TEXT"]}},
            "The TEXT response modality is not supported by gemini-3.8-live.",
        ),
        (
            "gemini-3.8-live",
            {"generationConfig": {"thinkingConfig": {"thinkingLevel": "LOW"}}},
            "thinking_level is not supported by gemini-3.8-live.",
        ),
        (
            "gemini-3.8-live-extended-thinking",
            {"tools": [{"functionDeclarations": [{"name": "f", "behavior": "BLOCKING"}]}]},
            "BLOCKING function calling is not supported by gemini-3.8-live-extended-thinking.",
        ),
        (
            "gemini-3.1-flash-live-preview",
            {"tools": [{"functionDeclarations": [{"name": "f", "behavior": "NON_BLOCKING"}]}]},
            "NON_BLOCKING function calling is not supported by gemini-3.1-flash-live-preview.",
        ),
    ],
)
def test_a_setting_the_model_does_not_accept_is_refused_as_its_table_row_says(
    model: str, fields: dict[str, Any], reason: str
) -> None:
    core = set_up(model_setup(model, **fields))
    assert close_of(core) == CloseConnection(1007, reason)


def test_affective_dialog_asked_of_31_flash_live_never_completes_the_setup() -> None:
    core = set_up(
        model_setup(
            "gemini-3.1-flash-live-preview", generationConfig={"enableAffectiveDialog": True}
        )
    )
    for now in range(0, 60_000, 500):
        core.poll(now)
        assert core.data_to_send() == []
    assert not core.closed


def test_what_a_model_accepts_goes_through() -> None:
    core = new_core(
        model_setup(
            "gemini-3.8-live-extended-thinking",
            proactivity={"proactiveAudio": True},
            generationConfig={"thinkingConfig": {"thinkingLevel": "HIGH"}},
            tools=[{"functionDeclarations": [{"name": "f", "behavior": "NON_BLOCKING"}]}],
        )
    )
    assert not core.closed  # new_core saw its setupComplete


def test_the_extended_thinking_model_says_its_interaction_status_with_each_turn_complete() -> None:
    def statuses(model: str) -> list[object]:
        core = new_core(model_setup(model))
        core.receive('{"clientContent":{"turnComplete":true}}', 0)
        sent = []
        for now in range(0, 20_000, 20):
            core.poll(now)
            sent += messages(core)
        return [
            m["serverContent"].get("interactionStatus")
            for m in sent
            if m.get("serverContent", {}).get("turnComplete")
        ]

    assert statuses("gemini-3.8-live-extended-thinking") == ["IDLE"]
    assert statuses("gemini-3.8-live") == [None]  # other models send none
