"""Records a crash left open ("no ending recorded") are closed at start-up: reason "bridge
crashed", at the last known time, and only where no other process can be running the call."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.records.store import CRASH_HORIZON_S, CRASHED, CallRecorder, RecordStore
from agent.server.app import crash_horizon_s
from agent.settings import Settings

T0 = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"
    new_database: Callable[[], str] = request.getfixturevalue("postgres_database")
    return new_database()


def sid(n: int) -> str:
    return f"CA{n:032d}"


def start(store: RecordStore, call_sid: str, at: float) -> CallRecorder:
    recorder = store.recorder(call_sid)
    recorder.started(
        call_sid=call_sid,
        stream_sid="MZ" + call_sid[2:],
        agent="support",
        from_number="+15555550100",
        to_number="+15555550199",
        started_at=at,
    )
    return recorder


def turn(recorder: CallRecorder, index: int, start_at: float, end_at: float) -> None:
    recorder.turn(
        index=index,
        role="caller",
        said="hello",
        heard=None,
        started_at=start_at,
        ended_at=end_at,
        interrupted=False,
    )


async def test_open_calls_are_closed_at_their_last_known_time(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    with_turns = start(store, sid(1), T0)
    turn(with_turns, 0, T0 + 1, T0 + 4)
    turn(with_turns, 1, T0 + 5, T0 + 30)
    with_tool = start(store, sid(2), T0)
    turn(with_tool, 0, T0 + 1, T0 + 2)
    with_tool.tool_call(
        call_id="t1",
        name="lookup",
        arguments={},
        result={"result": 1},
        outcome="ok",
        started_at=T0 + 3,
        latency_ms=1500.0,
    )
    start(store, sid(3), T0 + 7)  # answered, nothing said
    ended = start(store, sid(4), T0)
    ended.ended(reason="caller hung up", ended_at=T0 + 9, summary={"turns": 0})
    await store.close()

    store = RecordStore.from_url(db_url)
    with capture_logs() as logs:
        closed = store.close_crashed(horizon_s=0, now=T0 + 100)
    assert sorted(closed) == [sid(1), sid(2), sid(3)]
    expected = {sid(1): T0 + 30, sid(2): T0 + 4.5, sid(3): T0 + 7}
    for call_sid, ended_at in expected.items():
        call = store.get_call(call_sid)
        assert call is not None
        assert call.end_reason == CRASHED == "bridge crashed"
        assert call.ended_at == pytest.approx(ended_at)
        assert "closed_at_start_up" in call.summary
    untouched = store.get_call(sid(4))
    assert untouched is not None
    assert (untouched.end_reason, untouched.ended_at) == ("caller hung up", T0 + 9)
    events = [e["event"] for e in logs]
    assert events.count("records.crashed_call_closed") == 3
    assert "records.crashed_calls_checked" in events
    # Done once: a second start-up finds nothing to close.
    assert store.close_crashed(horizon_s=0, now=T0 + 200) == []


async def test_recent_and_active_calls_are_left_alone(db_url: str) -> None:
    store = RecordStore.from_url(db_url)
    old = start(store, sid(1), T0)
    turn(old, 0, T0, T0 + 10)
    recent = start(store, sid(2), T0)  # started long ago, but its last turn was a minute ago
    turn(recent, 0, T0 + 5 * 3600, T0 + 5 * 3600 + 10)
    start(store, sid(3), T0)  # old, but a call this process is running
    await store.flush()

    now = T0 + 5 * 3600 + 70
    closed = store.close_crashed(horizon_s=CRASH_HORIZON_S, active={sid(3)}, now=now)
    assert closed == [sid(1)]
    for open_sid in (sid(2), sid(3)):
        call = store.get_call(open_sid)
        assert call is not None
        assert call.ended_at is None

    # A call closed as crashed that goes on after all: its own ending replaces the crash's.
    old.ended(reason="caller hung up", ended_at=now, summary={})
    await store.close()
    call = RecordStore.from_url(db_url).get_call(sid(1))
    assert call is not None
    assert (call.end_reason, call.ended_at) == ("caller hung up", now)


def test_the_horizon_follows_the_deployment() -> None:
    assert crash_horizon_s(Settings(database_url="sqlite:///calls.db")) == 0
    assert crash_horizon_s(Settings(database_url="sqlite:///calls.db", workers=2)) == (
        CRASH_HORIZON_S
    )
    assert crash_horizon_s(Settings(database_url="postgresql://h/db")) == CRASH_HORIZON_S
    explicit = Settings(database_url="postgresql://h/db", records_crash_horizon_s=600)
    assert crash_horizon_s(explicit) == 600
    assert Settings.from_env({"RECORDS_CRASH_HORIZON_S": ""}).records_crash_horizon_s is None
    assert Settings.from_env({"RECORDS_CRASH_HORIZON_S": "60"}).records_crash_horizon_s == 60
