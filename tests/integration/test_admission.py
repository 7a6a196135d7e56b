"""Admission control: at ``MAX_CALLS`` a process sheds new calls (503, so Twilio uses the
number's fallback URL) and says so on ``/readyz``, while the calls it has go on."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from io import StringIO
from pathlib import Path
from typing import Any

import aiohttp

from agent.server.app import begin_drain
from agent.server.siblings import WorkerLoads
from agent.server.state import CALLS, PRECONNECTS
from agent.sim.carrier import CarrierOptions, place_call

from .conftest import Bridge, BridgeFactory, caller_clip


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


async def test_under_workers_admission_and_readyz_speak_for_the_machine(
    start_bridge: BridgeFactory, tmp_path: Path
) -> None:
    """Two workers of one machine (as ``--workers 2`` runs them), MAX_CALLS=2 each: the kernel
    hands webhooks to either, and their streams may run on either, so a worker that is busy
    while its sibling idles still takes calls, and the machine is full at 4."""
    shared = tmp_path / "workers"
    shared.mkdir()
    first = await start_bridge(max_calls=2, worker_loads=WorkerLoads(shared, 0))
    second = await start_bridge(max_calls=2, worker_loads=WorkerLoads(shared, 1))
    async with aiohttp.ClientSession() as session:

        async def webhook(bridge: Bridge, n: int) -> int:
            async with session.post(f"{bridge.url}/twilio/voice", data=_webhook(n)) as resp:
                return resp.status

        async def readyz(bridge: Bridge) -> tuple[int, dict[str, Any]]:
            async with session.get(f"{bridge.url}/readyz") as resp:
                return resp.status, await resp.json()

        assert [await webhook(first, n) for n in (1, 2, 3)] == [200, 200, 200]
        status, body = await readyz(second)
        assert status == 200
        assert body["workers"] == [
            {"index": 0, "pid": os.getpid(), "calls": 3, "taking_calls": True}
        ]
        assert await webhook(second, 4) == 200
        assert await webhook(second, 5) == 503  # 4 calls on the machine's 2 x 2
        assert await webhook(first, 6) == 503
        status, body = await readyz(first)
        assert status == 503
        assert (
            "full: 4 calls, 2 workers, MAX_CALLS=2 per worker; taking no new ones"
            in (body["problems"])
        )
        # A draining worker offers no room: the other is full with its own 3.
        begin_drain(second.app)
        status, body = await readyz(first)
        assert status == 503
        assert body["workers"][0]["taking_calls"] is False
