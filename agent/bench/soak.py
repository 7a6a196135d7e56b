"""``agent bench --only soak``: many calls for many minutes against one ``agent serve``.

The bridge runs as its own process (every feature on, as in the *cpu* section) with an emulator
process; this process keeps ``calls`` calls up at once, starting a new one as each ends, for
``minutes``, twice (two rounds with an idle pause between them). Reported:

* caller frames lost: frames the carrier sent against frames the bridge counted in
  (``agent_frames_total{direction="in"}``);
* the bridge's memory (RSS) before, at its peak, after each round and after the idle pause, and
  its open file descriptors: memory that rises in the first round and stays level in the next
  is a working set (allocator arenas, caches); memory that rises again each round is a leak.
  Beside RSS, Python's own allocated blocks (``agent_python_allocated_blocks``) after each round:
  blocks back near their level before the load mean the objects were freed and what RSS keeps
  is the allocator's; blocks that climb round after round are objects kept alive;
* why calls failed to be placed, by error;
* event-loop lag, as ``GET /healthz`` sees it: its round trip, sampled every second under load
  (the handler does no work, so the time is the loop's queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from agent.bench.cpu import (
    ChildProcess,
    _agent_bridge,
    _emulator_process,
    _metrics_frames,
    _place_calls,
)
from agent.sim.carrier import CallReport

_PAGE = 4096
#: A scrape of a bridge carrying 100 calls on a busy machine can take seconds: room for it.
METRICS_TIMEOUT_S = 60.0


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB, from ``/proc/<pid>/statm``."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * _PAGE / 2**20


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


@dataclass
class SoakRound:
    calls_completed: int = 0
    calls_failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # by error, for calls_failed
    frames_sent: int = 0
    frames_counted: float = 0.0
    rss_peak_mb: float = 0.0
    rss_end_mb: float = 0.0
    python_blocks_end: float = 0.0
    fds_peak: int = 0
    lag_ms: list[float] = field(default_factory=list)
    probes_failed: dict[str, int] = field(default_factory=dict)  # /healthz probes, by error


@dataclass
class SoakRun:
    calls: int
    minutes: float
    rss_start_mb: float
    fds_start: int
    python_blocks_start: float
    rounds: list[SoakRound]
    rss_idle_mb: float
    fds_idle: int
    python_blocks_idle: float = 0.0


async def _round(
    agent: ChildProcess, port: int, calls: int, minutes: float, token: str
) -> SoakRound:
    result = SoakRound()
    url = f"http://127.0.0.1:{port}"
    before = await _metrics_frames(port, METRICS_TIMEOUT_S)
    deadline = time.monotonic() + minutes * 60

    async def caller(index: int) -> None:
        await asyncio.sleep(index * 0.1)  # calls do not start in lockstep
        while time.monotonic() < deadline:
            seconds = min(30.0, max(1.0, deadline - time.monotonic()))
            (report,) = await _place_calls(url, 1, seconds, token)
            if isinstance(report, CallReport):
                result.calls_completed += 1
                result.frames_sent += len(report.heard) // 320
            else:
                result.calls_failed += 1
                why = f"{type(report).__name__}: {str(report)[:120]}"
                result.failures[why] = result.failures.get(why, 0) + 1
                await asyncio.sleep(1.0)  # a caller who could not get through tries again later

    async def sample() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            while True:
                began = time.perf_counter()
                try:
                    async with http.get(f"{url}/healthz") as response:
                        await response.read()
                except (TimeoutError, aiohttp.ClientError) as exc:
                    # A probe that never came back is the worst lag sample, not the end of the
                    # soak: counted at the time it took to give up.
                    result.probes_failed[type(exc).__name__] = (
                        result.probes_failed.get(type(exc).__name__, 0) + 1
                    )
                result.lag_ms.append((time.perf_counter() - began) * 1000)
                result.rss_peak_mb = max(result.rss_peak_mb, rss_mb(agent.pid))
                result.fds_peak = max(result.fds_peak, open_fds(agent.pid))
                await asyncio.sleep(1.0)

    sampler = asyncio.get_running_loop().create_task(sample())
    try:
        await asyncio.gather(*(caller(i) for i in range(calls)))
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    after = await _metrics_frames(port, METRICS_TIMEOUT_S)
    result.frames_counted = after["in"] - before["in"]
    result.rss_end_mb = rss_mb(agent.pid)
    result.python_blocks_end = await python_blocks(port)
    return result


async def python_blocks(port: int) -> float:
    """The bridge's ``agent_python_allocated_blocks``, from its ``/metrics``."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=METRICS_TIMEOUT_S)) as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("agent_python_allocated_blocks "):
            return float(line.split()[1])
    return 0.0


async def run_soak_bench(calls: int, minutes: float, rounds: int = 2) -> SoakRun:
    """``rounds`` rounds of ``calls`` concurrent calls for ``minutes`` each, then 10 s idle."""
    token = secrets.token_hex(16)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-soak-")))
        emulator, live_port = stack.enter_context(_emulator_process(workdir))
        await emulator.wait_until_listening(live_port)
        # Admission control must not turn the soak away: room for every call it places.
        agent, port = _agent_bridge(
            workdir, live_port, token, extra_env={"MAX_CALLS": str(calls + 10)}
        )
        stack.enter_context(agent)
        await agent.wait_until_listening(port, "/readyz")
        await _place_calls(f"http://127.0.0.1:{port}", 1, 2.0, token)  # warm-up
        run = SoakRun(
            calls,
            minutes,
            rss_mb(agent.pid),
            open_fds(agent.pid),
            await python_blocks(port),
            [],
            0.0,
            0,
        )
        for _ in range(rounds):
            run.rounds.append(await _round(agent, port, calls, minutes, token))
            await asyncio.sleep(10.0)  # idle: what stays allocated once the calls are gone
        run.rss_idle_mb, run.fds_idle = rss_mb(agent.pid), open_fds(agent.pid)
        run.python_blocks_idle = await python_blocks(port)
        return run
