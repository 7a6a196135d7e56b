"""The call's small pure parts: transcript (said vs heard), DTMF grouping, the local VAD."""

from __future__ import annotations

import numpy as np

from agent.audio.vad import EnergyVad, VoiceActivity
from agent.call.dtmf import DtmfCollector
from agent.call.transcript import Transcript


def test_an_uninterrupted_turn_was_heard_whole() -> None:
    transcript = Transcript()
    transcript.caller_text("Where is ", now=0.0)
    transcript.caller_text("my order?", now=0.5)
    transcript.agent_text("It shipped ", 0, now=1.0)
    transcript.agent_text("yesterday.", 25, now=1.2)
    turn = transcript.agent_turn_ended(now=2.0)
    assert turn is not None
    assert [(t.role, t.said, t.heard) for t in transcript.turns] == [
        ("caller", "Where is my order?", "Where is my order?"),
        ("agent", "It shipped yesterday.", "It shipped yesterday."),
    ]
    assert not turn.interrupted


def test_a_barge_in_cuts_what_was_heard_at_the_playback_position() -> None:
    transcript = Transcript()
    transcript.agent_text("Thanks for calling. ", 0, now=0.0)
    transcript.agent_text("Your order ", 40, now=0.8)
    transcript.agent_text("shipped yesterday.", 60, now=1.2)
    turn = transcript.agent_turn_ended(now=1.0, heard_frames=45)
    assert turn is not None
    assert turn.said == "Thanks for calling. Your order shipped yesterday."
    assert turn.heard == "Thanks for calling. Your order "
    assert turn.interrupted
    assert turn.heard_ms == 900


def test_a_fragment_whose_audio_had_not_started_was_not_heard() -> None:
    transcript = Transcript()
    transcript.agent_text("Hello ", 0, now=0.0)
    transcript.agent_text("there", 10, now=0.2)
    turn = transcript.agent_turn_ended(now=0.2, heard_frames=10)
    assert turn is not None
    assert turn.heard == "Hello "


def test_ending_a_turn_twice_changes_nothing() -> None:
    transcript = Transcript()
    transcript.agent_text("Hi", 0, now=0.0)
    assert transcript.agent_turn_ended(now=1.0, heard_frames=0) is not None
    assert transcript.agent_turn_ended(now=2.0) is None
    assert transcript.turns[0].heard == ""


def test_digits_typed_in_a_row_form_one_group_after_a_pause() -> None:
    dtmf = DtmfCollector(group_timeout_s=2.0)
    assert dtmf.press("4", now=0.0) is None
    assert dtmf.press("2", now=0.5) is None
    assert dtmf.deadline == 2.5
    assert dtmf.due(now=2.4) is None
    assert dtmf.due(now=2.5) == "42"
    assert dtmf.deadline is None
    assert dtmf.due(now=9.0) is None


def test_the_pound_key_ends_a_group_at_once() -> None:
    dtmf = DtmfCollector()
    dtmf.press("1", now=0.0)
    dtmf.press("7", now=0.1)
    assert dtmf.press("#", now=0.2) == "17"
    assert dtmf.press("#", now=0.3) is None  # nothing typed: no empty group


def _tone(level: float, frames: int) -> list[bytes]:
    samples = (level * 32767 * np.sin(np.arange(160 * frames) * 2 * np.pi * 440 / 8000)).astype(
        "<i2"
    )
    return [samples[i * 160 : (i + 1) * 160].tobytes() for i in range(frames)]


def test_vad_starts_on_sustained_speech_and_ends_after_the_hangover() -> None:
    vad = EnergyVad(start_ms=60, end_ms=200)
    loud, quiet = _tone(0.1, 5), _tone(0.0005, 12)
    events = [vad.process(frame) for frame in loud + quiet]
    assert events[2] is VoiceActivity.STARTED  # the third loud frame = 60 ms
    assert events.count(VoiceActivity.STARTED) == 1
    assert events[5 + 9] is VoiceActivity.ENDED  # the tenth quiet frame = 200 ms
    assert not vad.speaking


def test_vad_ignores_a_click_and_line_noise() -> None:
    vad = EnergyVad(start_ms=60)
    frames = _tone(0.0005, 20) + _tone(0.2, 1) + _tone(0.0005, 20)
    assert all(vad.process(frame) is None for frame in frames)


def test_caller_words_arriving_mid_answer_do_not_split_the_models_turn() -> None:
    transcript = Transcript()
    transcript.agent_text("Your order ", 0, now=1.0)
    transcript.caller_text("wait", now=1.2)  # a barge-in, or the service's transcription lagging
    transcript.agent_text("shipped yesterday.", 30, now=1.4)
    turn = transcript.agent_turn_ended(now=1.5, heard_frames=20)
    assert turn is not None
    assert turn.said == "Your order shipped yesterday."
    assert turn.heard == "Your order "
    assert [(t.role, t.said) for t in transcript.turns] == [
        ("agent", "Your order shipped yesterday."),
        ("caller", "wait"),
    ]


def test_the_history_for_a_fresh_session_is_what_the_caller_heard() -> None:
    transcript = Transcript()
    transcript.caller_text("Where is my order?", now=0.0)
    transcript.agent_text("It shipped ", 0, now=1.0)
    transcript.agent_text("yesterday and arrives Friday.", 40, now=1.2)
    transcript.agent_turn_ended(now=1.5, heard_frames=30)  # cut: "yesterday..." was never heard
    transcript.caller_text("Sorry, when?", now=1.6)
    assert transcript.history() == [
        ("user", "Where is my order?"),
        ("model", "It shipped "),
        ("user", "Sorry, when?"),
    ]
