"""The Live API emulator's sans-I/O core, fed literal client frames and audio; no event loop.

Time is whatever the test says it is: ``now_ms`` goes into :meth:`LiveEmulatorCore.receive` and
:meth:`LiveEmulatorCore.poll`, and the VAD counts samples.
"""

from __future__ import annotations

import base64
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from agent.sim.emulator_core import (
    EXPLICIT_ACTIVITY_WITH_VAD,
    INVALID_ARGUMENT,
    AnswerClips,
    Clip,
    CloseConnection,
    EmulatorOptions,
    EnergyVad,
    LiveEmulatorCore,
    SendMessage,
    SpeechEnded,
    SpeechStarted,
    VadSettings,
    camel_case,
    decode_base64,
    normalise_keys,
    pcm_rate,
)
from agent.sim.live_emulator import load_bundled_clips

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RATE = 16000
Samples = npt.NDArray[np.int16]

# Tiny clips keep the schedules short enough to reason about: 200 ms = 5 chunks of 40 ms.
GREETING = Clip(b"\x01\x00" * 4800, 24000, "Hello there friend")
REPLY = Clip(b"\x02\x00" * 4800, 24000, "Your order shipped")
CLIPS = AnswerClips(greeting=GREETING, reply=REPLY)

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
    core = LiveEmulatorCore(EmulatorOptions(**options), CLIPS)
    core.receive(setup, 0.0)
    assert messages(core) == [{"setupComplete": {}}]
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
    vad = EnergyVad(settings or VadSettings())
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
    core = LiveEmulatorCore(EmulatorOptions(chunk_ms=100), clips)
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


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="speed"):
        EmulatorOptions(speed=0)
    with pytest.raises(ValueError, match="chunk_ms"):
        EmulatorOptions(chunk_ms=0)
