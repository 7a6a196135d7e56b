"""The state replicas share: used stream tickets, on SQLite and PostgreSQL, seen by two replicas."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agent.cluster.state import LocalState, SqlState, shared_state_from_url
from agent.errors import ConfigError, SharedStateError
from agent.records.backends import SqliteBackend, backend_from_url
from agent.telephony.webhooks import StreamTicket

T0 = 1_700_000_000.0
CALL = "CA00000000000000000000000000000001"
OTHER = "CA00000000000000000000000000000002"


def ticket(nonce: str, call_sid: str = CALL, expires_s: float = T0 + 60) -> StreamTicket:
    return StreamTicket(call_sid=call_sid, nonce=nonce, expires_ms=int(expires_s * 1000))


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"
    new_database: Callable[[], str] = request.getfixturevalue("postgres_database")
    return new_database()


@pytest.fixture
async def replicas(database: str) -> AsyncIterator[tuple[SqlState, SqlState]]:
    """Two replicas' views of one database."""
    a, b = (
        SqlState(backend_from_url(database, create=True)),
        SqlState(backend_from_url(database, create=True)),
    )
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


async def test_a_ticket_used_on_one_replica_is_refused_on_the_other(
    replicas: tuple[SqlState, SqlState],
) -> None:
    a, b = replicas
    assert await a.claim_ticket(ticket("n1"), T0)
    assert not await b.claim_ticket(ticket("n1"), T0 + 1)
    assert not await a.claim_ticket(ticket("n1"), T0 + 2)
    assert await b.claim_ticket(ticket("n2"), T0 + 2)


async def test_a_replica_sees_which_calls_another_replica_took(
    replicas: tuple[SqlState, SqlState],
) -> None:
    a, b = replicas
    assert await a.streams_started([CALL, OTHER]) == set()
    assert await b.claim_ticket(ticket("n1"), T0)
    assert await a.streams_started([CALL, OTHER]) == {CALL}
    assert await a.streams_started([]) == set()


async def test_expired_tickets_are_pruned_but_stay_long_enough_to_be_noticed(
    replicas: tuple[SqlState, SqlState],
) -> None:
    a, _ = replicas
    assert await a.claim_ticket(ticket("old", expires_s=T0), T0 - 60)
    for i in range(99):  # the 100th claim prunes rows expired more than ten minutes ago
        assert await a.claim_ticket(ticket(f"n{i}", call_sid=OTHER, expires_s=T0 + 700), T0 + 700)
    assert await a.streams_started([CALL]) == set()
    assert await a.streams_started([OTHER]) == {OTHER}


async def test_a_dropped_connection_is_reopened(replicas: tuple[SqlState, SqlState]) -> None:
    a, _ = replicas
    assert await a.claim_ticket(ticket("n1"), T0)
    conn = a._conn
    assert conn is not None
    # The connection breaks (the database restarted, say), on the state's own thread.
    await asyncio.get_running_loop().run_in_executor(a._thread, conn.close)
    assert await a.claim_ticket(ticket("n2"), T0)
    assert not await a.claim_ticket(ticket("n1"), T0)


async def test_an_unreachable_database_is_a_shared_state_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    state = SqlState(SqliteBackend(tmp_path / "a-file" / "state.db"))  # no such directory
    with pytest.raises(SharedStateError, match="shared state at"):
        await state.claim_ticket(ticket("n1"), T0)
    await state.close()


async def test_without_a_url_state_is_this_process_only() -> None:
    state = await shared_state_from_url(None)
    assert isinstance(state, LocalState)
    assert not state.shared
    assert await state.claim_ticket(ticket("n1"), T0)
    assert not await state.claim_ticket(ticket("n1"), T0)
    assert await state.streams_started([CALL]) == set()
    await state.close()


async def test_a_url_of_no_known_database_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SHARED_STATE_URL"):
        await shared_state_from_url("mysql://h/db")


async def test_a_webhook_gets_its_first_answer_again_on_any_replica(
    replicas: tuple[SqlState, SqlState],
) -> None:
    a, b = replicas
    assert (
        await a.answer_once(CALL, "<Response>first</Response>", T0) == "<Response>first</Response>"
    )
    assert await b.answer_once(CALL, "<Response>second</Response>", T0 + 1) == (
        "<Response>first</Response>"
    )
    assert await b.answer_once(OTHER, "<Response>other</Response>", T0 + 1) == (
        "<Response>other</Response>"
    )


async def test_one_process_remembers_its_first_answers_for_an_hour() -> None:
    state = LocalState()
    assert await state.answer_once(CALL, "first", T0) == "first"
    assert await state.answer_once(CALL, "second", T0 + 3599) == "first"
    assert await state.answer_once(CALL, "later", T0 + 3601 + 1) == "later"  # pruned by then
