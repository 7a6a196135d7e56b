"""``agent bench`` CPU section: the bridge's CPU per call-second, next to the thinnest bridge's.

Each bridge runs as its own process (``python -m agent serve`` with every feature on,
``python -m agent.bench.thin``, and ``python -m agent.bench.floor``, the least a Python bridge
can spend), all answered by one Live API emulator process (``python -m agent emulate``). This
process places ``calls`` concurrent calls into each bridge with the carrier simulator, in real
time, for ``seconds`` each, into all of them at the same time (on a shared machine, load from
elsewhere then falls on all alike): the caller speaks, the model answers each utterance at once
(``think_ms=0``) with a reply twice as long, and Twilio-style media flows both ways all the time
(the phone streams silence between utterances). Each bridge's CPU time (user + system, all
threads) is read from ``/proc/<pid>/stat`` before and after; CPU per call-second is the difference
over the total length of its calls, set-up and tear-down included. It is also sampled every
second, and the windows in which every call was up give a steady-state median. One short warm-up
call per bridge runs first, unmeasured, so that one-time costs (lazy imports, first connections)
are not charged to the figure.

Frames per call-second, counted by the carrier (and, for the product, by its ``/metrics``), show
that audio flowed both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from agent.sim.carrier import (
    BUNDLED_CALLER_CLIPS,
    CallReport,
    CarrierOptions,
    UtteranceReport,
    load_caller_audio,
    place_call,
)

__all__ = [
    "ChildProcess",
    "CpuRun",
    "WorkersRun",
    "frames_from_metrics",
    "free_port",
    "process_cpu_seconds",
    "process_tree_cpu_seconds",
    "run_cpu_bench",
    "run_workers_bench",
]

_BYTES_PER_TICK = 320  # CallReport.heard: PCM16 at 8 kHz, 20 ms per tick
_FRAME_BYTES = 160  # one 20 ms mu-law frame
_READY_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 5.0
# Variables that would send the bridge somewhere other than the local emulator, or change its mode.
# Every variable Settings reads: the bench sets what it needs and nothing leaks in from the shell.
_SCRUBBED_ENV = (
    "AGENTS_PATH",
    "AGENTS_RELOAD_INTERVAL_S",
    "CRM_DATABASE_URL",
    "DATABASE_URL",
    "EVENT_LOOP",
    "GEMINI_API_KEY",
    "HOST",
    "LIVE_API_URL",
    "LIVE_BACKEND",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "MASK_CALLER_NUMBERS",
    "PORT",
    "PUBLIC_URL",
    "RECORD_REDACT_FIELDS",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_API_KEY_SECRET",
    "TWILIO_API_KEY_SID",
    "TWILIO_API_URL",
    "TWILIO_AUTH_TOKEN",
    "VERTEX_LOCATION",
    "VERTEX_PROJECT",
)


@dataclass(frozen=True, slots=True)
class CpuRun:
    """One bridge under load: its CPU cost and proof that audio flowed."""

    bridge: str
    """``agent`` (the product, every feature on), ``thin`` (the yardstick) or ``floor`` (the
    least a Python bridge can spend: :mod:`agent.bench.floor`)."""
    calls: int
    call_seconds: float
    """Total length of the calls, as the carrier counted ticks."""
    cpu_ms: float
    cpu_ms_per_call_second: float
    frames_in_per_call_second: float
    """Caller frames the carrier sent (50 per second when every tick went out)."""
    frames_out_per_call_second: float
    """Agent frames (20 ms) the carrier received."""
    metrics_frames_in_per_call_second: float | None
    """The same, from the bridge's own ``/metrics`` (``None`` for the thin bridge)."""
    metrics_frames_out_per_call_second: float | None
    replies: int
    """Caller utterances that got a reply (of ``utterances``)."""
    utterances: int
    """Caller utterances that ended early enough to be answered before the call ended."""
    failed_calls: int
    """Calls that could not be placed, or that the bridge hung up."""
    window_ms_per_call_second: tuple[float, ...] = ()
    """Steady state: CPU per call-second in each 1 s window while every call was up (no set-up
    or tear-down in them). Their median is robust to a neighbour's burst of work."""


