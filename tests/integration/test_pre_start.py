"""The pre-``start`` window: an unauthenticated stream socket may send a few KiB before
``start``, in small messages; beyond that it is closed with 1009 and one log line."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from io import StringIO

import aiohttp

from agent.server.stream import PRE_START_BYTES, PRE_START_MESSAGE_BYTES

from .conftest import BridgeFactory

CONNECTED = '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def _events(buffer: StringIO, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    return [line for line in lines if line["event"] == name]


async def test_one_oversized_message_before_start_closes_the_socket_with_1009(
    start_bridge: BridgeFactory, log_capture: Callable[..., AbstractContextManager[StringIO]]
) -> None:
    # A literal frame on the wire (no compression): a "connected" padded past the limit.
    padded = json.dumps(
        {"event": "connected", "protocol": "Call", "version": "1.0.0", "pad": "x" * 5000}
    )
    assert len(padded) > PRE_START_MESSAGE_BYTES
    with log_capture("warning", "json") as buffer:
        bridge = await start_bridge()
        url = bridge.url.replace("http", "ws") + "/twilio/stream"
        async with aiohttp.ClientSession() as session, session.ws_connect(url, compress=0) as ws:
            await ws.send_str(padded)
            message = await ws.receive()
            assert message.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1009
    (line,) = _events(buffer, "twilio.pre_start_too_big")
    assert line["message_bytes"] == len(padded)
    assert _events(buffer, "twilio.protocol_error") == []  # refused before it was parsed


async def test_many_small_messages_before_start_are_bounded_in_total(
    start_bridge: BridgeFactory, log_capture: Callable[..., AbstractContextManager[StringIO]]
) -> None:
    count = PRE_START_BYTES // len(CONNECTED) + 1  # the last one crosses the window
    with log_capture("warning", "json") as buffer:
        bridge = await start_bridge()
        url = bridge.url.replace("http", "ws") + "/twilio/stream"
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            for _ in range(count):
                await ws.send_str(CONNECTED)
            message = await ws.receive()
            assert message.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1009
    (line,) = _events(buffer, "twilio.pre_start_too_big")
    assert line["received_bytes"] == count * len(CONNECTED)
    assert _events(buffer, "call.no_start") == []  # closed at once, not at the timeout
