"""Call time: the event loop's clock, optionally sped up for simulations.

Everything that reasons about audio time (the playback model, call timers, goAway deadlines) reads
this clock, and converts its intervals to event-loop waits with :meth:`Clock.wall`.

It reads the *running event loop's* clock, not ``time.monotonic`` directly. For asyncio's own loops
the two are the same thing; but when a test runs the loop on simulated time (the integration suite
does: time moves only when every task is waiting), the bridge, the carrier simulator and the Live
API emulator then all read one clock, so "heard 2520 ms" and "the carrier played 2520 ms" are one
quantity rather than two estimates taken on clocks that drift apart under load.

``speed`` compresses time on a real-time loop: with ``speed=10`` a simulated call (emulator and
carrier at 10x, as ``agent bench`` runs them) keeps the same arithmetic in a tenth of the time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


def loop_time() -> float:
    """The running event loop's clock, in seconds (``time.monotonic`` for asyncio's loops)."""
    return asyncio.get_running_loop().time()


@dataclass(frozen=True, slots=True)
class Clock:
    """Seconds from ``source`` (by default the running loop's clock), scaled by ``speed``."""

    speed: float = 1.0
    source: Callable[[], float] = loop_time

    def now(self) -> float:
        return self.source() * self.speed

    def on_running_loop(self) -> Clock:
        """This clock, reading the running loop's ``time`` directly when it reads the loop's.

        Why: on Python 3.11 every ``asyncio.get_running_loop()`` makes a ``getpid`` system call
        (to notice a fork), and a call reads its clock a few hundred times a second: 240 ns a read
        against 44 ns for the bound ``loop.time`` (timeit, uvloop). An object that lives on one
        loop (a call) binds the loop once. Outside a running loop, or on another source: ``self``.
        """
        if self.source is not loop_time:
            return self
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self
        return Clock(self.speed, loop.time)

    def wall(self, seconds: float) -> float:
        """How long to wait on the event loop for ``seconds`` of call time."""
        return seconds / self.speed


REAL_TIME = Clock()
