"""Measurements for audio tests: fixtures, telephone-band SNR against a reference, and delay.

The SNR is measured the way the transcoder requirements state it: both signals are band-limited to
the telephone band (300-3400 Hz) by the same FFT mask over the whole signal, ours is shifted back by
the declared delay, and SNR = 10*log10(sum(ref**2) / sum((ref - ours)**2)).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from agent.audio.codec import read_wav

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TELEPHONE_BAND = (300.0, 3400.0)

Signal = NDArray[np.float64]


@functools.cache
def load_fixture(name: str) -> tuple[bytes, int]:
    """A fixture WAV as (PCM16 bytes, sample rate), read once per test session."""
    return read_wav(FIXTURES / name)


def fixture_names(prefix: str) -> list[str]:
    """File names of the fixtures starting with ``prefix`` (e.g. ``caller-``), sorted."""
    return sorted(p.name for p in FIXTURES.glob(f"{prefix}*.wav"))


def as_float(pcm16: bytes) -> Signal:
    """PCM16 little-endian bytes as float64 samples."""
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float64)


def band_limit(
    signal: Signal, rate: int, low: float = TELEPHONE_BAND[0], high: float = TELEPHONE_BAND[1]
) -> Signal:
    """Zero every FFT bin outside [low, high] Hz over the whole signal (a brick-wall band-pass)."""
    spectrum = np.fft.rfft(signal)
    freqs = np.fft.rfftfreq(signal.size, d=1.0 / rate)
    spectrum[(freqs < low) | (freqs > high)] = 0.0
    return np.fft.irfft(spectrum, n=signal.size)


def align(reference: Signal, ours: Signal, delay: int) -> tuple[Signal, Signal]:
    """Drop ``delay`` leading samples of ours and trim both to the common length."""
    length = min(reference.size, ours.size - delay)
    return reference[:length], ours[delay : delay + length]


def snr_db(reference: Signal, test: Signal) -> float:
    """Plain SNR of ``test`` against ``reference`` (same length), in dB."""
    noise = np.sum((reference - test) ** 2)
    return float(10.0 * np.log10(np.sum(reference**2) / noise)) if noise else float("inf")


def band_snr_db(reference: Signal, ours: Signal, rate: int, delay: int) -> float:
    """Telephone-band SNR of ours against the reference once ours is shifted back by ``delay``."""
    ref, test = align(reference, ours, delay)
    return snr_db(band_limit(ref, rate), band_limit(test, rate))


def measured_delay(reference: Signal, ours: Signal, rate: int, max_lag: int) -> int:
    """The lag (0..max_lag samples) at which ours best matches the reference: the xcorr peak."""
    ref = band_limit(reference, rate)
    test = band_limit(ours[: reference.size], rate)
    size = 1 << int(np.ceil(np.log2(ref.size + test.size)))
    # Circular cross-correlation via FFT; zero padding to >= the sum of lengths makes it linear.
    xcorr = np.fft.irfft(np.conj(np.fft.rfft(ref, size)) * np.fft.rfft(test, size), size)
    return int(np.argmax(xcorr[: max_lag + 1]))
