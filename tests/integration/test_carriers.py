"""Telnyx and Plivo calls end to end: the carrier simulator speaks each carrier's wire, signed as
that carrier signs, and the bridge runs the call as it runs a Twilio one (barge-in, tools)."""

from __future__ import annotations

import base64
import json
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.config.reload import AgentRegistryHolder
from agent.live.targets import DeveloperApiTarget
from agent.server.state import CALLS
from agent.sim.carrier import CarrierOptions, place_call
from agent.sim.carrier.dialects import sign_webhook
from agent.sim.live.scenario import scenario_from_data
from agent.sim.live.server import EmulatorOptions, RunningEmulator, start_emulator

from .conftest import Bridge, BridgeFactory, caller_clip

CALLER = "+15555550100"  # on file in the embedded CRM
PLIVO_AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
PLIVO_TOKEN = "plivo-test-auth-token-31f0"
_KEY = Ed25519PrivateKey.generate()
TELNYX_PRIVATE = base64.b64encode(_KEY.private_bytes_raw()).decode()
TELNYX_PUBLIC = base64.b64encode(
    _KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
).decode()


def carrier_settings(carrier: str) -> dict[str, object]:
    """The bridge's credentials for ``carrier``: its webhooks and streams are then verified."""
    if carrier == "telnyx":
        return {"telnyx_public_key": TELNYX_PUBLIC}
    return {"plivo_auth_id": PLIVO_AUTH_ID, "plivo_auth_token": PLIVO_TOKEN}


def carrier_options(carrier: str, url: str, **fields: Any) -> CarrierOptions:
    if carrier == "telnyx":
        return CarrierOptions(
            url=url, carrier="telnyx", telnyx_signing_key=TELNYX_PRIVATE, **fields
        )
    return CarrierOptions(url=url, carrier="plivo", auth_token=PLIVO_TOKEN, **fields)


@pytest.mark.parametrize("carrier", ["telnyx", "plivo"])
async def test_a_barge_in_clears_the_carriers_buffer(
    carrier: str, start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    bridge = await start_bridge(**carrier_settings(carrier))
    report = await place_call(
        carrier_options(carrier, bridge.url, barge_in_ms=1500),
        [caller_clip("order-status"), caller_clip("interrupt")],
    )

    assert report.protocol_errors == []
    # The emulator's "interrupted" became the carrier's clear (clear / clearAudio), once,
    # while the caller was cutting in; and the interruption still got its answer.
    assert report.barge_ins == 1
    assert len(report.clears) == 1
    interrupting = report.utterances[1]
    assert interrupting.start_ms < report.clears[0] * 20 < interrupting.end_ms
    assert interrupting.first_reply_ms is not None
    assert emulator.sessions[0].interruptions == 1
    call = await bridge.app[CALLS].wait_ended(report.call_sid)
    # The call ran under the carrier's own call ID.
    assert call.started.call_sid == report.call_sid
    assert call.playback.marks_played > 0  # Telnyx's marks / Plivo's playedStream were counted


ScriptedEmulator = Callable[[dict[str, Any]], Awaitable[RunningEmulator]]


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedEmulator]:
    running: list[RunningEmulator] = []

    async def start(scenario: dict[str, Any]) -> RunningEmulator:
        emulator = await start_emulator(EmulatorOptions(scenario=scenario_from_data(scenario)))
        running.append(emulator)
        return emulator

    yield start
    for emulator in running:
        await emulator.close()


def customer_name(bridge: Bridge, phone: str) -> str:
    path = bridge.settings.crm_database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        name: str = db.execute("SELECT name FROM customers WHERE phone = ?", (phone,)).fetchone()[0]
    return name


@pytest.mark.parametrize("carrier", ["telnyx", "plivo"])
async def test_the_bundled_agent_looks_the_caller_up(
    carrier: str, start_bridge: BridgeFactory, scripted: ScriptedEmulator
) -> None:
    lookup = {"name": "lookup_caller", "args": {}, "wait": True}
    emulator = await scripted({"steps": [{"say": "greeting"}, {"calls": [lookup], "say": "reply"}]})
    bridge = await start_bridge(
        agents=AgentRegistryHolder(None),
        live_target=DeveloperApiTarget(base_url=emulator.url),
        **carrier_settings(carrier),
    )
    report = await place_call(
        carrier_options(carrier, bridge.url, from_number=CALLER), [caller_clip("order-status")]
    )

    assert report.protocol_errors == []
    # The caller's number came from the signed webhook, through the ticket, to the tool.
    (result,) = [r.response for s in emulator.sessions for r in s.tool_responses]
    assert result["result"][0]["name"] == customer_name(bridge, CALLER)
    (utterance,) = report.utterances
    assert utterance.first_reply_ms is not None


@pytest.mark.parametrize("carrier", ["telnyx", "plivo"])
async def test_an_unsigned_webhook_is_refused(carrier: str, start_bridge: BridgeFactory) -> None:
    bridge = await start_bridge(**carrier_settings(carrier))
    path = "/telnyx/voice" if carrier == "telnyx" else "/plivo/answer"
    form = {"CallSid": "v3:abc", "CallUUID": "5f1c", "From": CALLER, "To": "+15555550199"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(bridge.url + path, data=form) as response,
    ):
        assert response.status == 403


async def _telnyx_ticket(bridge: Bridge, http: aiohttp.ClientSession, call_sid: str) -> str:
    """A ticket from a signed Telnyx webhook for ``call_sid``."""
    url = bridge.url + "/telnyx/voice"
    form = {"CallSid": call_sid, "From": CALLER, "To": "+15555550199"}
    body = urlencode(form).encode()
    options = carrier_options("telnyx", bridge.url)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    headers |= sign_webhook("telnyx", options, url, form, body)
    async with http.post(url, data=body, headers=headers) as response:
        assert response.status == 200
        texml = await response.text()
    param = ET.fromstring(texml).find("./Start/Stream/Parameter")
    assert param is not None
    return param.attrib["value"]


def _plivo_start(call_id: str) -> str:
    media_format = {"encoding": "audio/x-mulaw", "sampleRate": 8000}
    start = {
        "callId": call_id,
        "streamId": "5f1c",
        "tracks": ["inbound"],
        "mediaFormat": media_format,
    }
    return json.dumps({"event": "start", "sequenceNumber": 1, "start": start})


def _telnyx_start(call_id: str, token: str) -> str:
    media_format = {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}
    start = {
        "call_control_id": call_id,
        "media_format": media_format,
        "custom_parameters": {"token": token},
    }
    return json.dumps({"event": "start", "stream_id": "5f1c", "start": start})


async def test_a_ticket_opens_only_its_own_carriers_stream_for_its_own_call(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge(**carrier_settings("telnyx"), **carrier_settings("plivo"))
    ws_url = bridge.url.replace("http://", "ws://")
    async with aiohttp.ClientSession() as http:
        token = await _telnyx_ticket(bridge, http, "1b6a-call-one")
        # On Plivo's stream (the same call ID, a ticket keyed by the same secret): refused.
        async with http.ws_connect(f"{ws_url}/plivo/stream?ticket={token}") as ws:
            await ws.send_str(_plivo_start("1b6a-call-one"))
            await ws.receive()
            assert ws.close_code == 1008
        # On Telnyx's stream, for another call: refused.
        async with http.ws_connect(f"{ws_url}/telnyx/stream") as ws:
            await ws.send_str(_telnyx_start("1b6a-call-two", token))
            await ws.receive()
            assert ws.close_code == 1008
        assert not bridge.app[CALLS].active
