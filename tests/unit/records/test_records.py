"""Call records: written through the non-blocking recorder, read back whole and in order, with
redaction, masking, retention, a bounded queue, and the ``agent calls`` text an engineer reads.

Tests that use ``db_url`` run against SQLite and, when the PostgreSQL server binaries and psycopg
are installed, against a throwaway PostgreSQL on a Unix socket (skipped otherwise).
"""

from __future__ import annotations

import argparse
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.cli.calls import (
    CUT,
    add_calls_subcommands,
    conversation_lines,
    list_command,
    show_command,
)
from agent.errors import ConfigError
from agent.observability.privacy import REDACTED, mask_number, redact_fields
from agent.records.store import CallRecorder, RecordStore

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
CALL = "CA00000000000000000000000000000001"


@pytest.fixture(params=["sqlite", "postgres"])
def make_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """A factory of empty databases' URLs, for each backend."""
    if request.param == "sqlite":
        return lambda: f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"
    new_database: Callable[[], str] = request.getfixturevalue("postgres_database")
    return new_database


@pytest.fixture
def db_url(make_url: Callable[[], str]) -> str:
    """An empty database, SQLite then PostgreSQL."""
    return make_url()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An empty SQLite database, for what only SQLite has (WAL, file locks)."""
    return f"sqlite:///{tmp_path / 'calls.db'}"


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows straight from the database, bypassing the store."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url) as pg:
        return [tuple(row) for row in pg.execute(sql.encode()).fetchall()]


def execute(url: str, sql: str) -> None:
    """Run one statement straight on the database (committed), bypassing the store."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(sql.encode())


def start(recorder: CallRecorder, *, at: float = T0, agent: str = "support") -> None:
    recorder.started(
        call_sid=recorder.call_sid,
        stream_sid="MZ0001",
        agent=agent,
        from_number="+15555550100",
        to_number="+15555550199",
        started_at=at,
    )


def record_a_call(store: RecordStore, call_sid: str = CALL, at: float = T0) -> None:
    """A short call: the caller asks, a tool runs, the agent answers and is cut off, goodbye."""
    recorder = store.recorder(call_sid)
    start(recorder, at=at)
    recorder.turn(
        index=0,
        role="caller",
        said="Where is my order 1234?",
        heard=None,
        started_at=at + 1.0,
        ended_at=at + 2.5,
        interrupted=False,
    )
    recorder.tool_call(
        call_id="fc-1",
        name="lookup_order",
        arguments={"order_id": "1234"},
        result={"status": "shipped", "eta": "Friday"},
        outcome="ok",
        started_at=at + 2.6,
        latency_ms=84.0,
    )
    recorder.turn(
        index=1,
        role="agent",
        said="Your order shipped yesterday and should arrive by Friday.",
        heard="Your order shipped yesterday",
        started_at=at + 3.0,
        ended_at=at + 4.2,
        interrupted=True,
    )
    recorder.turn(
        index=2,
        role="caller",
        said="Great, thanks, bye.",
        heard=None,
        started_at=at + 4.3,
        ended_at=at + 5.0,
        interrupted=False,
    )
    recorder.usage({"prompt_audio": 900, "response_audio": 400})
    recorder.usage({"prompt_audio": 1200, "response_audio": 500, "prompt_text": 30})
    recorder.ended(
        reason="caller hung up",
        ended_at=at + 6.0,
        summary={"frames_in": 300, "barge_ins": 1, "live_connect_ms": 240},
    )


# -- the store ----------------------------------------------------------------------------------


