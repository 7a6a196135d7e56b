"""The embedded CRM and ``sql`` tools run against it: the seed, the caller prefetch, scoping by
the bound caller number, SQL injection, idempotent booking and row limits.

The tool tests run on the embedded SQLite CRM and, with the same tables and rows, on a throwaway
PostgreSQL (Unix socket only): skipped on a developer's machine without PostgreSQL, failed under
``CI=true`` so the variant can never be skipped silently there.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from agent.config.tools import SqlTool, ToolSpec
from agent.crm import Crm, create_crm, crm_path
from agent.crm.seed import CUSTOMERS, ORDERS, seed_rows
from agent.errors import ConfigError
from agent.tools import CallContext, Toolbox
from agent.tools.sql import CONSTRAINT_MESSAGE

DANA = "+15555550100"  # the carrier simulator's default caller: orders A1009, A1017, A1021
MARCUS = "+15555550101"  # orders A1003, A1019
CALL = "CA" + "1" * 32


def context(caller: str | None = DANA, call_sid: str = CALL) -> CallContext:
    return CallContext(
        call_sid=call_sid,
        account_sid="AC" + "a" * 32,
        stream_sid="MZ" + "5" * 32,
        agent="acme-support",
        caller_number=caller,
        called_number="+15555550199",
        local_time="2025-06-02T10:00:00-04:00",
    )


# -- the database itself ---------------------------------------------------------------------------


@pytest.fixture
async def crm(tmp_path: Path) -> Crm:
    return await Crm.open(f"sqlite:///{tmp_path / 'crm.db'}")


def rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to prove a tool call changed nothing."""
    tables = [name for (name,) in rows(path, "SELECT name FROM sqlite_master WHERE type='table'")]
    return {table: sorted(rows(path, f"SELECT * FROM {table}"), key=repr) for table in tables}


