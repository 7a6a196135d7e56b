"""The call records' schema, as ordered migrations, and the ``schema_version`` table that says
which have run.

An upgrade that changes a table adds a :class:`Migration` at the end of :data:`MIGRATIONS`
(never edits one that has shipped): every database, SQLite or PostgreSQL, made by any earlier
release, is brought to the newest version when a store opens it, in one transaction, and
``schema_version`` keeps one row per migration applied (version, when, what). The SQL is the
subset both databases share, like the rest of :mod:`agent.records`.

A database made before versioning (it has ``calls`` but no ``schema_version``) is taken as it
is: migrations are written to be re-runnable (``CREATE ... IF NOT EXISTS``, a column added only
when missing), so running them all over such a database changes only what it lacks.

Two replicas starting together: the migrations run under a write lock (SQLite ``BEGIN
IMMEDIATE``; PostgreSQL an exclusive lock on ``schema_version``), so the second waits and then
finds nothing left to do. A database newer than this release (a rollback after an upgrade) is
used as it is, with a warning: migrations only add, so older code still reads and writes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import structlog

from agent.records.backends import Backend, Connection, PostgresBackend

log = structlog.get_logger("agent.records")


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: ``apply`` runs inside the migration transaction."""

    version: int
    description: str
    apply: Callable[[Backend, Connection], None]


def _statements(*sql: str) -> Callable[[Backend, Connection], None]:
    def apply(backend: Backend, conn: Connection) -> None:
        for statement in sql:
            conn.execute(statement)

    return apply


def _add_column(table: str, column: str, kind: str) -> Callable[[Backend, Connection], None]:
    """``ALTER TABLE ... ADD COLUMN``, unless a database made between releases has it."""

    def apply(backend: Backend, conn: Connection) -> None:
        if not has_column(backend, conn, table, column):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    return apply


def has_column(backend: Backend, conn: Connection, table: str, column: str) -> bool:
    """Whether ``table`` has ``column`` (asked of the catalogue, inside any transaction)."""
    if isinstance(backend, PostgresBackend):
        row = conn.execute(
            backend.sql(
                "SELECT 1 FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = ? AND column_name = ?"
            ),
            (table, column),
        ).fetchone()
        return row is not None
    rows = conn.execute(f"PRAGMA table_info({table})").fetchall()
    return any(row[1] == column for row in rows)


#: Every version of the schema, oldest first. Append; never change a shipped migration.
MIGRATIONS: Final = (
    Migration(
        1,
        "calls, turns, tool_calls and call_usage",
        _statements(
            """CREATE TABLE IF NOT EXISTS calls (
                call_sid     TEXT PRIMARY KEY,
                stream_sid   TEXT,
                agent        TEXT,
                from_number  TEXT,
                to_number    TEXT,
                started_at   DOUBLE PRECISION NOT NULL,
                ended_at     DOUBLE PRECISION,
                end_reason   TEXT,
                summary      TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS calls_by_started_at ON calls (started_at)",
            """CREATE TABLE IF NOT EXISTS turns (
                call_sid     TEXT NOT NULL,
                idx          INTEGER NOT NULL,
                role         TEXT NOT NULL,
                said         TEXT NOT NULL,
                heard        TEXT,
                started_at   DOUBLE PRECISION NOT NULL,
                ended_at     DOUBLE PRECISION NOT NULL,
                interrupted  INTEGER NOT NULL,
                PRIMARY KEY (call_sid, idx)
            )""",
            """CREATE TABLE IF NOT EXISTS tool_calls (
                call_sid     TEXT NOT NULL,
                seq          INTEGER NOT NULL,
                call_id      TEXT NOT NULL,
                name         TEXT NOT NULL,
                arguments    TEXT,
                result       TEXT,
                outcome      TEXT NOT NULL,
                started_at   DOUBLE PRECISION NOT NULL,
                latency_ms   DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (call_sid, seq)
            )""",
            """CREATE TABLE IF NOT EXISTS call_usage (
                call_sid     TEXT NOT NULL,
                direction    TEXT NOT NULL,
                modality     TEXT NOT NULL,
                tokens       BIGINT NOT NULL,
                PRIMARY KEY (call_sid, direction, modality)
            )""",
        ),
    ),
    Migration(
        2,
        "tool_calls.requested: what the model asked for, apart from what ran",
        _add_column("tool_calls", "requested", "TEXT"),
    ),
)

LATEST: Final = MIGRATIONS[-1].version

_VERSION_TABLE: Final = """CREATE TABLE IF NOT EXISTS schema_version (
    version      INTEGER PRIMARY KEY,
    applied_at   DOUBLE PRECISION NOT NULL,
    description  TEXT NOT NULL
)"""


def current_version(backend: Backend, conn: Connection) -> int:
    """The newest migration applied (0: none, or no ``schema_version`` table)."""
    try:
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    except backend.errors:
        return 0
    return int(row[0]) if row is not None and row[0] is not None else 0


def _version_table_exists(backend: Backend, conn: Connection) -> bool:
    try:
        conn.execute("SELECT version FROM schema_version WHERE 1 = 0").fetchall()
    except backend.errors:
        return False
    return True


def migrate(backend: Backend, conn: Connection) -> list[int]:
    """Bring the database behind ``conn`` (autocommit) to :data:`LATEST`; the versions applied
    now, in order (empty: it was up to date). Raises the driver's error if a step fails, after
    rolling the whole transaction back."""
    try:
        conn.execute(_VERSION_TABLE)
    except backend.errors:
        # Another replica created it in the same instant (PostgreSQL may refuse the second
        # CREATE ... IF NOT EXISTS with a unique violation): it exists now, all this needed.
        if current_version(backend, conn) == 0 and not _version_table_exists(backend, conn):
            raise
    conn.execute(backend.begin())
    try:
        if isinstance(backend, PostgresBackend):
            conn.execute("LOCK TABLE schema_version IN EXCLUSIVE MODE")
        version = current_version(backend, conn)
        applied = []
        for migration in MIGRATIONS:
            if migration.version <= version:
                continue
            migration.apply(backend, conn)
            conn.execute(
                backend.sql(
                    "INSERT INTO schema_version (version, applied_at, description) VALUES (?, ?, ?)"
                ),
                (migration.version, time.time(), migration.description),
            )
            applied.append(migration.version)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    for number in applied:
        log.info("records.migrated", version=number, location=backend.location)
    if version > LATEST:
        log.warning(
            "records.schema_newer",
            version=version,
            known=LATEST,
            location=backend.location,
        )
    return applied
