"""In-process fixtures: the Live API emulator, the bridge, both on loopback ports.

Every integration test runs its event loop on **simulated time** (``looptime``): the loop's clock
stands still while any task has work to do, and jumps to the next timer when all of them wait. The
bridge, the carrier simulator and the emulator all read that one clock (``agent.clock`` reads the
running loop's), so

* a call with 20 s of audio takes a fraction of a second of wall time;
* a message crosses loopback in no simulated time, so what the bridge estimates and what the
  carrier did are one quantity, asserted exactly;
* a busy machine makes a run slower, never different: nothing here depends on the wall clock.

A test that talks to another process (whose clock is the real one) is marked ``real_time`` and
gets an ordinary loop; it waits on what the other process says, with timeouts scaled by
``tests/timing.py``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import looptime
import pytest
from aiohttp import web

from agent.audio.codec import read_wav
from agent.config.models import DEFAULT_AGENT, AgentConfig
from agent.config.reload import AgentRegistryHolder
from agent.live.budget import CircuitBreaker
from agent.live.link import ReconnectPolicy
from agent.live.targets import DeveloperApiTarget, LiveEndpoint
from agent.server.app import create_app
from agent.server.siblings import WorkerLoads
from agent.settings import Settings
from agent.sim.live.server import EmulatorOptions, RunningEmulator, start_emulator

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


def simulated_time_loop() -> asyncio.AbstractEventLoop:
    """An event loop whose clock moves only when every task is waiting."""
    return looptime.new_event_loop(start=0.0)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every integration test runs on simulated time, except those marked ``real_time``."""
    if item.get_closest_marker("real_time") is not None:
        return {"real-time": asyncio.new_event_loop}
    return {"simulated-time": simulated_time_loop}


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    running = await start_emulator(EmulatorOptions())
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
        live_breaker: CircuitBreaker | None = None,
        live_target: LiveEndpoint | None = None,
        worker_loads: WorkerLoads | None = None,
        clock: Callable[[], float] = time.time,
        **overrides: object,
    ) -> Bridge:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        fields: dict[str, object] = {
            "port": port,
            "public_url": url,  # a test standing a balancer in front overrides it
            "database_url": f"sqlite:///{tmp_path}/calls-{port}.db",
            "crm_database_url": f"sqlite:///{tmp_path}/crm-{port}.db",
            # Off unless a test is about it: its connections would shift the emulator's
            # connection indices that tests address.
            "live_preflight_interval_s": 0,
        }
        settings = Settings(**(fields | overrides))
        app = create_app(
            settings,
            live_target=live_target or DeveloperApiTarget(base_url=emulator.url),
            agent=None if agents is not None else agent,
            agents=agents,
            reconnect_policy=reconnect_policy,
            live_breaker=live_breaker,
            worker_loads=worker_loads,
            clock=clock,
        )
        runner = web.AppRunner(app)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        runners.append(runner)
        return Bridge(url, app, settings)

    yield start
    for runner in runners:
        await runner.cleanup()


async def start_two_replicas(
    start_bridge: BridgeFactory,
    *,
    public_url: str,
    database: str,
    emulator: RunningEmulator,
    auth_token: str,
    agent: AgentConfig | None = None,
    agents: Callable[[], AgentRegistryHolder] | None = None,
) -> tuple[Bridge, Bridge]:
    """Two replicas as a deployment runs them: behind one ``public_url`` (the test's balancer),
    signing with one Twilio token, sharing one database (PostgreSQL: records and shared state)
    and one Live backend. The agent is ``agent``, or each replica's own registry from
    ``agents``."""
    shared: dict[str, object] = {
        "public_url": public_url,
        "twilio_auth_token": auth_token,
        "database_url": database,
        "shared_state_url": database,
        "live_target": DeveloperApiTarget(base_url=emulator.url),
    }
    replicas = []
    for _ in range(2):
        if agents is not None:
            replicas.append(await start_bridge(agents=agents(), **shared))
        else:
            replicas.append(await start_bridge(agent=agent or DEFAULT_AGENT, **shared))
    return replicas[0], replicas[1]
