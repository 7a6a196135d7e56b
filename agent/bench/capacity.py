"""``agent bench`` capacity section: how many concurrent calls one worker, and one machine, carry.

Concurrent calls are ramped (10, 25, 50, 100, 200, then doubling) against three bridges, one at a
time, interleaved step by step in the same run so that a change in the machine's background load
falls on all of them alike: the thin bridge (:mod:`agent.bench.thin`), ``agent serve`` with one
worker and ``agent serve --workers 2``, all answered by one emulator process (``--no-speech``,
``think_ms=0``, as in the CPU section). A step is past the knee when its p99 queueing is above
:data:`QUEUEING_LIMIT_MS` or audio was lost (a call that failed, a reply never heard, caller
frames missing from the bridge's own count); a bridge's ramp stops after two such steps in a
row, and its knee is the last step within the limits before them.

Each step measures (all but the first in a steady window while every call is up):

* **CPU per call-second**, from ``/proc`` (the process and its workers) over the whole step,
  set-up and tear-down included, per call-second the carrier counted (as in the CPU section);
* **queueing**: a separate probe process (``python -m agent.bench.capacity probe``) sends
  ``GET /healthz`` to the bridge every 20 ms on a fresh connection and times the answer. A request
  arriving at the bridge waits for its event loop exactly as a caller's media frame does, so the
  round trip, less the ~1 ms it takes on an idle machine, is the queueing a caller frame sees.
  The probe is its own process so that the load generator's lag (this process, driving every
  call) is not counted;
* **memory per call**: resident memory growth from the idle bridge to the window, over the calls.

The load generator (this process: the carrier simulator for every call) and the emulator share the
machine's cores with the bridge; each step reports how busy both were, so a knee that is the load
generator's rather than the bridge's shows as such.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from agent.bench.calls import percentile
from agent.bench.cpu import (
    ChildProcess,
    _agent_bridge,
    _answerable,
    _emulator_process,
    _metrics_frames,
    _place_calls,
    _yardstick,
    process_cpu_seconds,
)
from agent.bench.soak import rss_mb
from agent.sim.carrier import CallReport

__all__ = [
    "CAPACITY_STEPS",
    "QUEUEING_LIMIT_MS",
    "CapacityStep",
    "Knee",
    "find_knee",
    "run_capacity_bench",
    "step_plan",
    "write_plots",
]

CAPACITY_STEPS = (10, 25, 50, 100, 200)
QUEUEING_LIMIT_MS = 20.0
"""p99 queueing past this is the knee: a caller frame that late is a frame the model hears late."""
BRIDGES = ("thin", "agent", "agent --workers 2")
_PROBE_INTERVAL_S = 0.02
_PROBE_START_S = 1.0
#: A ramp stops after this many steps in a row past the limits: one step's p99 on a shared
#: machine can be a neighbour's burst, two in a row are the bridge's.
_PAST_IN_A_ROW = 2
_BYTES_PER_TICK = 320
_START_SPREAD_S = 2.0  # calls start spread over this long, not in lockstep


def step_plan(max_calls: int, steps: Sequence[int] = CAPACITY_STEPS) -> list[int]:
    """The concurrent calls of each step up to ``max_calls``: ``steps``, then doubling the last."""
    if max_calls < 1:
        raise ValueError(f"max_calls must be at least 1, got {max_calls}")
    plan = [n for n in steps if n <= max_calls]
    last = plan[-1] if plan else 0
    while last and last * 2 <= max_calls:
        last *= 2
        plan.append(last)
    if not plan:
        plan = [max_calls]
    return plan


@dataclass(frozen=True, slots=True)
class CapacityStep:
    """One bridge under one step's concurrent calls."""

    bridge: str
    """``thin``, ``agent`` (one worker) or ``agent --workers 2``."""
    calls: int
    cpu_ms_per_call_second: float | None
    queueing_p50_ms: float | None
    queueing_p99_ms: float | None
    """The probe's ``/healthz`` round trip less its idle median (see the module docstring)."""
    rss_kib_per_call: float | None
    lost: str | None = None
    """Why this step counts as audio lost; None when nothing was."""
    generator_cores: float = 0.0
    """CPU of the load generator (this process) over the window, in cores."""
    emulator_cores: float = 0.0
    cores_busy: float = 0.0
    """CPU of the bridge over the window, in cores."""
    load_average: float = 0.0

    def past_knee(self, limit_ms: float = QUEUEING_LIMIT_MS) -> bool:
        """Queueing over the limit, audio lost, or nothing measured (the step broke)."""
        return (
            self.lost is not None or self.queueing_p99_ms is None or self.queueing_p99_ms > limit_ms
        )


