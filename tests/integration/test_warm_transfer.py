"""Warm transfer end to end: the caller on hold (bundled music) while the colleague is dialled
through the simulator's ``Calls.json``; the colleague hears the model's summary and waits in a
conference; the caller is joined to it. And when the colleague does not answer: the caller is
back with the agent, who says so."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from agent.call.session import CallSession
from agent.config.reload import AgentRegistryHolder
from agent.live.targets import DeveloperApiTarget
from agent.server.state import CALLS
from agent.sim.carrier import (
    ENDED_BY_REST_CONFERENCE,
    CallReport,
    CarrierOptions,
    TwilioApiSimulator,
    place_call,
)
from agent.sim.carrier.callee import Callee, SimulatedCallees
from agent.sim.carrier.phone import FRAME_BYTES
from agent.sim.live.scenario import scenario_from_data
from agent.sim.live.server import EmulatorOptions, RunningEmulator, start_emulator

from .conftest import BridgeFactory, caller_clip

ACCOUNT_SID = "AC" + "7" * 32
AUTH_TOKEN = "warm-transfer-test-token-4b8a"
COLLEAGUE = "+15555550143"
OUR_NUMBER = "+15555550199"  # the number the caller dialled: the colleague sees it
SUMMARY = "Ada Lovelace wants a refund for order A1017, which arrived damaged."

AGENT = f"""
name: front-desk
default: true
system_prompt: You answer calls and hand them to a colleague when asked.
greeting: Say hello.
tools:
  - name: to_colleague
    description: Hand the caller to a colleague, with a summary.
    transfer_call: {{number: "{COLLEAGUE}", warm: true, ring_timeout_s: 10}}
"""

SCENARIO = {
    "steps": [
        {"say": "greeting"},
        {"calls": [{"name": "to_colleague", "args": {"summary": SUMMARY}, "wait": True}]},
        {"say": "reply"},  # told that the colleague did not answer
    ]
}


@pytest.fixture
async def twilio_api() -> AsyncIterator[TwilioApiSimulator]:
    async with TwilioApiSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        yield rest


@pytest.fixture
async def scripted() -> AsyncIterator[RunningEmulator]:
    emulator = await start_emulator(EmulatorOptions(scenario=scenario_from_data(SCENARIO)))
    yield emulator
    await emulator.close()


async def transfer_call(
    tmp_path: Path,
    start_bridge: BridgeFactory,
    scripted: RunningEmulator,
    twilio_api: TwilioApiSimulator,
    colleague: Callee,
) -> tuple[CallReport, CallSession, SimulatedCallees]:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "front-desk.yaml").write_text(textwrap.dedent(AGENT))
    callees = SimulatedCallees(twilio_api, {COLLEAGUE: colleague}, auth_token=AUTH_TOKEN)
    bridge = await start_bridge(
        agents=AgentRegistryHolder(folder),
        live_target=DeveloperApiTarget(base_url=scripted.url),
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_url=twilio_api.url,
    )
    report = await place_call(
        CarrierOptions(
            url=bridge.url, auth_token=AUTH_TOKEN, to_number=OUR_NUMBER, linger_ms=30_000
        ),
        [caller_clip("transfer")],
        rest=twilio_api,
    )
    await callees.ended(1)
    return report, await bridge.app[CALLS].wait_ended(report.call_sid), callees


def loud_seconds(pcm: bytes, start_s: float, end_s: float) -> float:
    """Seconds of the caller's timeline between ``start_s`` and ``end_s`` with audio in them."""
    samples = np.frombuffer(pcm, dtype="<i2")[int(start_s * 8000) : int(end_s * 8000)]
    frames = samples[: len(samples) // FRAME_BYTES * FRAME_BYTES].reshape(-1, FRAME_BYTES)
    return float((np.abs(frames.astype(np.int32)).max(axis=1) > 200).sum()) * 0.02


async def test_an_answered_warm_transfer_tells_the_colleague_then_joins_the_caller(
    tmp_path: Path,
    start_bridge: BridgeFactory,
    scripted: RunningEmulator,
    twilio_api: TwilioApiSimulator,
) -> None:
    report, session, callees = await transfer_call(
        tmp_path, start_bridge, scripted, twilio_api, Callee("human", ring_ms=3000)
    )
    (colleague,) = callees.calls
    room = f"transfer-{report.call_sid}"
    # The colleague was called from the number the caller dialled, heard the summary, and
    # waited in the conference the caller was then moved into.
    assert colleague.create.get("From") == OUR_NUMBER
    assert colleague.said == (SUMMARY,)
    assert colleague.conference == room
    assert report.ended_by == ENDED_BY_REST_CONFERENCE
    assert report.conference == room
    assert session.ended_reason == "transferred"
    # While the colleague's phone rang (3 s), the caller heard the hold music, not silence.
    end_s = len(report.heard) / 2 / 8000
    assert loud_seconds(report.heard, end_s - 2.5, end_s) >= 2.0


async def test_an_unanswered_warm_transfer_brings_the_caller_back_to_the_agent(
    tmp_path: Path,
    start_bridge: BridgeFactory,
    scripted: RunningEmulator,
    twilio_api: TwilioApiSimulator,
) -> None:
    report, session, callees = await transfer_call(
        tmp_path, start_bridge, scripted, twilio_api, Callee("no-answer")
    )
    (colleague,) = callees.calls
    assert colleague.statuses[-1] == "no-answer"
    assert colleague.conference is None
    assert colleague.said == ()
    assert report.conference is None
    assert session.ended_reason == "caller hung up"  # the call went on with the agent
    # The agent answered the "they did not answer" prompt: the scenario's last step was used.
    assert sum(s.answers_completed for s in scripted.sessions) >= 2
    assert sum(s.turns for s in scripted.sessions) >= 3


async def test_a_caller_who_hangs_up_on_hold_takes_the_colleagues_ringing_leg_down_too(
    tmp_path: Path,
    start_bridge: BridgeFactory,
    scripted: RunningEmulator,
    twilio_api: TwilioApiSimulator,
) -> None:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "front-desk.yaml").write_text(textwrap.dedent(AGENT))
    # The colleague would pick up after 20 s; the caller gives up 12 s into the call, on hold.
    callees = SimulatedCallees(
        twilio_api, {COLLEAGUE: Callee("human", ring_ms=20_000)}, auth_token=AUTH_TOKEN
    )
    bridge = await start_bridge(
        agents=AgentRegistryHolder(folder),
        live_target=DeveloperApiTarget(base_url=scripted.url),
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_url=twilio_api.url,
    )
    report = await place_call(
        CarrierOptions(
            url=bridge.url, auth_token=AUTH_TOKEN, to_number=OUR_NUMBER, max_duration_s=12
        ),
        [caller_clip("transfer")],
        rest=twilio_api,
    )
    session = await bridge.app[CALLS].wait_ended(report.call_sid)
    (colleague,) = await callees.ended(1)
    assert report.conference is None
    assert session.ended_reason == "caller hung up"
    # The bridge ended the colleague's leg rather than let them answer to an empty room.
    assert [u.params for u in twilio_api.updates if u.call_sid == colleague.call_sid] == [
        {"Status": "completed"}
    ]
