"""DTMF tones and their detector (``agent.audio.dtmf``), with literal keys and no loop."""

from __future__ import annotations

import numpy as np
import pytest

from agent.audio.codec import pcm16_to_ulaw, read_wav, ulaw_to_pcm16
from agent.audio.dtmf import GAP_MS, TONE_MS, DtmfDetector, key_frequencies, tones


def test_each_key_is_its_row_and_column_tone() -> None:
    assert key_frequencies("1") == (697.0, 1209.0)
    assert key_frequencies("#") == (941.0, 1477.0)
    assert key_frequencies("D") == (941.0, 1633.0)
    with pytest.raises(ValueError, match="not a keypad key"):
        key_frequencies("x")


def test_tones_last_their_length_with_a_gap_after_each() -> None:
    pcm = tones("12")
    assert len(pcm) == 2 * 2 * 8000 * (TONE_MS + GAP_MS) // 1000
    samples = np.frombuffer(pcm, dtype="<i2")
    tone = 8000 * TONE_MS // 1000
    assert np.abs(samples[:tone]).max() > 10_000
    assert not samples[tone : tone + 8000 * GAP_MS // 1000].any()
    assert tones("") == b""
    with pytest.raises(ValueError, match="not a keypad key"):
        tones("1x")  # refused before any audio is made


def test_every_key_is_heard_once_through_mu_law_however_the_audio_is_cut() -> None:
    keys = "0123456789*#ABCD"
    line = ulaw_to_pcm16(pcm16_to_ulaw(tones(keys)))
    assert "".join(DtmfDetector().feed(line)) == keys
    detector, heard = DtmfDetector(), []
    for start in range(0, len(line), 74):  # 37 samples at a time: blocks span the pieces
        heard.extend(detector.feed(line[start : start + 74]))
    assert "".join(heard) == keys


def test_a_key_pressed_twice_is_heard_twice_but_one_long_tone_once() -> None:
    assert DtmfDetector().feed(tones("55")) == ["5", "5"]
    assert DtmfDetector().feed(tones("5", tone_ms=600)) == ["5"]


def test_speech_a_beep_and_silence_are_no_keys() -> None:
    t = np.arange(4000) / 8000
    beep = (np.sin(2 * np.pi * 1000 * t) * 8000).astype("<i2").tobytes()
    assert DtmfDetector().feed(beep) == []
    assert DtmfDetector().feed(bytes(16000)) == []
    speech, rate = read_wav("agent/sim/assets/caller-order-status.wav")
    assert rate == 8000
    assert DtmfDetector().feed(speech) == []
