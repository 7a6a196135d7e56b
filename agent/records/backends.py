"""Where SQL state lives: SQLite (stdlib ``sqlite3``, WAL mode) or PostgreSQL (psycopg 3), behind
one small seam. The SQL is written once in their common subset (``ON CONFLICT``, ``DOUBLE
PRECISION``, JSON as text); a backend only says how to connect, which placeholder it uses and how
to begin a write. Used by the call records and by the state replicas share (:mod:`agent.cluster`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from agent.errors import ConfigError

__all__ = [
    "Backend",
    "Connection",
    "Cursor",
    "PostgresBackend",
    "SqliteBackend",
    "backend_from_url",
    "without_password",
]


class Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...

    @property
    def rowcount(self) -> int: ...


class Connection(Protocol):
    """The DB-API subset both sqlite3 and psycopg 3 connections offer."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...
    def close(self) -> None: ...


class Backend(Protocol):
    """How to reach one kind of database; the SQL is shared."""

    location: str  # for messages: the path or the URL without its password
    errors: tuple[type[Exception], ...]  # what the driver raises when the database fails

    def connect(self) -> Connection:
        """A connection in autocommit mode: transactions are explicit BEGIN ... COMMIT."""
        ...

    def sql(self, statement: str) -> str:
        """``statement`` with this driver's placeholders."""
        ...

    def begin(self) -> str:
        """The statement that opens a write transaction."""
        ...

    def check(self, conn: Connection) -> str | None:
        """What is wrong with the database behind ``conn`` (None: nothing found)."""
        ...


class SqliteBackend:
    """SQLite through the standard library, in WAL mode.

    WAL lets the CLI read while the server writes, and makes each commit an append to the log.
    ``synchronous=NORMAL`` in WAL mode is durable against a process crash (the data is in the OS
    once ``COMMIT`` returns) and skips the fsync per commit that only a power loss would need.
    """

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)

    def connect(self) -> Connection:
        # isolation_level=None: no implicit transactions; we BEGIN/COMMIT ourselves.
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def sql(self, statement: str) -> str:
        return statement

    def begin(self) -> str:
        # IMMEDIATE takes the write lock up front, so a busy database waits (busy timeout)
        # at BEGIN instead of failing half-way through the transaction.
        return "BEGIN IMMEDIATE"

    def check(self, conn: Connection) -> str | None:
        # quick_check reads every page (so it finds a page of zeros, a torn b-tree) but skips
        # the index-versus-table cross-check integrity_check does: seconds for a large file.
        rows = [str(row[0]) for row in conn.execute("PRAGMA quick_check").fetchall()]
        if rows == ["ok"]:
            return None
        return "; ".join(" ".join(row.split()) for row in rows[:5]) or "no answer"


class PostgresBackend:
    """PostgreSQL through psycopg 3, one autocommit connection per writer or read.

    Every write is its own short transaction, so the server's default durability (synchronous
    commit) gives the same crash guarantee as SQLite's, and more (it survives a lost host).
    """

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError(
                "a postgresql:// DATABASE_URL needs psycopg 3: "
                "pip install 'gemini-phone-agent[postgres]'",
                key="DATABASE_URL",
            ) from exc
        self._psycopg = psycopg
        self.url = url
        self.location = without_password(url)
        self.errors: tuple[type[Exception], ...] = (psycopg.Error,)

    def connect(self) -> Connection:
        return self._psycopg.connect(self.url, autocommit=True, connect_timeout=5)

    def sql(self, statement: str) -> str:
        # Our statements contain no literal ? or %: placeholders are the only ones.
        return statement.replace("?", "%s")

    def begin(self) -> str:
        return "BEGIN"

    def check(self, conn: Connection) -> str | None:
        # A round trip: the server answers and this login may query. Corruption is the
        # server's business (checksums, replicas), not something a client can scan for.
        row = conn.execute("SELECT 1").fetchone()
        return None if row is not None and row[0] == 1 else f"SELECT 1 returned {row!r}"


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def backend_from_url(url: str, *, create: bool, key: str = "DATABASE_URL") -> Backend:
    """The backend for ``url``; ``key`` names the setting it came from, for messages."""
    if url.startswith("sqlite:///"):
        raw = url.removeprefix("sqlite:///")
        if not raw or raw == ":memory:" or raw.startswith("file:"):
            raise ConfigError(
                f"{key} needs a file path (what it holds must outlive the process), got {url!r}",
                key=key,
            )
        path = Path(raw)
        if not create and not path.exists():
            raise ConfigError(f"no call records at {path} (is {key} right?)")
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteBackend(path)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresBackend(url)
    raise ConfigError(
        f"{key} must start with sqlite:/// (or postgresql://), got {url.split(':')[0]!r}",
        key=key,
    )
