"""Streaming transcoders between the phone leg (8 kHz mu-law) and the Live API (16 / 24 kHz PCM16).

One pair per call, one object per direction. Each is stateful (it keeps the few samples of history
its filter needs), pure (bytes in, bytes out, no I/O, no clock, no logging) and synchronous: a 20 ms
frame costs microseconds, so the call session runs it inline.

Why not a general resampler: python-soxr's ``ResampleStream`` releases HQ/VHQ output in ~100 ms
blocks (far too much latency for a conversation) and its LQ/QQ settings fall to ~25 dB SNR. Both
conversions here are integer ratios, so a short linear-phase polyphase FIR does better on both:

``Upsampler8kTo16k`` (caller -> model)
    Interpolation by 2 with a 79-tap Kaiser half-band filter (cut-off 4 kHz, 90 dB design
    attenuation: flat to 3.4 kHz, images from 4.6 kHz rejected). Every other tap is an exact zero
    and the centre tap is 1, so odd output samples are the input samples themselves and only the
    even ones need a 40-tap dot product. Group delay: 39 output samples = 2.4375 ms.

``Downsampler24kTo8k`` (model -> caller)
    Decimation by 3 with a 121-tap Kaiser third-band filter (cut-off 4 kHz, 90 dB design
    attenuation). Anything above 4.6 kHz would alias into the 300-3400 Hz telephone band at 8 kHz,
    so that whole region is held ~90 dB down. Every third tap is an exact zero except the centre, so
    one of the three polyphase branches is a single multiply. Group delay: 60 input samples = 20
    output samples = 2.5 ms.

Both filters are designed once at import with numpy (windowed sinc) and have odd length, so the
group delay is a whole number of output samples and the output lines up exactly with an offline
resample shifted by ``delay_samples``. Streaming is exact: each output sample is the same dot
product over the same input samples whatever the chunking, so a signal fed in pieces of any size
gives the same bytes as fed at once (no clicks at chunk boundaries). Output is rounded and clipped
to int16.
"""

from __future__ import annotations

import math
from typing import ClassVar, Final

import numpy as np
from numpy.typing import NDArray

from agent.audio.codec import ULAW_SILENCE, pcm16_to_ulaw, ulaw_to_pcm16
from agent.errors import AudioError

__all__ = [
    "DOWNSAMPLER_FILTER",
    "UPSAMPLER_FILTER",
    "Downsampler24kTo8k",
    "InboundTranscoder",
    "OutboundTranscoder",
    "Upsampler8kTo16k",
    "kaiser_lowpass",
]

_INT16_MIN: Final = -32768.0
_INT16_MAX: Final = 32767.0


def _kaiser_beta(attenuation_db: float) -> float:
    """Kaiser's empirical window parameter for a stop-band attenuation (Oppenheim & Schafer)."""
    if attenuation_db > 50.0:
        return 0.1102 * (attenuation_db - 8.7)
    if attenuation_db >= 21.0:
        excess = attenuation_db - 21.0
        return 0.5842 * math.pow(excess, 0.4) + 0.07886 * excess
    return 0.0


def kaiser_lowpass(num_taps: int, cutoff: float, attenuation_db: float) -> NDArray[np.float64]:
    """A linear-phase low-pass FIR: an ideal sinc cut at ``cutoff`` under a Kaiser window.

    ``cutoff`` is in cycles per sample (0.5 is the Nyquist frequency). The taps are returned
    unscaled (DC gain close to, not exactly, 1); callers normalise them for their own structure.
    """
    if num_taps < 1 or num_taps % 2 == 0:
        raise ValueError(f"num_taps must be odd and positive for a whole-sample delay: {num_taps}")
    offsets = np.arange(num_taps) - (num_taps - 1) / 2
    window = np.kaiser(num_taps, _kaiser_beta(attenuation_db))
    taps: NDArray[np.float64] = 2.0 * cutoff * np.sinc(2.0 * cutoff * offsets) * window
    return taps


