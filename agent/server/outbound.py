"""Outbound calls: ``POST /calls`` (and ``agent dial``, which uses it), and Twilio's requests
about the calls it places: the answer webhook, the status callback, the answering-machine
verdict.

The flow (every Twilio request signed, and verified like the voice webhook)::

    POST /calls {to, agent, params}      Bearer CALLS_API_TOKEN
      -> Twilio Calls.json create        Url=/twilio/outbound, StatusCallback=/twilio/call-status,
                                         MachineDetection=DetectMessageEnd, AsyncAmd=true,
                                         AsyncAmdStatusCallback=/twilio/amd
      -> the call's plan in the shared state; its Live session pre-connected while it rings
    POST /twilio/outbound (answered)     -> <Connect><Stream>: the session holds its greeting
    POST /twilio/amd      (AnsweredBy)   -> the verdict in the shared state (and to a waiting
                                            session here at once); the session on whichever
                                            replica holds the stream reads it from there
    POST /twilio/call-status             -> busy / no-answer / failed / canceled recorded, and
                                            busy / no-answer dialled again (max_attempts)

Replicas: Twilio's answer, status and AMD requests may each reach any replica. The plan and the
verdict live in the shared state (``SHARED_STATE_URL``; this process's memory when alone), so
the replica that holds the stream learns the verdict within ``VERDICT_WAIT_S``. A retry is
scheduled by the replica that received the final status; if it stops before the delay is
over, that retry is lost (logged when scheduled as ``call.dial_retry_scheduled``).
"""

from __future__ import annotations

import asyncio
import hmac
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from aiohttp import web

from agent.config.hours import CallingHours
from agent.errors import DialRefusedError, SharedStateError, TelephonyError
from agent.numbers import is_e164
from agent.server.context import agent_for_call
from agent.server.preconnect import open_preconnect, release_preconnect
from agent.server.state import (
    AGENTS,
    CALL_CLOCK,
    CLOCK,
    OUTBOUND,
    RECORDS,
    SETTINGS,
    SHARED,
    STREAM_TOKENS,
    TOOLS,
)
from agent.server.stream import STREAM_PATH
from agent.server.transfer import transfer_key
from agent.server.verdicts import forget, load_plan
from agent.server.webhooks import CONTINUE_PATH, signed_request
from agent.telephony.outbound import (
    ANSWERED_BY,
    NOT_ANSWERED,
    OutboundPlan,
    parse_params,
    plan_key,
    retry_after,
    verdict_key,
)
from agent.telephony.rest import create_call_params
from agent.telephony.webhooks import (
    connect_stream_twiml,
    hangup_twiml,
    stream_url_from_public_url,
)

log = structlog.get_logger("agent.app")

CALLS_PATH: Final = "/calls"
ANSWER_PATH: Final = "/twilio/outbound"
STATUS_PATH: Final = "/twilio/call-status"
AMD_PATH: Final = "/twilio/amd"

# A pre-connected session of an outbound call waits for its ringing, and this much more.
_PRECONNECT_SLACK_S: Final = 15.0


async def dial(
    app: web.Application,
    *,
    to: str,
    agent_name: str,
    params: dict[str, str] | None = None,
    time_zone: str | None = None,
    attempt: int = 1,
) -> str:
    """Place an outbound call to ``to`` for the agent ``agent_name``; its CallSid.

    Raises :class:`DialRefusedError` (saying why and what to do) before anything rings: an
    unknown agent, an agent without ``outbound.caller_id``, a number that is not E.164, no
    Twilio REST credentials, or a time outside the agent's calling hours; and
    :class:`~agent.telephony.rest.TwilioApiError` when Twilio refuses the call.
    """
    registry = app[AGENTS].current
    configured = registry.by_name(agent_name)
    if configured is None:
        known = ", ".join(sorted(registry.agents))
        raise DialRefusedError(f"no agent named {agent_name!r} (agents: {known})")
    outbound = configured.outbound
    if outbound.caller_id is None:
        raise DialRefusedError(
            f"agent {agent_name!r} has no outbound.caller_id: set the number to call from in "
            "its file"
        )
    if not is_e164(to):
        raise DialRefusedError(f"{to!r} is not an E.164 number such as +15555550100")
    twilio = app[TOOLS].twilio
    if twilio is None:
        raise DialRefusedError(
            "outbound calls need Twilio's REST API: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
        )
    zone = time_zone or outbound.callee_timezone or configured.timezone
    if outbound.calling_hours is not None:
        hours = CallingHours.parse(outbound.calling_hours)
        now = datetime.fromtimestamp(app[CLOCK](), UTC)
        if not hours.open_at(now, zone):
            opens = hours.next_opening(now, zone)
            raise DialRefusedError(
                f"outside agent {agent_name!r}'s calling hours ({hours} {zone}): the callee's "
                f"time is {now.astimezone(opens.tzinfo):%H:%M}; dial from "
                f"{opens:%Y-%m-%d %H:%M} {zone}"
            )
    public_url = app[SETTINGS].public_url
    form = create_call_params(
        to=to,
        from_=outbound.caller_id,
        answer_url=public_url + ANSWER_PATH,
        status_callback=public_url + STATUS_PATH,
        amd_callback=public_url + AMD_PATH,
        ring_timeout_s=outbound.ring_timeout_s,
        amd_timeout_s=outbound.amd_timeout_s,
    )
    call_sid = await twilio.create_call(form)
    plan = OutboundPlan(agent_name, to, outbound.caller_id, attempt, dict(params or {}))
    try:
        await app[SHARED].answer_once(plan_key(call_sid), plan.to_json(), app[CLOCK]())
    except SharedStateError as exc:
        # The answer webhook then finds no plan on another replica: it still connects the call
        # (with the number's agent), and this replica still has the plan for its own.
        log.warning("shared_state.unavailable", error=str(exc), action="plan kept here only")
    app[OUTBOUND].plans[call_sid] = plan
    structlog.contextvars.bind_contextvars(call_sid=call_sid)
    log.info("call.dialled", agent=agent_name, to=to, attempt=attempt)
    # The callee's number is "the caller" to the agent: the other party of the conversation.
    agent, _ = await agent_for_call(
        app, configured, call_sid, to, outbound.caller_id, False, params=plan.params
    )
    await open_preconnect(
        app,
        call_sid,
        agent,
        to,
        outbound.caller_id,
        greet=False,
        timeout_s=outbound.ring_timeout_s + outbound.amd_timeout_s + _PRECONNECT_SLACK_S,
    )
    return call_sid