async def test_a_call_is_read_back_as_it_was_written(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    record_a_call(store)
    await store.close()

    call = store.get_call(CALL)
    assert call is not None
    assert (call.stream_sid, call.agent) == ("MZ0001", "support")
    assert (call.from_number, call.to_number) == ("+15555550100", "+15555550199")
    assert (call.started_at, call.ended_at, call.duration_s) == (T0, T0 + 6.0, 6.0)
    assert call.end_reason == "caller hung up"
    assert call.summary == {"frames_in": 300, "barge_ins": 1, "live_connect_ms": 240}
    assert [t.index for t in call.turns] == [0, 1, 2]
    agent_turn = call.turns[1]
    assert agent_turn.role == "agent"
    assert agent_turn.interrupted is True
    assert agent_turn.heard == "Your order shipped yesterday"
    assert (agent_turn.started_at, agent_turn.ended_at) == (T0 + 3.0, T0 + 4.2)
    assert call.turns[0].heard is None
    (tool,) = call.tool_calls
    assert (tool.call_id, tool.name, tool.outcome, tool.latency_ms) == (
        "fc-1",
        "lookup_order",
        "ok",
        84.0,
    )
    assert tool.arguments == {"order_id": "1234"}
    assert tool.result == {"status": "shipped", "eta": "Friday"}
    # Usage holds the latest totals, not a sum of reports.
    assert call.usage == {"prompt_audio": 1200, "prompt_text": 30, "response_audio": 500}
    assert store.dropped == 0


async def test_an_unknown_call_is_none(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    assert store.get_call("CAnope") is None


async def test_turns_come_back_by_index_and_tools_in_the_order_made(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    recorder = store.recorder(CALL)
    start(recorder)
    for index in (2, 0, 1):
        recorder.turn(
            index=index,
            role="agent",
            said=f"turn {index}",
            heard=f"turn {index}",
            started_at=T0 + index,
            ended_at=T0 + index + 0.5,
            interrupted=False,
        )
    for name in ("zeta", "alpha", "mid"):
        recorder.tool_call(
            call_id=name,
            name=name,
            arguments={},
            result=None,
            outcome="ok",
            started_at=T0,
            latency_ms=1.0,
        )
    await store.close()

    call = store.get_call(CALL)
    assert call is not None
    assert [t.said for t in call.turns] == ["turn 0", "turn 1", "turn 2"]
    assert [t.name for t in call.tool_calls] == ["zeta", "alpha", "mid"]


async def test_writing_a_turn_again_replaces_it(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    recorder = store.recorder(CALL)
    start(recorder)
    for heard, interrupted in (("All of it.", False), ("All", True)):
        recorder.turn(
            index=0,
            role="agent",
            said="All of it.",
            heard=heard,
            started_at=T0,
            ended_at=T0 + 1,
            interrupted=interrupted,
        )
    await store.close()
    call = store.get_call(CALL)
    assert call is not None
    assert [(t.heard, t.interrupted) for t in call.turns] == [("All", True)]


async def test_a_turn_written_before_started_is_not_orphaned(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    recorder = store.recorder(CALL)
    recorder.turn(
        index=0,
        role="caller",
        said="hello?",
        heard=None,
        started_at=T0,
        ended_at=T0,
        interrupted=False,
    )
    await store.close()
    call = store.get_call(CALL)
    assert call is not None
    assert [t.said for t in call.turns] == ["hello?"]
    assert [row.call_sid for row in store.list_calls()] == [CALL]


async def test_flush_makes_writes_visible_to_other_readers(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    start(store.recorder(CALL))
    await store.flush()
    reader = RecordStore.from_url(db_url, create=False)
    assert [row.call_sid for row in reader.list_calls()] == [CALL]
    await store.close()


async def test_the_database_is_in_wal_mode(sqlite_url: str, tmp_path: Path) -> None:
    store = RecordStore.from_url(sqlite_url)
    record_a_call(store)
    await store.flush()
    with sqlite3.connect(tmp_path / "calls.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()
    await store.close()


async def test_list_calls_is_newest_first_with_counts(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    record_a_call(store, "CAold", at=T0)
    record_a_call(store, "CAnew", at=T0 + 100)
    start(store.recorder("CAlive"), at=T0 + 50)
    await store.close()

    rows = store.list_calls()
    assert [row.call_sid for row in rows] == ["CAnew", "CAlive", "CAold"]
    assert (rows[0].turns, rows[0].tool_calls, rows[0].end_reason) == (3, 1, "caller hung up")
    assert rows[0].duration_s == 6.0
    assert (rows[1].ended_at, rows[1].duration_s, rows[1].turns) == (None, None, 0)
    assert [row.call_sid for row in store.list_calls(limit=1)] == ["CAnew"]


# -- redaction and masking ----------------------------------------------------------------------


def test_redact_replaces_named_fields_at_any_depth() -> None:
    value = {
        "customer": {"name": "Ada", "DOB": "1815-12-10"},
        "cards": [{"card_number": "4111111111111111", "brand": "visa"}],
        "card_number": "4000000000000002",
        "notes": ("dob", {"dob": {"nested": "gone"}}),
    }
    assert redact_fields(value, frozenset({"card_number", "dob"})) == {
        "customer": {"name": "Ada", "DOB": REDACTED},
        "cards": [{"card_number": REDACTED, "brand": "visa"}],
        "card_number": REDACTED,
        "notes": ["dob", {"dob": REDACTED}],
    }


async def test_tool_arguments_results_and_summary_are_redacted(db_url: str) -> None:
    store = RecordStore.from_url(db_url, redact_fields={"Card_Number", "dob"})
    recorder = store.recorder(CALL)
    start(recorder)
    arguments: dict[str, Any] = {"payment": {"card_number": "4111111111111111", "amount": 12}}
    recorder.tool_call(
        call_id="fc-9",
        name="charge",
        arguments=arguments,
        result={"ok": True, "customer": [{"dob": "1990-01-01", "id": 7}]},
        outcome="ok",
        started_at=T0,
        latency_ms=3.0,
    )
    arguments["payment"]["amount"] = 999  # a later change by the caller is not recorded
    recorder.ended(reason="error", ended_at=T0 + 1, summary={"last_tool": {"dob": "x"}})
    await store.close()

    call = store.get_call(CALL)
    assert call is not None
    (tool,) = call.tool_calls
    assert tool.arguments == {"payment": {"card_number": REDACTED, "amount": 12}}
    assert tool.result == {"ok": True, "customer": [{"dob": REDACTED, "id": 7}]}
    assert call.summary == {"last_tool": {"dob": REDACTED}}
    # The stored text itself holds no secret (not only what get_call returns).
    ((stored,),) = query(db_url, "SELECT arguments || result FROM tool_calls")
    assert "4111111111111111" not in stored
    assert "1990-01-01" not in stored


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+15555550100", "+1555****100"),
        ("+442071838750", "+4420*****750"),
        ("5550100", "5****00"),
        ("anonymous", "anonymous"),
        ("client:alice", "client:alice"),
    ],
)
def test_mask_number_hides_the_middle_digits(number: str, masked: str) -> None:
    assert mask_number(number) == masked
    assert len(mask_number(number)) == len(number)


async def test_the_numbers_are_masked_only_when_configured(
    make_url: Callable[[], str],
) -> None:
    masked = RecordStore.from_url(make_url(), mask_caller_numbers=True)
    plain = RecordStore.from_url(make_url())
    said = "Sure, it is 415 555 0100, or +15555550100."
    for store in (masked, plain):
        recorder = store.recorder(CALL)
        start(recorder)
        recorder.turn(
            index=0,
            role="caller",
            said=said,
            heard=said,
            started_at=T0,
            ended_at=T0 + 1,
            interrupted=False,
        )
        await store.close()
    masked_call, plain_call = masked.get_call(CALL), plain.get_call(CALL)
    assert masked_call is not None
    assert plain_call is not None
    assert (masked_call.from_number, masked_call.to_number) == ("+1555****100", "+1555****199")
    assert masked_call.turns[0].said == "Sure, it is 415 5****100, or +1555****100."
    assert masked_call.turns[0].heard == masked_call.turns[0].said
    assert plain_call.from_number == "+15555550100"
    assert plain_call.turns[0].said == said
    assert masked.list_calls()[0].from_number == "+1555****100"


# -- retention ----------------------------------------------------------------------------------


async def test_purge_deletes_old_calls_with_everything_they_own(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    day = 86_400.0
    record_a_call(store, "CAancient", at=T0 - 40 * day)
    record_a_call(store, "CAold", at=T0 - 31 * day)
    record_a_call(store, "CArecent", at=T0 - 1 * day)
    await store.close()

    assert store.purge(30 * day, now=T0) == 2
    assert [row.call_sid for row in store.list_calls()] == ["CArecent"]
    for table in ("turns", "tool_calls", "call_usage"):
        sids = {sid for (sid,) in query(db_url, f"SELECT DISTINCT call_sid FROM {table}")}
        assert sids == {"CArecent"}, table
    assert store.purge(30 * day, now=T0) == 0


# -- the queue ----------------------------------------------------------------------------------


async def test_a_full_queue_drops_and_counts_instead_of_blocking(
    sqlite_url: str, tmp_path: Path
) -> None:
    drops: list[None] = []
    store = RecordStore.from_url(sqlite_url, queue_size=4, on_drop=lambda: drops.append(None))
    recorder = store.recorder(CALL)
    # Another writer holds the database: our writer thread waits at BEGIN (busy timeout).
    blocker = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with capture_logs() as logs:
        start(recorder)
        for index in range(10):
            recorder.turn(
                index=index,
                role="caller",
                said=f"turn {index}",
                heard=None,
                started_at=T0 + index,
                ended_at=T0 + index,
                interrupted=False,
            )
    blocker.execute("ROLLBACK")
    blocker.close()
    await store.close()

    # 11 writes: the writer took the first one or not yet, 4 waited in the queue, the rest went.
    assert store.dropped in (6, 7)
    assert len(drops) == store.dropped
    warnings = [e for e in logs if e["event"] == "records.write_dropped"]
    assert len(warnings) == store.dropped
    assert warnings[0]["reason"] == "queue full"
    assert warnings[-1]["dropped_total"] == store.dropped
    call = store.get_call(CALL)
    assert call is not None
    assert 1 + len(call.turns) + store.dropped == 11
    assert [t.index for t in call.turns] == list(range(len(call.turns)))  # the earliest kept


async def test_close_drains_the_queue_and_later_writes_are_dropped(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    for n in range(50):
        record_a_call(store, f"CA{n:03d}", at=T0 + n)
    await store.close()
    assert len(store.list_calls(limit=100)) == 50
    assert store.dropped == 0

    with capture_logs() as logs:
        start(store.recorder("CAlate"))
    assert store.dropped == 1
    assert logs[0]["reason"] == "store closed"
    assert store.get_call("CAlate") is None
    await store.close()  # closing twice is harmless


async def test_a_failed_write_is_counted_and_the_writer_carries_on(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    recorder = store.recorder(CALL)
    start(recorder)
    await store.flush()
    execute(db_url, "DROP TABLE tool_calls")
    with capture_logs() as logs:
        recorder.tool_call(
            call_id="x",
            name="t",
            arguments={},
            result={},
            outcome="ok",
            started_at=T0,
            latency_ms=1,
        )
        await store.flush()
    recorder.turn(
        index=0, role="agent", said="still here", heard="still here",
        started_at=T0, ended_at=T0, interrupted=False,
    )  # fmt: skip
    await store.close()

    assert store.dropped == 1
    assert any(e["event"] == "records.write_failed" for e in logs)
    assert query(db_url, "SELECT said FROM turns") == [("still here",)]


async def test_closed_and_backlog_report_the_writer_state(sqlite_url: str) -> None:
    store = RecordStore.from_url(sqlite_url)
    assert (store.closed, store.backlog) == (False, 0)
    record_a_call(store)
    await store.flush()
    assert store.backlog == 0
    await store.close()
    assert store.closed


def test_a_discarding_recorder_accepts_everything_and_keeps_nothing() -> None:
    recorder = CallRecorder.discarding(CALL)
    start(recorder)
    recorder.usage({"prompt_audio": 1})
    recorder.ended(reason="error", ended_at=T0, summary={})


async def test_a_store_only_read_from_starts_no_writer_thread(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    store.list_calls()
    await store.flush()  # nothing written: returns at once
    assert store._thread is None
    await store.close()


# -- DATABASE_URL -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///:memory:", "file path"),
        ("mysql://db/calls", "must start with sqlite:///"),
    ],
)
def test_unsupported_database_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RecordStore.from_url(url)


def test_an_unreachable_postgres_is_a_config_error_without_the_password() -> None:
    # Port 1 on loopback: refused at once, nothing to wait for.
    with pytest.raises(ConfigError, match="cannot open call records") as caught:
        RecordStore.from_url("postgresql://agent:s3cret-pw@127.0.0.1:1/calls")
    assert "s3cret-pw" not in str(caught.value)
    assert "agent:***@127.0.0.1:1" in str(caught.value)


def test_a_relative_sqlite_path_and_missing_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = RecordStore.from_url("sqlite:///./records/calls.db")
    assert (tmp_path / "records" / "calls.db").exists()
    assert store.list_calls() == []


def test_reading_a_missing_database_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no call records"):
        RecordStore.from_url(f"sqlite:///{tmp_path / 'typo.db'}", create=False)
    assert not (tmp_path / "typo.db").exists()


# -- agent calls --------------------------------------------------------------------------------


async def test_calls_list_shows_one_line_per_call(make_url: Callable[[], str]) -> None:
    store = RecordStore.from_url(make_url(), mask_caller_numbers=True)
    record_a_call(store, CALL)
    start(store.recorder("CAcrashed"), at=T0 + 60)
    await store.close()

    text = list_command(store, limit=10)
    header, newest, oldest = text.splitlines()
    assert header.split() == [
        "STARTED", "(UTC)", "DURATION", "CALL", "SID", "AGENT", "FROM", "TURNS", "TOOLS", "ENDING",
    ]  # fmt: skip
    assert newest.startswith("2023-11-14 22:14:20")
    assert "CAcrashed" in newest
    assert "no ending recorded" in newest
    assert oldest.split()[:9] == [
        "2023-11-14", "22:13:20", "6.0s", CALL, "support", "+1555****100", "3", "1", "caller",
    ]  # fmt: skip
    assert list_command(RecordStore.from_url(make_url())) == "no calls recorded"


async def test_calls_show_tells_the_call_turn_by_turn(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    record_a_call(store)
    await store.close()

    text = show_command(store, CALL)
    print(text)
    lines = text.splitlines()
    assert lines[0] == f"call {CALL}"
    assert "  started   2023-11-14 22:13:20.000 UTC" in lines
    assert any("after 6.0s  reason: caller hung up" in line for line in lines)
    # In order: caller asks, the tool runs, the agent answers and is cut off, caller leaves.
    order = [
        next(i for i, line in enumerate(lines) if marker in line)
        for marker in (
            "Where is my order",
            "lookup_order",
            "Your order shipped yesterday and",
            "bye",
        )
    ]
    assert order == sorted(order)
    assert any("    +2.6s  lookup_order  ok  84 ms  (id fc-1)" in line for line in lines)
    assert any('      args:    {"order_id": "1234"}' in line for line in lines)
    assert any('      result:  {"status": "shipped", "eta": "Friday"}' in line for line in lines)
    assert any("agent" in line and "INTERRUPTED" in line for line in lines)
    assert f"      heard:   Your order shipped yesterday {CUT}" in lines
    assert "      unheard: and should arrive by Friday." in lines
    assert any(line.split() == ["prompt_audio", "1,200"] for line in lines)
    assert any(line.split() == ["live_connect_ms", "240"] for line in lines)
    assert show_command(store, "CAnope") == "no call 'CAnope' recorded"


async def test_agent_call_prints_the_conversation_as_text(sqlite_url: str) -> None:
    """What ``agent call`` prints after the carrier's figures: who said what (what the caller
    heard of a cut answer), the tools called, and how the call ended."""
    store = RecordStore.from_url(sqlite_url)
    record_a_call(store)
    await store.close()
    call = store.get_call(CALL)
    assert call is not None
    assert conversation_lines(call) == [
        "      caller:  Where is my order 1234?",
        '      tool:    lookup_order({"order_id": "1234"}) -> ok',
        f"      agent:   Your order shipped yesterday {CUT}",
        "      caller:  Great, thanks, bye.",
        "      ended:   caller hung up after 6.0s",
    ]


async def test_calls_show_says_when_a_call_never_ended(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    start(store.recorder(CALL))
    await store.close()
    text = show_command(store, CALL)
    assert "still running, or the process died" in text
    assert "(none recorded)" in text


async def test_the_calls_subcommands_read_database_url(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = RecordStore.from_url(db_url)
    record_a_call(store, "CAold", at=T0)
    await store.close()
    monkeypatch.setenv("DATABASE_URL", db_url)
    parser = argparse.ArgumentParser(prog="agent")
    add_calls_subcommands(parser.add_subparsers(required=True))

    def run(*argv: str) -> int:
        args = parser.parse_args(argv)
        result: int = args.run(args)
        return result

    assert run("calls", "list", "--limit", "5") == 0
    assert "CAold" in capsys.readouterr().out
    assert run("calls", "show", "CAold") == 0
    assert "reason: caller hung up" in capsys.readouterr().out
    assert run("calls", "show", "CAnope") == 1
    assert "no call 'CAnope'" in capsys.readouterr().err
    assert run("calls", "purge", "--older-than-days", "30") == 0
    assert capsys.readouterr().out.startswith("purged 1 call(s)")
    assert store.list_calls() == []


async def test_masked_numbers_cover_tool_arguments_and_results(tmp_path: Path) -> None:
    store = RecordStore.from_url(f"sqlite:///{tmp_path / 'calls.db'}", mask_caller_numbers=True)
    recorder = store.recorder("CA" + "8" * 32)
    recorder.started(
        call_sid="CA" + "8" * 32,
        stream_sid="MZ" + "8" * 32,
        agent="acme",
        from_number="+15555550100",
        to_number="+15555550199",
        started_at=1.0,
    )
    recorder.tool_call(
        call_id="c1",
        name="lookup_caller",
        arguments={"phone": "+15555550102"},
        result={"result": [{"name": "Dana", "phone": "+15555550100"}]},
        outcome="ok",
        started_at=2.0,
        latency_ms=3.0,
    )
    await store.close()
    call = RecordStore.from_url(f"sqlite:///{tmp_path / 'calls.db'}", create=False).get_call(
        "CA" + "8" * 32
    )
    assert call is not None
    (tool,) = call.tool_calls
    assert tool.arguments == {"phone": "+1555****102"}
    assert tool.result == {"result": [{"name": "Dana", "phone": "+1555****100"}]}
