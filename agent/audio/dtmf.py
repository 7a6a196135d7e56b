"""DTMF in-band: the keypad's dual tones as 8 kHz PCM16, and a Goertzel detector for them.

Why in-band: a bidirectional Twilio media stream takes only ``media``, ``mark`` and ``clear``
from us (https://www.twilio.com/docs/voice/media-streams/websocket-messages), and the REST way
to press keys, a call update with ``<Play digits>``, replaces the call's TwiML and so ends the
stream. Tones in the outbound audio reach the far end like any other sound; mu-law carries
them well (it is how keypads were heard before out-of-band signalling).

Each key is the sum of a row and a column frequency (ITU-T Q.23). The tones here last
:data:`TONE_MS` with :data:`GAP_MS` of silence after each, longer than the 40 ms minimum of
each that Q.24 receivers must accept. Pure: no I/O, nothing of ours imported.
"""

from __future__ import annotations

from typing import Final

import numpy as np

SAMPLE_RATE: Final = 8000
ROWS: Final = (697.0, 770.0, 852.0, 941.0)
COLUMNS: Final = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD: Final = ("123A", "456B", "789C", "*0#D")
KEYS: Final = "".join(KEYPAD)
TONE_MS: Final = 100
GAP_MS: Final = 80
# Each of the two tones at this amplitude: together well under full scale, loud on a line.
_AMPLITUDE: Final = 0.35 * 32767


def key_frequencies(key: str) -> tuple[float, float]:
    """The row and column frequency of ``key`` (``ValueError`` for anything else)."""
    for row, keys in enumerate(KEYPAD):
        column = keys.find(key) if len(key) == 1 else -1
        if column >= 0:
            return ROWS[row], COLUMNS[column]
    raise ValueError(f"{key!r} is not a keypad key (0-9, *, #, A-D)")


def tones(keys: str, *, tone_ms: int = TONE_MS, gap_ms: int = GAP_MS) -> bytes:
    """PCM16 8 kHz: each of ``keys`` as its dual tone, then silence. ``ValueError`` for a key
    that is not on a keypad, before any audio is made."""
    for key in keys:
        key_frequencies(key)
    t = np.arange(SAMPLE_RATE * tone_ms // 1000) / SAMPLE_RATE
    gap = np.zeros(SAMPLE_RATE * gap_ms // 1000)
    pieces = []
    for key in keys:
        low, high = key_frequencies(key)
        pieces.append(_AMPLITUDE * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)))
        pieces.append(gap)
    if not pieces:
        return b""
    return np.concatenate(pieces).round().astype("<i2").tobytes()


class DtmfDetector:
    """Hears keys in PCM16 8 kHz, block by block (Goertzel's single-frequency DFT at the eight
    keypad frequencies).

    Feed it audio with :meth:`feed`; it returns each key once, when a tone has lasted two
    blocks of :data:`BLOCK` samples (20 ms each), and hears the same key again only after a
    block without it. A block counts as a key when its strongest row and strongest column
    tone each stand well above the other tones of their group and together carry most of the
    block's energy: speech and music rarely look like that, a single tone (a beep) never does.
    """

    BLOCK: Final = 160

    def __init__(self) -> None:
        n = np.arange(self.BLOCK)
        frequencies = np.array(ROWS + COLUMNS)
        # The DFT basis at each frequency: power = |x . e^{-i 2 pi f n / fs}|^2.
        self._basis = np.exp(-2j * np.pi * np.outer(frequencies, n) / SAMPLE_RATE)
        self._pending = np.zeros(0)
        self._candidate: str | None = None
        self._run = 0
        self._reported = False

    def feed(self, pcm16: bytes) -> list[str]:
        """Keys whose tone completed its second block in this audio, in order."""
        samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
        data = np.concatenate([self._pending, samples]) if self._pending.size else samples
        heard: list[str] = []
        whole = data.size // self.BLOCK * self.BLOCK
        for start in range(0, whole, self.BLOCK):
            key = self._block_key(data[start : start + self.BLOCK])
            if key is not None and key == self._candidate:
                self._run += 1
            else:
                self._candidate, self._run, self._reported = key, 1 if key else 0, False
            if key is not None and self._run >= 2 and not self._reported:
                heard.append(key)
                self._reported = True
        self._pending = data[whole:]
        return heard

    def _block_key(self, block: np.ndarray) -> str | None:
        energy = float(np.dot(block, block))
        if energy < self.BLOCK * 300.0**2:  # quieter than a key on a line: nothing
            return None
        power = np.abs(self._basis @ block) ** 2 * (2.0 / self.BLOCK)
        rows, columns = power[:4], power[4:]
        row, column = int(np.argmax(rows)), int(np.argmax(columns))
        strongest_row, strongest_column = rows[row], columns[column]
        others_row = np.delete(rows, row).max()
        others_column = np.delete(columns, column).max()
        if strongest_row < 6 * others_row or strongest_column < 6 * others_column:
            return None
        # Both tones, comparable in strength, and most of the block's energy.
        if not 0.1 < strongest_row / strongest_column < 10:
            return None
        if strongest_row + strongest_column < 0.5 * energy:
            return None
        return KEYPAD[row][column]