# -- POST /calls -------------------------------------------------------------------------------


async def create_call(request: web.Request) -> web.Response:
    """``POST /calls`` with ``Authorization: Bearer <CALLS_API_TOKEN>`` and a JSON body
    ``{"to": "+E164", "agent": "name", "params": {"k": "v"}, "timezone": "IANA"}``: place an
    outbound call. 201 ``{"call_sid": ...}``; 400 for a body that is not that, 401 for a wrong
    token, 404 when no token is configured (the endpoint is off), 422 when the dial is
    refused (the reason in ``error``), 502 when Twilio refuses it."""
    app = request.app
    token = app[SETTINGS].calls_api_token
    if token is None:
        return _refused(404, "POST /calls is off: set CALLS_API_TOKEN to turn it on")
    given = request.headers.get("Authorization", "")
    scheme, _, presented = given.partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(), expected):
        log.warning("calls_api.unauthorised", security=True)  # never the token
        return _refused(401, "a Bearer token is needed", {"WWW-Authenticate": "Bearer"})
    try:
        body = await request.json()
    except ValueError:
        return _refused(400, "the body must be a JSON object")
    if not isinstance(body, dict):
        return _refused(400, "the body must be a JSON object")
    to, agent_name = body.get("to"), body.get("agent")
    raw_params, time_zone = body.get("params") or {}, body.get("timezone")
    if not isinstance(to, str) or not isinstance(agent_name, str):
        return _refused(400, '"to" and "agent" are required strings')
    if not isinstance(raw_params, dict) or not (time_zone is None or isinstance(time_zone, str)):
        return _refused(400, '"params" must be an object, "timezone" a string')
    try:
        params = parse_params({str(k): str(v) for k, v in raw_params.items()})
    except ValueError as exc:
        return _refused(400, str(exc))
    try:
        call_sid = await dial(app, to=to, agent_name=agent_name, params=params, time_zone=time_zone)
    except DialRefusedError as exc:
        log.info("call.dial_refused", reason=str(exc))
        return _refused(422, str(exc))
    except TelephonyError as exc:
        return _refused(502, str(exc))
    return web.json_response({"call_sid": call_sid, "status": "queued"}, status=201)


def _refused(status: int, error: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error}, status=status, headers=headers)


# -- Twilio's requests about our calls --------------------------------------------------------


async def answer_outbound(request: web.Request) -> web.Response:
    """The ``Url`` of our outbound calls: Twilio requests it when the callee picks up (before
    any answering-machine verdict: detection is asynchronous) and runs the ``<Connect><Stream>``
    it answers. The stream's session holds its greeting until the verdict."""
    app = request.app
    _, call_sid = await signed_request(request)
    structlog.contextvars.bind_contextvars(call_sid=call_sid)
    plan = await load_plan(app, call_sid)
    if plan is None:
        log.warning("call.outbound_unknown", reason="no plan for this call")
        return web.Response(text=hangup_twiml(), content_type="text/xml")
    token = app[STREAM_TOKENS].issue(
        call_sid,
        app[CLOCK](),
        agent=plan.agent,
        from_number=plan.to_number,
        to_number=plan.from_number,
    )
    settings = app[SETTINGS]
    twiml = connect_stream_twiml(
        stream_url_from_public_url(settings.stream_url or settings.public_url, STREAM_PATH),
        {"agent": plan.agent, "token": token},
        action=settings.public_url + CONTINUE_PATH,
    )
    try:
        first = await app[SHARED].answer_once(f"{call_sid}/answered", twiml, app[CLOCK]())
    except SharedStateError:
        first = twiml
    log.info("call.outbound_answered", agent=plan.agent, attempt=plan.attempt)
    return web.Response(text=first, content_type="text/xml")


