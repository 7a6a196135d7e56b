"""Python tools for the tool-call tests (``python: integration.tool_fixtures:NAME``).

Each test sets :data:`PROBE` to what the tools should observe while they run: the emulator (to
see caller audio arriving at the Live API) and the bridge's ActiveCalls (to see the call's own
counters). The tools write what they saw back into it.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.call.active import ActiveCalls
from agent.sim.live.server import RunningEmulator


@dataclass
class Probe:
    emulator: RunningEmulator | None = None
    calls: ActiveCalls | None = None
    seconds: float = 0.2  # how long slow tools take (simulated time, like the whole call)
    seen: dict[str, Any] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)


PROBE = Probe()


def _counters(call_sid: str) -> tuple[int, int]:
    """(caller frames received by the Live API so far, frames the bridge sent the caller)."""
    assert PROBE.emulator is not None
    assert PROBE.calls is not None
    received = sum(s.audio_chunks_received for s in PROBE.emulator.sessions)
    return received, PROBE.calls.active[call_sid].playback.frames_sent


async def slow_order_status(order_id: str, call_sid: str) -> dict[str, Any]:
    """A CRM lookup that takes a while; records the audio that flowed while it ran."""
    before = _counters(call_sid)
    await asyncio.sleep(PROBE.seconds)
    after = _counters(call_sid)
    PROBE.seen["caller_frames_during"] = after[0] - before[0]
    PROBE.seen["model_frames_during"] = after[1] - before[1]
    return {"order_id": order_id, "status": "shipped", "eta": "Friday"}


async def quick(label: str) -> dict[str, str]:
    """An instant answer. Async, on the call's own loop: a sync tool runs in a worker process,
    and while the loop waits on another process looptime moves its clock with the real one, so
    a busy machine would make the answer late in call time (tests of the worker are apart)."""
    return {"label": label}


async def never_finishes(call_sid: str) -> dict[str, str]:
    """Waits until cancelled, and records that it was."""
    try:
        await PROBE.release.wait()
    except asyncio.CancelledError:
        PROBE.seen["cancelled"] = call_sid
        if PROBE.emulator is not None:  # how far the call was when the cancellation came
            PROBE.seen["chunks_at_cancel"] = sum(
                s.audio_chunks_received for s in PROBE.emulator.sessions
            )
        raise
    return {"status": "released"}


def crashes() -> dict[str, str]:
    raise RuntimeError("the backend exploded (internal detail the caller must not hear)")


async def too_slow() -> dict[str, str]:
    await asyncio.sleep(30)
    return {"status": "late"}


async def whose(label: str, call_sid: str) -> dict[str, str]:
    """An instant answer that says which call it ran for (async, as :func:`quick` is)."""
    return {"label": label, "call_sid": call_sid}


def book_slowly(booked: str, started: str) -> dict[str, str]:
    """A sync tool (it runs in a worker process) whose side effect, the file ``booked``, comes
    after a long wait on the real clock: long enough that only a kill can keep it from happening
    while the test looks. ``started`` is written first, so a test knows it began."""
    Path(started).write_text(str(os.getpid()))
    time.sleep(30)
    Path(booked).write_text("booked")
    return {"status": "booked"}
