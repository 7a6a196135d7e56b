"""``agent serve --workers 2``: two processes on one port, supervised.

The server runs as deployed (a subprocess, JSON logs, the embedded emulator); the test follows it
through its log lines and its ``/readyz`` answers, which name the process that answered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from timing import scaled_timeout

from .processes import ServerLog, events, free_port, server_env, wait_listening

STARTUP_TIMEOUT_S = scaled_timeout(60.0)
# New connections are spread over the workers by the kernel (a hash of each connection's ports):
# this many fresh connections all landing on one worker would take odds of 2**-199.
MAX_PROBES = 200


async def pids_answering(port: int, want: int) -> set[int]:
    """Which processes answer ``/readyz`` over fresh connections, until ``want`` have, each
    naming all the others as its live siblings (the machine's load is what it answers for)."""
    siblings: dict[int, set[int]] = {}
    consistent = False
    for _ in range(MAX_PROBES):
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as resp,
        ):
            body = await resp.json()
        siblings[int(body["pid"])] = {int(worker["pid"]) for worker in body["workers"]}
        consistent = all(others == set(siblings) - {pid} for pid, others in siblings.items())
        if len(siblings) >= want and consistent:
            break
    assert consistent, f"each worker's siblings, as its /readyz said: {siblings}"
    return set(siblings)


@pytest.mark.slow
@pytest.mark.real_time
async def test_two_workers_share_the_port_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    port = free_port()
    env = server_env(tmp_path, port, None, tmp_path / "calls.db", "workers-test-token-0123456789")
    server = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "agent", "serve", "--port", str(port), "--workers", "2"),
        env=env,
        cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE,
    )
    assert server.stderr is not None
    log = ServerLog(server.stderr)
    try:
        await log.wait_for(
            lambda lines: len(events(lines, "server.started")) >= 2, STARTUP_TIMEOUT_S
        )
        await wait_listening(port, STARTUP_TIMEOUT_S)
        workers = {line["pid"] for line in events(log.lines, "worker.started")}
        assert len(workers) == 2
        # Both workers answer on the one port.
        assert await pids_answering(port, 2) == workers

        # A worker killed outright is replaced; the other one never stopped serving.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        await log.wait_for(
            lambda lines: len(events(lines, "worker.started")) == 3, STARTUP_TIMEOUT_S
        )
        (died,) = events(log.lines, "worker.died")
        assert died["pid"] == victim
        replacement = events(log.lines, "worker.started")[-1]["pid"]
        await log.wait_for(
            lambda lines: len(events(lines, "server.started")) >= 3, STARTUP_TIMEOUT_S
        )
        assert await pids_answering(port, 2) == (workers - {victim}) | {replacement}

        # SIGTERM to the supervisor stops every worker (no calls: at once) and it exits cleanly.
        server.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            assert await server.wait() == 0
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
        await log.finish()
