"""The runner's pure parts: a test's turns as audio and the words the emulator is told."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.cli.agenttest.run import SAMPLE_RATE, WORD_MS, caller_utterances
from agent.cli.agenttest.spec import CallerTurn, TestFile
from agent.errors import ConfigError


def test_text_turns_without_a_voice_are_tones_as_long_as_the_words_and_carry_them() -> None:
    test = TestFile(turns=[CallerTurn(say="where is my order please")])
    (utterance,) = caller_utterances(test, Path("."), voice=False)
    assert utterance.words == "where is my order please"
    samples = np.frombuffer(utterance.pcm, dtype="<i2")
    assert len(samples) == SAMPLE_RATE * 5 * WORD_MS // 1000
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 1000  # speech level, for a VAD


def test_wav_turns_are_bundled_clips_or_files_next_to_the_test_and_carry_no_words() -> None:
    test = TestFile(turns=[CallerTurn(wav="goodbye")])
    (utterance,) = caller_utterances(test, Path("."), voice=False)
    assert utterance.words is None
    assert len(utterance.pcm) > SAMPLE_RATE  # more than half a second of 8 kHz PCM16


def test_a_missing_wav_is_a_config_error_naming_the_bundled_clips(tmp_path: Path) -> None:
    test = TestFile(turns=[CallerTurn(wav="nowhere.wav")])
    with pytest.raises(ConfigError, match="neither a WAV file nor a bundled clip"):
        caller_utterances(test, tmp_path, voice=False)
