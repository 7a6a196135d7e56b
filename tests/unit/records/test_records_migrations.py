"""Call records' schema versioning: ``schema_version`` and ordered migrations, for SQLite and
PostgreSQL. An old database is opened and found migrated, its calls intact."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.records.backends import backend_from_url
from agent.records.migrations import LATEST, MIGRATIONS, migrate
from agent.records.store import RecordStore

from .test_records import CALL, T0, execute, query, record_a_call

# The tables as the first release made them (migration 1, before tool_calls.requested), with a
# call in them, and no schema_version: what an upgrade finds on disk.
_VERSION_0_TABLES = (
    """CREATE TABLE calls (call_sid TEXT PRIMARY KEY, stream_sid TEXT, agent TEXT,
        from_number TEXT, to_number TEXT, started_at DOUBLE PRECISION NOT NULL,
        ended_at DOUBLE PRECISION, end_reason TEXT, summary TEXT)""",
    """CREATE TABLE turns (call_sid TEXT NOT NULL, idx INTEGER NOT NULL, role TEXT NOT NULL,
        said TEXT NOT NULL, heard TEXT, started_at DOUBLE PRECISION NOT NULL,
        ended_at DOUBLE PRECISION NOT NULL, interrupted INTEGER NOT NULL,
        PRIMARY KEY (call_sid, idx))""",
    """CREATE TABLE tool_calls (call_sid TEXT NOT NULL, seq INTEGER NOT NULL,
        call_id TEXT NOT NULL, name TEXT NOT NULL, arguments TEXT, result TEXT,
        outcome TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL, PRIMARY KEY (call_sid, seq))""",
    """CREATE TABLE call_usage (call_sid TEXT NOT NULL, direction TEXT NOT NULL,
        modality TEXT NOT NULL, tokens BIGINT NOT NULL,
        PRIMARY KEY (call_sid, direction, modality))""",
    f"""INSERT INTO calls (call_sid, agent, started_at, ended_at, end_reason)
        VALUES ('CAold', 'support', {T0}, {T0 + 30}, 'caller hung up')""",
    """INSERT INTO tool_calls (call_sid, seq, call_id, name, arguments, result, outcome,
        started_at, latency_ms)
        VALUES ('CAold', 0, 'fc-0', 'lookup', '{"id": 1}', '{"ok": true}', 'ok', 1.0, 5.0)""",
)


@pytest.fixture(params=["sqlite", "postgres"])
def make_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    if request.param == "sqlite":
        return lambda: f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"
    new_database: Callable[[], str] = request.getfixturevalue("postgres_database")
    return new_database


def test_the_migrations_are_numbered_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert MIGRATIONS[-1].version == LATEST


async def test_a_new_database_gets_every_migration_recorded(make_url: Callable[[], str]) -> None:
    url = make_url()
    with capture_logs() as logs:
        store = RecordStore.from_url(url)
    rows = query(url, "SELECT version, description FROM schema_version ORDER BY version")
    assert rows == [(m.version, m.description) for m in MIGRATIONS]
    assert [log["version"] for log in logs if log["event"] == "records.migrated"] == [1, 2]
    record_a_call(store)
    await store.close()
    with capture_logs() as logs:
        RecordStore.from_url(url)  # up to date: nothing runs twice
    assert [log for log in logs if log["event"] == "records.migrated"] == []
    assert query(url, "SELECT COUNT(*) FROM schema_version") == [(LATEST,)]


async def test_an_old_database_is_migrated_and_keeps_its_calls(
    make_url: Callable[[], str],
) -> None:
    url = make_url()
    for statement in _VERSION_0_TABLES:  # sqlite3 creates the file
        execute(url, statement)

    store = RecordStore.from_url(url)

    assert query(url, "SELECT version FROM schema_version ORDER BY version") == [(1,), (2,)]
    old = store.get_call("CAold")
    assert old is not None
    assert old.end_reason == "caller hung up"
    (tool,) = old.tool_calls
    assert (tool.arguments, tool.requested) == ({"id": 1}, None)  # the new column, empty
    record_a_call(store)  # the migrated tables take new writes, requested included
    await store.close()
    new = store.get_call(CALL)
    assert new is not None
    assert [t.name for t in new.tool_calls] == ["lookup_order"]


def test_a_failed_migration_leaves_the_database_as_it_was(
    make_url: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """All of it or none: a step that fails rolls back the steps before it, so the next
    start-up tries again from the same version."""
    from agent.records import migrations

    def broken(backend: object, conn: object) -> None:
        raise RuntimeError("disk full")

    url = make_url()
    backend = backend_from_url(url, create=True)
    monkeypatch.setattr(
        migrations,
        "MIGRATIONS",
        (*MIGRATIONS, migrations.Migration(LATEST + 1, "broken", broken)),
    )
    conn = backend.connect()
    try:
        with pytest.raises(RuntimeError, match="disk full"):
            migrate(backend, conn)
        assert migrations.current_version(backend, conn) == 0
    finally:
        conn.close()