def free_port() -> int:
    """A loopback port the OS says is free now (bind to 0, read it back, release it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses; fields resume after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def frames_from_metrics(text: str) -> dict[str, float]:
    """``agent_frames_total`` by direction (``in``, ``out``) from a Prometheus exposition."""
    totals = {"in": 0.0, "out": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "agent_frames_total":
                direction = sample.labels.get("direction", "")
                totals[direction] = totals.get(direction, 0.0) + sample.value
    return totals


class ChildProcess:
    """A server started for the bench, its output going to a log file; always stopped.

    Use it as a context manager: leaving the block terminates the process, then kills it if it has
    not exited within a few seconds.
    """

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the process's output, for an error message."""
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    async def wait_until_listening(self, port: int, http_path: str | None = None) -> None:
        """Wait until ``port`` accepts connections (and ``http_path`` answers 200, if given)."""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if await _answers(port, http_path):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {_READY_TIMEOUT_S} s")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        """Terminate, then kill if it lingers; close the log. Safe to call twice."""
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            self._log.close()

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def _answers(port: int, http_path: str | None) -> bool:
    if http_path is None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
            http.get(f"http://127.0.0.1:{port}{http_path}") as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _base_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _SCRUBBED_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def _emulator_process(workdir: Path) -> Iterator[tuple[ChildProcess, int]]:
    """The Live API emulator as its own process (``think_ms=0``, ``--no-speech``), logging
    warnings only. Without speech it answers with its bundled clips at once: recognising and
    voicing offline would make the model's audio late and sparse, and the bench is about the
    bridges carrying model audio at full rate."""
    port = free_port()
    env = _base_env() | {"LOG_LEVEL": "warning", "LOG_FORMAT": "json"}
    argv = [sys.executable, "-m", "agent", "emulate", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--think-ms", "0", "--no-speech"]
    with ChildProcess("the Live API emulator", argv, env, workdir / "emulator.log") as child:
        yield child, port


def _agent_bridge(
    workdir: Path,
    live_port: int,
    auth_token: str,
    workers: int = 1,
    extra_env: Mapping[str, str] | None = None,
) -> tuple[ChildProcess, int]:
    """``python -m agent serve`` with every feature on: the bundled default agent (greeting, CRM
    prefetch, tools declared), signed webhooks and stream tokens, pre-connect, marks, playback
    tracking, metrics, call records (SQLite), JSON logs at INFO. Everything stays on loopback (the
    Twilio REST URL points at a closed local port; no tool transfers a call here anyway)."""
    port = free_port()
    env = _base_env() | {
        "PORT": str(port),
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "LIVE_API_URL": f"ws://127.0.0.1:{live_port}",
        "DATABASE_URL": f"sqlite:///{workdir / 'calls.db'}",
        "CRM_DATABASE_URL": f"sqlite:///{workdir / 'crm.db'}",
        "TWILIO_API_URL": "http://127.0.0.1:9",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        "TWILIO_AUTH_TOKEN": auth_token,
        **(extra_env or {}),
    }
    argv = [sys.executable, "-m", "agent", "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(workers)]
    return ChildProcess("the bridge (agent serve)", argv, env, workdir / "bridge.log"), port


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and of its live children (``agent serve --workers``: the supervisor
    and its workers)."""
    total = process_cpu_seconds(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        for child in children.read_text().split():
            with contextlib.suppress(OSError):
                total += process_cpu_seconds(int(child))
    return total


@dataclass(frozen=True, slots=True)
class WorkersRun:
    """``agent serve --workers N`` under ``calls`` concurrent calls."""

    workers: int
    calls: int
    call_seconds: float
    cpu_ms_per_call_second: float
    cores_busy: float  # CPU seconds over wall seconds while the calls ran
    replies: int
    utterances: int


async def run_workers_bench(calls: int, seconds: float, workers: Sequence[int]) -> list[WorkersRun]:
    """``agent serve --workers N`` for each N, ``calls`` calls of ``seconds`` each, measured."""
    runs = []
    token = secrets.token_hex(16)
    for count in workers:
        with contextlib.ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-bench-")))
            emulator, live_port = stack.enter_context(_emulator_process(workdir))
            await emulator.wait_until_listening(live_port)
            agent, port = _agent_bridge(workdir, live_port, token, workers=count)
            stack.enter_context(agent)
            await agent.wait_until_listening(port, "/readyz")
            url = f"http://127.0.0.1:{port}"
            await _place_calls(url, count, min(2.0, seconds), token)  # warm every worker up
            began, cpu_before = time.monotonic(), process_tree_cpu_seconds(agent.pid)
            results = await _place_calls(url, calls, seconds, token)
            wall = time.monotonic() - began
            cpu = process_tree_cpu_seconds(agent.pid) - cpu_before
            reports = [r for r in results if isinstance(r, CallReport)]
            call_seconds = sum(len(r.heard) // _BYTES_PER_TICK for r in reports) * 0.02
            runs.append(
                WorkersRun(
                    workers=count,
                    calls=calls,
                    call_seconds=round(call_seconds, 2),
                    cpu_ms_per_call_second=round(cpu * 1000 / call_seconds, 3)
                    if call_seconds
                    else 0.0,
                    cores_busy=round(cpu / wall, 3) if wall else 0.0,
                    replies=sum(
                        u.first_reply_ms is not None for r in reports for u in _answerable(r)
                    ),
                    utterances=sum(len(_answerable(r)) for r in reports),
                )
            )
    return runs


def _yardstick(workdir: Path, live_port: int, kind: str = "thin") -> tuple[ChildProcess, int]:
    """The thin bridge (``thin``) or the floor (``floor``, :mod:`agent.bench.floor`)."""
    port = free_port()
    argv = [sys.executable, "-m", f"agent.bench.{kind}", "--port", str(port)]
    argv += ["--live-url", f"ws://127.0.0.1:{live_port}"]
    return ChildProcess(f"the {kind} bridge", argv, _base_env(), workdir / f"{kind}.log"), port


def _caller_script(seconds: float) -> list[bytes]:
    """Enough caller utterances to keep talking for ``seconds`` (the call ends at its maximum)."""
    clips = [load_caller_audio(name) for name in BUNDLED_CALLER_CLIPS]
    # Each exchange takes at least an utterance plus the reply (7.5 s): this over-provisions.
    count = max(1, int(seconds / 5) + 1)
    return list(itertools.islice(itertools.cycle(clips), count))


async def _place_calls(
    url: str,
    calls: int,
    seconds: float,
    auth_token: str | None,
    *,
    start_spread_s: float | None = None,
) -> list[CallReport | BaseException]:
    """Place ``calls`` calls at once, each talking for ``seconds``. They start 0.1 s apart, or
    spread evenly over ``start_spread_s`` when given (a ramp of many calls)."""
    options = CarrierOptions(
        url=url,
        speed=1.0,
        auth_token=auth_token,
        lead_ms=300,
        gap_ms=300,
        reply_timeout_ms=3000,
        max_duration_s=seconds,
    )
    script = _caller_script(seconds)

    async def one(index: int) -> CallReport:
        # Calls do not start in lockstep on a real line: spread their 20 ms ticks apart.
        if start_spread_s is None:
            await asyncio.sleep(index * 0.02 / max(1, calls) + index * 0.1)
        else:
            await asyncio.sleep(index * start_spread_s / max(1, calls))
        return await place_call(options, script)

    results = await asyncio.gather(*(one(i) for i in range(calls)), return_exceptions=True)
    return list(results)


async def _metrics_frames(port: int, timeout_s: float = 10.0) -> dict[str, float]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return frames_from_metrics(await response.text())


async def _measure(
    bridge: str, child: ChildProcess, port: int, calls: int, seconds: float, token: str | None
) -> CpuRun:
    url = f"http://127.0.0.1:{port}"
    metrics_before = await _metrics_frames(port) if bridge == "agent" else None
    cpu_before = child.cpu_seconds()
    sampler = asyncio.get_running_loop().create_task(_sample_cpu(child))
    try:
        results = await _place_calls(url, calls, seconds, token)
    finally:
        sampler.cancel()
        samples = await sampler
    await asyncio.sleep(0.3)  # let the calls' ends (records, summaries) be charged too
    cpu_after = child.cpu_seconds()
    metrics_after = await _metrics_frames(port) if bridge == "agent" else None
    reports = [r for r in results if isinstance(r, CallReport)]
    failed = len(results) - len(reports) + sum(r.ended_by == "server hung up" for r in reports)
    ticks = sum(len(r.heard) // _BYTES_PER_TICK for r in reports)
    call_seconds = ticks * 0.02
    per_second = 1.0 / call_seconds if call_seconds else 0.0
    frames_out = sum(size for r in reports for _, size in r.media_received) / _FRAME_BYTES
    metrics_in = metrics_out = None
    if metrics_before is not None and metrics_after is not None:
        metrics_in = (metrics_after["in"] - metrics_before["in"]) * per_second
        metrics_out = (metrics_after["out"] - metrics_before["out"]) * per_second
    cpu_ms = (cpu_after - cpu_before) * 1000
    return CpuRun(
        bridge=bridge,
        calls=calls,
        call_seconds=round(call_seconds, 2),
        cpu_ms=round(cpu_ms, 1),
        cpu_ms_per_call_second=round(cpu_ms * per_second, 3),
        frames_in_per_call_second=round(ticks * per_second, 1),
        frames_out_per_call_second=round(frames_out * per_second, 1),
        metrics_frames_in_per_call_second=None if metrics_in is None else round(metrics_in, 1),
        metrics_frames_out_per_call_second=None if metrics_out is None else round(metrics_out, 1),
        replies=sum(u.first_reply_ms is not None for r in reports for u in _answerable(r)),
        utterances=sum(len(_answerable(r)) for r in reports),
        failed_calls=failed,
        window_ms_per_call_second=_steady_windows(samples, calls, seconds),
    )


def _answerable(report: CallReport) -> list[UtteranceReport]:
    """The utterances that ended at least 1.5 s before the call did (time for the VAD to end the
    turn and the reply to start); the last one is often cut off by the call's end."""
    call_ms = len(report.heard) // _BYTES_PER_TICK * 20
    return [u for u in report.utterances if u.end_ms + 1500 <= call_ms]


async def _sample_cpu(child: ChildProcess, interval_s: float = 1.0) -> list[tuple[float, float]]:
    """``(monotonic time, CPU seconds)`` of ``child`` every ``interval_s`` until cancelled."""
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    try:
        while True:
            samples.append((time.monotonic() - started, child.cpu_seconds()))
            await asyncio.sleep(interval_s - (time.monotonic() - started) % interval_s)
    except asyncio.CancelledError:
        return samples


def _steady_windows(
    samples: Sequence[tuple[float, float]], calls: int, seconds: float
) -> tuple[float, ...]:
    """CPU ms per call-second of each window that lies wholly inside the time all calls were up
    (after the last one started and set up, before the first one ended)."""
    first_full, last_full = 0.1 * calls + 1.0, seconds - 0.5
    return tuple(
        round((c1 - c0) * 1000 / ((t1 - t0) * calls), 3)
        for (t0, c0), (t1, c1) in itertools.pairwise(samples)
        if t0 >= first_full and t1 <= last_full and t1 > t0
    )


async def run_cpu_bench(calls: int, seconds: float, rounds: int = 1) -> list[CpuRun]:
    """Measure the thin bridge, the product and the floor side by side, ``rounds`` times.

    The three bridges run at once, each given the same ``calls`` calls of ``seconds`` over the
    same window, so whatever else loads the machine loads all alike and the ratios stay fair.
    Every process started here is stopped before this returns, whatever happens.
    """
    if calls < 1 or seconds <= 0 or rounds < 1:
        raise ValueError("calls and rounds must be at least 1, seconds positive")
    runs: list[CpuRun] = []
    token = secrets.token_hex(16)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-bench-")))
        emulator, live_port = stack.enter_context(_emulator_process(workdir))
        await emulator.wait_until_listening(live_port)
        thin, thin_port = _yardstick(workdir, live_port)
        stack.enter_context(thin)
        agent, agent_port = _agent_bridge(workdir, live_port, token)
        stack.enter_context(agent)
        floor, floor_port = _yardstick(workdir, live_port, "floor")
        stack.enter_context(floor)
        await thin.wait_until_listening(thin_port)
        await agent.wait_until_listening(agent_port, "/readyz")
        await floor.wait_until_listening(floor_port)
        # Warm-up, not measured: the first call pays for connections and lazy work.
        warm_up = min(2.0, seconds)
        await asyncio.gather(
            _place_calls(f"http://127.0.0.1:{thin_port}", 1, warm_up, None),
            _place_calls(f"http://127.0.0.1:{agent_port}", 1, warm_up, token),
            _place_calls(f"http://127.0.0.1:{floor_port}", 1, warm_up, None),
        )
        await asyncio.sleep(0.3)
        for _ in range(rounds):
            trio = await asyncio.gather(
                _measure("thin", thin, thin_port, calls, seconds, None),
                _measure("agent", agent, agent_port, calls, seconds, token),
                _measure("floor", floor, floor_port, calls, seconds, None),
            )
            runs.extend(trio)
    return runs
