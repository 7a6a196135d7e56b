"""``agent serve --workers N``: N bridge processes on one port, one event loop (one core) each.

Each worker is an ordinary ``agent serve`` that binds the port with ``SO_REUSEPORT``, so the kernel
spreads new connections over them; a webhook and its stream may land on different workers, which
the signed stream ticket and the shared state (:mod:`agent.cluster`) make harmless. This parent
only supervises: it forwards SIGTERM/SIGINT (each worker then drains or hands its calls over as
configured, and a second signal stops it at once), and restarts a worker that dies unexpectedly,
so a crash costs that worker's calls, not the machine's capacity.

Workers run in their own process group, so a terminal's Ctrl-C reaches them once (through this
parent), not twice.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Final

import structlog
from prometheus_client import multiprocess

from agent.observability.metrics import MULTIPROCESS_DIR
from agent.server.siblings import WORKER_INDEX, WORKERS_DIR

log = structlog.get_logger("agent.workers")

#: A worker that dies sooner than this after starting counts as a crash loop.
QUICK_DEATH_S: Final = 2.0
#: After this many quick deaths in a row, the supervisor stops everything instead of restarting.
MAX_QUICK_DEATHS: Final = 5


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    started_at: float


def worker_command(host: str, port: int) -> list[str]:
    """How the supervisor starts one worker."""
    return [
        sys.executable,
        "-m",
        "agent",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--reuse-port",
    ]


def supervise(count: int, command: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``count`` workers until a signal stops them; the exit code is the worst worker's.

    Unless ``env`` names one, the workers share a fresh ``PROMETHEUS_MULTIPROC_DIR``, so that
    ``/metrics`` on any of them reports the machine (see :mod:`agent.observability.metrics`),
    and a fresh ``WORKERS_DIR``, so that admission and ``/readyz`` on any of them speak for the
    machine (see :mod:`agent.server.siblings`).
    """
    if count < 1:
        raise ValueError(f"workers must be at least 1, got {count}")
    own_dirs = []
    for variable, prefix in ((MULTIPROCESS_DIR, "agent-metrics-"), (WORKERS_DIR, "agent-workers-")):
        if not env.get(variable):
            own_dirs.append(tempfile.mkdtemp(prefix=prefix))
            env = {**env, variable: own_dirs[-1]}
    try:
        return _supervise(count, command, env)
    finally:
        for directory in own_dirs:
            shutil.rmtree(directory, ignore_errors=True)


def _supervise(count: int, command: Sequence[str], env: Mapping[str, str]) -> int:
    stopping: list[int] = []  # the signals received, in order

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        for worker in workers.values():
            if worker.process.returncode is None:
                worker.process.send_signal(signum)

    def start(index: int) -> _Worker:
        process = subprocess.Popen(
            list(command), env={**env, WORKER_INDEX: str(index)}, start_new_session=True
        )
        log.info("worker.started", worker=index, pid=process.pid)
        return _Worker(index, process, time.monotonic())

    workers: dict[int, _Worker] = {}
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    worst = 0
    quick_deaths = 0
    try:
        for index in range(count):
            workers[index] = start(index)
        while workers:
            pid, status = os.wait()  # PEP 475: retried after each signal handler runs
            worker = next((w for w in workers.values() if w.process.pid == pid), None)
            if worker is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            worker.process.returncode = code  # reaped here: Popen must not wait for it again
            del workers[worker.index]
            if stopping:
                worst = max(worst, code) if code >= 0 else max(worst, 128 - code)
                continue
            quick = time.monotonic() - worker.started_at < QUICK_DEATH_S
            quick_deaths = quick_deaths + 1 if quick else 0
            log.error("worker.died", worker=worker.index, pid=pid, exit_code=code)
            # Its calls are gone: agent_active_calls must stop counting them.
            multiprocess.mark_process_dead(pid, env[MULTIPROCESS_DIR])  # type: ignore[no-untyped-call]
            if quick_deaths >= MAX_QUICK_DEATHS:
                log.error("worker.crash_loop", deaths=quick_deaths, message="stopping all workers")
                on_signal(signal.SIGTERM, None)
                worst = 1
                continue
            workers[worker.index] = start(worker.index)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for worker in workers.values():  # only on an exception above: leave nothing behind
            worker.process.kill()
            worker.process.wait()
    return worst
