"""A small energy voice-activity detector for 20 ms telephone frames.

The Live API detects turns itself by default; the bridge runs this only when an agent disables
automatic activity detection (then the bridge must send ``activityStart``/``activityEnd``) and to
know whether the caller has gone quiet (idle timeout). Telephone speech sits well above -40 dBFS
and line noise well below, so a level threshold with hangover is enough; the Live API's own VAD
remains the judge of turns whenever it is on.
"""

from __future__ import annotations

import math
from enum import Enum

from agent.audio.codec import pcm16_rms


class VoiceActivity(Enum):
    STARTED = "started"
    ENDED = "ended"


class EnergyVad:
    """Speech starts after ``start_ms`` of loud frames and ends after ``end_ms`` of quiet ones."""

    FRAME_MS = 20

    def __init__(
        self, *, threshold_dbfs: float = -40.0, start_ms: int = 60, end_ms: int = 700
    ) -> None:
        self._threshold = 32768.0 * math.pow(10.0, threshold_dbfs / 20.0)
        self._start_frames = max(1, start_ms // self.FRAME_MS)
        self._end_frames = max(1, end_ms // self.FRAME_MS)
        self._run = 0  # consecutive frames on the other side of the threshold
        self.speaking = False
        # The last frame's RMS (0..32768): the call console's caller level, read a few times a
        # second; keeping the value it computes anyway costs the frame nothing.
        self.rms = 0.0

    def process(self, pcm16: bytes) -> VoiceActivity | None:
        """Feed one frame of PCM16 (any rate); returns a transition when one happens."""
        self.rms = rms = pcm16_rms(pcm16)
        loud = rms >= self._threshold
        if loud == self.speaking:
            self._run = 0
            return None
        self._run += 1
        if self.speaking and self._run >= self._end_frames:
            self.speaking, self._run = False, 0
            return VoiceActivity.ENDED
        if not self.speaking and self._run >= self._start_frames:
            self.speaking, self._run = True, 0
            return VoiceActivity.STARTED
        return None
