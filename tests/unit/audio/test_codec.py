"""G.711 mu-law, WAV I/O and the offline reference resampler; literal payloads, no event loop."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from audio_metrics import as_float, fixture_names, load_fixture, snr_db

from agent.audio.codec import (
    ULAW_SILENCE,
    pcm16_to_ulaw,
    read_wav,
    resample_offline,
    ulaw_to_pcm16,
    write_wav,
)
from agent.errors import AudioError


def pcm(*samples: int) -> bytes:
    """PCM16 little-endian bytes for literal samples."""
    return struct.pack(f"<{len(samples)}h", *samples)


# --- mu-law ---------------------------------------------------------------------------------------


def test_ulaw_silence_byte_decodes_to_zero() -> None:
    assert ULAW_SILENCE == 0xFF
    assert ulaw_to_pcm16(bytes([ULAW_SILENCE])) == pcm(0)


@pytest.mark.parametrize(
    ("code", "sample"),
    [
        (0x00, -32124),  # most negative
        (0x80, 32124),  # most positive
        (0xFF, 0),  # positive zero
        (0x7F, 0),  # negative zero
        (0xFE, 8),  # smallest positive step
        (0x7E, -8),
        (0xF0, 120),
        (0xEF, 132),  # first code of the next segment: the step doubles from 8 to 16
    ],
)
def test_ulaw_byte_decodes_to_the_g711_sample(code: int, sample: int) -> None:
    assert ulaw_to_pcm16(bytes([code])) == pcm(sample)


@pytest.mark.parametrize(
    ("sample", "code"),
    [(0, 0xFF), (32767, 0x80), (-32768, 0x00), (8, 0xFE), (-8, 0x7E), (32124, 0x80)],
)
def test_pcm16_sample_encodes_to_the_g711_byte(sample: int, code: int) -> None:
    assert pcm16_to_ulaw(pcm(sample)) == bytes([code])


def test_every_ulaw_code_survives_a_round_trip_except_negative_zero() -> None:
    codes = bytes(range(256))
    expected = codes.replace(b"\x7f", b"\xff")  # -0 and +0 both decode to 0, which encodes as +0
    assert pcm16_to_ulaw(ulaw_to_pcm16(codes)) == expected


def test_one_sample_per_byte_in_both_directions_and_empty_is_empty() -> None:
    assert len(ulaw_to_pcm16(b"\xff" * 160)) == 320
    assert len(pcm16_to_ulaw(b"\x00" * 320)) == 160
    assert ulaw_to_pcm16(b"") == b""
    assert pcm16_to_ulaw(b"") == b""


def test_pcm16_with_half_a_sample_is_an_audio_error() -> None:
    with pytest.raises(AudioError, match="2-byte samples"):
        pcm16_to_ulaw(b"\x00\x00\x00")


@pytest.mark.parametrize("name", fixture_names("model-"))
def test_ulaw_round_trip_keeps_speech_above_35_db_snr(name: str) -> None:
    """G.711 quantisation noise on real speech stays ~37 dB below the signal.

    The model fixtures are used because they never went through mu-law (the caller ones already did,
    so their round trip is lossless).
    """
    speech, _ = load_fixture(name)
    assert snr_db(as_float(speech), as_float(ulaw_to_pcm16(pcm16_to_ulaw(speech)))) >= 35.0


def test_ulaw_round_trip_of_a_caller_fixture_is_lossless() -> None:
    """Audio that already came from the phone network re-encodes to the very same samples."""
    speech, _ = load_fixture("caller-librivox-0880.wav")
    assert ulaw_to_pcm16(pcm16_to_ulaw(speech)) == speech


# --- WAV files ------------------------------------------------------------------------------------


def test_wav_round_trip_keeps_samples_and_rate(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    samples = pcm(0, 1, -1, 32767, -32768)
    write_wav(path, samples, 8000)
    assert read_wav(path) == (samples, 8000)
    assert read_wav(str(path)) == (samples, 8000)


def test_read_wav_reads_the_fixtures_as_mono_pcm16() -> None:
    data, rate = load_fixture("model-greeting-24k.wav")
    assert rate == 24000
    assert len(data) % 2 == 0
    assert len(data) > 24000 * 2  # more than a second of speech


def _write_raw_wav(path: Path, channels: int, width: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(8000)
        wav.writeframes(b"\x00" * channels * width * 10)


def test_read_wav_rejects_stereo_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    _write_raw_wav(path, channels=2, width=2)
    with pytest.raises(
        AudioError, match=r"stereo\.wav: expected mono 16-bit PCM WAV, got 2 channel"
    ):
        read_wav(path)


def test_read_wav_rejects_8_bit_samples(tmp_path: Path) -> None:
    path = tmp_path / "narrow.wav"
    _write_raw_wav(path, channels=1, width=1)
    with pytest.raises(AudioError, match="8-bit samples"):
        read_wav(path)


def test_read_wav_rejects_a_file_that_is_not_wav(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(b"not a riff file at all")
    with pytest.raises(AudioError, match="not a readable PCM WAV file"):
        read_wav(path)


def test_write_wav_rejects_half_a_sample(tmp_path: Path) -> None:
    with pytest.raises(AudioError):
        write_wav(tmp_path / "bad.wav", b"\x00", 8000)


# --- offline reference resampler ------------------------------------------------------------------


def test_resample_offline_scales_the_length_by_the_rate_ratio() -> None:
    one_second = b"\x00\x00" * 8000
    assert len(resample_offline(one_second, 8000, 16000)) == 2 * 16000
    assert len(resample_offline(b"\x00\x00" * 24000, 24000, 8000)) == 2 * 8000
    assert resample_offline(b"", 8000, 16000) == b""


def test_resample_offline_at_the_same_rate_returns_the_input() -> None:
    assert resample_offline(pcm(1, 2, 3), 8000, 8000) == pcm(1, 2, 3)


def test_resample_offline_keeps_a_tone_in_time_and_level() -> None:
    """The reference is zero-delay: a 1 kHz tone comes out on the same time axis at the new rate."""
    t8 = np.arange(8000) / 8000
    tone = np.round(10000 * np.sin(2 * np.pi * 1000 * t8)).astype("<i2").tobytes()
    out = as_float(resample_offline(tone, 8000, 24000))
    t24 = np.arange(24000) / 24000
    expected = 10000 * np.sin(2 * np.pi * 1000 * t24)
    middle = slice(2400, -2400)  # away from the edges, where the signal starts and stops abruptly
    assert np.max(np.abs(out[middle] - expected[middle])) <= 2.0


def test_resample_offline_rejects_bad_rates() -> None:
    with pytest.raises(AudioError):
        resample_offline(pcm(0), 0, 8000)