async def test_the_crm_is_created_and_seeded_once(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "crm.db"
    assert create_crm(path, today=dt.date(2025, 6, 2)) is True
    assert create_crm(path) is False  # already there: left alone
    assert rows(path, "SELECT count(*) FROM customers") == [(12,)]
    assert rows(path, "SELECT count(*) FROM orders") == [(len(ORDERS),)]
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    # Relative dates were resolved against the creation day.
    assert rows(path, "SELECT status, eta FROM orders WHERE id = 'A1017'") == [
        ("shipped", "2025-06-04")
    ]


async def test_the_default_caller_has_orders_in_several_states(crm: Crm) -> None:
    statuses = rows(
        crm.path,
        "SELECT o.status FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.phone = ?",
        DANA,
    )
    assert sorted(s for (s,) in statuses) == ["delivered", "processing", "shipped"]
    assert all(phone.startswith("+") for _, _, phone, _, _ in CUSTOMERS)


async def test_lookup_caller_returns_the_customer_their_orders_and_appointments(crm: Crm) -> None:
    customer = await crm.lookup_caller("+1 (555) 555-0100")
    assert customer is not None
    assert {k: customer[k] for k in ("id", "name", "phone", "tier")} == {
        "id": 1,
        "name": "Dana Whitfield",
        "phone": DANA,
        "tier": "gold",
    }
    assert [order["id"] for order in customer["orders"]] == ["A1021", "A1017", "A1009"]
    assert customer["orders"][1]["status"] == "shipped"
    [appointment] = customer["appointments"]  # upcoming only
    assert appointment["topic"].startswith("fitting")


@pytest.mark.parametrize("phone", [None, "", "anonymous", "client:alice", "+15555550999", "12"])
async def test_lookup_caller_finds_no_one_for_unknown_or_unusable_numbers(
    crm: Crm, phone: str | None
) -> None:
    assert await crm.lookup_caller(phone) is None


def test_the_crm_url_must_name_an_sqlite_file() -> None:
    assert crm_path(None) == Path("crm.db")
    assert crm_path("sqlite:////var/lib/crm.db") == Path("/var/lib/crm.db")
    for url in ("postgresql://h/db", "sqlite:///", "sqlite:///:memory:"):
        with pytest.raises(ConfigError, match="CRM_DATABASE_URL"):
            crm_path(url)


# -- sql tools on both backends --------------------------------------------------------------------


# The CRM's tables in PostgreSQL, with the same constraints that matter here.
_PG_SCHEMA = (
    """CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
        phone TEXT NOT NULL UNIQUE, email TEXT, tier TEXT NOT NULL)""",
    """CREATE TABLE orders (id TEXT PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers,
        status TEXT NOT NULL, eta TEXT, total NUMERIC(10, 2) NOT NULL, items TEXT NOT NULL)""",
    """CREATE TABLE appointments (id SERIAL PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers, starts_at TEXT NOT NULL
        CHECK (starts_at ~ '^\\d{4}-\\d{2}-\\d{2}[T ]\\d{2}:\\d{2}'), topic TEXT NOT NULL,
        created_by_call TEXT, UNIQUE (created_by_call, starts_at))""",
    """CREATE TABLE tickets (id SERIAL PRIMARY KEY, customer_id INTEGER REFERENCES customers,
        subject TEXT NOT NULL, body TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL,
        created_by_call TEXT)""",
)


@dataclass
class Backend:
    """Where the CRM's rows live for one test, and how to read them back directly."""

    name: str
    database_url: str | None  # for SqlTool: None is the embedded CRM
    crm: Crm
    read: Any  # (sql) -> list of tuples

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        return {
            table: sorted(self.read(f"SELECT * FROM {table}"), key=repr)
            for table in ("customers", "orders", "appointments", "tickets")
        }


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, crm: Crm) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", None, crm, lambda sql: rows(crm.path, sql))
    import psycopg

    url = request.getfixturevalue("postgres_database")()
    seeds = seed_rows(dt.date.today())
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in _PG_SCHEMA:
            conn.execute(statement.encode())
        for table, values in seeds.items():
            if table in ("customers", "orders"):
                marks = ", ".join(["%s"] * len(values[0]))
                with conn.cursor() as cursor:
                    cursor.executemany(f"INSERT INTO {table} VALUES ({marks})".encode(), values)

    def read(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url) as conn:
            return [tuple(row) for row in conn.execute(sql.encode()).fetchall()]

    return Backend("postgres", url, crm, read)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def order_status(database_url: str | None) -> ToolSpec:
    """An order, only if it is the caller's: the caller's number is bound, never the model's."""
    return ToolSpec(
        name="order_status",
        description="Look up one of the caller's orders.",
        kind=SqlTool(
            query="SELECT o.id, o.status, o.eta, o.items FROM orders o "
            "JOIN customers c ON c.id = o.customer_id "
            "WHERE o.id = :order_id AND c.phone = :caller_number",
            database_url=database_url,
        ),
        parameters={
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
        bind={"caller_number": "caller_number"},
    )


def my_orders(database_url: str | None, max_rows: int = 20) -> ToolSpec:
    return ToolSpec(
        name="my_orders",
        description="The caller's orders, newest first.",
        kind=SqlTool(
            query="SELECT o.id, o.status, o.total FROM orders o "
            "JOIN customers c ON c.id = o.customer_id "
            "WHERE c.phone = :caller_number ORDER BY o.id DESC",
            max_rows=max_rows,
            database_url=database_url,
        ),
        bind={"caller_number": "caller_number"},
    )


def book_appointment(backend: Backend) -> ToolSpec:
    """Idempotent per call through the UNIQUE (created_by_call, starts_at) constraint.

    ``ON CONFLICT DO NOTHING`` (both dialects) rather than SQLite's ``INSERT OR IGNORE``: OR
    IGNORE also swallows CHECK violations, so a malformed time would silently book nothing."""
    return ToolSpec(
        name="book_appointment",
        description="Book an appointment for the caller.",
        kind=SqlTool(
            query="INSERT INTO appointments (customer_id, starts_at, topic, created_by_call) "
            "SELECT id, :starts_at, :topic, :call_sid FROM customers "
            "WHERE phone = :caller_number ON CONFLICT DO NOTHING",
            database_url=backend.database_url,
        ),
        parameters={
            "type": "object",
            "properties": {"starts_at": {"type": "string"}, "topic": {"type": "string"}},
            "required": ["starts_at", "topic"],
        },
        bind={"caller_number": "caller_number", "call_sid": "call_sid"},
    )


async def toolbox(backend: Backend, http: aiohttp.ClientSession, *specs: ToolSpec) -> Toolbox:
    return Toolbox(specs, http=http, crm=backend.crm)


async def test_a_caller_reads_their_own_order(
    backend: Backend, http: aiohttp.ClientSession
) -> None:
    tools = await toolbox(backend, http, order_status(backend.database_url))
    outcome = await tools.run("order_status", {"order_id": "A1017"}, context())
    assert outcome.outcome == "ok"
    [order] = outcome.response["result"]
    assert (order["id"], order["status"]) == ("A1017", "shipped")
    assert "merino socks" in order["items"]
    await tools.close()


async def test_a_caller_cannot_read_someone_elses_order(
    backend: Backend, http: aiohttp.ClientSession
) -> None:
    tools = await toolbox(backend, http, order_status(backend.database_url))
    # A1019 is Marcus's: asked for from Dana's phone, it does not exist.
    outcome = await tools.run("order_status", {"order_id": "A1019"}, context(DANA))
    assert outcome.response == {"result": []}
    # Nor does naming Marcus's number help: the bound value comes from the call, not the model.
    with capture_logs() as logs:
        outcome = await tools.run(
            "order_status", {"order_id": "A1019", "caller_number": MARCUS}, context(DANA)
        )
    assert outcome.response == {"result": []}
    [warning] = [entry for entry in logs if entry["event"] == "tool.bound_override_ignored"]
    assert warning["log_level"] == "warning"
    assert warning["parameters"] == ["caller_number"]
    assert MARCUS not in repr(logs)
    # From Marcus's own phone it is there.
    outcome = await tools.run("order_status", {"order_id": "A1019"}, context(MARCUS))
    assert [o["id"] for o in outcome.response["result"]] == ["A1019"]
    await tools.close()


async def test_an_anonymous_caller_cannot_use_a_tool_bound_to_the_callers_number(
    backend: Backend, http: aiohttp.ClientSession
) -> None:
    tools = await toolbox(backend, http, order_status(backend.database_url))
    outcome = await tools.run(
        "order_status", {"order_id": "A1017", "caller_number": DANA}, context(caller=None)
    )
    assert outcome.outcome == "error"
    assert outcome.response == {"error": "this call has no caller number, which the tool needs"}
    await tools.close()


INJECTIONS = [
    "'; DROP TABLE customers; --",
    "1 OR 1=1",
    "A1017' OR '1'='1",
    "A1019' OR 1=1 --",
    "A1017; DELETE FROM orders",
    "' UNION SELECT id, name, phone, email FROM customers --",
    "A1017'); UPDATE customers SET phone = '+15555550100'; --",
    '" OR ""="',
    "\\'; DROP TABLE orders; --",
    "%' OR '%'='",
    ":caller_number",
]


@pytest.mark.parametrize("payload", INJECTIONS)
async def test_sql_injection_in_an_argument_changes_and_leaks_nothing(
    backend: Backend, http: aiohttp.ClientSession, payload: str
) -> None:
    before = backend.snapshot()
    tools = await toolbox(
        backend, http, order_status(backend.database_url), book_appointment(backend)
    )
    outcome = await tools.run("order_status", {"order_id": payload}, context())
    # The payload is an order number like any other: no order has it, so nothing comes back.
    assert outcome.response == {"result": []}
    # Through a write, the payload is stored as the text it is, and only that row is added.
    booked = await tools.run(
        "book_appointment", {"starts_at": "2030-01-02T10:00", "topic": payload}, context()
    )
    assert booked.response == {"result": {"rows_affected": 1}}
    after = backend.snapshot()
    assert {t: after[t] for t in ("customers", "orders", "tickets")} == {
        t: before[t] for t in ("customers", "orders", "tickets")
    }
    new = [row for row in after["appointments"] if row not in before["appointments"]]
    assert len(new) == 1
    assert payload in new[0]
    await tools.close()


async def test_booking_is_idempotent_within_a_call(
    backend: Backend, http: aiohttp.ClientSession
) -> None:
    tools = await toolbox(backend, http, book_appointment(backend))
    args = {"starts_at": "2030-03-04T15:30", "topic": "tent repair"}
    first = await tools.run("book_appointment", args, context(call_sid=CALL))
    again = await tools.run("book_appointment", args, context(call_sid=CALL))
    other_call = await tools.run("book_appointment", args, context(call_sid="CA" + "2" * 32))
    assert first.response == {"result": {"rows_affected": 1}}
    assert again.response == {"result": {"rows_affected": 0}}  # the same booking, not a second
    assert other_call.response == {"result": {"rows_affected": 1}}
    assert backend.read(
        "SELECT created_by_call FROM appointments WHERE starts_at = '2030-03-04T15:30' "
        "ORDER BY created_by_call"
    ) == [(CALL,), ("CA" + "2" * 32,)]
    await tools.close()


async def test_a_booking_the_schema_refuses_is_an_error_the_model_can_fix(
    backend: Backend, http: aiohttp.ClientSession
) -> None:
    tools = await toolbox(backend, http, book_appointment(backend))
    outcome = await tools.run(
        "book_appointment", {"starts_at": "tomorrow at three", "topic": "x"}, context()
    )
    assert outcome.outcome == "error"
    assert outcome.response == {"error": CONSTRAINT_MESSAGE}
    await tools.close()


async def test_rows_are_limited_to_max_rows(backend: Backend, http: aiohttp.ClientSession) -> None:
    tools = await toolbox(backend, http, my_orders(backend.database_url, max_rows=2))
    outcome = await tools.run("my_orders", {}, context())
    result = outcome.response["result"]
    assert [order["id"] for order in result] == ["A1021", "A1017"]  # Dana has three
    assert result[0]["total"] == 219  # NUMERIC in PostgreSQL: plain JSON numbers either way
    await tools.close()


async def test_a_cancelled_postgres_query_is_cancelled_on_the_server(
    http: aiohttp.ClientSession, crm: Crm, postgres_server: str
) -> None:
    import psycopg

    spec = ToolSpec(
        name="slow",
        description="A query that takes a minute.",
        kind=SqlTool(query="SELECT pg_sleep(60) AS slept", database_url=postgres_server),
        timeout_s=0.3,
    )
    tools = Toolbox([spec], http=http, crm=crm)
    outcome = await tools.run("slow", {}, context())
    assert outcome.outcome == "timeout"
    assert outcome.response == {"error": "the tool did not finish within 0.3 seconds"}

    def sleeping() -> int:
        with psycopg.connect(postgres_server) as conn:
            row = conn.execute(
                b"SELECT count(*) FROM pg_stat_activity "
                b"WHERE state = 'active' AND query LIKE 'SELECT pg_sleep%'"
            ).fetchone()
            return int(row[0]) if row else 0

    assert await asyncio.to_thread(sleeping) == 0
    # The toolbox still works afterwards: the cancelled connection was not put back in the pool.
    spec_ok = ToolSpec(
        name="one",
        description="1",
        kind=SqlTool(query="SELECT 1 AS one", database_url=postgres_server),
    )
    tools2 = Toolbox([spec_ok], http=http, crm=crm)
    assert (await tools2.run("one", {}, context())).response == {"result": [{"one": 1}]}
    await tools.close()
    await tools2.close()


async def test_the_crm_is_unchanged_by_reads(crm: Crm, http: aiohttp.ClientSession) -> None:
    before = snapshot(crm.path)
    tools = Toolbox([order_status(None), my_orders(None)], http=http, crm=crm)
    await tools.run("my_orders", {}, context())
    await tools.run("order_status", {"order_id": "A1017"}, context())
    assert snapshot(crm.path) == before
    await tools.close()


async def test_insert_or_ignore_books_once_per_call_too(
    crm: Crm, http: aiohttp.ClientSession
) -> None:
    """The SQLite-only spelling works for the duplicate (but hides a CHECK violation: see
    ``agent.crm``'s docstring for why ON CONFLICT DO NOTHING is the one to use)."""
    spec = ToolSpec(
        name="book",
        description="Book.",
        kind=SqlTool(
            query="INSERT OR IGNORE INTO appointments (customer_id, starts_at, topic, "
            "created_by_call) SELECT id, :starts_at, 'visit', :call_sid FROM customers "
            "WHERE phone = :caller_number"
        ),
        parameters={"type": "object", "properties": {"starts_at": {"type": "string"}}},
        bind={"caller_number": "caller_number", "call_sid": "call_sid"},
    )
    tools = Toolbox([spec], http=http, crm=crm)
    results = [
        (await tools.run("book", {"starts_at": at}, context())).response
        for at in ("2030-05-06T09:00", "2030-05-06T09:00", "next tuesday")
    ]
    assert results == [{"result": {"rows_affected": n}} for n in (1, 0, 0)]
    await tools.close()
