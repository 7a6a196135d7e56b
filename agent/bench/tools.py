"""What running synchronous ``python`` tools in worker processes costs, for ``agent bench``.

A sync tool runs in a worker process (:mod:`agent.tools.python`) so that a cancellation can kill
it; before, it ran in a thread, which cannot be stopped. This measures what that costs a call:
the round trip of a tool that returns at once, through a warm worker and through a thread (the
old way, for comparison), the start of a worker (the interpreter and the tool's module: paid once
per agent, and again after each kill, off the call's path), and how soon a cancelled call lets
go of its caller.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from agent.bench.report import Section, reported
from agent.tools.python import ToolWorkers

__all__ = ["run_tools_bench"]

_INSTANT = "os:getpid"  # a sync function that returns at once, importable everywhere
_NAP = "agent.bench.tools:nap"


async def _round_trips(call: Callable[[], Awaitable[object]], n: int) -> list[float]:
    times = []
    for _ in range(n):
        began = time.perf_counter()
        await call()
        times.append((time.perf_counter() - began) * 1e6)
    return times


async def run_tools_bench(calls: int = 1000) -> Section:
    """The figures above, from ``calls`` round trips each way."""
    # Here, not at the top: the worker imports this module for ``nap``, and the call harness
    # (aiohttp, the app) would make its start look slower than a small tool module's.
    from agent.bench.calls import median, percentile

    section = Section("tools")
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bench-thread")
    instant = ToolWorkers([_INSTANT])
    napping = ToolWorkers([_NAP])
    try:
        began = time.perf_counter()
        await instant.call(_INSTANT, {})
        start_ms = (time.perf_counter() - began) * 1000
        in_worker = await _round_trips(lambda: instant.call(_INSTANT, {}), calls)
        in_thread = await _round_trips(lambda: loop.run_in_executor(pool, os.getpid), calls)
        await napping.call(_NAP, {"seconds": 0})  # warm: its module imported
        task = asyncio.create_task(napping.call(_NAP, {"seconds": 30}))
        await asyncio.sleep(0.2)  # well into the nap (real time: this is a measurement)
        began = time.perf_counter()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        cancel_ms = (time.perf_counter() - began) * 1000
        began = time.perf_counter()
        await napping.call(_NAP, {"seconds": 0})
        after_kill_ms = (time.perf_counter() - began) * 1000
    finally:
        await instant.close()
        await napping.close()
        pool.shutdown()
    worker_us, thread_us = median(in_worker), median(in_thread)
    overhead = None if worker_us is None or thread_us is None else worker_us - thread_us
    section.details = {
        "worker_start_ms": start_ms,
        "worker_round_trip_us": in_worker,
        "thread_round_trip_us": in_thread,
        "cancel_to_free_ms": cancel_ms,
        "next_call_after_kill_ms": after_kill_ms,
    }
    section.figures = [
        reported(
            "sync tool in a worker process, per call, median",
            worker_us,
            "us",
            f"{calls} calls of a function that returns at once",
        ),
        reported("sync tool in a worker process, per call, p90", percentile(in_worker, 90), "us"),
        reported(
            "the same in a thread (as before), per call, median",
            thread_us,
            "us",
            "a thread cannot be stopped when its call is cancelled",
        ),
        reported("added per call by the worker process", overhead, "us"),
        reported(
            "worker start (first call)",
            start_ms,
            "ms",
            "interpreter and module; once per agent, and after each kill",
        ),
        reported("cancelled call: the task is free after", cancel_ms, "ms", "the worker killed"),
        reported(
            "next call right after a kill",
            after_kill_ms,
            "ms",
            "waits for the replacement worker to start",
        ),
    ]
    return section


def nap(seconds: float) -> str:
    """A tool that sleeps (the worker imports this module to run it)."""
    time.sleep(seconds)
    return "rested"
