"""Call records survive a crash: a process killed with SIGKILL mid-call keeps every completed turn.

The child process records a call through :class:`RecordStore` exactly as the server would,
waits for the writer to commit ``COMPLETED`` turns (``await store.flush()``), says so on stdout,
then keeps the call going (a turn, a flush, forever) so the kill lands while it is writing. The
parent kills it on that line: the handshake is the only synchronisation, no sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.records.store import RecordStore
from agent.server.state import RECORDS

from .conftest import BridgeFactory

COMPLETED = 5
CALL_SID = "CAcrash0000000000000000000000000001"
READY = f"flushed {COMPLETED}"

CHILD = f"""
import asyncio, sys, time
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from agent.records.store import RecordStore

def turn(recorder, index):
    now = time.time()
    recorder.turn(index=index, role="caller" if index % 2 == 0 else "agent",
                  said=f"turn {{index}}", heard=f"turn {{index}}",
                  started_at=now, ended_at=now, interrupted=False)

async def main(url):
    store = RecordStore.from_url(url)
    recorder = store.recorder({CALL_SID!r})
    recorder.started(call_sid={CALL_SID!r}, stream_sid="MZcrash", agent="support",
                     from_number="+15555550100", to_number="+15555550199",
                     started_at=time.time())
    for index in range({COMPLETED}):
        turn(recorder, index)
    await store.flush()
    print({READY!r}, flush=True)
    index = {COMPLETED}
    while True:  # the call goes on until the parent kills us
        turn(recorder, index)
        index += 1
        await store.flush()

asyncio.run(main(sys.argv[1]))
"""


def kill_mid_call(url: str) -> None:
    """Run the child on ``url`` and SIGKILL it once it has committed ``COMPLETED`` turns."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()  # blocks until the child has flushed
        assert line == READY, (
            f"child said {line!r}; stderr: {child.stderr.read() if child.stderr else ''}"
        )
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_completed_turns_survive_sigkill_mid_call(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    url = f"sqlite:///{db}"
    kill_mid_call(url)

    # The WAL still holds the last commits: opening the database replays it.
    store = RecordStore.from_url(url, create=False)
    call = store.get_call(CALL_SID)
    assert call is not None
    assert (call.agent, call.from_number, call.stream_sid) == ("support", "+15555550100", "MZcrash")
    indexes = [turn.index for turn in call.turns]
    assert indexes[:COMPLETED] == list(range(COMPLETED))
    # Whatever the child managed after the handshake is whole and in order; nothing is torn.
    assert indexes == list(range(len(indexes)))
    assert all(turn.said == f"turn {turn.index}" for turn in call.turns)
    assert call.ended_at is None
    assert call.end_reason is None
    assert [row.call_sid for row in store.list_calls()] == [CALL_SID]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
async def test_the_next_start_closes_the_killed_call(
    tmp_path: Path, start_bridge: BridgeFactory
) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    await asyncio.to_thread(kill_mid_call, url)
    before = RecordStore.from_url(url, create=False).get_call(CALL_SID)
    assert before is not None
    assert before.ended_at is None

    bridge = await start_bridge(database_url=url)  # the restart, on the same records
    call = bridge.app[RECORDS].get_call(CALL_SID)
    assert call is not None
    assert call.end_reason == "bridge crashed"
    # Ended when it was last known to be going: its last committed turn's end.
    assert call.ended_at == max(turn.ended_at for turn in call.turns)
    assert call.turns == before.turns