async def amd_status(request: web.Request) -> web.Response:
    """``AsyncAmdStatusCallback``: Twilio's ``AnsweredBy`` for one of our calls. Kept in the
    shared state (the first verdict counts) and handed to a session waiting here."""
    app = request.app
    params, call_sid = await signed_request(request)
    answered_by = params.get("AnsweredBy", "")
    if answered_by not in ANSWERED_BY:
        log.warning("twilio.amd_unknown", call_sid=call_sid, answered_by=answered_by[:40])
        answered_by = "unknown"
    try:
        first = await app[SHARED].answer_once(verdict_key(call_sid), answered_by, app[CLOCK]())
    except SharedStateError as exc:
        log.warning("shared_state.unavailable", error=str(exc), action="verdict kept here")
        first = answered_by
    outbound = app[OUTBOUND]
    outbound.verdicts.setdefault(call_sid, first)
    arrived = outbound.arrivals.get(call_sid)
    if arrived is not None:
        arrived.set()
    log.info(
        "call.amd_verdict",
        call_sid=call_sid,
        answered_by=first,
        detection_ms=params.get("MachineDetectionDuration"),
    )
    return web.Response(status=204)


async def call_status(request: web.Request) -> web.Response:
    """``StatusCallback``: our call's progress. A final status nobody answered (busy,
    no-answer, failed, canceled) is recorded as the call's end, and busy / no-answer is dialled
    again after ``retry_delay_s`` until ``max_attempts``."""
    app = request.app
    params, call_sid = await signed_request(request)
    status = params.get("CallStatus", "")
    if status == "completed":
        forget(app, call_sid)
        return web.Response(status=204)
    if status not in NOT_ANSWERED:
        return web.Response(status=204)
    # Twilio may send a callback again: one replica acts on it, once.
    try:
        first = await app[SHARED].answer_once(f"{call_sid}/final", status, app[CLOCK]())
    except SharedStateError:
        first = status
    plan = await load_plan(app, call_sid)
    await release_preconnect(app, call_sid, f"call {status}")
    forget(app, call_sid)
    if first != status or plan is None:
        return web.Response(status=204)
    configured = app[AGENTS].current.by_name(plan.agent)
    outbound = configured.outbound if configured is not None else None
    now = app[CLOCK]()
    recorder = app[RECORDS].recorder(call_sid)
    recorder.started(
        call_sid=call_sid,
        stream_sid="",
        agent=plan.agent,
        from_number=plan.to_number,
        to_number=plan.from_number,
        started_at=now,
    )
    summary: dict[str, Any] = {"direction": "outbound", "attempt": plan.attempt}
    recorder.ended(reason=status, ended_at=now, summary=summary)
    delay = (
        None
        if outbound is None
        else retry_after(status, plan.attempt, outbound.max_attempts, outbound.retry_delay_s)
    )
    log.info("call.not_answered", call_sid=call_sid, status=status, attempt=plan.attempt)
    if delay is not None:
        log.info("call.dial_retry_scheduled", call_sid=call_sid, delay_s=delay)
        retries = app[OUTBOUND].retries
        task = asyncio.get_running_loop().create_task(_redial(app, plan.next_attempt(), delay))
        retries.add(task)
        task.add_done_callback(retries.discard)
    return web.Response(status=204)


async def _redial(app: web.Application, plan: OutboundPlan, delay_s: float) -> None:
    await asyncio.sleep(app[CALL_CLOCK].wall(delay_s))
    try:
        await dial(
            app,
            to=plan.to_number,
            agent_name=plan.agent,
            params=plan.params,
            attempt=plan.attempt,
        )
    except TelephonyError as exc:
        log.warning("call.dial_retry_failed", attempt=plan.attempt, error=str(exc))


async def cancel_retries(app: web.Application) -> None:
    """At shutdown: retries not yet dialled are dropped (logged), not waited for."""
    retries = list(app[OUTBOUND].retries)
    for task in retries:
        task.cancel()
    if retries:
        log.warning("call.dial_retries_dropped", count=len(retries))
        await asyncio.wait(retries)


async def warm_status(request: web.Request) -> web.Response:
    """The colleague's leg of a warm transfer: answered (``in-progress``), or ended unanswered."""
    app = request.app
    params, _ = await signed_request(request)
    caller_sid = request.query.get("for", "")
    status = params.get("CallStatus", "")
    if status == "in-progress":
        outcome = "answered"
    elif status in NOT_ANSWERED:
        outcome = status
    else:
        return web.Response(status=204)
    try:
        first = await app[SHARED].answer_once(transfer_key(caller_sid), outcome, app[CLOCK]())
    except SharedStateError as exc:
        log.warning("shared_state.unavailable", error=str(exc), action="outcome kept here")
        first = outcome
    outbound = app[OUTBOUND]
    outbound.transfers.setdefault(caller_sid, first)
    arrived = outbound.arrivals.get(transfer_key(caller_sid))
    if arrived is not None:
        arrived.set()
    log.info("call.warm_transfer_outcome", call_sid=caller_sid, outcome=first)
    return web.Response(status=204)
