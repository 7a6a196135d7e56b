"""Call time: real time in production, faster in simulations.

Everything that reasons about audio time (the playback model, call timers, goAway deadlines) reads
this clock, and converts its intervals to wall-clock waits with :meth:`Clock.wall`. With
``speed=10`` a simulated call (emulator and carrier at 10x) keeps the same arithmetic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Clock:
    """Monotonic seconds, scaled by ``speed``."""

    speed: float = 1.0

    def now(self) -> float:
        return time.monotonic() * self.speed

    def wall(self, seconds: float) -> float:
        """How long to wait on the event loop for ``seconds`` of call time."""
        return seconds / self.speed


REAL_TIME = Clock()
