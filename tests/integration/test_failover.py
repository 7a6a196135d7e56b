"""A call outlives the media stream it started on: a dropped stream, and a replica handing its
calls over on the way down, each continue the same conversation through ``<Connect action>``.

Two replicas behind a balancer stand-in share one PostgreSQL database (call records, used
tickets, calls in progress). The carrier simulator follows ``<Connect action>`` as Twilio does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from agent.call.session import CallSession
from agent.config.models import AgentConfig
from agent.records.store import RecordStore
from agent.server.app import hand_over
from agent.server.state import CALLS
from agent.sim.balancer import RunningBalancer, first_stream_then, start_balancer
from agent.sim.carrier import CallReport, CarrierOptions, place_call
from agent.sim.live.server import RunningEmulator

from .conftest import Bridge, BridgeFactory, caller_clip, start_two_replicas

AUTH_TOKEN = "failover-test-auth-token-93d1"
GREETER = AgentConfig(greeting="Greet the caller warmly and offer help.")


@pytest.fixture
async def balancer() -> AsyncIterator[tuple[RunningBalancer, list[str]]]:
    """Voice webhooks and first streams to replica A; everything after a stream ended (the
    ``<Connect action>`` and the streams it starts) to replica B. ``replicas`` is [A, B]."""
    replicas: list[str] = []
    running = await start_balancer(first_stream_then(replicas))
    yield running, replicas
    await running.close()


@dataclass
class CallOnA:
    """A call under way on replica A, with B ready to take it over."""

    a: Bridge
    b: Bridge
    database: str
    call: asyncio.Task[CallReport]
    first: CallSession  # A's session of the call


async def call_starting_on_a(
    start_bridge: BridgeFactory,
    emulator: RunningEmulator,
    balancer: tuple[RunningBalancer, list[str]],
    database: str,
) -> CallOnA:
    lb, replicas = balancer
    a, b = await two_replicas(start_bridge, emulator, lb, database)
    replicas.extend([a.url, b.url])
    call = asyncio.create_task(
        place_call(call_options(lb), [caller_clip("order-status"), caller_clip("goodbye")])
    )
    await a.app[CALLS].wait_active()
    (first,) = a.app[CALLS].active.values()
    return CallOnA(a, b, database, call, first)


async def two_replicas(
    start_bridge: BridgeFactory,
    emulator: RunningEmulator,
    lb: RunningBalancer,
    database: str,
) -> tuple[Bridge, Bridge]:
    return await start_two_replicas(
        start_bridge,
        public_url=lb.url,
        database=database,
        emulator=emulator,
        auth_token=AUTH_TOKEN,
        agent=GREETER,
    )


def call_options(lb: RunningBalancer) -> CarrierOptions:
    return CarrierOptions(url=lb.url, auth_token=AUTH_TOKEN, max_duration_s=90)


def record_turns(database: str, call_sid: str) -> list[tuple[str, str | None]]:
    store = RecordStore.from_url(database)
    record = store.get_call(call_sid)
    assert record is not None
    return [(turn.role, turn.heard) for turn in record.turns]


async def test_a_replica_hands_its_call_over_between_turns_and_the_conversation_goes_on(
    start_bridge: BridgeFactory,
    emulator: RunningEmulator,
    balancer: tuple[RunningBalancer, list[str]],
    postgres_database: Callable[[], str],
) -> None:
    under_way = await call_starting_on_a(start_bridge, emulator, balancer, postgres_database())
    a, b, database, first = under_way.a, under_way.b, under_way.database, under_way.first
    # A deploy: A stops taking calls and hands this one over, at the first quiet moment.
    remaining = await hand_over(a.app, timeout_s=30)
    report = await under_way.call

    assert remaining == 0
    assert first.ended_reason == "handed over"
    # Not mid-sentence: the greeting had played to its end, and nothing was cut.
    (greeting,) = first.transcript.turns
    assert greeting.role == "agent"
    assert not greeting.interrupted
    assert greeting.heard == greeting.said
    assert first.playback.played_ms == first.playback.frames_sent * 20

    # The call went on with B, on a second stream, and B answered both utterances.
    assert len(report.stream_sids) == 2
    assert report.ended_by == "caller hung up"
    assert all(u.first_reply_ms is not None for u in report.utterances)
    second = await b.app[CALLS].wait_ended(report.call_sid)
    assert second.leg == 2
    assert second.ended_reason == "caller hung up"
    # B resumed A's Live session (same conversation on the model's side) and did not greet again.
    assert emulator.sessions[-1].resumed_from is not None
    assert second.transcript.turns[0].said == greeting.said
    assert sum(1 for t in second.transcript.turns if t.role == "agent") == 3  # greeting + 2

    # One record of the call: the greeting from A's leg, then B's turns, in order.
    turns = record_turns(database, report.call_sid)
    assert turns[0] == ("agent", greeting.heard)
    assert [role for role, _ in turns].count("agent") == 3


async def test_a_dropped_stream_continues_on_another_replica_from_what_the_caller_heard(
    start_bridge: BridgeFactory,
    emulator: RunningEmulator,
    balancer: tuple[RunningBalancer, list[str]],
    postgres_database: Callable[[], str],
) -> None:
    under_way = await call_starting_on_a(start_bridge, emulator, balancer, postgres_database())
    b, first = under_way.b, under_way.first
    await first.turn_completed(1)  # the greeting is over
    assert await balancer[0].balancer.drop_streams() == 1  # the connection to A is cut
    report = await under_way.call

    assert first.ended_reason == "stream lost"
    assert len(report.stream_sids) == 2
    ((lost_at, resumed_at),) = report.stream_gaps
    assert resumed_at >= lost_at
    second = await b.app[CALLS].wait_ended(report.call_sid)
    assert second.leg == 2
    # The model was told what the caller last heard, and nothing made it greet again.
    continued = emulator.sessions[-1]
    told = [e.text for e in continued.history if e.role == "user" and e.kind == "text"]
    assert any("line dropped" in text and first.transcript.turns[0].heard in text for text in told)
    assert all(u.first_reply_ms is not None for u in report.utterances)
