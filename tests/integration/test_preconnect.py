"""Pre-connect and the greeting: what a Live session opened at the voice webhook generates when
its media stream never arrives, with the greeting asked for at the webhook or at ``start``.

The emulator counts every answer it starts generating, which is what a greeting costs.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from agent.config.models import AgentConfig, CallPolicy, GreetingAt
from agent.server.state import PRECONNECTS
from agent.sim.carrier import CarrierOptions, new_sid, place_call
from agent.sim.carrier.calls import ring
from agent.sim.live.server import RunningEmulator

from .conftest import BridgeFactory, caller_clip

GREETING = "Greet the caller and ask how you can help."


def greeter(greeting_at: GreetingAt) -> AgentConfig:
    return AgentConfig(
        greeting=GREETING, call=CallPolicy(greeting_at=greeting_at, preconnect_timeout_s=5.0)
    )


async def ring_only(url: str) -> str:
    """Twilio's voice webhook for a call whose media stream then never comes (the caller hung
    up while it rang, the stream went to another replica...); the CallSid."""
    call_sid = new_sid("CA")
    async with aiohttp.ClientSession() as http:
        await ring(http, CarrierOptions(url=url), call_sid=call_sid, account_sid=new_sid("AC"))
    return call_sid


@pytest.mark.parametrize(("greeting_at", "generated"), [("stream_start", 0), ("webhook", 1)])
async def test_a_preconnect_whose_stream_never_comes_generates_a_greeting_only_if_asked_early(
    start_bridge: BridgeFactory,
    emulator: RunningEmulator,
    greeting_at: GreetingAt,
    generated: int,
) -> None:
    bridge = await start_bridge(agent=greeter(greeting_at))
    call_sid = await ring_only(bridge.url)
    assert call_sid in bridge.app[PRECONNECTS]

    # The pre-connect waits preconnect_timeout_s (5 s of call time) for its stream, then goes.
    def released() -> bool:
        sessions = emulator.sessions
        return (
            call_sid not in bridge.app[PRECONNECTS]
            and bool(sessions)
            and all(s.closed_code is not None for s in sessions)
        )

    async with asyncio.timeout(30):  # simulated time: a hang guard, not a measurement
        while not released():  # noqa: ASYNC110 (two components' state; polled on simulated time)
            await asyncio.sleep(0.1)
    (session,) = emulator.sessions  # the Live session was opened at the webhook...
    assert session.setup  # ...and set up,
    assert session.answers_started == generated  # but greeted only when asked at the webhook


async def test_a_greeting_asked_for_at_start_is_what_the_caller_hears_first(
    start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    bridge = await start_bridge(agent=greeter("stream_start"))
    report = await place_call(CarrierOptions(url=bridge.url), [caller_clip("goodbye")])
    assert report.ended_by == "caller hung up"
    (session,) = emulator.sessions  # the pre-connected session served the call
    first = session.history[0]
    assert (first.role, first.kind, first.text) == ("user", "text", GREETING)
    assert session.answers_completed == 2  # the greeting, then the reply
    assert report.utterances[0].start_ms > 0