@dataclass(frozen=True, slots=True)
class Knee:
    """The most calls a bridge carried within the limits, and whether its ramp got past them."""

    step: CapacityStep | None
    """The last step within the limits (None: even the first was past them)."""
    reached: bool
    """A step past the limits was measured: ``step`` is the knee, not just the ramp's end."""

    @property
    def calls(self) -> int | None:
        return None if self.step is None else self.step.calls


def find_knee(steps: Sequence[CapacityStep], limit_ms: float = QUEUEING_LIMIT_MS) -> Knee:
    """The knee of one bridge's ramp: the last step within the limits before the run of steps
    past them that ends the ramp. A lone step past the limits followed by one within them (a
    neighbour's burst on a shared machine) does not end it."""
    ordered = sorted(steps, key=lambda step: step.calls)
    tail = len(ordered)
    while tail and ordered[tail - 1].past_knee(limit_ms):
        tail -= 1
    good = next((s for s in reversed(ordered[:tail]) if not s.past_knee(limit_ms)), None)
    return Knee(good, reached=tail < len(ordered))


def write_plots(
    steps: Sequence[CapacityStep], directory: Path, note: str, limit_ms: float = QUEUEING_LIMIT_MS
) -> list[Path]:
    """Two PNGs in ``directory``: CPU per call-second, and p99 queueing, against concurrent
    calls, one line per bridge. ``note`` (machine, load, command) is printed under each title.
    Raises ``ImportError`` when matplotlib is missing (the ``bench`` extra)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    bridges = [b for b in BRIDGES if any(s.bridge == b for s in steps)]
    bridges += sorted({s.bridge for s in steps} - set(bridges))
    charts = (
        ("capacity-cpu.png", "CPU per call-second (ms)", "cpu_ms_per_call_second", None),
        ("capacity-queueing.png", "p99 queueing (ms)", "queueing_p99_ms", limit_ms),
    )
    paths = []
    for name, label, attr, limit in charts:
        figure, axes = plt.subplots(figsize=(7, 4.2), dpi=100)
        for bridge in bridges:
            points = sorted(
                (s.calls, getattr(s, attr))
                for s in steps
                if s.bridge == bridge and getattr(s, attr) is not None
            )
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, marker="o", label=bridge)
        if limit is not None:
            axes.axhline(limit, color="grey", linestyle="--", linewidth=1, label=f"{limit:g} ms")
            # Past the knee queueing grows by orders of magnitude: a log scale keeps the steps
            # below the limit readable (linear below 1 ms, where a p99 may be 0).
            axes.set_yscale("symlog", linthresh=1.0)
            highest = max((getattr(s, attr) or 0.0 for s in steps), default=0.0)
            axes.set_ylim(0.0, max(highest, limit) * 2)
        axes.set_xscale("log")
        ticks = sorted({s.calls for s in steps})
        axes.set_xticks(ticks, [str(t) for t in ticks])
        axes.minorticks_off()
        axes.set_xlabel("concurrent calls")
        axes.set_ylabel(label)
        wrapped = "\n".join(textwrap.wrap(note, 110))
        axes.set_title(f"{label} against concurrent calls\n{wrapped}", fontsize=8)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = directory / name
        figure.savefig(path, format="png")
        plt.close(figure)
        paths.append(path)
    return paths


# -- measuring ----------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """``pid`` and its live children (``--workers``: the supervisor and its workers)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return pids


def _tree_sum(pid: int, measure: Callable[[int], float]) -> float:
    """``measure`` summed over ``pid``'s tree; a process that ended meanwhile counts nothing."""
    total = 0.0
    for each in _tree(pid):
        with contextlib.suppress(OSError):
            total += measure(each)
    return total


def _tree_cpu(pid: int) -> float:
    return _tree_sum(pid, process_cpu_seconds)


def _tree_rss_kib(pid: int) -> int:
    return int(_tree_sum(pid, lambda each: rss_mb(each) * 1024))


def _probe(url: str, seconds: float) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "agent.bench.capacity", "probe", url, "--seconds", str(seconds)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)