def _frozen(taps: NDArray[np.float64]) -> NDArray[np.float64]:
    taps.setflags(write=False)
    return taps


def _design_upsampler() -> NDArray[np.float64]:
    """The 8k->16k interpolation filter at 16 kHz, gain 2 (each input feeds every 2nd output)."""
    taps = 2.0 * kaiser_lowpass(79, 0.25, 90.0)
    centre = (taps.size - 1) // 2
    # A half-band sinc is zero at every even distance from the centre; make those exact so the
    # pass-through branch copies input samples bit for bit.
    even_distance = (np.arange(taps.size) - centre) % 2 == 0
    taps[even_distance] = 0.0
    taps[centre] = 1.0
    # Normalise the filtering branch on its own: both branches must have DC gain 1 or a constant
    # input would leave a tone at 8 kHz.
    taps[~even_distance] /= taps[~even_distance].sum()
    return _frozen(taps)


def _design_downsampler() -> NDArray[np.float64]:
    """The 24k->8k anti-alias filter at 24 kHz, DC gain 1."""
    taps = kaiser_lowpass(121, 1.0 / 6.0, 90.0)
    centre = (taps.size - 1) // 2
    # A third-band sinc is zero at every distance that is a multiple of 3; make those exact.
    third = (np.arange(taps.size) - centre) % 3 == 0
    third[centre] = False
    taps[third] = 0.0
    taps /= taps.sum()
    return _frozen(taps)


UPSAMPLER_FILTER: Final[NDArray[np.float64]] = _design_upsampler()
"""Prototype filter of :class:`Upsampler8kTo16k` at 16 kHz (read-only; for analysis and tests)."""

DOWNSAMPLER_FILTER: Final[NDArray[np.float64]] = _design_downsampler()
"""Prototype filter of :class:`Downsampler24kTo8k` at 24 kHz (read-only; for analysis and tests)."""

