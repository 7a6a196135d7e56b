"""Admission control: at ``MAX_CALLS`` a process sheds new calls (503, so Twilio uses the
number's fallback URL) and says so on ``/readyz``, while the calls it has go on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from io import StringIO

import aiohttp

from agent.server.state import CALLS, PRECONNECTS
from agent.sim.carrier import CarrierOptions, place_call

from .conftest import BridgeFactory, caller_clip


def _webhook(n: int) -> dict[str, str]:
    return {"CallSid": f"CA{n:032d}", "From": "+15555550100", "To": "+15555550199"}


async def test_at_max_calls_new_webhooks_get_503_and_readyz_goes_unready(
    start_bridge: BridgeFactory, log_capture: Callable[..., AbstractContextManager[StringIO]]
) -> None:
    with log_capture("warning", "json") as buffer:
        bridge = await start_bridge(max_calls=2)
        async with aiohttp.ClientSession() as session:
            for n in (1, 2):  # answered: each now holds a pre-connected Live session
                async with session.post(f"{bridge.url}/twilio/voice", data=_webhook(n)) as resp:
                    assert resp.status == 200
            assert len(bridge.app[PRECONNECTS]) == 2
            async with session.post(f"{bridge.url}/twilio/voice", data=_webhook(3)) as resp:
                assert resp.status == 503  # Twilio tries the number's fallback URL
            # Twilio retrying the webhook of a call taken here is not a new call.
            async with session.post(f"{bridge.url}/twilio/voice", data=_webhook(2)) as resp:
                assert resp.status == 200
            async with session.get(f"{bridge.url}/readyz") as resp:
                assert resp.status == 503
                body = await resp.json()
            async with session.get(f"{bridge.url}/metrics") as resp:
                metrics = await resp.text()
    assert any(p.startswith("full: 2 calls, MAX_CALLS=2") for p in body["problems"])
    assert body["pending_calls"] == 2
    assert body["max_calls"] == 2
    assert 'agent_calls_refused_total{reason="full"} 1.0' in metrics
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    (refused,) = [line for line in lines if line["event"] == "call.refused_full"]
    assert refused["call_sid"] == f"CA{3:032d}"
    assert refused["calls"] == 2
    assert refused["max_calls"] == 2


async def test_a_call_in_progress_fills_the_process_and_its_end_frees_it(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge(max_calls=1)
    call = asyncio.create_task(
        place_call(CarrierOptions(url=bridge.url), [caller_clip("order-status")])
    )
    await bridge.app[CALLS].wait_active()
    (call_sid,) = bridge.app[CALLS].active
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{bridge.url}/readyz") as resp:
            assert resp.status == 503
        async with session.post(f"{bridge.url}/twilio/voice", data=_webhook(7)) as resp:
            assert resp.status == 503
        # A <Connect action> continues a call already taken: answered, full or not.
        continuing = {
            "CallSid": call_sid,
            "CallStatus": "in-progress",
            "From": "+15555550100",
            "To": "+15555550199",
        }
        async with session.post(f"{bridge.url}/twilio/continue", data=continuing) as resp:
            assert resp.status == 200
            assert "<Stream" in await resp.text()
        report = await call
        assert report.ended_by == "caller hung up"  # the call in progress was untouched
        await bridge.app[CALLS].wait_ended(call_sid)
        async with session.get(f"{bridge.url}/readyz") as resp:
            assert resp.status == 200
        async with session.post(f"{bridge.url}/twilio/voice", data=_webhook(8)) as resp:
            assert resp.status == 200
