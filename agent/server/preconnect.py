"""Live sessions for calls: opened at the voice webhook so the greeting is ready when the stream
starts (pre-connect), released when the stream went to another replica or never came."""

from __future__ import annotations

import asyncio
import time

import structlog
from aiohttp import web

from agent.config.models import AgentConfig
from agent.errors import LiveConnectError, SharedStateError
from agent.live import protocol
from agent.live.connection import LiveConnection
from agent.live.link import LiveLink, Opener
from agent.live.models import wire_profile
from agent.server.state import (
    BACKGROUND,
    CALL_CLOCK,
    LIVE_BACKEND,
    LIVE_BREAKER,
    METRICS,
    PRECONNECT_POLL_S,
    PRECONNECTS,
    RECONNECT_POLICY,
    SETTINGS,
    SHARED,
    Preconnect,
)

log = structlog.get_logger("agent.app")


async def release_taken_preconnects(app: web.Application) -> None:
    """Release, within :data:`PRECONNECT_POLL_S`, each pre-connected Live session whose media
    stream another replica accepted: it would only idle (its greeting already billed) until
    it expired."""
    preconnects: dict[str, Preconnect] = app[PRECONNECTS]
    while True:
        await asyncio.sleep(PRECONNECT_POLL_S)
        pending = list(preconnects)
        if not pending:
            continue
        try:
            taken = await app[SHARED].streams_started(pending)
        except SharedStateError as exc:
            log.warning("shared_state.unavailable", error=str(exc))
            continue
        for call_sid in taken:
            await release_preconnect(app, call_sid, "stream taken by another replica")


def new_link(app: web.Application, agent: AgentConfig) -> LiveLink:
    target = app[LIVE_BACKEND].target
    return LiveLink(
        live_opener(app, agent),
        app[RECONNECT_POLICY],
        clock=app[CALL_CLOCK],
        breaker=app[LIVE_BREAKER],
        health=app[METRICS],
        transparent=bool(agent.session_resumption and agent.session_resumption.transparent),
        wire=wire_profile(agent.model, target.backend if target is not None else "gemini"),
    )


def live_opener(app: web.Application, agent: AgentConfig) -> Opener:
    """How a call's link connects for ``agent`` (its setup), resuming with a handle if given."""
    return lambda handle: connect_live(app, agent, handle)


async def open_preconnect(
    app: web.Application,
    call_sid: str,
    agent: AgentConfig,
    from_number: str | None,
    to_number: str | None,
    *,
    caller_verified: bool = False,
    greet: bool = True,
    timeout_s: float | None = None,
) -> None:
    """Open the call's Live session, and ask for the greeting before the stream exists unless
    the agent says ``greeting_at: stream_start`` (the session then asks at ``start``) or
    ``greet`` is False (an outbound call: the greeting waits for the answering-machine
    verdict). ``timeout_s``: how long it waits for its stream (default the agent's
    ``preconnect_timeout_s``; an outbound call's rings first)."""
    await release_preconnect(app, call_sid, "webhook repeated")  # Twilio may retry a webhook
    link = new_link(app, agent)

    async def ready() -> None:
        await link.start()
        if greet and agent.greeting and agent.call.greeting_at == "webhook":
            await link.send(protocol.text_turn_message(agent.greeting))

    task = asyncio.get_running_loop().create_task(ready(), name=f"preconnect {call_sid}")
    expiry = asyncio.get_running_loop().call_later(
        agent.call.preconnect_timeout_s if timeout_s is None else timeout_s,
        lambda: app[BACKGROUND].spawn(release_preconnect(app, call_sid, "no media stream arrived")),
    )
    app[PRECONNECTS][call_sid] = Preconnect(
        agent, link, task, expiry, from_number, to_number, caller_verified
    )


async def release_preconnect(app: web.Application, call_sid: str, why: str) -> None:
    preconnect = app[PRECONNECTS].pop(call_sid, None)
    if preconnect is None:
        return
    preconnect.expiry.cancel()
    preconnect.ready.cancel()
    await asyncio.wait([preconnect.ready])  # never raises: the outcome is read below
    if not preconnect.ready.cancelled() and preconnect.ready.exception() is not None:
        log.warning(
            "live.preconnect_failed", call_sid=call_sid, error=str(preconnect.ready.exception())
        )
    await preconnect.link.close()
    log.info("live.preconnect_released", call_sid=call_sid, reason=why)


async def connect_live(
    app: web.Application, agent: AgentConfig, resumption_handle: str | None
) -> LiveConnection:
    target = app[LIVE_BACKEND].target
    if target is None:
        raise RuntimeError("no Live API backend configured")
    began = time.perf_counter()
    try:
        connection = await LiveConnection.open(
            target,
            agent,
            resumption_handle=resumption_handle,
            timeout_s=app[SETTINGS].live_connect_timeout_s,
        )
    except LiveConnectError as exc:
        app[METRICS].count_live_connect_failure(exc.kind)
        raise
    app[METRICS].observe_live_connect(time.perf_counter() - began)
    return connection