# Polyphase branches, in float32: exact for int16 samples, accurate far beyond 16-bit output, and
# faster than float64 in np.convolve.
_UP_EVEN: Final = UPSAMPLER_FILTER[0::2].astype(np.float32)  # 40 taps -> even outputs
_UP_HISTORY: Final = _UP_EVEN.size - 1  # 39 past input samples
_UP_DELAY_IN: Final = (UPSAMPLER_FILTER.size - 1) // 4  # odd outputs = input delayed by 19 samples
_DOWN_CENTRE_ROW: Final = (DOWNSAMPLER_FILTER.size - 1) // 6  # 20
_DOWN_CENTRE_TAP: Final = np.float32(DOWNSAMPLER_FILTER[(DOWNSAMPLER_FILTER.size - 1) // 2])
_DOWN_PHASE1: Final = DOWNSAMPLER_FILTER[1::3].astype(np.float32)  # 40 taps
_DOWN_PHASE2: Final = DOWNSAMPLER_FILTER[2::3].astype(np.float32)  # 40 taps
_DOWN_HISTORY: Final = DOWNSAMPLER_FILTER.size - 1  # 120 input samples


def _samples(pcm16: bytes) -> NDArray[np.int16]:
    if len(pcm16) % 2:
        raise AudioError(f"PCM16 must be a whole number of 2-byte samples, got {len(pcm16)} bytes")
    return np.frombuffer(pcm16, dtype="<i2")


def _to_int16_inplace(values: NDArray[np.float32]) -> NDArray[np.float32]:
    """Round to nearest and saturate, so the int16 cast cannot wrap around."""
    np.rint(values, out=values)
    np.maximum(values, _INT16_MIN, out=values)
    np.minimum(values, _INT16_MAX, out=values)
    return values


class Upsampler8kTo16k:
    """PCM16 8 kHz -> PCM16 16 kHz, streaming, exactly two output samples per input sample.

    Output for input sample ``n`` is emitted in the same call that receives it: the filter is causal
    and keeps only the previous 39 input samples, so nothing is buffered beyond its group delay.
    """

    IN_RATE: ClassVar[int] = 8000
    OUT_RATE: ClassVar[int] = 16000
    delay_samples: ClassVar[int] = (UPSAMPLER_FILTER.size - 1) // 2
    """Group delay in output (16 kHz) samples: 39."""
    delay_ms: ClassVar[float] = 1000.0 * delay_samples / OUT_RATE

    __slots__ = ("_history",)

    def __init__(self) -> None:
        self._history: NDArray[np.float32] = np.zeros(_UP_HISTORY, dtype=np.float32)

    def process(self, pcm16: bytes) -> bytes:
        """Upsample any number of whole samples (0 included); returns exactly twice as many."""
        samples = _samples(pcm16)
        count = samples.size
        if count == 0:
            return b""
        window = np.concatenate((self._history, samples), dtype=np.float32)
        self._history = window[count:]
        out = np.empty((count, 2), dtype="<i2")
        out[:, 0] = _to_int16_inplace(np.convolve(window, _UP_EVEN, "valid"))
        # The other branch is the centre tap alone (exactly 1): delayed input, already integral.
        out[:, 1] = window[_UP_HISTORY - _UP_DELAY_IN : _UP_HISTORY - _UP_DELAY_IN + count]
        return out.tobytes()

    def reset(self) -> None:
        """Forget the history, as a new instance would."""
        self._history = np.zeros(_UP_HISTORY, dtype=np.float32)


class Downsampler24kTo8k:
    """PCM16 24 kHz -> PCM16 8 kHz, streaming, one output sample per three input samples.

    Output sample ``m`` is the filter evaluated at input sample ``3m``; it is emitted as soon as
    that input sample arrives. Up to two input samples wait for the next call, plus the history.
    """

    IN_RATE: ClassVar[int] = 24000
    OUT_RATE: ClassVar[int] = 8000
    delay_samples: ClassVar[int] = (DOWNSAMPLER_FILTER.size - 1) // 6
    """Group delay in output (8 kHz) samples: 20."""
    delay_ms: ClassVar[float] = 1000.0 * delay_samples / OUT_RATE

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        # Invariant: _pending[0] is input sample 3*m - 120, where m is the next output to emit.
        self._pending: NDArray[np.float32] = np.zeros(_DOWN_HISTORY, dtype=np.float32)

    def process(self, pcm16: bytes) -> bytes:
        """Downsample any number of whole samples; returns every output sample now computable."""
        samples = _samples(pcm16)
        if samples.size == 0:
            return b""
        window = np.concatenate((self._pending, samples), dtype=np.float32)
        count = (window.size - DOWNSAMPLER_FILTER.size) // 3 + 1
        if count <= 0:
            self._pending = window
            return b""
        self._pending = window[3 * count :]
        # Row r holds input samples 3r, 3r+1, 3r+2 of the window; each column is one polyphase
        # input stream, so each branch is one np.convolve over a column. np.convolve computes each
        # output as one dot product of fixed length, so its rounding cannot depend on where chunks
        # were cut; a BLAS matrix-vector product over a strided window view is ~25% faster but
        # rounds a row differently depending on how the rows are blocked, breaking bit-exactness.
        rows = window[: 3 * (count + _DOWN_PHASE1.size - 1)].reshape(-1, 3)
        out = np.convolve(rows[:, 2], _DOWN_PHASE1, "valid")
        out += np.convolve(rows[:, 1], _DOWN_PHASE2, "valid")
        out += _DOWN_CENTRE_TAP * rows[_DOWN_CENTRE_ROW : _DOWN_CENTRE_ROW + count, 0]
        return _to_int16_inplace(out).astype("<i2").tobytes()

    def reset(self) -> None:
        """Forget the history and any partial input, as a new instance would."""
        self._pending = np.zeros(_DOWN_HISTORY, dtype=np.float32)


class InboundTranscoder:
    """Caller audio for the model: Twilio mu-law 8 kHz -> PCM16 16 kHz, as the Live API expects.

    Every input byte yields 4 output bytes (two 16-bit samples) in the same call, whatever the chunk
    size, so the caller's speech reaches the model with only the filter's 2.4 ms delay.
    """

    delay_ms: ClassVar[float] = Upsampler8kTo16k.delay_ms

    __slots__ = ("_upsampler",)

    def __init__(self) -> None:
        self._upsampler = Upsampler8kTo16k()

    def process(self, ulaw: bytes) -> bytes:
        """Transcode one chunk of mu-law (any length, usually 160 bytes = 20 ms)."""
        return self._upsampler.process(ulaw_to_pcm16(ulaw))

    def process_pcm16(self, pcm8k: bytes) -> bytes:
        """The same for audio already decoded to 8 kHz PCM16 (a caller that also inspects it)."""
        return self._upsampler.process(pcm8k)

    def reset(self) -> None:
        """Start over as a fresh transcoder (e.g. when the media stream restarts)."""
        self._upsampler.reset()


class OutboundTranscoder:
    """Model audio for the caller: Live API PCM16 24 kHz -> mu-law 8 kHz in 20 ms Twilio frames.

    The model's chunks have any size, even an odd number of bytes; a dangling byte and any partial
    frame are carried to the next call. Only whole :attr:`FRAME_BYTES` frames are returned, so the
    playback tracker can count 20 ms per frame.
    """

    FRAME_BYTES: ClassVar[int] = 160
    """One 20 ms frame of mu-law at 8 kHz."""
    delay_ms: ClassVar[float] = Downsampler24kTo8k.delay_ms

    __slots__ = ("_dirty", "_downsampler", "_odd_byte", "_ulaw")

    def __init__(self) -> None:
        self._downsampler = Downsampler24kTo8k()
        self._odd_byte = b""  # first half of a sample split across chunks
        self._ulaw = bytearray()  # encoded audio not yet a whole frame
        self._dirty = False  # audio came in since the last flush or reset

    def process(self, pcm24: bytes) -> list[bytes]:
        """Transcode one chunk of model audio; return the whole 160-byte frames now ready."""
        self._dirty = True
        if self._odd_byte:
            pcm24 = self._odd_byte + pcm24
        whole = len(pcm24) & ~1
        self._odd_byte = pcm24[whole:]
        if whole != len(pcm24):
            pcm24 = pcm24[:whole]
        self._ulaw += pcm16_to_ulaw(self._downsampler.process(pcm24))
        size = self.FRAME_BYTES
        ready = len(self._ulaw) // size * size
        if not ready:
            return []
        frames = [bytes(self._ulaw[i : i + size]) for i in range(0, ready, size)]
        del self._ulaw[:ready]
        return frames

    def flush(self) -> list[bytes]:
        """End of a model turn: the turn's last frames, so nothing of it waits for the next turn.

        The filter still holds the turn's last 2.5 ms: pushing that much silence through drains it,
        then the partial frame is padded with mu-law silence. The filter starts the next turn clean,
        and a dangling half sample is dropped so the next turn starts on a sample boundary.
        """
        if not self._dirty:
            return []
        self._odd_byte = b""
        frames = self.process(bytes(2 * 3 * Downsampler24kTo8k.delay_samples))
        if self._ulaw:
            frames.append(bytes(self._ulaw).ljust(self.FRAME_BYTES, bytes((ULAW_SILENCE,))))
            self._ulaw.clear()
        self._downsampler.reset()
        self._dirty = False
        return frames

    def reset(self) -> None:
        """Barge-in: drop the filter history, the partial frame and any dangling byte at once."""
        self._downsampler.reset()
        self._odd_byte = b""
        self._ulaw.clear()
        self._dirty = False
