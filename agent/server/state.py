"""What the app keeps, in typed ``AppKey`` slots, and the small objects behind them."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from agent.call.active import ActiveCalls
from agent.clock import Clock
from agent.cluster.state import SharedState
from agent.config.models import AgentConfig
from agent.config.reload import AgentRegistryHolder
from agent.config.tools import ToolSpec
from agent.crm import Crm
from agent.live.budget import CircuitBreaker
from agent.live.link import LiveLink, ReconnectPolicy
from agent.live.preflight import PreflightSchedule
from agent.live.targets import LiveEndpoint
from agent.observability.metrics import Metrics
from agent.observability.pricing import PriceTable
from agent.records.store import CallRecordStore
from agent.server.siblings import WorkerLoads
from agent.settings import Settings
from agent.telephony.outbound import OutboundPlan
from agent.telephony.rest import TwilioRest
from agent.telephony.webhooks import (
    StreamTokens,
)
from agent.tools import Toolbox

log = structlog.get_logger("agent.app")


class Background:
    """Fire-and-forget tasks the app still owns: kept referenced, awaited at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks))


@dataclass(slots=True)
class Preconnect:
    """A Live session opened at the voice webhook, waiting for its media stream."""

    agent: AgentConfig  # rendered for this call (prompt templated, CRM record included)
    link: LiveLink
    ready: asyncio.Task[None]
    expiry: asyncio.TimerHandle
    from_number: str | None = None
    to_number: str | None = None
    caller_verified: bool = False  # Twilio's StirVerstat reported a passed attestation


@dataclass(slots=True)
class OutboundCalls:
    """What this replica keeps of the outbound calls it placed or heard about: their plans
    (also in the shared state), the answering-machine verdicts that reached it, an event per
    call whose session waits for one, and the retries it has scheduled."""

    plans: dict[str, OutboundPlan] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    arrivals: dict[str, asyncio.Event] = field(default_factory=dict)
    retries: set[asyncio.Task[None]] = field(default_factory=set)
    #: Warm transfers: the caller's CallSid -> how the colleague's leg went.
    transfers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ServerState:
    """Whether this process still takes new calls (false once draining for a shutdown), and
    whether it is stopping (its calls are being ended: it continues none)."""

    draining: bool = False
    stopping: bool = False
    loopback_warned: bool = False  # server.public_url_loopback is said once per process
    # Told on /healthz, so ``agent doctor`` can see whether PUBLIC_URL reaches this process.
    instance: str = field(default_factory=lambda: secrets.token_hex(8))


@dataclass(slots=True)
class LiveBackend:
    """Where calls' Live sessions go. Mutable so a start-up hook can fill it in (the emulator)."""

    target: LiveEndpoint | None = None


@dataclass(slots=True)
class LivePreflight:
    """The Live preflight's schedule and last results, and a way to wait for a check."""

    schedule: PreflightSchedule
    _checked: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def announce(self) -> None:
        """A check ended (the adapter calls this after each)."""
        async with self._checked:
            self._checked.notify_all()

    async def wait_checks(self, count: int) -> None:
        """Until ``count`` checks have ended since start-up."""
        async with self._checked:
            await self._checked.wait_for(lambda: self.schedule.checks >= count)


@dataclass(slots=True)
class Tools:
    """What tools run with: one HTTP session, the CRM, the Twilio REST client (made at start-up,
    on the running loop) and a toolbox per agent configuration."""

    http: aiohttp.ClientSession | None = None
    crm: Crm | None = None
    twilio: TwilioRest | None = None
    # Per agent name, each version of its tools seen (a reload adds one) and its toolbox.
    toolboxes: dict[str, list[tuple[tuple[ToolSpec, ...], Toolbox]]] = field(default_factory=dict)


SETTINGS = web.AppKey("settings", Settings)


AGENTS = web.AppKey("agents", AgentRegistryHolder)


TOOLS = web.AppKey("tools", Tools)


LIVE_BACKEND = web.AppKey("live_backend", LiveBackend)


STREAM_TOKENS = web.AppKey("stream_tokens", StreamTokens)


CALL_SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("call_sockets")


CALLS = web.AppKey("calls", ActiveCalls)


CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")


CALL_CLOCK = web.AppKey("call_clock", Clock)


RECONNECT_POLICY = web.AppKey("reconnect_policy", ReconnectPolicy)


# Shared by every Live session of this process: see agent.live.budget.
LIVE_BREAKER = web.AppKey("live_breaker", CircuitBreaker)


# The Live preflight (None: LIVE_PREFLIGHT_INTERVAL_S=0, no checks).
LIVE_PREFLIGHT: web.AppKey[LivePreflight | None] = web.AppKey("live_preflight")


PRECONNECTS: web.AppKey[dict[str, Preconnect]] = web.AppKey("preconnects")


BACKGROUND = web.AppKey("background", Background)


STATE = web.AppKey("state", ServerState)


# This worker's and its siblings' loads under ``agent serve --workers N``; None for a lone process.
WORKER_LOADS: web.AppKey[WorkerLoads | None] = web.AppKey("worker_loads")


METRICS = web.AppKey("metrics", Metrics)


RECORDS: web.AppKey[CallRecordStore] = web.AppKey("records")


PRICES = web.AppKey("prices", PriceTable)


SHARED: web.AppKey[SharedState] = web.AppKey("shared")


#: How often a replica asks the shared state whether another replica took the stream of a call it
#: pre-connected (then it releases that Live session rather than keeping it open until it expires).
PRECONNECT_POLL_S = 2.0

#: Outbound calls: plans, verdicts and retries (:mod:`agent.server.outbound`).
OUTBOUND = web.AppKey("outbound", OutboundCalls)
