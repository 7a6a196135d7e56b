"""The real server, killed mid-call: its call record keeps every completed turn, and
``agent calls show`` reads it back.

``python -m agent serve`` runs as a subprocess exactly as deployed (JSON logs on stderr, SQLite
records, a Twilio auth token), against a Live API emulator and a carrier simulator running in this
test's event loop. The test follows the call in the server's own log lines: once two model turns
have completed (``model.turn_complete``) and the record writer has committed them, the server is
killed with SIGKILL while the caller is still talking. Nothing here sleeps to synchronise: each
step waits for a log line or a database row, with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from timing import scaled_timeout

from agent.records.store import RecordStore
from agent.sim.carrier import CarrierOptions, place_call
from agent.sim.live.server import EmulatorOptions, start_emulator

from .conftest import caller_clip
from .processes import events, free_port, run_cli, server_env, start_server

# Faster than real time, slow enough for a loaded two-core machine: the server's own call clock
# runs in real time, the carrier's and the emulator's audio clocks run at this speed.
SPEED = 4.0
AUTH_TOKEN = "crash-test-auth-token-0123456789abcdef"
COMPLETED_TURNS = 2
CALL_TIMEOUT_S = scaled_timeout(45.0)


def committed_agent_turns(db: Path, call_sid: str) -> int:
    """Agent turns committed for the call, read through a read-only connection."""
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        try:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM turns WHERE call_sid = ? AND role = 'agent'", (call_sid,)
            ).fetchone()
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0
    return int(count)


async def wait_committed(db: Path, call_sid: str, turns: int, timeout_s: float) -> None:
    """Record writes are asynchronous (a writer thread): wait until these turns are committed."""
    # Nothing announces a commit by another process's writer thread, so this polls the database
    # (the one poll in this test), bounded by the timeout.
    async with asyncio.timeout(timeout_s):
        while await asyncio.to_thread(committed_agent_turns, db, call_sid) < turns:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
# The server is another process, on the real clock: so is this test's loop.
@pytest.mark.real_time
async def test_a_server_killed_mid_call_keeps_every_completed_turn(tmp_path: Path) -> None:
    emulator = await start_emulator(EmulatorOptions())
    port = free_port()
    db = tmp_path / "calls.db"
    env = server_env(tmp_path, port, emulator.url, db, AUTH_TOKEN)
    call: asyncio.Task[Any] | None = None
    try:
        server, log = await start_server(port, env, tmp_path)
        try:
            # Several utterances, so the call is still going when the second turn completes.
            utterances = [caller_clip(n) for n in ("order-status", "goodbye", "transfer")] * 2
            options = CarrierOptions(
                url=f"http://127.0.0.1:{port}", auth_token=AUTH_TOKEN, gap_ms=600
            )
            call = asyncio.get_running_loop().create_task(place_call(options, utterances))
            await log.wait_for(lambda ls: bool(events(ls, "call.started")), CALL_TIMEOUT_S)
            (started,) = events(log.lines, "call.started")
            call_sid = started["call_sid"]
            await log.wait_for(
                lambda ls: len(events(ls, "model.turn_complete", call_sid)) >= COMPLETED_TURNS,
                CALL_TIMEOUT_S,
            )
            completed = len(events(log.lines, "model.turn_complete", call_sid))
            await wait_committed(db, call_sid, completed, timeout_s=scaled_timeout(10))

            os.kill(server.pid, signal.SIGKILL)
            assert await server.wait() == -signal.SIGKILL
        finally:
            if server.returncode is None:
                server.kill()
                await server.wait()
            await log.finish()
    finally:
        if call is not None:
            # The caller hears the line drop: the simulator ends the call (or fails to place it).
            with contextlib.suppress(Exception):
                async with asyncio.timeout(scaled_timeout(30)):
                    await call
        await emulator.close()

    # No ending was logged: the process died mid-call.
    assert not events(log.lines, "call.ended")
    # Every line of the call carried its ids, and no secret reached the log.
    call_lines = [
        line
        for line in log.lines[log.lines.index(started) :]
        if line["logger"] in ("agent.call", "agent.live", "agent.tools")
    ]
    assert call_lines
    for line in call_lines:
        assert line["call_sid"] == call_sid
        assert line["stream_sid"] == started["stream_sid"]
        assert line["agent"] == started["agent"]
    (voice,) = [line for line in log.lines if line.get("path") == "/twilio/voice"]
    assert voice["call_sid"] == call_sid
    assert voice["duration_ms"] > 0
    everything = "\n".join(log.raw)
    assert AUTH_TOKEN not in everything
    # No stream token (expiry.nonce.mac), under any key or inside any text.
    assert not re.search(r"\b\d{10,16}\.[\w-]{16,}\.[\w-]{20,}", everything)

    # The record keeps every completed turn, in order, whole, and says the call never ended.
    store = RecordStore.from_url(f"sqlite:///{db}", create=False)
    record = store.get_call(call_sid)
    assert record is not None
    assert record.stream_sid == started["stream_sid"]
    assert record.ended_at is None
    assert record.end_reason is None
    indexes = [turn.index for turn in record.turns]
    assert indexes == list(range(len(indexes)))
    agent_turns = [turn for turn in record.turns if turn.role == "agent"]
    assert len(agent_turns) >= completed >= COMPLETED_TURNS
    assert all(turn.said for turn in agent_turns[:completed])
    assert any(turn.role == "caller" and turn.said for turn in record.turns)

    # And the CLI shows it, turn by turn, from the same database.
    code, out, err = await run_cli("calls", "show", call_sid, env=env, cwd=tmp_path)
    assert code == 0, err
    assert f"call {call_sid}" in out
    assert "(no ending recorded: still running, or the process died)" in out
    for turn in record.turns:
        first_words = " ".join(turn.said.split()[:3])
        assert first_words in out, (first_words, out)
    code, out, err = await run_cli("calls", "list", env=env, cwd=tmp_path)
    assert code == 0, err
    assert call_sid in out
