"""The store is checked at start-up, and reports a problem while its writes fail.

The corruption is literal: a page of a real SQLite file overwritten with zeros, as a bad disk or
a half-copied backup leaves it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.errors import ConfigError
from agent.records.store import FAILING_FOR_S, RecordStore

T0 = 1_700_000_000.0
PAGE = 4096


def make_records(path: Path, calls: int = 50) -> None:
    """A real records file with ``calls`` calls in it, checkpointed (no WAL left)."""
    RecordStore.from_url(f"sqlite:///{path}")  # the schema
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for index in range(calls):
            conn.execute(
                "INSERT INTO calls (call_sid, started_at) VALUES (?, ?)",
                (f"CA{index:032d}", T0 + index),
            )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def calls_root_page(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'calls'").fetchone()
    finally:
        conn.close()
    return int(row[0])


def zero_page(path: Path, page: int) -> None:
    """Overwrite SQLite page ``page`` (1-based) with zeros."""
    with path.open("r+b") as file:
        file.seek((page - 1) * PAGE)
        file.write(b"\0" * PAGE)


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_a_corrupt_sqlite_file_stops_start_up(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    make_records(db)
    zero_page(db, calls_root_page(db))

    with capture_logs() as logs, pytest.raises(ConfigError) as caught:
        RecordStore.from_url(f"sqlite:///{db}")
    message = str(caught.value)
    assert "failed their check" in message
    assert str(db) in message
    assert "move it aside" in message
    assert caught.value.key == "DATABASE_URL"
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["records.check_failed"]
    # The CLI still opens it, to read what can be read.
    RecordStore.from_url(f"sqlite:///{db}", create=False)


def test_a_healthy_store_passes_its_check(make_url: Callable[[], str]) -> None:
    store = RecordStore.from_url(make_url())
    store.check()  # SQLite quick_check, PostgreSQL a SELECT 1: no exception
    assert store.problem is None


@pytest.fixture(params=["sqlite", "postgres"])
def make_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    if request.param == "sqlite":
        return lambda: f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"
    new_database: Callable[[], str] = request.getfixturevalue("postgres_database")
    return new_database


def test_an_unreachable_postgresql_stops_start_up() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(ConfigError) as caught:
        RecordStore.from_url("postgresql://nobody@127.0.0.1:1/none")
    assert "127.0.0.1:1" in str(caught.value)


async def test_failing_writes_are_a_problem_until_one_succeeds(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    make_records(db)
    store = RecordStore.from_url(f"sqlite:///{db}")  # healthy at start-up
    zero_page(db, calls_root_page(db))  # the disk goes bad under the running server
    recorder = store.recorder("CA" + "f" * 32)
    with capture_logs() as logs:
        recorder.started(
            call_sid=recorder.call_sid,
            stream_sid="MZ1",
            agent="support",
            from_number=None,
            to_number=None,
            started_at=T0,
        )
        await store.flush()
    assert store.dropped == 1
    assert "records.write_failed" in [e["event"] for e in logs]
    problem = store.problem
    assert problem is not None
    assert problem.startswith("call records failing: ")
    assert "malformed" in problem

    # The file is replaced by a good one (restored): the next write succeeds, the problem goes.
    remove_database(db)
    RecordStore.from_url(f"sqlite:///{db}")
    with capture_logs() as logs:
        recorder.ended(reason="caller hung up", ended_at=T0 + 5, summary={})
        await store.flush()
    assert store.problem is None
    assert "records.write_recovered" in [e["event"] for e in logs]
    await store.close()


async def test_a_failure_with_no_write_since_stops_being_a_problem(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    make_records(db)
    store = RecordStore.from_url(f"sqlite:///{db}")
    zero_page(db, calls_root_page(db))
    store.recorder("CA" + "e" * 32).ended(reason="x", ended_at=T0, summary={})
    await store.flush()
    assert store.problem is not None
    # An idle instance becomes ready again, so the next call can show whether it healed.
    assert store.failing_for_s == FAILING_FOR_S
    store.failing_for_s = 0.05
    await asyncio.sleep(0.1)
    assert store.problem is None
    await store.close()
