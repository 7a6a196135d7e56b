"""Outbound calls end to end: ``POST /calls`` -> the simulator's ``Calls.json`` -> a simulated
callee (a person, an answering machine, a busy line) -> the bridge's answer webhook, media
stream and answering-machine verdict, on simulated time."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from agent.cli.dial import answer_one_dial, describe_dial
from agent.cli.dial import post_call as post_call_cli
from agent.config.models import DEFAULT_AGENT, AgentConfig, OutboundConfig
from agent.server.state import CALLS, OUTBOUND, PRECONNECTS, RECORDS, SHARED, OutboundCalls
from agent.sim.balancer import start_balancer
from agent.sim.carrier import ENDED_BY_REST_HANG_UP, TwilioApiSimulator
from agent.sim.carrier.callee import Callee, SimulatedCallees
from agent.sim.carrier.phone import FRAME_BYTES, FRAME_MS
from agent.telephony.outbound import verdict_key

from .conftest import Bridge, BridgeFactory, caller_clip
from .processes import free_port, wait_listening

ACCOUNT_SID = "AC" + "6" * 32
AUTH_TOKEN = "outbound-test-auth-token-5c2d"
API_TOKEN = "calls-api-token-9f1e2d3c"
CALLER_ID = "+15555550123"
PERSON = "+15555550201"
MACHINE = "+15555550202"
BUSY = "+15555550203"

# 2026-03-02 23:30 UTC: 18:30 in New York, after its 17:00 close.
NEW_YORK_EVENING = datetime(2026, 3, 2, 23, 30, tzinfo=UTC).timestamp()

AGENT = dataclasses.replace(
    DEFAULT_AGENT,
    greeting="Greet the person you called.",
    outbound=OutboundConfig(
        caller_id=CALLER_ID,
        on_machine="voicemail",
        voicemail_message="This is the shop: your order is ready. Goodbye.",
        max_attempts=2,
        retry_delay_s=60.0,
    ),
)


@pytest.fixture
async def twilio_api() -> AsyncIterator[TwilioApiSimulator]:
    async with TwilioApiSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        yield rest


def far_ends(rest: TwilioApiSimulator) -> SimulatedCallees:
    return SimulatedCallees(
        rest,
        {
            PERSON: Callee("human", (caller_clip("order-status"),), amd_ms=1500),
            MACHINE: Callee("machine", (caller_clip("order-status"),)),
            BUSY: Callee("busy"),
        },
        auth_token=AUTH_TOKEN,
    )


async def start(
    start_bridge: BridgeFactory,
    rest: TwilioApiSimulator,
    agent: AgentConfig = AGENT,
    **more: object,
) -> Bridge:
    return await start_bridge(
        agent=agent,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_url=rest.url,
        **({"calls_api_token": API_TOKEN} | more),
    )


async def post_call(url: str, to: str, token: str = API_TOKEN) -> tuple[int, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/calls",
            json={"to": to, "agent": "default"},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        return response.status, await response.json()


def loud_frames(pcm: bytes) -> np.ndarray:
    """Per 20 ms frame of PCM16 8 kHz: whether anything was heard in it."""
    samples = np.frombuffer(pcm, dtype="<i2")
    frames = samples[: len(samples) // FRAME_BYTES * FRAME_BYTES].reshape(-1, FRAME_BYTES)
    loud: np.ndarray = np.abs(frames.astype(np.int32)).max(axis=1) > 200
    return loud


async def test_a_person_hears_the_greeting_only_after_the_verdict(
    start_bridge: BridgeFactory, twilio_api: TwilioApiSimulator
) -> None:
    callees = far_ends(twilio_api)
    bridge = await start(start_bridge, twilio_api)
    status, body = await post_call(bridge.url, PERSON)
    assert status == 201
    (call,) = await callees.ended(1)
    assert call.call_sid == body["call_sid"]
    create = twilio_api.created[0]
    assert create.get("MachineDetection") == "DetectMessageEnd"
    assert create.get("AsyncAmd") == "true"
    assert create.get("From") == CALLER_ID
    assert call.answered_by == "human"
    assert call.verdict_ms == 1500
    assert call.report is not None
    assert call.problems == []
    loud = loud_frames(call.report.heard)
    first_heard = int(np.argmax(loud)) * FRAME_MS
    assert loud.any()
    assert first_heard >= call.verdict_ms  # nothing into ringing, nothing before the verdict
    assert call.statuses[:3] == ["initiated", "ringing", "in-progress"]


async def test_a_machine_gets_the_voicemail_after_its_beep_then_the_agent_hangs_up(
    start_bridge: BridgeFactory, twilio_api: TwilioApiSimulator
) -> None:
    callees = far_ends(twilio_api)
    bridge = await start(start_bridge, twilio_api)
    status, body = await post_call(bridge.url, MACHINE)
    assert status == 201
    (call,) = await callees.ended(1)
    assert call.answered_by == "machine_end_beep"
    report = call.report
    assert report is not None
    beep_end_ms = report.utterances[0].end_ms
    loud = loud_frames(report.heard)
    beep_end = beep_end_ms // FRAME_MS
    assert not loud[:beep_end].any()  # nothing said over the greeting or the beep
    assert loud[beep_end:].sum() * FRAME_MS >= 1000  # the message was recorded after it
    assert report.ended_by == ENDED_BY_REST_HANG_UP
    session = await bridge.app[CALLS].wait_ended(body["call_sid"])
    assert session.ended_reason == "voicemail left"


async def test_a_busy_number_is_recorded_and_dialled_again_up_to_max_attempts(
    start_bridge: BridgeFactory, twilio_api: TwilioApiSimulator
) -> None:
    callees = far_ends(twilio_api)
    bridge = await start(start_bridge, twilio_api)
    status, _ = await post_call(bridge.url, BUSY)
    assert status == 201
    calls = await callees.ended(2)
    assert [c.statuses[-1] for c in calls] == ["busy", "busy"]
    await bridge.app[RECORDS].flush()
    for attempt, call in enumerate(calls, start=1):
        record = bridge.app[RECORDS].get_call(call.call_sid)
        assert record is not None
        assert record.end_reason == "busy"
        assert record.summary == {"direction": "outbound", "attempt": attempt}
    assert len(twilio_api.created) == 2  # max_attempts: 2, and no third


async def test_the_calls_api_needs_its_token(
    start_bridge: BridgeFactory, twilio_api: TwilioApiSimulator
) -> None:
    far_ends(twilio_api)
    bridge = await start(start_bridge, twilio_api)
    status, _body = await post_call(bridge.url, PERSON, token="wrong")
    assert status == 401
    assert twilio_api.created == []


async def test_the_calls_api_is_off_without_a_token(
    start_bridge: BridgeFactory, twilio_api: TwilioApiSimulator
) -> None:
    bridge = await start(start_bridge, twilio_api, calls_api_token=None)
    status, body = await post_call(bridge.url, PERSON)
    assert status == 404
    assert "CALLS_API_TOKEN" in body["error"]


async def test_a_dial_outside_calling_hours_is_refused_saying_when_they_open(
    start_bridge: BridgeFactory, twilio_api: TwilioApiSimulator
) -> None:
    far_ends(twilio_api)
    outbound = dataclasses.replace(
        AGENT.outbound, calling_hours="09:00-17:00", callee_timezone="America/New_York"
    )
    bridge = await start(
        start_bridge,
        twilio_api,
        dataclasses.replace(AGENT, outbound=outbound),
        clock=lambda: NEW_YORK_EVENING,
    )
    status, body = await post_call(bridge.url, PERSON)
    assert status == 422
    assert "calling hours" in body["error"]
    assert "2026-03-03 09:00 America/New_York" in body["error"]
    assert twilio_api.created == []


async def test_agent_dial_asks_the_bridge_and_a_refusal_carries_the_reason(
    start_bridge: BridgeFactory, twilio_api: TwilioApiSimulator
) -> None:
    """What ``agent dial`` sends (its HTTP half; the command line only prints the answer)."""
    callees = far_ends(twilio_api)
    bridge = await start(start_bridge, twilio_api)
    body = {"to": PERSON, "agent": "default", "params": {"name": "Ada"}}
    status, answer = await post_call_cli(bridge.url, API_TOKEN, body)
    assert status == 201
    (call,) = await callees.ended(1)
    assert answer["call_sid"] == call.call_sid
    status, answer = await post_call_cli(bridge.url, API_TOKEN, body | {"agent": "nobody"})
    assert status == 422
    assert "no agent named 'nobody'" in answer["error"]


async def test_a_verdict_that_reaches_another_replica_gets_to_the_call_through_the_shared_state(
    start_bridge: BridgeFactory, twilio_api: TwilioApiSimulator, tmp_path: Path
) -> None:
    """Behind one public URL, replica A dials and holds the media stream while every request
    from Twilio, the AMD callback among them, reaches replica B. Only the shared state can
    tell A's session that a person answered."""
    callees = far_ends(twilio_api)
    replicas: list[str] = []
    routed: list[tuple[str, str]] = []

    def route(request: web.Request) -> str:
        to_b = request.path.startswith("/twilio/") and request.path != "/twilio/stream"
        routed.append((request.path, "B" if to_b else "A"))
        return replicas[1] if to_b else replicas[0]

    lb = await start_balancer(route)
    try:
        shared = f"sqlite:///{tmp_path}/shared.db"
        a = await start(start_bridge, twilio_api, shared_state_url=shared, public_url=lb.url)
        b = await start(start_bridge, twilio_api, shared_state_url=shared, public_url=lb.url)
        replicas.extend([a.url, b.url])
        status, body = await post_call(lb.url, PERSON)
        assert status == 201
        (call,) = await callees.ended(1)
    finally:
        await lb.close()
    call_sid = body["call_sid"]
    assert call.answered_by == "human"
    assert ("/twilio/amd", "B") in routed  # B received the verdict ...
    assert await b.app[SHARED].peek_answer(verdict_key(call_sid)) == "human"
    assert ("/twilio/stream", "A") in routed  # ... and A held the call, and heard of it
    session = await a.app[CALLS].wait_ended(call_sid)
    assert a.app[OUTBOUND] == OutboundCalls()  # and forgot the call when it ended
    assert session.stats.model_turns >= 1
    assert call.report is not None
    assert call.verdict_ms is not None
    loud = loud_frames(call.report.heard)
    assert loud.any()
    assert int(np.argmax(loud)) * FRAME_MS >= call.verdict_ms


