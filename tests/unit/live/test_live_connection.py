"""LiveConnection.open's mapping of how a Live API refuses (a close during setup, an HTTP status
at the handshake) to LiveConnectError kinds, against tiny loopback servers that refuse as Google
does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

from agent.config.models import AgentConfig
from agent.errors import LiveClosedError, LiveConnectError, LiveRefusedError
from agent.live.connection import MASK_KEYS_PER_READ, LiveConnection, MaskKeys, client_frame
from agent.live.targets import DeveloperApiTarget

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(handler: Handler) -> TestServer:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = TestServer(app)
    await server.start_server()
    return server


def closing_after_setup(code: int, reason: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()  # the setup
        await ws.close(code=code, message=reason.encode())
        return ws

    return handler


async def open_against(handler: Handler) -> LiveConnection:
    server = await serve(handler)
    try:
        target = DeveloperApiTarget(base_url=f"ws://127.0.0.1:{server.port}", api_key="k")
        return await LiveConnection.open(target, AgentConfig(), timeout_s=5.0)
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        (1007, "API key not valid. Please pass a valid API key.", "auth"),
        (
            1008,
            "models/gemini-9-live is not found for API version v1beta, or is not supported for "
            "bidiGenerateContent.",
            "model",
        ),
    ],
)
async def test_a_refusal_during_setup_is_a_live_refused_error_with_its_kind_and_fix(
    code: int, reason: str, kind: str
) -> None:
    with pytest.raises(LiveRefusedError) as caught:
        await open_against(closing_after_setup(code, reason))
    assert caught.value.kind == kind
    assert caught.value.code == code
    assert reason in str(caught.value)
    assert caught.value.fix


async def test_an_internal_error_during_setup_is_retryable() -> None:
    with pytest.raises(LiveConnectError) as caught:
        await open_against(closing_after_setup(1011, "Internal error occurred."))
    assert not isinstance(caught.value, LiveRefusedError)
    assert caught.value.kind == "other"


@pytest.mark.parametrize(
    ("status", "kind", "refused"),
    [(401, "auth", True), (403, "permission", True), (503, "refused", False)],
)
async def test_an_http_status_at_the_handshake_is_mapped(
    status: int, kind: str, refused: bool
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text="no")

    with pytest.raises(LiveConnectError) as caught:
        await open_against(handler)
    assert caught.value.kind == kind
    assert isinstance(caught.value, LiveRefusedError) is refused
    assert f"HTTP {status}" in str(caught.value)


async def test_send_now_writes_at_once_while_open_and_declines_once_closed() -> None:
    """The per-frame fast path: a frame goes out without an await while the socket is open;
    once the service has closed it, send_now declines and send() raises LiveClosedError, as
    websockets' own path would."""
    received: list[str] = []
    arrived, closing = asyncio.Event(), asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()  # the setup
        await ws.send_str('{"setupComplete":{}}')
        message = await ws.receive()
        received.append(message.data)
        arrived.set()
        await closing.wait()
        await ws.close(code=1011, message=b"internal")
        return ws

    server = await serve(handler)
    try:
        target = DeveloperApiTarget(base_url=f"ws://127.0.0.1:{server.port}", api_key="k")
        conn = await LiveConnection.open(target, AgentConfig(), timeout_s=5.0)
        assert conn.send_now('{"realtimeInput":{}}') is True
        async with asyncio.timeout(5):
            await arrived.wait()
        assert received == ['{"realtimeInput":{}}']
        closing.set()
        async with asyncio.timeout(5):
            with pytest.raises(LiveClosedError):
                await anext(aiter(conn.events()))  # the close arrives
        assert conn.send_now('{"realtimeInput":{}}') is False
        with pytest.raises(LiveClosedError):
            await conn.send('{"realtimeInput":{}}')
        await conn.close()
    finally:
        await server.close()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 2731, 65535, 65536])
def test_a_hand_built_frame_is_what_websockets_parses_as_one_masked_text_frame(size: int) -> None:
    """send_now's frame, at each length encoding RFC 6455 has (7 bits, 16 bits, 64 bits),
    read back by websockets' own server-side parser: one final text frame, the payload intact."""
    payload = bytes(32 + i % 95 for i in range(size))  # UTF-8, as a text frame must be
    key = b"\x37\xfa\x21\x3d"
    server = Protocol(Side.SERVER, max_size=None)  # open, as after the handshake
    server.receive_data(client_frame(payload, key))
    (frame,) = server.events_received()
    assert isinstance(frame, Frame)
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.TEXT, True, payload)


def test_masking_keys_come_four_bytes_at_a_time_and_are_read_afresh_when_used_up() -> None:
    keys = MaskKeys()
    taken = [keys.take() for _ in range(2 * MASK_KEYS_PER_READ + 1)]
    assert all(len(key) == 4 for key in taken)
    # os.urandom: 1,025 draws of 32 bits repeating by chance is ~1e-4; a reuse bug repeats all.
    assert len(set(taken)) > 2 * MASK_KEYS_PER_READ - 2
    assert taken[:MASK_KEYS_PER_READ] != taken[MASK_KEYS_PER_READ : 2 * MASK_KEYS_PER_READ]
