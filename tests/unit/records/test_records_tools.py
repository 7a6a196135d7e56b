"""The tool audit trail: what ran (bound values applied) and, apart, what the model asked for;
refused calls too. Older databases gain the ``requested`` column at start-up."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.cli.calls import show_command
from agent.observability.privacy import REDACTED
from agent.records.store import RecordStore

T0 = 1_700_000_000.0
CALL = "CA" + "7" * 32
FORGED = "+15555550666"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"
    new_database: Callable[[], str] = request.getfixturevalue("postgres_database")
    return new_database()


def execute(url: str, sql: str) -> None:
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(sql)


async def record_both(store: RecordStore) -> None:
    recorder = store.recorder(CALL)
    recorder.started(
        call_sid=CALL,
        stream_sid="MZ1",
        agent="support",
        from_number="+15555550100",
        to_number="+15555550199",
        started_at=T0,
    )
    recorder.tool_call(
        call_id="fc-1",
        name="lookup_account",
        arguments={"phone": "+15555550100", "pin": "1234"},
        result={"result": {"balance": 12}},
        outcome="ok",
        started_at=T0 + 1,
        latency_ms=40.0,
        requested={"phone": FORGED, "pin": "1234"},
    )
    recorder.tool_call(
        call_id="fc-2",
        name="lookup_account",
        arguments=None,
        result={"error": "Too many lookups are already running; try again in a moment."},
        outcome="refused",
        started_at=T0 + 2,
        latency_ms=0.0,
        requested={"phone": FORGED},
    )
    await store.flush()


async def test_used_and_requested_arguments_are_kept_apart(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    await record_both(store)
    call = store.get_call(CALL)
    assert call is not None
    ran, refused = call.tool_calls
    assert ran.arguments == {"phone": "+15555550100", "pin": "1234"}
    assert ran.requested == {"phone": FORGED, "pin": "1234"}
    assert (refused.outcome, refused.arguments, refused.requested) == (
        "refused",
        None,
        {"phone": FORGED},
    )
    text = show_command(store, CALL)
    assert f'asked:   {{"phone": "{FORGED}", "pin": "1234"}}' in text
    assert "refused" in text
    await store.close()


async def test_requested_is_redacted_and_masked_like_the_arguments(db_url: str) -> None:
    store = RecordStore.from_url(db_url, redact_fields=["pin"], mask_caller_numbers=True)
    await record_both(store)
    call = store.get_call(CALL)
    assert call is not None
    ran = call.tool_calls[0]
    assert ran.arguments == {"phone": "+1555****100", "pin": REDACTED}
    assert ran.requested == {"phone": "+1555****666", "pin": REDACTED}
    await store.close()


async def test_a_database_from_before_gains_the_column(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    await record_both(store)
    await store.close()
    # As an older release made it: no requested column, and no schema_version either.
    execute(db_url, "ALTER TABLE tool_calls DROP COLUMN requested")
    execute(db_url, "DROP TABLE schema_version")

    store = RecordStore.from_url(db_url)  # adds it back
    call = store.get_call(CALL)
    assert call is not None
    assert [tool.requested for tool in call.tool_calls] == [None, None]  # not known then
    await record_both(store)  # writes work with the column
    RecordStore.from_url(db_url)  # and a second start-up finds it there
    await store.close()