async def _probe_result(process: subprocess.Popen[bytes]) -> list[float]:
    out, _ = await asyncio.to_thread(process.communicate)
    data: list[float] = json.loads(out or b"[]")
    return data


async def _place(url: str, calls: int, seconds: float, token: str | None) -> list[object]:
    spread = min(_START_SPREAD_S, 0.02 * calls)
    return list(await _place_calls(url, calls, seconds, token, start_spread_s=spread))


@dataclass(slots=True)
class _Bridge:
    name: str
    child: ChildProcess
    port: int
    token: str | None
    idle_rss_kib: int = 0
    idle_rtt_ms: float = 0.0


async def _measure(
    bridge: _Bridge, emulator: ChildProcess, calls: int, seconds: float
) -> CapacityStep:
    url = f"http://127.0.0.1:{bridge.port}"
    single_agent = bridge.name == "agent"
    metrics_before = await _metrics_frames(bridge.port) if single_agent else None
    step_cpu0 = _tree_cpu(bridge.child.pid)
    placing = asyncio.get_running_loop().create_task(_place(url, calls, seconds, bridge.token))
    settle = min(_START_SPREAD_S, 0.02 * calls) + 1.5
    # The window must end before the first call does (at ``seconds``), probe start-up included.
    window = max(2.0, seconds - settle - _PROBE_START_S - 1.0)
    await asyncio.sleep(settle)
    pid = bridge.child.pid
    probe = _probe(url + "/healthz", window + _PROBE_START_S)
    await asyncio.sleep(_PROBE_START_S)  # the probe's interpreter starting: not in the window
    began = time.monotonic()
    cpu0, gen0, emu0 = _tree_cpu(pid), time.process_time(), emulator.cpu_seconds()
    await asyncio.sleep(window / 2)
    rss = _tree_rss_kib(pid)
    await asyncio.sleep(window / 2)
    wall = time.monotonic() - began
    cpu, gen = _tree_cpu(pid) - cpu0, time.process_time() - gen0
    emu = emulator.cpu_seconds() - emu0
    rtts = await _probe_result(probe)
    results = await placing
    await asyncio.sleep(0.5)  # let the calls' ends settle before the next step
    step_cpu = _tree_cpu(pid) - step_cpu0
    reports = [r for r in results if isinstance(r, CallReport)]
    # Per call-second the carrier actually carried (its ticks), set-up and tear-down included,
    # as in the CPU section: on a starved machine the calls carry less, and so cost less.
    call_seconds = sum(len(r.heard) // _BYTES_PER_TICK for r in reports) * 0.02
    lost = []
    failed = len(results) - len(reports) + sum(r.ended_by == "server hung up" for r in reports)
    if failed:
        lost.append(f"{failed} calls failed")
    missing = sum(u.first_reply_ms is None for r in reports for u in _answerable(r))
    if missing:
        lost.append(f"{missing} replies not heard")
    if metrics_before is not None:
        metrics_after = await _metrics_frames(bridge.port)
        ticks = sum(len(r.heard) // _BYTES_PER_TICK for r in reports)
        counted = metrics_after["in"] - metrics_before["in"]
        if counted < ticks * 0.99:
            lost.append(f"bridge counted {counted:.0f} of {ticks} caller frames")
    queueing = [max(0.0, rtt - bridge.idle_rtt_ms) for rtt in rtts]
    p50, p99 = percentile(queueing, 50), percentile(queueing, 99)
    return CapacityStep(
        bridge=bridge.name,
        calls=calls,
        cpu_ms_per_call_second=round(step_cpu * 1000 / call_seconds, 3) if call_seconds else None,
        queueing_p50_ms=None if p50 is None else round(p50, 2),
        queueing_p99_ms=None if p99 is None else round(p99, 2),
        rss_kib_per_call=round((rss - bridge.idle_rss_kib) / calls, 1),
        lost="; ".join(lost) or None,
        generator_cores=round(gen / wall, 2) if wall else 0.0,
        emulator_cores=round(emu / wall, 2) if wall else 0.0,
        cores_busy=round(cpu / wall, 2) if wall else 0.0,
        load_average=round(os.getloadavg()[0], 2),
    )


@contextlib.contextmanager
def _bridges(workdir: Path, live_port: int, token: str) -> Iterator[list[_Bridge]]:
    # Every call of a step is admitted: the knee is the machine's, not MAX_CALLS's.
    limits = {"MAX_CALLS": "100000", "MAX_CONNECTIONS": "100000"}
    with contextlib.ExitStack() as stack:
        thin, thin_port = _yardstick(workdir, live_port)
        one, one_port = _agent_bridge(workdir, live_port, token, extra_env=limits)
        two_dir = workdir / "w2"
        two_dir.mkdir()
        two, two_port = _agent_bridge(two_dir, live_port, token, workers=2, extra_env=limits)
        for child in (thin, one, two):
            stack.enter_context(child)
        yield [
            _Bridge("thin", thin, thin_port, None),
            _Bridge("agent", one, one_port, token),
            _Bridge("agent --workers 2", two, two_port, token),
        ]


async def run_capacity_bench(
    steps: Sequence[int],
    seconds: float,
    limit_ms: float = QUEUEING_LIMIT_MS,
) -> list[CapacityStep]:
    """Ramp each bridge through ``steps`` concurrent calls of ``seconds``, interleaved, until
    each is past the knee; one progress line per measurement on stderr."""
    token = secrets.token_hex(16)
    measured: list[CapacityStep] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-capacity-")))
        emulator, live_port = stack.enter_context(_emulator_process(workdir))
        await emulator.wait_until_listening(live_port)
        bridges = stack.enter_context(_bridges(workdir, live_port, token))
        for bridge in bridges:
            path = "/readyz" if bridge.token else None
            await bridge.child.wait_until_listening(bridge.port, path)
        for bridge in bridges:  # warm up (lazy imports, first connections), then idle figures
            url = f"http://127.0.0.1:{bridge.port}"
            await _place(url, 2, 2.0, bridge.token)
        await asyncio.sleep(1.0)
        for bridge in bridges:
            bridge.idle_rss_kib = _tree_rss_kib(bridge.child.pid)
            idle = await _probe_result(_probe(f"http://127.0.0.1:{bridge.port}/healthz", 1.0))
            bridge.idle_rtt_ms = percentile(idle, 50) or 0.0
        past = {bridge.name: 0 for bridge in bridges}  # steps past the limits in a row
        active = list(bridges)
        for calls in steps:
            for bridge in list(active):
                step = await _measure(bridge, emulator, calls, seconds)
                measured.append(step)
                print(_progress_line(step, limit_ms), file=sys.stderr, flush=True)
                past[bridge.name] = past[bridge.name] + 1 if step.past_knee(limit_ms) else 0
                if past[bridge.name] >= _PAST_IN_A_ROW:
                    active.remove(bridge)
            if not active:
                break
    return measured


def _progress_line(step: CapacityStep, limit_ms: float) -> str:
    verdict = "past the knee" if step.past_knee(limit_ms) else "ok"
    return (
        f"capacity: {step.bridge:<18} {step.calls:>4} calls  "
        f"cpu {step.cpu_ms_per_call_second} ms/call-s  "
        f"queueing p50/p99 {step.queueing_p50_ms}/{step.queueing_p99_ms} ms  "
        f"rss {step.rss_kib_per_call} KiB/call  bridge {step.cores_busy} cores  "
        f"generator {step.generator_cores} + emulator {step.emulator_cores} cores  "
        f"load {step.load_average}  {verdict}{'' if step.lost is None else ': ' + step.lost}"
    )


# -- the probe process --------------------------------------------------------------------------


async def _probe_loop(url: str, seconds: float) -> list[float]:
    """``GET url`` every 20 ms for ``seconds``, each on a fresh connection (so that with
    ``--workers`` the kernel spreads them over the workers, as it spreads calls); round trips in
    ms."""
    rtts: list[float] = []
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        loop = asyncio.get_running_loop()
        start = loop.time()
        index = 0
        while loop.time() - start < seconds:
            began = time.perf_counter()
            try:
                async with http.get(url) as response:
                    await response.read()
                rtts.append((time.perf_counter() - began) * 1000)
            except (aiohttp.ClientError, TimeoutError):
                rtts.append(10_000.0)  # no answer: the worst sample, not a gap
            index += 1
            await asyncio.sleep(max(0.0, start + index * _PROBE_INTERVAL_S - loop.time()))
    return rtts


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agent.bench.capacity probe URL --seconds S``: round trips as JSON on stdout."""
    parser = argparse.ArgumentParser(prog="python -m agent.bench.capacity")
    parser.add_argument("command", choices=["probe"])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    print(json.dumps([round(x, 3) for x in asyncio.run(_probe_loop(args.url, args.seconds))]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
