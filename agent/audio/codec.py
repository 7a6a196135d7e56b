"""G.711 mu-law <-> PCM16 conversion, WAV files and an offline reference resampler.

Telephone audio (Twilio Media Streams) is 8 kHz 8-bit mu-law; the Live API speaks 16-bit
little-endian PCM. The per-sample conversion is done by the C implementation in ``audioop``
(stdlib up to Python 3.12, the ``audioop-lts`` package from 3.13), which costs well under a
microsecond per 20 ms frame. Everything here is a pure function of its arguments except
:func:`read_wav` and :func:`write_wav`, which are for tools and tests, never for the live path.

``audioop`` is deprecated in the standard library and warns when imported; the warning is silenced
here, once, so every other module converts through these functions instead of importing ``audioop``.
"""

from __future__ import annotations

import os
import warnings
import wave

import numpy as np
import soxr

from agent.errors import AudioError

with warnings.catch_warnings():
    # Python 3.11/3.12 warn that stdlib audioop goes away in 3.13, where audioop-lts takes its
    # place under the same name; nothing to act on, and pytest turns warnings into errors.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "ULAW_SILENCE",
    "pcm16_rms",
    "pcm16_to_ulaw",
    "read_wav",
    "resample_offline",
    "ulaw_to_pcm16",
    "write_wav",
]

ULAW_SILENCE: int = 0xFF
"""The mu-law byte that decodes to digital silence (sample 0); used to pad partial frames."""

_SAMPLE_WIDTH = 2  # bytes per PCM16 sample


def ulaw_to_pcm16(data: bytes) -> bytes:
    """Decode 8-bit mu-law into PCM16 little-endian: one 2-byte sample per input byte."""
    return audioop.ulaw2lin(data, _SAMPLE_WIDTH)


def pcm16_rms(data: bytes) -> int:
    """Root-mean-square level of PCM16 little-endian audio (0..32767); 0 for no samples."""
    return int(audioop.rms(data, _SAMPLE_WIDTH)) if data else 0


def pcm16_to_ulaw(data: bytes) -> bytes:
    """Encode PCM16 little-endian into 8-bit mu-law: one byte per 2-byte sample.

    Raises :class:`~agent.errors.AudioError` for an odd number of bytes (half a sample), which only
    a caller that cut PCM at the wrong place can produce.
    """
    if len(data) % _SAMPLE_WIDTH:
        raise AudioError(f"PCM16 must be a whole number of 2-byte samples, got {len(data)} bytes")
    return audioop.lin2ulaw(data, _SAMPLE_WIDTH)


def read_wav(path: str | os.PathLike[str]) -> tuple[bytes, int]:
    """Read a mono 16-bit PCM WAV file; return its samples (PCM16 little-endian) and sample rate.

    Raises :class:`~agent.errors.AudioError` naming the file when it is not a PCM WAV file or not
    mono 16-bit, since every consumer here expects exactly that shape. A missing file raises the
    usual :class:`OSError`.
    """
    try:
        with wave.open(os.fspath(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            if channels != 1 or width != _SAMPLE_WIDTH:
                raise AudioError(
                    f"{os.fspath(path)}: expected mono 16-bit PCM WAV, got {channels} channel(s) "
                    f"of {8 * width}-bit samples"
                )
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioError(f"{os.fspath(path)}: not a readable PCM WAV file ({exc})") from exc
    # WAV data is little-endian; keep whole samples in case the file ends mid-sample.
    return frames[: len(frames) - len(frames) % _SAMPLE_WIDTH], rate


def write_wav(path: str | os.PathLike[str], pcm16: bytes, rate: int) -> None:
    """Write PCM16 little-endian samples as a mono 16-bit WAV file at ``rate`` Hz."""
    if len(pcm16) % _SAMPLE_WIDTH:
        raise AudioError(f"PCM16 must be a whole number of 2-byte samples, got {len(pcm16)} bytes")
    if rate <= 0:
        raise AudioError(f"sample rate must be positive, got {rate}")
    with wave.open(os.fspath(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(_SAMPLE_WIDTH)
        wav.setframerate(rate)
        wav.writeframes(pcm16)


def resample_offline(pcm16: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample a whole PCM16 signal at once with soxr's very-high-quality (VHQ) filter.

    The result is time-aligned with the input (soxr compensates its own delay in one-shot mode) and
    is the reference the streaming transcoders are measured against. It needs the whole signal, so
    it is for files and tools; the live path uses :mod:`agent.audio.transcoder`.
    """
    if len(pcm16) % _SAMPLE_WIDTH:
        raise AudioError(f"PCM16 must be a whole number of 2-byte samples, got {len(pcm16)} bytes")
    if from_rate <= 0 or to_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate:
        return bytes(pcm16)
    samples = np.frombuffer(pcm16, dtype="<i2")
    # soxr clips to the int16 range itself when given int16 input.
    out = soxr.resample(samples, from_rate, to_rate, quality="VHQ")
    return np.asarray(out, dtype="<i2").tobytes()
