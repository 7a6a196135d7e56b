"""The offline speech engines, on real audio: eSpeak NG's voice and a recorded caller."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.audio.codec import read_wav
from agent.sim import speech
from agent.sim.speech import espeak, sphinx, worker
from agent.sim.speech.lazy import LazyEngine

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"


def test_both_engines_are_installed_with_the_dev_extra() -> None:
    assert speech.speech_available() == {"tts": True, "stt": True}


def test_speak_returns_audible_pcm16_at_the_rate_asked_for() -> None:
    pcm = speech.speak("Thanks for calling Bright Smile Dental.", 24_000)
    assert pcm is not None
    samples = np.frombuffer(pcm, dtype="<i2")
    seconds = len(samples) / 24_000
    assert 1.0 < seconds < 5.0
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 300


def test_speak_nothing_is_no_audio() -> None:
    assert speech.speak("   ", 16_000) == b""


def test_the_recogniser_hears_the_synthesised_voice() -> None:
    # eSpeak NG's output varies a little from one call to the next within a process (its
    # waveform is not reproducible), and so would what is recognised: a recording of it, made
    # once with speak(), keeps this test's verdict the same on every run.
    pcm, rate = read_wav(FIXTURES / "tts-order-status-16k.wav")
    heard = speech.transcribe(pcm, rate)
    assert heard is not None
    assert "order" in heard.split()
    assert "status" in heard.split()


def test_the_recogniser_hears_the_recorded_caller_at_telephone_rate() -> None:
    pcm, rate = read_wav(FIXTURES / "caller-order-status.wav")
    heard = speech.transcribe(pcm, rate)
    assert heard is not None
    assert "order" in heard.split()


def test_other_languages_have_no_recogniser() -> None:
    pcm = speech.speak("Hallo", 16_000)
    assert pcm is not None
    assert speech.transcribe(pcm, 16_000, "de-DE") is None


def test_without_the_engines_both_calls_say_none(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on an installation without the speech extra: the wheels cannot be imported.
    builds = []

    def no_wheel() -> object:
        builds.append(1)
        raise ImportError("no module named espeakng_loader")

    for module in (espeak, sphinx):
        monkeypatch.setattr(module, "_engine", LazyEngine(no_wheel, (ImportError,)))
    assert speech.speech_available() == {"tts": False, "stt": False}
    assert speech.speak("Hello", 24_000) is None
    assert speech.transcribe(b"\x00\x00" * 1600, 16_000) is None
    assert speech.speak("Again", 24_000) is None
    assert len(builds) == 2  # once per engine: a missing wheel is found out once


def test_the_worker_process_hears_what_the_in_process_recogniser_hears() -> None:
    pcm, rate = read_wav(FIXTURES / "caller-goforward.wav")
    try:
        assert worker.transcribe_in_worker(pcm, rate) == speech.transcribe(pcm, rate)
        assert worker.transcribe_in_worker(pcm, rate, "fr-FR") is None
    finally:
        worker.shutdown()
