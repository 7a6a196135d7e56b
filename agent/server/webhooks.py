"""Twilio's HTTP requests: the voice webhook, and the ``<Connect action>`` that continues a call
whose stream ended while the call was up."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from agent.errors import SharedStateError
from agent.server.context import agent_for_call
from agent.server.preconnect import open_preconnect
from agent.server.siblings import machine_full
from agent.server.state import (
    AGENTS,
    CALLS,
    CLOCK,
    METRICS,
    PRECONNECTS,
    RECORDS,
    SETTINGS,
    SHARED,
    STATE,
    STREAM_TOKENS,
    WORKER_LOADS,
)
from agent.server.stream import STREAM_PATH
from agent.telephony.public_url import loopback_public_url_warning, signature_rejected_fields
from agent.telephony.webhooks import (
    connect_stream_twiml,
    hangup_twiml,
    stream_url_from_public_url,
    verify_signature,
)

log = structlog.get_logger("agent.app")


VOICE_PATH = "/twilio/voice"


CONTINUE_PATH = "/twilio/continue"


# Twilio's final call statuses: an action request for such a call can only hang up.
_CALL_OVER = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


def call_load(app: web.Application) -> int:
    """The calls this process has taken: in progress, plus answered webhooks whose stream has
    not started yet (pre-connects, each already holding a Live session)."""
    return len(app[CALLS].active) + len(app[PRECONNECTS])


def is_full(app: web.Application) -> bool:
    """Whether this process, or under ``--workers`` the machine, is at ``MAX_CALLS`` per worker:
    it takes no new call until one ends (see :mod:`agent.server.siblings`)."""
    loads = app[WORKER_LOADS]
    siblings = loads.siblings() if loads is not None else []
    return machine_full(call_load(app), app[SETTINGS].max_calls, siblings)


def publish_load(app: web.Application) -> None:
    """Under ``--workers``: tell the siblings this worker's load now (it also goes out a few
    times a second); nothing for a lone process."""
    loads = app[WORKER_LOADS]
    if loads is not None:
        loads.publish(call_load(app), not app[STATE].draining and not app[RECORDS].closed)


async def voice_webhook(request: web.Request) -> web.Response:
    """Answer an incoming call with TwiML that connects it to our media stream."""
    app = request.app
    params, call_sid = await signed_request(request)
    if app[STATE].draining:
        # Twilio then tries the number's fallback URL: another instance takes the call.
        log.warning("call.refused_draining", call_sid=call_sid)
        app[METRICS].count_call_refused("draining")
        raise web.HTTPServiceUnavailable(text="this instance is draining")
    # A retried webhook for a call taken here is not a new call: it gets its first answer.
    taken = call_sid in app[PRECONNECTS] or call_sid in app[CALLS].active
    if not taken and is_full(app):
        # Load shedding: a call taken beyond what a core can carry makes every call on the
        # process wait. Twilio tries the number's fallback URL, as when draining.
        log.warning(
            "call.refused_full",
            call_sid=call_sid,
            calls=call_load(app),
            max_calls=app[SETTINGS].max_calls,
        )
        app[METRICS].count_call_refused("full")
        raise web.HTTPServiceUnavailable(text="this instance is full")
    # aiohttp runs each request in its own task: this binds the webhook's own lines, its
    # access-log line and the pre-connect task it starts (tasks copy the context), nothing else.
    structlog.contextvars.bind_contextvars(call_sid=call_sid)
    caller, called = params.get("From"), params.get("To")
    configured = app[AGENTS].current.for_number(called)
    # StirVerstat is in the signed webhook: Twilio's STIR/SHAKEN verdict on the caller ID.
    verified = params.get("StirVerstat", "").startswith("TN-Validation-Passed")
    # Everything the stream needs travels in its ticket: it may land on another replica.
    token = app[STREAM_TOKENS].issue(
        call_sid,
        app[CLOCK](),
        agent=configured.name,
        from_number=caller,
        to_number=called,
        caller_verified=verified,
    )
    twiml = _stream_twiml(app, configured.name, token)
    first = await _answer_once(app, call_sid, twiml)
    if first != twiml:
        # Twilio retried the webhook, or someone replayed a captured one (its signature has no
        # timestamp): the same answer, so the same single-use ticket, and no second pre-connect
        # or CRM lookup.
        log.warning("call.webhook_repeated", call_sid=call_sid)
        return web.Response(text=first, content_type="text/xml")
    agent, customer = await agent_for_call(app, configured, call_sid, caller, called, verified)
    # Start the Live session now, so the greeting is ready when the media stream starts.
    await open_preconnect(app, call_sid, agent, caller, called, caller_verified=verified)
    publish_load(app)  # before the next webhook lands on a sibling
    log.info(
        "call.webhook",
        call_sid=call_sid,
        agent=agent.name,
        to=called,
        direction=params.get("Direction"),
        known_caller=customer is not None,
        caller_verified=verified,
    )
    return web.Response(text=twiml, content_type="text/xml")


async def signed_request(request: web.Request) -> tuple[dict[str, str], str]:
    """A Twilio webhook's form and its CallSid; 403 unless Twilio signed it (with an auth token
    configured), 400 without a CallSid."""
    settings = request.app[SETTINGS]
    try:
        # aiohttp bounds a request's headers (keepalive_timeout), not its body: a client that
        # sends half a form would hold the request (and its connection) forever.
        async with asyncio.timeout(settings.http_read_timeout_s):
            form = await request.post()
    except TimeoutError as exc:
        log.warning(
            "twilio.bad_request",
            path=request.path,
            reason=f"the body did not arrive within {settings.http_read_timeout_s:g} s",
        )
        raise web.HTTPRequestTimeout(text="request body not received in time") from exc
    except ValueError as exc:  # UnicodeDecodeError included: Twilio sends UTF-8 forms
        log.warning("twilio.bad_request", path=request.path, reason=str(exc)[:200])
        raise web.HTTPBadRequest(text="the form is not UTF-8 url-encoded") from exc
    params = {key: value for key, value in form.items() if isinstance(value, str)}
    if settings.twilio_auth_token:
        # Rebuild the URL Twilio signed from PUBLIC_URL: behind a proxy the Host header lies.
        url = settings.public_url + request.path_qs
        signature = request.headers.get("X-Twilio-Signature")
        token = settings.twilio_auth_token.get_secret_value()
        if not verify_signature(token, url, params, signature):
            # Which URL was checked, and where the request says it went: a wrong PUBLIC_URL
            # behind a tunnel is the usual cause. Never the signature or the token.
            log.warning(
                "twilio.signature_rejected",
                path=request.path,
                call_sid=(params.get("CallSid") or "")[:64],
                has_signature=signature is not None,
                **signature_rejected_fields(
                    settings.public_url, request.path_qs, request.scheme, request.headers
                ),
            )
            raise web.HTTPForbidden(text="invalid X-Twilio-Signature")
    call_sid = params.get("CallSid")
    if not call_sid:
        raise web.HTTPBadRequest(text="missing CallSid")
    _warn_loopback_public_url(request)
    return params, call_sid


def _warn_loopback_public_url(request: web.Request) -> None:
    """Once per process: a loopback PUBLIC_URL answering a request from elsewhere (without a
    token nothing else would say that Twilio is told to stream to ws://127.0.0.1)."""
    state = request.app[STATE]
    if state.loopback_warned:
        return
    settings = request.app[SETTINGS]
    stream = stream_url_from_public_url(settings.stream_url or settings.public_url, STREAM_PATH)
    warning = loopback_public_url_warning(
        settings.public_url, stream, request.remote, request.headers
    )
    if warning is not None:
        state.loopback_warned = True
        log.warning("server.public_url_loopback", message=warning)


def _stream_twiml(app: web.Application, agent: str, token: str) -> str:
    """``<Connect><Stream>`` to our media stream, with ``<Connect action>`` so that a stream
    that ends while the call is up brings Twilio back to :func:`continue_call`."""
    settings = app[SETTINGS]
    public_url = settings.public_url
    return connect_stream_twiml(
        stream_url_from_public_url(settings.stream_url or public_url, STREAM_PATH),
        {"agent": agent, "token": token},
        action=public_url + CONTINUE_PATH,
    )


async def continue_call(request: web.Request) -> web.Response:
    """Twilio's ``<Connect action>``: the call's media stream ended while the call is still up
    (its replica died, its socket dropped, or its replica handed it over). Answer with a new
    stream that continues the conversation from the call's snapshot in the shared state, or
    hang up if the bridge itself ended the call. Any replica answers, a draining one too (its
    TwiML points the stream at the public URL, which routes to a ready replica)."""
    app = request.app
    params, call_sid = await signed_request(request)
    structlog.contextvars.bind_contextvars(call_sid=call_sid)
    if app[STATE].stopping:
        # Its calls are being ended: this process continues none (a balancer sends the
        # request to a replica that is up; behind one URL, this one is out of it by now).
        raise web.HTTPServiceUnavailable(text="this instance is stopping")
    if params.get("CallStatus") in _CALL_OVER:
        return web.Response(text=hangup_twiml(), content_type="text/xml")
    try:
        snapshot = await app[SHARED].load_call(call_sid)
    except SharedStateError as exc:
        log.warning("shared_state.unavailable", error=str(exc), action="call starts afresh")
        snapshot = None
    if snapshot is not None and snapshot.ended:
        log.info("call.continue_declined", reason="the bridge ended this call")
        return web.Response(text=hangup_twiml(), content_type="text/xml")
    registry = app[AGENTS].current
    if snapshot is not None:
        agent = snapshot.agent
        caller, called, verified = (
            snapshot.from_number,
            snapshot.to_number,
            snapshot.caller_verified,
        )
    else:
        # Nothing saved (the first stream died before its first turn, or no shared store):
        # the call starts afresh on what this request says.
        caller, called = params.get("From"), params.get("To")
        verified = params.get("StirVerstat", "").startswith("TN-Validation-Passed")
        agent = registry.for_number(called).name
    leg = snapshot.leg + 1 if snapshot is not None else 1
    token = app[STREAM_TOKENS].issue(
        call_sid,
        app[CLOCK](),
        agent=agent,
        from_number=caller,
        to_number=called,
        caller_verified=verified,
        leg=leg,
    )
    twiml = _stream_twiml(app, agent, token)
    # One ticket per leg, however often this request comes (a retry, or a replay).
    first = await _answer_once(app, f"{call_sid}/leg{leg}", twiml)
    if first != twiml:
        log.warning("call.continue_repeated", leg=leg)
    else:
        log.info("call.continuing", leg=leg, snapshot=snapshot is not None, agent=agent)
    return web.Response(text=first, content_type="text/xml")


async def _answer_once(app: web.Application, key: str, twiml: str) -> str:
    """The first TwiML given under ``key`` by any replica (``twiml`` if this is the first). If
    the shared state cannot be reached, ``twiml``: a store outage must not refuse a caller."""
    try:
        return await app[SHARED].answer_once(key, twiml, app[CLOCK]())
    except SharedStateError as exc:
        log.warning("shared_state.unavailable", error=str(exc), action="answered anew")
        return twiml
