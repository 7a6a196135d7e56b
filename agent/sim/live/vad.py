"""The emulator's voice activity detector: energy against an adaptive noise floor, on audio time
(sample counts), honouring ``automaticActivityDetection``'s sensitivities and durations.

Part of the emulator's sans-I/O core (see :mod:`agent.sim.live.core`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

FRAME_MS: Final = 10
# Energy thresholds in dBFS (RMS of a 10 ms frame relative to full scale). Telephone speech, even
# after a mu-law round trip and upsampling, peaks at -10..-25 dBFS with syllables above -35; line
# and room noise in the fixtures sits at -45..-60 dBFS and mu-law silence at -78 dBFS.
START_THRESHOLD_DBFS: Final = {"HIGH": -40.0, "LOW": -32.0}
# A start also needs this much above the tracked noise floor, so a noisy line does not talk forever.
START_MARGIN_DB: Final = {"HIGH": 9.0, "LOW": 14.0}
# Once speaking, frames count as speech down to (start threshold - hysteresis). END_SENSITIVITY_HIGH
# "ends speech more often": little hysteresis, so trailing murmurs read as silence; LOW keeps quiet
# word endings and breaths inside the turn.
END_HYSTERESIS_DB: Final = {"HIGH": 4.0, "LOW": 10.0}
# Speech must stay this far above the noise floor to keep a turn open.
END_MARGIN_DB: Final = 4.0
# The noise floor follows the quietest frames down at once and creeps up this fast, so it adapts to
# a steady noisy line within seconds but not to a caller who keeps talking.
NOISE_FLOOR_RISE_DB_PER_S: Final = 3.0
SILENCE_DBFS: Final = -120.0

DEFAULT_SILENCE_DURATION_MS: Final = 500
DEFAULT_PREFIX_PADDING_MS: Final = 20


@dataclass(frozen=True, slots=True)
class VadSettings:
    """``realtimeInputConfig.automaticActivityDetection`` with the Developer API's defaults."""

    disabled: bool = False
    start_sensitivity: Literal["HIGH", "LOW"] = "HIGH"
    end_sensitivity: Literal["HIGH", "LOW"] = "HIGH"
    prefix_padding_ms: int = DEFAULT_PREFIX_PADDING_MS
    silence_duration_ms: int = DEFAULT_SILENCE_DURATION_MS


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started speaking ``at_ms`` into the audio stream."""

    at_ms: float


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The caller stopped speaking; ``at_ms`` is the end of the last speech frame."""

    at_ms: float
    duration_ms: float


VadEvent = SpeechStarted | SpeechEnded


class EmulatorVad:
    """An energy voice activity detector clocked by the audio itself.

    Audio is cut into 10 ms frames at whatever rate it arrives. A start needs ``prefix_padding_ms``
    of consecutive frames above the start threshold; an end needs ``silence_duration_ms`` of frames
    below the (lower) end threshold. Both thresholds are absolute dBFS levels raised, on a noisy
    line, to a margin above a tracked noise floor.
    """

    def __init__(self, settings: VadSettings) -> None:
        self.settings = settings
        self._start_abs = START_THRESHOLD_DBFS[settings.start_sensitivity]
        self._start_margin = START_MARGIN_DB[settings.start_sensitivity]
        self._hysteresis = END_HYSTERESIS_DB[settings.end_sensitivity]
        # Frames needed: at least one, however small the configured durations.
        self._start_frames = max(1, math.ceil(settings.prefix_padding_ms / FRAME_MS))
        self._end_frames = max(1, math.ceil(settings.silence_duration_ms / FRAME_MS))
        self._rise_per_frame = NOISE_FLOOR_RISE_DB_PER_S * FRAME_MS / 1000
        # Start neutral: the floor only matters once it is known to be high.
        self.noise_floor_db = self._start_abs - self._start_margin
        self.position_ms = 0.0
        self.speaking = False
        self._pending = np.zeros(0, dtype=np.float64)
        self._pending_rate = 0
        self._run = 0
        self._run_start_ms = 0.0
        self._speech_start_ms = 0.0
        self._silent = 0
        self._last_speech_end_ms = 0.0

    def feed(self, samples: npt.NDArray[np.int16], rate: int) -> list[VadEvent]:
        """Run the detector over ``samples`` (mono, ``rate`` Hz); return what changed."""
        if rate != self._pending_rate:
            # A partial frame at another rate cannot be joined to this audio; skip its few ms.
            if self._pending_rate:
                self.position_ms += len(self._pending) / self._pending_rate * 1000
            self._pending = np.zeros(0, dtype=np.float64)
            self._pending_rate = rate
        data = np.concatenate([self._pending, samples.astype(np.float64)])
        frame_len = max(1, rate * FRAME_MS // 1000)
        whole = len(data) // frame_len * frame_len
        self._pending = data[whole:]
        if whole == 0:
            return []
        frames = data[:whole].reshape(-1, frame_len)
        power = np.mean(frames * frames, axis=1) / (32768.0 * 32768.0)
        levels = 10 * np.log10(np.maximum(power, 10 ** (SILENCE_DBFS / 10)))
        frame_ms = frame_len / rate * 1000
        events: list[VadEvent] = []
        for level in levels.tolist():
            event = self._frame(level, frame_ms)
            if event is not None:
                events.append(event)
        return events

    def _frame(self, level: float, frame_ms: float) -> VadEvent | None:
        at = self.position_ms
        self.position_ms += frame_ms
        self.noise_floor_db = min(level, self.noise_floor_db + self._rise_per_frame)
        start_threshold = max(self._start_abs, self.noise_floor_db + self._start_margin)
        if not self.speaking:
            if level < start_threshold:
                self._run = 0
                return None
            if self._run == 0:
                self._run_start_ms = at
            self._run += 1
            if self._run < self._start_frames:
                return None
            self.speaking = True
            self._speech_start_ms = self._run_start_ms
            self._last_speech_end_ms = self.position_ms
            self._silent = 0
            self._run = 0
            return SpeechStarted(self._speech_start_ms)
        end_threshold = max(start_threshold - self._hysteresis, self.noise_floor_db + END_MARGIN_DB)
        if level >= end_threshold:
            self._silent = 0
            self._last_speech_end_ms = self.position_ms
            return None
        self._silent += 1
        if self._silent < self._end_frames:
            return None
        return self.end_speech()

    def end_speech(self) -> SpeechEnded | None:
        """End a turn in progress now (``audioStreamEnd``); ``None`` when nobody is speaking."""
        self._run = 0
        if not self.speaking:
            return None
        self.speaking = False
        self._silent = 0
        return SpeechEnded(
            self._last_speech_end_ms, self._last_speech_end_ms - self._speech_start_ms
        )