async def test_an_agent_that_hangs_up_on_machines_says_nothing_to_one(
    start_bridge: BridgeFactory, twilio_api: TwilioApiSimulator
) -> None:
    callees = far_ends(twilio_api)
    hangs_up = dataclasses.replace(
        AGENT, outbound=dataclasses.replace(AGENT.outbound, on_machine="hang_up")
    )
    bridge = await start(start_bridge, twilio_api, hangs_up)
    status, body = await post_call(bridge.url, MACHINE)
    assert status == 201
    (call,) = await callees.ended(1)
    assert call.report is not None
    assert not loud_frames(call.report.heard).any()  # not a word, before or after the beep
    assert call.report.ended_by == ENDED_BY_REST_HANG_UP
    session = await bridge.app[CALLS].wait_ended(body["call_sid"])
    assert session.ended_reason == "answering machine"


async def test_a_number_nobody_answers_rings_out_and_is_recorded_as_no_answer(
    start_bridge: BridgeFactory, twilio_api: TwilioApiSimulator
) -> None:
    nobody = "+15555550204"
    callees = SimulatedCallees(twilio_api, {nobody: Callee("no-answer")}, auth_token=AUTH_TOKEN)
    once = dataclasses.replace(
        AGENT, outbound=dataclasses.replace(AGENT.outbound, max_attempts=1, ring_timeout_s=20)
    )
    bridge = await start(start_bridge, twilio_api, once)
    status, _ = await post_call(bridge.url, nobody)
    assert status == 201
    (call,) = await callees.ended(1)
    assert call.statuses == ["initiated", "ringing", "no-answer"]
    assert call.create.get("Timeout") == "20"
    await bridge.app[RECORDS].flush()
    record = bridge.app[RECORDS].get_call(call.call_sid)
    assert record is not None
    assert record.end_reason == "no-answer"
    assert len(twilio_api.created) == 1  # max_attempts: 1
    assert bridge.app[PRECONNECTS] == {}  # its Live session was released, not left to expire


async def test_agent_call_callee_is_the_far_end_of_a_dial_offline(
    start_bridge: BridgeFactory,
) -> None:
    """``agent call --callee machine --rest-port P``: the REST stand-in the bridge dials
    through, and an answering machine at the end of it (its async half, as the CLI runs it)."""
    port = free_port()
    far_end = asyncio.create_task(
        answer_one_dial(
            kind="machine",
            utterances=[caller_clip("order-status")],
            port=port,
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
        )
    )
    await wait_listening(port, 10.0)
    bridge = await start_bridge(
        agent=AGENT,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_url=f"http://127.0.0.1:{port}",
        calls_api_token=API_TOKEN,
    )
    status, body = await post_call(bridge.url, MACHINE)
    assert status == 201
    call = await far_end
    assert call.call_sid == body["call_sid"]
    assert call.answered_by == "machine_end_beep"
    text = describe_dial(call)
    assert "initiated -> ringing -> in-progress -> completed" in text
    assert "hung up via REST" in text
