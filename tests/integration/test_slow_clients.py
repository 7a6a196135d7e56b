"""Slow or stuck HTTP clients, through the server as ``agent serve`` builds it
(``agent.server.listen``): read timeouts and a cap on open connections, over real sockets."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from io import StringIO
from pathlib import Path

import pytest
from aiohttp import web
from timing import scaled_timeout

from agent.config.models import DEFAULT_AGENT
from agent.live.targets import DeveloperApiTarget
from agent.server.app import MAX_REQUEST_BYTES, create_app
from agent.server.listen import REFUSAL, LimitedSite, listen, make_runner
from agent.settings import Settings
from agent.sim.live.server import RunningEmulator

from .processes import free_port, server_env, start_server

Serve = Callable[..., Awaitable[LimitedSite]]


@pytest.fixture
async def serve(emulator: RunningEmulator, tmp_path: Path) -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(**overrides: object) -> LimitedSite:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        settings = Settings(
            port=port,
            database_url=f"sqlite:///{tmp_path}/calls-{port}.db",
            crm_database_url=f"sqlite:///{tmp_path}/crm-{port}.db",
            **overrides,
        )
        app = create_app(
            settings, live_target=DeveloperApiTarget(base_url=emulator.url), agent=DEFAULT_AGENT
        )
        runner = make_runner(app)
        await runner.setup()
        runners.append(runner)
        return await listen(runner, sock=sock)

    yield start
    for runner in runners:
        await runner.cleanup()


def _address(site: LimitedSite) -> tuple[str, int]:
    host, port = site.name.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def _connect(site: LimitedSite) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*_address(site))


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    try:
        return await asyncio.wait_for(reader.read(), timeout=3600)
    except ConnectionResetError:
        return b""


def _events(buffer: StringIO, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    return [line for line in lines if line["event"] == name]


async def test_half_a_request_line_is_closed_at_the_read_timeout(serve: Serve) -> None:
    site = await serve(http_read_timeout_s=5)
    loop = asyncio.get_running_loop()
    reader, writer = await _connect(site)
    began = loop.time()
    writer.write(b"POST /twilio/voi")  # and never the rest
    await writer.drain()
    assert await _until_closed(reader) == b""
    assert 5 <= loop.time() - began < 6  # not aiohttp's default of an hour
    writer.close()
    await site.gate.wait_open_at_most(0)


async def test_a_connection_that_sends_nothing_is_closed_at_the_read_timeout(
    serve: Serve,
) -> None:
    site = await serve(http_read_timeout_s=5)
    loop = asyncio.get_running_loop()
    reader, writer = await _connect(site)
    began = loop.time()
    assert await _until_closed(reader) == b""
    assert 5 <= loop.time() - began < 6
    writer.close()


async def test_a_webhook_body_that_never_completes_gets_408(serve: Serve) -> None:
    site = await serve(http_read_timeout_s=5)
    loop = asyncio.get_running_loop()
    reader, writer = await _connect(site)
    began = loop.time()
    writer.write(
        b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\n"
        b"CallSid=CA1"
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), timeout=3600)
    assert status.startswith(b"HTTP/1.1 408")
    assert 5 <= loop.time() - began < 6
    writer.close()


async def test_beyond_max_connections_new_ones_get_503_and_one_log_line(
    serve: Serve, log_capture: Callable[..., AbstractContextManager[StringIO]]
) -> None:
    with log_capture("info", "json") as buffer:
        site = await serve(max_connections=2, http_read_timeout_s=60)
        held = [await _connect(site) for _ in range(2)]
        for writer in (w for _, w in held):
            writer.write(b"GET /hea")  # stuck clients, holding their connections
        refused = []
        for _ in range(3):
            reader, writer = await _connect(site)
            refused.append(await _until_closed(reader))
            writer.close()
        assert site.gate.full
        assert all(answer in (REFUSAL, b"") for answer in refused)
        assert REFUSAL in refused  # at least one saw the 503 before the reset
        # The stuck clients go away: the process takes connections again.
        for _, writer in held:
            writer.close()
        await site.gate.wait_open_at_most(0)
        reader, writer = await _connect(site)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await _until_closed(reader)
        assert answer.startswith(b"HTTP/1.1 200")
        assert b"\nagent_connections_refused_total 3.0\n" in answer
        writer.close()
        assert not site.gate.full
    (full,) = _events(buffer, "server.connections_full")
    assert full["max_connections"] == 2
    (available,) = _events(buffer, "server.connections_available")
    assert available["refused"] == 3


async def test_a_request_body_over_64_kib_is_refused_with_413(serve: Serve) -> None:
    site = await serve()
    reader, writer = await _connect(site)
    body = b"CallSid=CA1&Pad=" + b"x" * (MAX_REQUEST_BYTES + 1)
    writer.write(
        b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), timeout=3600)
    assert status.startswith(b"HTTP/1.1 413")
    writer.close()


@pytest.mark.slow
@pytest.mark.real_time
async def test_agent_serve_closes_a_half_request_line_at_its_read_timeout(tmp_path: Path) -> None:
    """The same through ``agent serve`` itself (the CLI builds its server with these options)."""
    port = free_port()
    env = server_env(tmp_path, port, None, tmp_path / "calls.db", "slow-client-token-0123456789")
    env["HTTP_READ_TIMEOUT_S"] = "1"
    process, log = await start_server(port, env, tmp_path)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /twilio/voi")
        await writer.drain()
        # Closed after about 1 s, not aiohttp's default hour (the guard is only a hang guard).
        async with asyncio.timeout(scaled_timeout(15.0)):
            assert await reader.read() == b""
        writer.close()
    finally:
        process.terminate()
        await process.wait()
        await log.finish()
