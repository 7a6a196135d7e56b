"""A replica killed mid-call (SIGKILL, a real process), or told to stop (SIGTERM, a deploy): the
call goes on with the other one.

Two ``agent serve`` processes share one PostgreSQL database, behind the balancer stand-in:
the webhook and the first stream go to A, everything after to B. Once A's agent has answered
the caller, A is killed; Twilio (the carrier simulator) requests the ``<Connect action>``, B
answers it, and B's stream continues the conversation A left in the shared state.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from timing import scaled_timeout

from agent.records.store import RecordStore
from agent.sim.balancer import first_stream_then, start_balancer
from agent.sim.carrier import CallReport, CarrierOptions, place_call
from agent.sim.live.server import EmulatorOptions, start_emulator

from .conftest import caller_clip
from .processes import ServerLog, events, free_port, server_env, start_server

AUTH_TOKEN = "killed-replica-test-token-4b2e9f"
CALL_TIMEOUT_S = scaled_timeout(60.0)


async def call_across_two_replicas(
    tmp_path: Path, database: str, stop_first: Callable[[Any], Awaitable[None]]
) -> tuple[CallReport, ServerLog, ServerLog]:
    """Place a call on replica A; once A's agent has answered, ``stop_first(A)``; the call must
    go on with B. Returns the caller's report and both replicas' logs."""
    emulator = await start_emulator(EmulatorOptions())
    replicas: list[str] = []
    lb = await start_balancer(first_stream_then(replicas))
    servers = []
    try:
        for name in ("a", "b"):
            port = free_port()
            env = server_env(tmp_path, port, emulator.url, tmp_path / f"{name}.db", AUTH_TOKEN)
            env.update(PUBLIC_URL=lb.url, DATABASE_URL=database, SHARED_STATE_URL=database)
            servers.append(await start_server(port, env, tmp_path))
            replicas.append(f"http://127.0.0.1:{port}")
        (a, a_log), (_, b_log) = servers

        options = CarrierOptions(url=lb.url, auth_token=AUTH_TOKEN, max_duration_s=90)
        utterances = [caller_clip("order-status"), caller_clip("goodbye")]
        call = asyncio.get_running_loop().create_task(place_call(options, utterances))
        # A has answered the caller's first question: the conversation has something to keep.
        await a_log.wait_for(lambda ls: len(events(ls, "model.turn_complete")) >= 1, CALL_TIMEOUT_S)
        await stop_first(a)
        async with asyncio.timeout(CALL_TIMEOUT_S):
            report = await call
    finally:
        for process, log in servers:
            if process.returncode is None:
                process.terminate()
                await process.wait()
            await log.finish()
        await lb.close()
        await emulator.close()
    return report, a_log, b_log


def assert_continued_on_b(report: CallReport, b_log: ServerLog, database: str) -> None:
    # One call, two streams: the second on B, continuing (leg 2) what A's stream began.
    assert len(report.stream_sids) == 2
    (continued,) = events(b_log.lines, "call.started")
    assert continued["call_sid"] == report.call_sid
    assert continued["continued"] is True
    (ended,) = events(b_log.lines, "call.ended")
    assert ended["leg"] == 2
    assert ended["reason"] == "caller hung up"
    # The caller's questions were both answered, one by A, the rest after the failover by B.
    assert all(u.first_reply_ms is not None for u in report.utterances)
    # The record is one call whose turns run from A's leg into B's.
    store = RecordStore.from_url(database)
    record = store.get_call(report.call_sid)
    assert record is not None
    assert len([t for t in record.turns if t.role == "agent"]) >= 2


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
@pytest.mark.real_time
async def test_a_call_survives_the_replica_it_was_on_being_killed(
    tmp_path: Path, postgres_database: Callable[[], str]
) -> None:
    async def kill(a: Any) -> None:
        os.kill(a.pid, signal.SIGKILL)
        assert await a.wait() == -signal.SIGKILL

    database = postgres_database()
    report, _, b_log = await call_across_two_replicas(tmp_path, database, kill)
    assert_continued_on_b(report, b_log, database)


@pytest.mark.slow
@pytest.mark.real_time
async def test_sigterm_hands_the_call_over_and_the_replica_exits_in_seconds(
    tmp_path: Path, postgres_database: Callable[[], str]
) -> None:
    async def terminate(a: Any) -> None:
        a.send_signal(signal.SIGTERM)
        # Well under HANDOVER_TIMEOUT_S (30 s): the call was let go at its next quiet moment.
        async with asyncio.timeout(scaled_timeout(20.0)):
            assert await a.wait() == 0

    database = postgres_database()
    report, a_log, b_log = await call_across_two_replicas(tmp_path, database, terminate)
    (left,) = events(a_log.lines, "call.ended")
    assert left["reason"] == "handed over"
    assert events(a_log.lines, "call.handing_over")
    assert_continued_on_b(report, b_log, database)
