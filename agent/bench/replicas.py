"""``agent bench --only replicas``: two replicas behind one URL, in this process, at real time.

* **failover**: a call's media stream is cut mid-call (as when its replica dies; the balancer
  stand-in drops the connection) right after the agent's greeting. Twilio's ``<Connect action>``
  (the carrier simulator) lands the call on the other replica, which continues it. Measured: the
  caller-perceived silence, from the cut to the first agent audio on the new stream. Target:
  at most 2 s on loopback.
* **greeting, stream on the webhook's replica / on another**: the time from the stream's
  ``start`` to the greeting's first audio, when the stream reaches the replica that pre-connected
  at the webhook and when it reaches another one (which then connects itself).

Both replicas share their state in one SQLite file (as the workers of one machine do).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from agent.bench.calls import median
from agent.bench.report import Section, judged, reported
from agent.config.models import AgentConfig
from agent.live.targets import DeveloperApiTarget
from agent.server.app import create_app
from agent.server.state import CALLS
from agent.settings import Settings
from agent.sim.balancer import CallRoute, RunningBalancer, start_balancer
from agent.sim.carrier import CarrierOptions, load_caller_audio, place_call
from agent.sim.live.server import EmulatorOptions, RunningEmulator, start_emulator

FAILOVER_TARGET_S: Final = 2.0
BENCH_TICKET_KEY: Final = "agent-bench-replicas-ticket-key"
GREETER: Final = AgentConfig(greeting="Greet the caller warmly and offer help.")


@dataclass
class _Arrivals:
    """A carrier observer: when each message of the call arrived, and when ``start`` went out."""

    arrived: list[tuple[float, str]] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def sent(self, message: Mapping[str, Any]) -> None:
        if message.get("event") == "start":
            self.starts.append(time.perf_counter())

    def received(self, text: str) -> None:
        with contextlib.suppress(ValueError, AttributeError):
            self.arrived.append((time.perf_counter(), str(json.loads(text).get("event"))))
            self.changed.set()

    def hang_up_now(self) -> bool:
        return False

    def first_media_after(self, t: float) -> float | None:
        return next((at for at, kind in self.arrived if kind == "media" and at > t), None)


async def _replica(emulator: RunningEmulator, tmp: Path, name: str, lb: str) -> web.AppRunner:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = Settings(
        host="127.0.0.1",
        port=port,
        public_url=lb,
        database_url=f"sqlite:///{tmp / f'calls-{name}.db'}",
        crm_database_url=f"sqlite:///{tmp / f'crm-{name}.db'}",
        shared_state_url=f"sqlite:///{tmp / 'shared.db'}",
        stream_token_secret=BENCH_TICKET_KEY,  # replicas share it, as they must
        # No Live preflight: its connections would be counted with the calls'.
        live_preflight_interval_s=0,
    )
    app = create_app(settings, live_target=DeveloperApiTarget(base_url=emulator.url), agent=GREETER)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


@contextlib.asynccontextmanager
async def _two_replicas() -> AsyncIterator[tuple[RunningBalancer, CallRoute, list[web.AppRunner]]]:
    plan = CallRoute()

    with tempfile.TemporaryDirectory(prefix="agent-bench-replicas-") as folder:
        emulator = await start_emulator(EmulatorOptions(think_ms=0))
        lb = await start_balancer(plan)
        runners: list[web.AppRunner] = []
        try:
            for name in ("a", "b"):
                runners.append(await _replica(emulator, Path(folder), name, lb.url))
            yield lb, plan, runners
        finally:
            for runner in runners:
                await runner.cleanup()
            await lb.close()
            await emulator.close()


def _url(runner: web.AppRunner) -> str:
    (site,) = runner.sites
    return site.name  # http://127.0.0.1:PORT


async def run_replicas_bench(rounds: int = 3) -> Section:
    """The failover silence and the greeting on either replica, ``rounds`` calls each."""
    section = Section("replicas")
    clip = load_caller_audio("order-status")
    gaps: list[float] = []
    greetings: dict[str, list[float]] = {"same": [], "other": []}
    async with _two_replicas() as (lb, plan, (a, b)):
        options = CarrierOptions(url=lb.url, max_duration_s=60)
        for _ in range(rounds):
            plan.next_call(_url(a), _url(a), _url(b))
            arrivals = _Arrivals()
            call = asyncio.create_task(place_call(options, [clip], observer=arrivals))
            calls = a.app[CALLS]
            await calls.wait_active()
            (session,) = calls.active.values()
            await session.turn_completed(1)  # the greeting is over: the call is mid-conversation
            cut = time.perf_counter()
            await lb.balancer.drop_streams()
            while (resumed := arrivals.first_media_after(cut)) is None and not call.done():
                arrivals.changed.clear()
                await arrivals.changed.wait()
            await call
            if resumed is not None:
                gaps.append(resumed - cut)
        for case, stream_to in (("same", a), ("other", b)):
            for _ in range(rounds):
                plan.next_call(_url(a), _url(stream_to), _url(stream_to))
                arrivals = _Arrivals()
                await place_call(options, [], observer=arrivals)
                first = arrivals.first_media_after(arrivals.starts[0]) if arrivals.starts else None
                if first is not None:
                    greetings[case].append(first - arrivals.starts[0])
    section.figures = [
        judged(
            "failover: silence from the cut to the agent's next audio",
            median(gaps),
            "s",
            FAILOVER_TARGET_S,
            f"median of {len(gaps)}; max {_s(max(gaps) if gaps else None)} s",
        ),
        reported(
            "greeting after start, stream on the webhook's replica",
            _ms(median(greetings["same"])),
            "ms",
            f"pre-connected; max {_s_ms(max(greetings['same'], default=None))} ms",
        ),
        reported(
            "greeting after start, stream on another replica",
            _ms(median(greetings["other"])),
            "ms",
            f"connects at start; max {_s_ms(max(greetings['other'], default=None))} ms",
        ),
    ]
    section.details = {"failover_gaps_s": gaps, "greetings_s": greetings}
    return section


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def _s_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"
