"""The embedded demo CRM: one SQLite file, created and seeded on first use.

``Crm.open(url)`` makes sure the database exists (tables created and seeded once, in one
transaction, so two processes starting together cannot seed twice) and returns a handle. The
bridge uses it twice: the voice webhook prefetches the caller's record with
:meth:`Crm.lookup_caller` (so the agent can greet them by name), and ``sql`` tools whose
``database_url`` is unset run against its file (see ``agent.tools.sql``).

Every access runs in a worker thread; nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import structlog

from agent.crm.seed import INSERTS, SCHEMA, SCHEMA_VERSION, seed_rows
from agent.errors import ConfigError
from agent.numbers import normalise_number

log = structlog.get_logger("agent.crm")

DEFAULT_CRM_URL: Final = "sqlite:///./crm.db"
#: How much of a caller's history the prefetch returns: enough to greet and orient, no more.
RECENT_ORDERS: Final = 5
UPCOMING_APPOINTMENTS: Final = 3


def crm_path(url: str | None) -> Path:
    """The file a ``CRM_DATABASE_URL`` names (``sqlite:///crm.db``, ``sqlite:////abs/crm.db``);
    None is the default ``./crm.db``. ``ConfigError`` for anything but an SQLite file."""
    url = url or DEFAULT_CRM_URL
    if not url.startswith("sqlite:///"):
        raise ConfigError(
            "CRM_DATABASE_URL must be sqlite:///path (the embedded CRM is SQLite; point an sql "
            "tool's database_url at PostgreSQL instead)",
            key="CRM_DATABASE_URL",
        )
    raw = url.removeprefix("sqlite:///")
    if not raw or raw == ":memory:" or raw.startswith("file:"):
        raise ConfigError(
            f"CRM_DATABASE_URL needs a file path, got {url!r}", key="CRM_DATABASE_URL"
        )
    return Path(raw)


def create_crm(path: Path, *, today: dt.date | None = None) -> bool:
    """Create and seed the CRM at ``path`` unless it exists; True if it was created now.

    Blocking: call it in a thread (``Crm.open`` does). ``today`` anchors the seed's relative
    dates (default: the local date).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        # WAL: tool writes (a booking) and the webhook's lookups do not block each other.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA foreign_keys=ON")
        # IMMEDIATE: of two processes creating the CRM at once, the second waits here and then
        # finds the version already set.
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:
                connection.execute("ROLLBACK")
                return False
            for statement in SCHEMA:
                connection.execute(statement)
            for table, rows in seed_rows(today or dt.date.today()).items():
                connection.executemany(INSERTS[table], rows)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    except sqlite3.Error as exc:
        raise ConfigError(
            f"cannot create the CRM at {path}: {exc}", key="CRM_DATABASE_URL"
        ) from exc
    finally:
        connection.close()
    log.info("crm.created", path=str(path))
    return True


class Crm:
    """A handle on the demo CRM's SQLite file. Cheap: connections are opened per lookup."""

    def __init__(self, path: Path) -> None:
        """Use :meth:`open`, which creates the database first; this only remembers the path."""
        self.path = path

    @classmethod
    async def open(cls, url: str | None = None, *, today: dt.date | None = None) -> Crm:
        """The CRM that ``url`` names (``CRM_DATABASE_URL``; default ``sqlite:///./crm.db``),
        created and seeded first if it does not exist yet. ``ConfigError`` if it cannot be."""
        path = crm_path(url)
        await asyncio.to_thread(create_crm, path, today=today)
        return cls(path)

    @property
    def url(self) -> str:
        """``sqlite:///`` + the path, the form ``CRM_DATABASE_URL`` takes."""
        return f"sqlite:///{self.path}"

    def __repr__(self) -> str:
        return f"Crm({str(self.path)!r})"

    async def lookup_caller(self, phone: str | None) -> Mapping[str, Any] | None:
        """The customer whose number is ``phone`` (normalised to E.164), with their recent
        orders and upcoming appointments; None for an unknown or unusable number.

        Shape: ``{"id", "name", "phone", "email", "tier", "orders": [{"id", "status", "eta",
        "total", "items"}] (newest first), "appointments": [{"id", "starts_at", "topic"}]}``.
        """
        number = normalise_number(phone)
        if number is None:
            return None
        today = dt.date.today().isoformat()
        return await asyncio.to_thread(self._lookup, number, today)

    async def close(self) -> None:
        """Nothing is held open between lookups; here so the app's lifecycle can pair it."""

    def _lookup(self, number: str, today: str) -> dict[str, Any] | None:
        # Read-only: the prefetch can never change the CRM, whatever happens.
        uri = self.path.resolve().as_uri() + "?mode=ro"
        connection = sqlite3.connect(uri, uri=True, timeout=5.0)
        connection.row_factory = sqlite3.Row
        try:
            row = connection.execute(
                "SELECT id, name, phone, email, tier FROM customers WHERE phone = ?", (number,)
            ).fetchone()
            if row is None:
                return None
            customer = dict(row)
            customer["orders"] = [
                dict(order)
                for order in connection.execute(
                    "SELECT id, status, eta, total, items FROM orders WHERE customer_id = ? "
                    "ORDER BY id DESC LIMIT ?",
                    (customer["id"], RECENT_ORDERS),
                )
            ]
            customer["appointments"] = [
                dict(appointment)
                for appointment in connection.execute(
                    "SELECT id, starts_at, topic FROM appointments "
                    "WHERE customer_id = ? AND starts_at >= ? ORDER BY starts_at LIMIT ?",
                    (customer["id"], today, UPCOMING_APPOINTMENTS),
                )
            ]
            return customer
        finally:
            connection.close()
