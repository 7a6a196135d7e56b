"""The asyncio side of the Live preflight (:mod:`agent.live.preflight`): while the server runs,
check now and then that its key opens a Live session for every model its agents use; ``/readyz``
reads the schedule's last results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from agent.live.preflight import models_to_probe, probe
from agent.server.state import AGENTS, CALL_CLOCK, LIVE_BACKEND, LIVE_PREFLIGHT, METRICS, SETTINGS

log = structlog.get_logger("agent.app")

#: How long to wait for a start-up hook to provide the Live backend (the embedded emulator).
_NO_TARGET_WAIT_S = 1.0


async def run_preflight(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the preflight loop for the server's lifetime (none when
    ``LIVE_PREFLIGHT_INTERVAL_S=0``)."""
    if app[LIVE_PREFLIGHT] is None:
        yield
        return
    task = asyncio.get_running_loop().create_task(_loop(app), name="live preflight")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])


async def check_once(app: web.Application) -> None:
    """Probe every model now and record the results (the loop's step; tests call it too)."""
    preflight = app[LIVE_PREFLIGHT]
    target = app[LIVE_BACKEND].target
    if preflight is None or target is None:
        return
    schedule = preflight.schedule
    timeout_s = app[SETTINGS].live_connect_timeout_s
    results = [
        await probe(target, agent, timeout_s=timeout_s)
        for agent in models_to_probe(app[AGENTS].current.agents.values())
    ]
    for result in results:
        if result.kind is not None:
            app[METRICS].count_live_connect_failure(result.kind)
    failing, before = schedule.checked(app[CALL_CLOCK].now(), results)
    if failing:
        (log.error if not before else log.debug)(
            "live.preflight_failed",
            failures=[result.describe() for result in results if not result.ok],
        )
    elif before or schedule.checks == 1:
        log.info("live.preflight_ok", models=sorted({result.model for result in results}))
    await preflight.announce()


async def _loop(app: web.Application) -> None:
    preflight = app[LIVE_PREFLIGHT]
    assert preflight is not None
    schedule = preflight.schedule
    clock = app[CALL_CLOCK]
    while True:
        if app[LIVE_BACKEND].target is None:
            await asyncio.sleep(clock.wall(_NO_TARGET_WAIT_S))
            continue
        now = clock.now()
        if schedule.due(now):
            try:
                await check_once(app)
            except Exception as exc:  # the loop must outlive a bug in one check
                log.error("live.preflight_error", error=repr(exc))
                schedule.checked(clock.now(), schedule.results)
                await preflight.announce()
            continue
        await asyncio.sleep(clock.wall(schedule.next_deadline(now) - now))
