"""In-process fixtures: the Live API emulator, the bridge, both on loopback ports.

The simulators run faster than real time (``SPEED``): timing is not what these tests check, and
the emulator's VAD and the carrier's clock both count audio time, so behaviour is the same.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from agent.agents import AgentRegistryHolder
from agent.app import create_app
from agent.audio.codec import read_wav
from agent.clock import Clock
from agent.config import DEFAULT_AGENT, AgentConfig
from agent.live.connection import LiveTarget
from agent.live.link import ReconnectPolicy
from agent.settings import Settings
from agent.sim.live_emulator import EmulatorOptions, RunningEmulator, start_emulator

SPEED = 10.0
FIXTURES = Path(__file__).parent.parent / "fixtures"


def caller_clip(name: str) -> bytes:
    """A caller fixture as 8 kHz PCM16."""
    pcm, rate = read_wav(FIXTURES / f"caller-{name}.wav")
    assert rate == 8000
    return pcm


@dataclass
class Bridge:
    url: str
    app: web.Application
    settings: Settings


BridgeFactory = Callable[..., Awaitable[Bridge]]


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    running = await start_emulator(EmulatorOptions(speed=SPEED))
    yield running
    await running.close()


@pytest.fixture
async def start_bridge(emulator: RunningEmulator, tmp_path: Path) -> AsyncIterator[BridgeFactory]:
    """Start the real app on a free loopback port; settings overridable per test."""
    runners: list[web.AppRunner] = []

    async def start(
        *,
        agent: AgentConfig | None = DEFAULT_AGENT,
        agents: AgentRegistryHolder | None = None,
        reconnect_policy: ReconnectPolicy = ReconnectPolicy(),  # noqa: B008 (frozen)
        live_target: LiveTarget | None = None,
        **overrides: object,
    ) -> Bridge:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        settings = Settings(
            port=port,
            public_url=url,
            database_url=f"sqlite:///{tmp_path}/calls-{port}.db",
            crm_database_url=f"sqlite:///{tmp_path}/crm-{port}.db",
            **overrides,  # type: ignore[arg-type]
        )
        app = create_app(
            settings,
            live_target=live_target or LiveTarget(base_url=emulator.url),
            agent=None if agents is not None else agent,
            agents=agents,
            reconnect_policy=reconnect_policy,
            call_clock=Clock(SPEED),
        )
        runner = web.AppRunner(app)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        runners.append(runner)
        return Bridge(url, app, settings)

    yield start
    for runner in runners:
        await runner.cleanup()
