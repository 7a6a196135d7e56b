"""A Live API that refuses for good (a bad key, an unknown model) costs a caller one connection
attempt and the apology, not ~14 s of retries; the preflight shows it on ``/readyz`` and sees the
fix. The emulator refuses as Google does: 1007 "API key not valid..." after the handshake, 1008
"models/X is not found..." for a model it does not serve."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from structlog.testing import capture_logs
from timing import scaled_timeout

from agent.config.models import AgentConfig
from agent.live.targets import DeveloperApiTarget
from agent.server.state import CALLS, LIVE_PREFLIGHT, METRICS
from agent.sim.carrier import CarrierOptions, place_call
from agent.sim.live.server import EmulatorOptions, RunningEmulator, start_emulator

from .conftest import Bridge, BridgeFactory, caller_clip
from .test_conversation import voiced_ms

KEY = "AIza-the-right-key"
SERVED = "gemini-3.8-live"


@pytest.fixture
async def strict_emulator() -> AsyncIterator[RunningEmulator]:
    """An emulator that wants ``KEY`` and serves only ``SERVED``."""
    running = await start_emulator(EmulatorOptions(api_key=KEY, models=frozenset({SERVED})))
    yield running
    await running.close()


def connect_failures(bridge: Bridge, reason: str) -> float:
    value = bridge.app[METRICS].registry.get_sample_value(
        "agent_live_connect_failures_total", {"reason": reason}
    )
    return value or 0.0


async def call_and_time(bridge: Bridge) -> tuple[object, float, bytes]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    # A patient caller: stays on the line after the apology, so the server hangs up first.
    report = await place_call(
        CarrierOptions(url=bridge.url, gap_ms=5000, reply_timeout_ms=30_000),
        [caller_clip("goodbye")],
    )
    call = await bridge.app[CALLS].wait_ended(report.call_sid)
    assert report.ended_by == "server hung up"
    return call, loop.time() - started, report.heard


@pytest.mark.parametrize(
    ("key", "model", "kind"),
    [
        pytest.param("AIza-a-revoked-key", SERVED, "auth", id="bad_key"),
        pytest.param(KEY, "gemini-9-live", "model", id="unknown_model"),
    ],
)
async def test_a_refused_call_hears_the_apology_after_exactly_one_connect_attempt(
    strict_emulator: RunningEmulator, start_bridge: BridgeFactory, key: str, model: str, kind: str
) -> None:
    bridge = await start_bridge(
        live_target=DeveloperApiTarget(base_url=strict_emulator.url, api_key=key),
        agent=AgentConfig(model=model),
    )
    with capture_logs() as logs:
        call, took_s, heard = await call_and_time(bridge)

    assert len(strict_emulator.sessions) == 1  # no retry
    assert call.ended_reason == "error"  # type: ignore[attr-defined]
    assert voiced_ms(heard) > 5000  # the bundled apology, heard
    # The apology (~6 s) and the patient caller's 5 s: no 15 s retry deadline before them.
    assert took_s < 6.0 + 5.0 + 2.0, took_s
    (refused,) = [line for line in logs if line["event"] == "live.refused"]
    assert refused["kind"] == kind
    assert refused["attempt"] == 1
    assert connect_failures(bridge, kind) == 1


async def test_the_preflight_makes_readyz_fail_with_the_reason_until_the_key_is_valid_again(
    strict_emulator: RunningEmulator, start_bridge: BridgeFactory
) -> None:
    bridge = await start_bridge(
        live_target=DeveloperApiTarget(base_url=strict_emulator.url, api_key="AIza-revoked"),
        agent=AgentConfig(model=SERVED),
        live_preflight_interval_s=300,
    )
    preflight = bridge.app[LIVE_PREFLIGHT]
    assert preflight is not None
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(scaled_timeout(10)):
            await preflight.wait_checks(1)
        async with http.get(f"{bridge.url}/readyz") as resp:
            assert resp.status == 503
            body = await resp.json()
        (problem,) = body["problems"]
        assert problem.startswith(f"Live API auth: model {SERVED} (agent default): ")
        assert "API key not valid. Please pass a valid API key." in problem
        assert "fix: set GEMINI_API_KEY" in problem
        assert body["live_preflight"]["status"] == "failing"
        assert connect_failures(bridge, "auth") == 1

        # The operator fixes the key (here: the service starts accepting the bridge's).
        strict_emulator.reconfigure(api_key="AIza-revoked")
        async with asyncio.timeout(scaled_timeout(60)):
            await preflight.wait_checks(2)  # the retry comes 30 s (simulated) later
        async with http.get(f"{bridge.url}/readyz") as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["problems"] == []
        assert body["live_preflight"] == {"status": "ok", "failures": []}
    # Each check opened one session and closed it: no turn asked for, nothing billed.
    assert [s.turns for s in strict_emulator.sessions] == [0, 0]
