"""Fixtures that point the official ``google-genai`` SDK at the local Live API emulator.

The Python SDK always connects with ``wss://`` (it rewrites the base URL's scheme), so the emulator
serves TLS with a throwaway certificate from a throwaway CA (``trustme``), and the client trusts
that CA through ``HttpOptions(async_client_args={"ssl": context})``: google-genai 3.4 hands the
``ssl`` entry of ``async_client_args`` to ``websockets.connect`` (``_api_client.
_ensure_websocket_ssl_ctx``). Nothing else differs from the Live API docs' code.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trustme
from google import genai
from google.genai import types

from agent.sim.live.server import EmulatorOptions, EmulatorSpeech, RunningEmulator, start_emulator


@dataclass(frozen=True)
class LiveTls:
    """A server context with a certificate for 127.0.0.1 and a client context that trusts it."""

    server: ssl.SSLContext
    client: ssl.SSLContext


@dataclass
class EmulatedLive:
    """A TLS emulator and an SDK client aimed at it."""

    emulator: RunningEmulator
    client: genai.Client


@pytest.fixture(scope="session")
def live_tls() -> LiveTls:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return LiveTls(server, client)


@pytest.fixture
async def live(
    live_tls: LiveTls,
) -> AsyncIterator[Callable[..., Awaitable[EmulatedLive]]]:
    """A factory: ``await live(**emulator_options)`` starts an emulator (speed 20 unless given;
    ``speech=`` its speech engines, none by default) and returns it with an SDK client;
    everything is closed after the test."""
    started: list[EmulatedLive] = []

    async def start(*, speech: EmulatorSpeech | None = None, **options: Any) -> EmulatedLive:
        options.setdefault("speed", 20.0)
        emulator = await start_emulator(
            EmulatorOptions(**options), ssl_context=live_tls.server, speech=speech
        )
        client = genai.Client(
            api_key="emulated-key",
            http_options=types.HttpOptions(
                base_url=f"https://127.0.0.1:{emulator.port}",
                async_client_args={"ssl": live_tls.client},
            ),
        )
        started.append(EmulatedLive(emulator, client))
        return started[-1]

    try:
        yield start
    finally:
        for item in started:
            await item.client.aio.aclose()
            await item.emulator.close()
