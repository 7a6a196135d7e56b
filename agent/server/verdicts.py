"""An outbound call's plan and answering-machine verdict as this replica finds them: in its own
memory when Twilio's request reached it, else in the shared state (any replica may have)."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from agent.errors import SharedStateError
from agent.server.state import CALL_CLOCK, OUTBOUND, SHARED
from agent.telephony.outbound import OutboundPlan, plan_key, verdict_key

log = structlog.get_logger("agent.app")


async def load_plan(app: web.Application, call_sid: str) -> OutboundPlan | None:
    """The call's outbound plan (None: an inbound call, or one this bridge did not place)."""
    plan = app[OUTBOUND].plans.get(call_sid)
    if plan is not None:
        return plan
    try:
        text = await app[SHARED].peek_answer(plan_key(call_sid))
    except SharedStateError as exc:
        log.warning("shared_state.unavailable", error=str(exc), action="taken as inbound")
        return None
    return None if text is None else OutboundPlan.from_json(text)


async def wait_verdict(app: web.Application, call_sid: str, wait_s: float) -> str | None:
    """The call's ``AnsweredBy``, waiting up to ``wait_s`` (call-clock seconds) for it: at once
    when it reaches this replica, else from the shared state after the wait."""
    outbound = app[OUTBOUND]
    local = outbound.verdicts.get(call_sid)
    if local is not None:
        return local
    try:
        shared = await app[SHARED].peek_answer(verdict_key(call_sid))
    except SharedStateError:
        shared = None
    if shared is not None:
        return shared
    arrived = outbound.arrivals.setdefault(call_sid, asyncio.Event())
    try:
        async with asyncio.timeout(app[CALL_CLOCK].wall(wait_s)):
            await arrived.wait()
    except TimeoutError:
        pass
    return outbound.verdicts.get(call_sid)


def forget(app: web.Application, call_sid: str) -> None:
    """The call is over: drop what this replica kept for it."""
    outbound = app[OUTBOUND]
    outbound.plans.pop(call_sid, None)
    outbound.verdicts.pop(call_sid, None)
    outbound.arrivals.pop(call_sid, None)
