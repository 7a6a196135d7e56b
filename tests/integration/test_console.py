"""The console over HTTP and its softphone socket, in-process on simulated time: the credential
on every route, a softphone call through the whole call path, its live timeline, and tickets
that open only their own kind of stream."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.audio.codec import pcm16_to_ulaw
from agent.config.reload import AgentRegistryHolder
from agent.observability.privacy import mask_number
from agent.server.console import CONSOLE_TICKETS
from agent.server.state import CALLS, CLOCK, RECORDS, STREAM_TOKENS
from agent.sim.live.server import RunningEmulator

from .conftest import Bridge, BridgeFactory, caller_clip

TOKEN = "console-secret-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
SILENCE = base64.b64encode(b"\xff" * 160).decode()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def console(start_bridge: BridgeFactory, **overrides: object) -> Bridge:
    return await start_bridge(console_enabled=True, console_token=TOKEN, **overrides)


@pytest.mark.parametrize(
    "path", ["/console", "/console/api/agents", "/console/api/calls", "/console/api/calls/CA1"]
)
async def test_every_console_route_wants_the_credential(
    start_bridge: BridgeFactory, path: str
) -> None:
    bridge = await console(start_bridge)
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, basic("x", "wrong")):
            async with http.get(bridge.url + path, headers=headers) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
                assert TOKEN not in await response.text()


async def test_the_page_opens_with_a_bearer_token_or_basic_auth_of_any_user(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await console(start_bridge)
    async with aiohttp.ClientSession() as http:
        for headers in (BEARER, basic("anyone", TOKEN), basic("", TOKEN)):
            async with http.get(bridge.url + "/console", headers=headers) as response:
                assert response.status == 200
                assert "script-src 'self'" in response.headers["Content-Security-Policy"]
                page = await response.text()
                assert 'role="log"' in page
                assert TOKEN not in page
        # The scripts are the package's own files, no secret in them: served to anyone.
        async with http.get(bridge.url + "/console/assets/phone.js") as response:
            assert response.status == 200
            assert response.content_type == "text/javascript"
        async with http.get(bridge.url + "/console/assets/..%2Fsession.py") as response:
            assert response.status == 404


async def test_without_console_enabled_there_is_no_console(start_bridge: BridgeFactory) -> None:
    bridge = await start_bridge()
    async with aiohttp.ClientSession() as http, http.get(bridge.url + "/console") as response:
        assert response.status == 404


async def test_a_call_is_issued_only_for_json(start_bridge: BridgeFactory) -> None:
    """A cross-site form cannot send JSON: it cannot place calls with remembered credentials."""
    bridge = await console(start_bridge)
    async with aiohttp.ClientSession() as http:
        url = bridge.url + "/console/api/calls"
        async with http.post(url, data={"agent": "x"}, headers=BEARER) as response:
            assert response.status == 415
        async with http.post(url, json={"agent": "nobody"}, headers=BEARER) as response:
            assert response.status == 404


async def issue(http: aiohttp.ClientSession, bridge: Bridge, **body: Any) -> dict[str, Any]:
    async with http.post(bridge.url + "/console/api/calls", json=body, headers=BEARER) as response:
        assert response.status == 200
        issued: dict[str, Any] = await response.json()
    return issued


def console_start(call_sid: str, ticket: str) -> str:
    return json.dumps(
        {"event": "start", "callSid": call_sid, "ticket": ticket, "mediaFormat": MEDIA_FORMAT}
    )


def twilio_start(call_sid: str, token: str) -> str:
    start = {
        "streamSid": "MZ" + "0" * 32,
        "accountSid": "AC" + "0" * 32,
        "callSid": call_sid,
        "tracks": ["inbound"],
        "customParameters": {"token": token},
        "mediaFormat": MEDIA_FORMAT,
    }
    return json.dumps({"event": "start", "streamSid": start["streamSid"], "start": start})


async def test_a_console_ticket_does_not_open_a_twilio_stream(start_bridge: BridgeFactory) -> None:
    bridge = await console(start_bridge, twilio_auth_token="twilio-auth-token-0123")
    async with aiohttp.ClientSession() as http:
        issued = await issue(http, bridge)
        ws_url = bridge.url.replace("http", "ws")
        async with http.ws_connect(ws_url + "/twilio/stream") as ws:
            await ws.send_str(twilio_start(issued["call_sid"], issued["ticket"]))
            assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1008
        # ... and the ticket, not having been used, still opens its own softphone call.
        async with http.ws_connect(ws_url + issued["path"]) as ws:
            await ws.send_str(console_start(issued["call_sid"], issued["ticket"]))
            message = await ws.receive()
            assert message.type is aiohttp.WSMsgType.TEXT  # the greeting
            await ws.send_str('{"event":"stop"}')


async def test_a_twilio_stream_token_does_not_open_a_console_call(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await console(start_bridge, twilio_auth_token="twilio-auth-token-0123")
    call_sid = "CO" + "a" * 32
    token = bridge.app[STREAM_TOKENS].issue(call_sid, bridge.app[CLOCK]())
    url = bridge.url.replace("http", "ws") + "/console/phone"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(console_start(call_sid, token))
        assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1008
    assert call_sid not in bridge.app[CALLS].active


async def test_a_console_ticket_opens_one_call_only(start_bridge: BridgeFactory) -> None:
    bridge = await console(start_bridge)
    call_sid = "CO" + "b" * 32
    ticket = bridge.app[CONSOLE_TICKETS].issue(call_sid, bridge.app[CLOCK]())
    async with aiohttp.ClientSession() as http:
        url = bridge.url.replace("http", "ws") + "/console/phone"
        async with http.ws_connect(url) as first:
            await first.send_str(console_start(call_sid, ticket))
            assert (await first.receive()).type is aiohttp.WSMsgType.TEXT
            async with http.ws_connect(url) as replay:
                await replay.send_str(console_start(call_sid, ticket))
                assert (await replay.receive()).type is aiohttp.WSMsgType.CLOSE
                assert replay.close_code == 1008
            await first.send_str('{"event":"stop"}')


async def test_a_softphone_call_runs_like_a_phone_call_and_its_timeline_follows(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await console(start_bridge, mask_caller_numbers=True)
    async with aiohttp.ClientSession() as http:
        issued = await issue(http, bridge, caller_id="+15550100999")
        call_sid = issued["call_sid"]
        async with http.ws_connect(bridge.url.replace("http", "ws") + issued["path"]) as ws:
            await ws.send_str(console_start(call_sid, issued["ticket"]))
            received: list[dict[str, Any]] = []
            # The greeting, as media with a mark after each chunk; the page echoes the marks.
            while not any(m["event"] == "mark" for m in received):
                received.append(json.loads((await ws.receive()).data))
            assert received[0]["event"] == "media"
            assert base64.b64decode(received[0]["payload"])
            for message in received:
                if message["event"] == "mark":
                    await ws.send_str(json.dumps({"event": "mark", "name": message["name"]}))
            await ws.send_str(json.dumps({"event": "media", "payload": SILENCE}))
            await ws.send_str('{"event":"stop"}')
            session = await bridge.app[CALLS].wait_ended(call_sid)
        assert session.ended_reason == "caller hung up"
        await bridge.app[RECORDS].flush()
        events_url = f"{bridge.url}/console/api/calls/{call_sid}/events"
        async with http.get(events_url, headers=BEARER) as response:
            assert response.content_type == "text/event-stream"
            body = await response.text()  # the call has ended: the stream says so and ends
        events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
        kinds = [event["type"] for event in events]
        assert kinds[0] == "started"
        assert kinds[-1] == "ended"
        # The page's caller ID is the call's caller, masked as the record masks it.
        assert events[0]["from"] == mask_number("+15550100999")
        assert events[-1]["reason"] == "caller hung up"
        async with http.get(f"{bridge.url}/console/api/calls/{call_sid}", headers=BEARER) as got:
            record = await got.json()
        assert record["end_reason"] == "caller hung up"
        assert record["svg"].startswith("<svg")
        svg_url = f"{bridge.url}/console/api/calls/{call_sid}/timeline.svg"
        async with http.get(svg_url, headers=BEARER) as picture:
            assert picture.content_type == "image/svg+xml"
            assert await picture.text() == record["svg"]
        async with http.get(f"{bridge.url}/console/api/calls", headers=BEARER) as listed:
            calls = await listed.json()
        assert [c["call_sid"] for c in calls["recent"]] == [call_sid]


async def test_a_softphone_call_is_not_offered_transfer_call_even_with_twilio_rest(
    start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    """There is no carrier to move the call: the model is not offered what could only fail."""
    bridge = await console(
        start_bridge,
        agents=AgentRegistryHolder(None),  # the bundled agent, which has transfer_call
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="twilio-auth-token-0123",
        twilio_api_url="http://127.0.0.1:9",  # never asked: a console call has no REST
    )
    async with aiohttp.ClientSession() as http:
        issued = await issue(http, bridge)
        async with http.ws_connect(bridge.url.replace("http", "ws") + issued["path"]) as ws:
            await ws.send_str(console_start(issued["call_sid"], issued["ticket"]))
            assert (await ws.receive()).type is aiohttp.WSMsgType.TEXT
            await ws.send_str('{"event":"stop"}')
            await bridge.app[CALLS].wait_ended(issued["call_sid"])
    (session, *_) = emulator.sessions
    names = [
        declaration["name"]
        for tool in session.setup["tools"]
        for declaration in tool.get("functionDeclarations", ())
    ]
    assert "transfer_call" not in names
    assert "end_call" in names


async def test_a_call_on_another_replica_is_listed_and_followed_from_the_shared_records(
    start_bridge: BridgeFactory, tmp_path: Path
) -> None:
    shared = f"sqlite:///{tmp_path}/shared.db"
    here = await console(start_bridge, database_url=shared, shared_state_url=shared)
    there = await console(start_bridge, database_url=shared, shared_state_url=shared)
    async with aiohttp.ClientSession() as http:
        issued = await issue(http, here, caller_id="+15550100999")
        call_sid = issued["call_sid"]
        async with http.ws_connect(here.url.replace("http", "ws") + issued["path"]) as ws:
            await ws.send_str(console_start(call_sid, issued["ticket"]))
            assert (await ws.receive()).type is aiohttp.WSMsgType.TEXT  # the call is up
            await here.app[RECORDS].flush()
            async with http.get(there.url + "/console/api/calls", headers=BEARER) as listed:
                (call,) = (await listed.json())["active"]
            assert call["call_sid"] == call_sid
            assert call["here"] is False  # in progress, on the other replica
            url = f"{there.url}/console/api/calls/{call_sid}/events"
            async with http.get(url, headers=BEARER) as events:
                first = json.loads((await events.content.readline()).decode()[6:])
            assert first["type"] == "started"
            assert first["agent"] == call["agent"]
            await ws.send_str('{"event":"stop"}')
            await here.app[CALLS].wait_ended(call_sid)


async def test_the_caller_talking_over_the_agent_clears_the_pages_playback(
    start_bridge: BridgeFactory,
) -> None:
    """Barge-in as on the phone: the page is told to drop what it has buffered."""
    bridge = await console(start_bridge)
    speech = pcm16_to_ulaw(caller_clip("interrupt"))
    async with aiohttp.ClientSession() as http:
        issued = await issue(http, bridge)
        async with http.ws_connect(bridge.url.replace("http", "ws") + issued["path"]) as ws:
            await ws.send_str(console_start(issued["call_sid"], issued["ticket"]))
            assert json.loads((await ws.receive()).data)["event"] == "media"  # the greeting

            async def talk() -> None:
                for at in range(0, len(speech), 160):  # 20 ms frames, at the pace of speech
                    payload = base64.b64encode(speech[at : at + 160]).decode()
                    await ws.send_str(json.dumps({"event": "media", "payload": payload}))
                    await asyncio.sleep(0.02)

            talking = asyncio.create_task(talk())
            while json.loads((await ws.receive()).data)["event"] != "clear":
                pass
            talking.cancel()
            await ws.send_str('{"event":"stop"}')
            session = await bridge.app[CALLS].wait_ended(issued["call_sid"])
    assert session.stats.barge_ins >= 1
