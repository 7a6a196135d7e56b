"""The emulator's core hearing the caller and voicing the agent's words, sans-I/O.

The recogniser and the TTS are the adapter's: here the test plays the adapter, answering each
``Transcribe`` and ``Synthesise`` the core hands out with literal words and audio, at literal
times.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from agent.sim.live.core import LiveEmulatorCore, greeting_words
from agent.sim.live.options import (
    AnswerClips,
    EmulatorOptions,
    Outgoing,
    SendMessage,
    Synthesise,
    Transcribe,
)
from agent.sim.live.scenario import Clip, Scenario, ScriptedCall, Speech, Step
from agent.sim.live.server import EmulatorSpeech
from agent.sim.live.wire import normalise_keys
from agent.sim.speech.worker import transcribe_in_worker

RATE = 16000
Samples = npt.NDArray[np.int16]
GREETING = Clip(b"\x01\x00" * 4800, 24000, "Hello there friend")
REPLY = Clip(b"\x02\x00" * 4800, 24000, "Your order shipped")
CLIPS = AnswerClips(greeting=GREETING, reply=REPLY)
NO_LIMITS: dict[str, Any] = {"connection_lifetime_s": math.inf, "session_limit_s": math.inf}
SETUP = '{"setup":{"model":"models/gemini-2.5-flash-native-audio-preview-12-2025"}}'


def setup_with(**fields: Any) -> str:
    return json.dumps({"setup": {"model": "models/m", **fields}})


def tone(ms: float, dbfs: float = -20.0, hz: float = 440.0) -> Samples:
    """A sine at ``dbfs`` RMS: speech, as far as the detector can tell."""
    t = np.arange(int(RATE * ms / 1000)) / RATE
    amplitude = 32768 * 10 ** (dbfs / 20) * 2**0.5
    samples: Samples = (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    return samples


def silence(ms: float) -> Samples:
    return np.zeros(int(RATE * ms / 1000), dtype=np.int16)


def audio_frame(samples: Samples) -> str:
    data = base64.b64encode(samples.astype("<i2").tobytes()).decode()
    return json.dumps(
        {"realtimeInput": {"audio": {"data": data, "mimeType": f"audio/pcm;rate={RATE}"}}}
    )


def run_answer(core: LiveEmulatorCore) -> list[tuple[float, dict[str, Any]]]:
    """Poll at each deadline until the answer is done; each message with the time it was due."""
    timeline: list[tuple[float, dict[str, Any]]] = []
    while (deadline := core.next_deadline()) is not None:
        core.poll(deadline)
        timeline += [(deadline, message) for message in sent(core.data_to_send())]
    return timeline


def sent(items: list[Outgoing]) -> list[dict[str, Any]]:
    """The messages among ``items``, asserting there is nothing else (no request, no close)."""
    assert all(isinstance(item, SendMessage) for item in items), items
    return [item.message for item in items if isinstance(item, SendMessage)]


def is_audio(message: dict[str, Any]) -> bool:
    return "modelTurn" in message.get("serverContent", {})


def audio_of(message: dict[str, Any]) -> bytes:
    part = message["serverContent"]["modelTurn"]["parts"][0]["inlineData"]
    assert part["mimeType"] == "audio/pcm;rate=24000"
    return base64.b64decode(part["data"])


TRANSCRIBED = setup_with(inputAudioTranscription={}, outputAudioTranscription={})
DENTIST_GREETING = "Thank you for calling Bright Smile Dental. How can I help you today?"
VOICE = b"\x05\x00" * 2400  # 100 ms at 24 kHz: what the test's "TTS" returns


def speaking_core(
    setup: str = TRANSCRIBED, *, hears: bool = True, speaks: bool = True, **options: Any
) -> LiveEmulatorCore:
    core = LiveEmulatorCore(
        EmulatorOptions(**{**NO_LIMITS, **options}), CLIPS, hears=hears, speaks=speaks
    )
    core.receive(setup, 0.0)
    assert [item.message for item in core.data_to_send() if isinstance(item, SendMessage)] == [
        {"setupComplete": {}}
    ]
    return core


def send_audio(core: LiveEmulatorCore, samples: Samples, now_ms: float) -> list[Outgoing]:
    """Stream ``samples`` in 20 ms chunks at ``now_ms``; everything the core handed out."""
    out: list[Outgoing] = []
    for start in range(0, len(samples), 320):
        core.receive(audio_frame(samples[start : start + 320]), now_ms)
        out += core.data_to_send()
    return out


def greet(core: LiveEmulatorCore, text: str, now_ms: float = 0.0) -> list[Outgoing]:
    core.receive(
        json.dumps(
            {
                "clientContent": {
                    "turns": [{"role": "user", "parts": [{"text": text}]}],
                    "turnComplete": True,
                }
            }
        ),
        now_ms,
    )
    return core.data_to_send()


def transcript(timeline: list[tuple[float, dict[str, Any]]]) -> str:
    return "".join(
        m["serverContent"]["outputTranscription"]["text"]
        for _, m in timeline
        if "outputTranscription" in m.get("serverContent", {})
    )


def test_a_caller_turn_is_handed_out_to_hear_and_answered_once_its_words_come() -> None:
    core = speaking_core(think_ms=300)
    speech = np.concatenate([tone(1000), silence(600)])
    out = send_audio(core, speech, now_ms=5000)
    (request,) = out  # nothing is sent to the client yet: the words are not in
    assert isinstance(request, Transcribe)
    assert (request.rate, request.language) == (16000, "en-US")
    # The whole turn and a short pre-roll, as PCM16 at the rate it came in.
    assert 1.0 <= len(request.pcm) / 2 / 16000 <= 1.6 + 0.3
    assert core.next_deadline() is None
    core.heard(request.request, "where is my order", 5100)
    assert sent(core.data_to_send()) == [
        {"serverContent": {"inputTranscription": {"text": "where is my order"}}}
    ]
    assert core.record.heard == ["where is my order"]
    assert core.record.history[-1].text == "where is my order"
    # Words back within think_ms: the answer starts when it would have without hearing.
    assert core.next_deadline() == 5300.0
    assert b"".join(audio_of(m) for _, m in run_answer(core) if is_audio(m)) == REPLY.pcm


def test_words_that_come_late_start_the_answer_at_once_not_in_the_past() -> None:
    core = speaking_core(think_ms=300)
    (request,) = send_audio(core, np.concatenate([tone(1000), silence(600)]), now_ms=5000)
    assert isinstance(request, Transcribe)
    core.heard(request.request, "hello", 9000)
    core.data_to_send()
    assert core.next_deadline() == 9000.0


def test_turns_are_heard_in_the_order_they_were_spoken() -> None:
    core = speaking_core()
    first, second = (
        send_audio(core, np.concatenate([tone(800), silence(600)]), now_ms=at)[0]
        for at in (1000.0, 2000.0)
    )
    assert isinstance(first, Transcribe)
    assert isinstance(second, Transcribe)
    core.heard(second.request, "second", 2100)
    assert core.data_to_send() == []
    core.heard(first.request, "first", 2200)
    messages = [m.message for m in core.data_to_send() if isinstance(m, SendMessage)]
    said = [m["serverContent"]["inputTranscription"]["text"] for m in messages[:1]]
    assert said == ["first"]
    assert core.record.heard == ["first", "second"]


def test_no_recogniser_for_the_language_falls_back_to_the_placeholder() -> None:
    setup = setup_with(
        inputAudioTranscription={},
        generationConfig={"speechConfig": {"languageCode": "de-DE"}},
    )
    core = speaking_core(setup)
    (request,) = send_audio(core, np.concatenate([tone(1000), silence(600)]), now_ms=0)
    assert isinstance(request, Transcribe)
    assert request.language == "de-DE"
    core.heard(request.request, None, 10)
    assert sent(core.data_to_send()) == [
        {"serverContent": {"inputTranscription": {"text": "[caller speech 1.0 s]"}}}
    ]


def test_without_a_recogniser_the_turn_is_the_placeholder_at_once() -> None:
    core = speaking_core(hears=False)
    out = send_audio(core, np.concatenate([tone(1000), silence(600)]), now_ms=0)
    assert sent(out) == [
        {"serverContent": {"inputTranscription": {"text": "[caller speech 1.0 s]"}}}
    ]


def test_manual_activity_turns_are_heard_too() -> None:
    setup = setup_with(
        inputAudioTranscription={},
        realtimeInputConfig={"automaticActivityDetection": {"disabled": True}},
    )
    core = speaking_core(setup)
    core.receive('{"realtimeInput":{"activityStart":{}}}', 0)
    send_audio(core, tone(500), now_ms=0)
    core.receive('{"realtimeInput":{"activityEnd":{}}}', 600)
    (request,) = core.data_to_send()
    assert isinstance(request, Transcribe)
    assert len(request.pcm) == 500 * 16 * 2


class _Listening(LiveEmulatorCore):
    """A core whose turn logic notes what it was given (the hook the function matcher uses)."""

    seen: list[tuple[str, str | None]]

    def unscripted_step(self, source: Literal["client", "caller"], heard: str | None) -> Step:
        self.seen.append((source, heard))
        return super().unscripted_step(source, heard)


def test_the_turn_logic_gets_the_words_of_every_kind_of_turn() -> None:
    core = _Listening(EmulatorOptions(**NO_LIMITS), CLIPS, hears=True)
    core.seen = []
    core.receive(TRANSCRIBED, 0)
    greet(core, "Greet the caller.")
    run_answer(core)
    (request,) = send_audio(core, np.concatenate([tone(1000), silence(600)]), now_ms=1000)
    assert isinstance(request, Transcribe)
    core.heard(request.request, "check my order", 2000)
    run_answer(core)
    core.receive('{"realtimeInput":{"text":"Turn on the lights"}}', 5000)
    run_answer(core)
    assert core.seen == [
        ("client", "Greet the caller."),
        ("caller", "check my order"),
        ("caller", "Turn on the lights"),
    ]


def test_the_greeting_is_the_agents_own_words_voiced_by_the_tts() -> None:
    core = speaking_core(hears=False, think_ms=200)
    out = greet(core, DENTIST_GREETING, now_ms=1000)
    (request,) = out
    assert isinstance(request, Synthesise)
    assert (request.text, request.rate) == (DENTIST_GREETING, 24000)
    core.voiced(request.request, VOICE, 1050)
    timeline = run_answer(core)
    audio = [(at, m) for at, m in timeline if is_audio(m)]
    assert b"".join(audio_of(m) for _, m in audio) == VOICE
    assert audio[0][0] == 1200.0  # think_ms after the request, as with a clip
    assert transcript(timeline) == DENTIST_GREETING
    assert core.record.voiced == [DENTIST_GREETING]
    assert core.record.history[-1].text == DENTIST_GREETING


def test_a_greeting_written_as_an_instruction_says_its_quoted_line() -> None:
    assert greeting_words('Greet the caller with "Hello, Bright Smile Dental!" and wait.') == (
        "Hello, Bright Smile Dental!"
    )
    assert greeting_words("Thanks for  calling.\n How can I help?") == (
        "Thanks for calling. How can I help?"
    )


def test_without_tts_the_greeting_is_the_bundled_clip() -> None:
    core = speaking_core(speaks=False)
    greet(core, DENTIST_GREETING)
    timeline = run_answer(core)
    assert b"".join(audio_of(m) for _, m in timeline if is_audio(m)) == GREETING.pcm
    assert transcript(timeline) == GREETING.transcript


def test_tts_that_returns_nothing_falls_back_to_the_clip_with_the_same_words() -> None:
    core = speaking_core()
    (request,) = greet(core, DENTIST_GREETING)
    assert isinstance(request, Synthesise)
    core.voiced(request.request, None, 10)
    timeline = run_answer(core)
    assert b"".join(audio_of(m) for _, m in timeline if is_audio(m)) == GREETING.pcm
    assert transcript(timeline) == DENTIST_GREETING
    assert core.record.voiced == []


def test_audio_for_a_greeting_the_caller_barged_in_on_is_dropped() -> None:
    core = speaking_core(hears=False)
    (request,) = greet(core, DENTIST_GREETING)
    assert isinstance(request, Synthesise)
    send_audio(core, tone(300), now_ms=100)  # the caller starts talking
    core.voiced(request.request, VOICE, 400)
    assert not any(is_audio(message) for _, message in run_answer(core))
    assert core.record.voiced == []


def test_a_scripted_line_with_a_tool_result_is_voiced_with_the_result_in_it() -> None:
    scenario = Scenario(
        steps=(
            Step(
                calls=(ScriptedCall("lookup_order", {"order": "A1"}),),
                say=Speech("reply", text="Your order is {result.status}."),
            ),
        )
    )
    core = speaking_core(SETUP, hears=False, scenario=scenario)
    core.receive('{"realtimeInput":{"text":"Where is order A1?"}}', 0)
    core.poll(0)
    (call,) = [m.message for m in core.data_to_send() if isinstance(m, SendMessage)]
    call_id = normalise_keys(call)["toolCall"]["functionCalls"][0]["id"]
    core.receive(
        json.dumps(
            {
                "toolResponse": {
                    "functionResponses": [
                        {"id": call_id, "name": "lookup_order", "response": {"status": "shipped"}}
                    ]
                }
            }
        ),
        100,
    )
    (request,) = core.data_to_send()
    assert isinstance(request, Synthesise)
    assert request.text == "Your order is shipped."


def test_the_installed_recogniser_runs_in_the_worker_process() -> None:
    # Not in a thread of the emulator's process: PocketSphinx holds the GIL while it decodes.
    speech = EmulatorSpeech.installed()
    assert speech.transcribe is transcribe_in_worker
    assert speech.speak is not None
