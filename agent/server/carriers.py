"""Telnyx's and Plivo's webhooks and media streams: two more carriers for the same calls.

Routes (added by :func:`add_carriers`):
    POST /telnyx/voice    Telnyx's TeXML webhook: ``<Start><Stream>`` to /telnyx/stream
    GET  /telnyx/stream   Telnyx's media stream (agent.telephony.telnyx)
    POST /plivo/answer    Plivo's answer URL: ``<Stream bidirectional>`` to /plivo/stream
    GET  /plivo/stream    Plivo's audio stream (agent.telephony.plivo)
    GET  /plivo/dial      the ``<Dial>`` XML a Plivo transfer fetches

Each works as Twilio's does: the webhook, verified when the carrier's credential is set
(``TELNYX_PUBLIC_KEY``; ``PLIVO_AUTH_TOKEN``), issues a single-use stream ticket bound to the
call, and the stream runs only with it; tickets are keyed per carrier (a Twilio, console, Telnyx
or Plivo ticket opens no other carrier's stream). Then :func:`agent.server.stream.run_call` runs
the call as any other. Not (yet) done for these carriers: the webhook's pre-connect of the Live
session (the greeting waits for the stream), and continuing a call on another replica.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl

import structlog
from aiohttp import WSCloseCode, web

from agent.call.control import CallControl
from agent.errors import SignatureError
from agent.numbers import is_e164
from agent.server.context import agent_for_call
from agent.server.preconnect import new_link
from agent.server.state import AGENTS, CALLS, CLOCK, METRICS, SETTINGS, STATE, TOOLS
from agent.server.stream import CallParty, await_start, carrier_socket, claim_ticket, run_call
from agent.server.webhooks import is_full
from agent.settings import reveal
from agent.telephony import plivo, telnyx
from agent.telephony.carrier import CarrierStream
from agent.telephony.carrier_rest import PlivoRest, TelnyxRest
from agent.telephony.webhooks import StreamTokens, stream_url_from_public_url

log = structlog.get_logger("agent.carriers")

TELNYX_VOICE_PATH: Final = "/telnyx/voice"
TELNYX_STREAM_PATH: Final = "/telnyx/stream"
PLIVO_ANSWER_PATH: Final = "/plivo/answer"
PLIVO_STREAM_PATH: Final = "/plivo/stream"
PLIVO_DIAL_PATH: Final = "/plivo/dial"
#: A webhook's body is a form of a few hundred bytes.
_BODY_LIMIT: Final = 64 * 1024


@dataclass(slots=True)
class Carriers:
    """Telnyx's and Plivo's stream tickets, and their REST clients (made on first use, on the
    tools' HTTP session)."""

    telnyx_tickets: StreamTokens
    plivo_tickets: StreamTokens
    rest: dict[str, CallControl | None] = field(default_factory=dict)


CARRIERS = web.AppKey("carriers", Carriers)


def add_carriers(app: web.Application, secret: bytes) -> None:
    """Telnyx's and Plivo's routes, with tickets keyed by ``secret`` (the stream tokens')."""
    app[CARRIERS] = Carriers(telnyx.telnyx_tickets(secret), plivo.plivo_tickets(secret))
    app.router.add_post(TELNYX_VOICE_PATH, telnyx_voice)
    app.router.add_get(TELNYX_STREAM_PATH, telnyx_stream)
    app.router.add_post(PLIVO_ANSWER_PATH, plivo_answer)
    app.router.add_get(PLIVO_STREAM_PATH, plivo_stream)
    app.router.add_get(PLIVO_DIAL_PATH, plivo_dial)


# -- webhooks --------------------------------------------------------------------------------------


async def _body(request: web.Request) -> bytes:
    settings = request.app[SETTINGS]
    try:
        async with asyncio.timeout(settings.http_read_timeout_s):
            body = await request.read()
    except TimeoutError as exc:
        raise web.HTTPRequestTimeout(text="request body not received in time") from exc
    if len(body) > _BODY_LIMIT:
        raise web.HTTPRequestEntityTooLarge(max_size=_BODY_LIMIT, actual_size=len(body))
    return body


def _form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError) as exc:
        raise web.HTTPBadRequest(text="the form is not UTF-8 url-encoded") from exc


def _admit(app: web.Application, carrier: str, call_sid: str) -> None:
    """503 while draining or full, as for Twilio: the carrier tries the number's failover."""
    if app[STATE].draining:
        log.warning("call.refused_draining", call_sid=call_sid, carrier=carrier)
        app[METRICS].count_call_refused("draining")
        raise web.HTTPServiceUnavailable(text="this instance is draining")
    if is_full(app):
        log.warning("call.refused_full", call_sid=call_sid, carrier=carrier)
        app[METRICS].count_call_refused("full")
        raise web.HTTPServiceUnavailable(text="this instance is full")


def _stream_url(app: web.Application, path: str) -> str:
    settings = app[SETTINGS]
    return stream_url_from_public_url(settings.stream_url or settings.public_url, path)


async def telnyx_voice(request: web.Request) -> web.Response:
    """Telnyx's TeXML webhook: answer with a bidirectional stream to /telnyx/stream."""
    app = request.app
    settings = app[SETTINGS]
    body = await _body(request)
    if settings.telnyx_public_key:
        ok = telnyx.verify_signature(
            settings.telnyx_public_key,
            body,
            request.headers.get(telnyx.SIGNATURE_HEADER),
            request.headers.get(telnyx.TIMESTAMP_HEADER),
            time.time(),  # the carrier's clock: a signature's age is measured in real time
        )
        if not ok:
            log.warning("telnyx.signature_rejected", path=request.path, security=True)
            raise web.HTTPForbidden(text="invalid telnyx-signature-ed25519")
    params = _form(body)
    call_sid = params.get("CallSid") or ""
    if not call_sid:
        raise web.HTTPBadRequest(text="missing CallSid")
    _admit(app, "telnyx", call_sid)
    caller, called = params.get("From"), params.get("To")
    configured = app[AGENTS].current.for_number(called)
    token = app[CARRIERS].telnyx_tickets.issue(
        call_sid, app[CLOCK](), agent=configured.name, from_number=caller, to_number=called
    )
    texml = telnyx.stream_texml(_stream_url(app, TELNYX_STREAM_PATH), {"token": token})
    log.info("call.webhook", call_sid=call_sid, carrier="telnyx", agent=configured.name)
    return web.Response(text=texml, content_type="text/xml")


async def _plivo_params(request: web.Request) -> dict[str, str]:
    """A Plivo request's parameters (form or query); 403 unless V3-signed, with a token set."""
    settings = request.app[SETTINGS]
    params = _form(await _body(request)) if request.method == "POST" else dict(request.query)
    if settings.plivo_auth_token:
        ok = plivo.verify_signature(
            settings.plivo_auth_token.get_secret_value(),
            request.method,
            settings.public_url + request.path_qs,
            params if request.method == "POST" else {},
            request.headers.get(plivo.NONCE_HEADER),
            request.headers.get(plivo.SIGNATURE_HEADER),
        )
        if not ok:
            log.warning("plivo.signature_rejected", path=request.path, security=True)
            raise web.HTTPForbidden(text="invalid X-Plivo-Signature-V3")
    return params


async def plivo_answer(request: web.Request) -> web.Response:
    """Plivo's answer URL: a bidirectional stream to /plivo/stream, its ticket in the URL."""
    app = request.app
    params = await _plivo_params(request)
    call_sid = params.get("CallUUID") or ""
    if not call_sid:
        raise web.HTTPBadRequest(text="missing CallUUID")
    _admit(app, "plivo", call_sid)
    caller, called = params.get("From"), params.get("To")
    configured = app[AGENTS].current.for_number(called)
    token = app[CARRIERS].plivo_tickets.issue(
        call_sid, app[CLOCK](), agent=configured.name, from_number=caller, to_number=called
    )
    # Tickets are base64url and dots: nothing to escape in a query string.
    xml = plivo.stream_xml(f"{_stream_url(app, PLIVO_STREAM_PATH)}?ticket={token}")
    log.info("call.webhook", call_sid=call_sid, carrier="plivo", agent=configured.name)
    return web.Response(text=xml, content_type="text/xml")


async def plivo_dial(request: web.Request) -> web.Response:
    """The XML a Plivo transfer fetches (:class:`PlivoRest`): dial ``to``."""
    params = await _plivo_params(request)
    number = params.get("to", "")
    if not is_e164(number):
        raise web.HTTPBadRequest(text="'to' is not an E.164 number")
    return web.Response(text=plivo.dial_xml(number), content_type="text/xml")


# -- streams ---------------------------------------------------------------------------------------


async def telnyx_stream(request: web.Request) -> web.StreamResponse:
    """Telnyx's media stream for one call."""
    required = bool(request.app[SETTINGS].telnyx_public_key)
    serve = functools.partial(
        _serve, carrier="telnyx", stream=telnyx.TelnyxMediaStream(), required=required
    )
    return await carrier_socket(request, serve)


async def plivo_stream(request: web.Request) -> web.StreamResponse:
    """Plivo's audio stream for one call; its ticket is in the URL's query."""
    required = bool(request.app[SETTINGS].plivo_auth_token)
    stream = plivo.PlivoMediaStream(ticket=request.query.get("ticket", ""))
    serve = functools.partial(_serve, carrier="plivo", stream=stream, required=required)
    return await carrier_socket(request, serve)


async def _serve(
    app: web.Application,
    ws: web.WebSocketResponse,
    *,
    carrier: str,
    stream: CarrierStream,
    required: bool,
) -> None:
    started = await await_start(ws, stream, app[SETTINGS].stream_start_timeout_s)
    if started is None:
        await ws.close()
        return
    tickets = app[CARRIERS].telnyx_tickets if carrier == "telnyx" else app[CARRIERS].plivo_tickets
    try:
        ticket = await claim_ticket(app, started, tickets, required=required)
    except SignatureError as exc:
        log.warning("call.rejected", reason=str(exc), carrier=carrier, security=True)
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"stream not authorised")
        return
    if started.call_sid in app[CALLS].active:
        log.warning("call.duplicate_stream", call_sid=started.call_sid, security=True)
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"call already streaming")
        return
    registry = app[AGENTS].current
    caller = ticket.from_number if ticket else None
    called = ticket.to_number if ticket else None
    configured = (registry.by_name(ticket.agent) if ticket else None) or registry.for_number(called)
    control = _call_control(app, carrier)
    agent, _ = await agent_for_call(
        app, configured, started.call_sid, caller, called, False, rest=control is not None
    )
    structlog.contextvars.bind_contextvars(carrier=carrier)
    await run_call(
        app,
        ws,
        stream,
        started,
        # Neither carrier's webhook carries a STIR/SHAKEN verdict we read: never verified.
        CallParty(agent, caller, called, verified=False),
        link=new_link(app, agent),
        ready=None,
        call_control=control,
        ticket=ticket is not None,
    )


def _call_control(app: web.Application, carrier: str) -> CallControl | None:
    """The carrier's REST client, if its credentials are set (None: closing the stream is all)."""
    cache = app[CARRIERS].rest
    if carrier in cache:
        return cache[carrier]
    settings, http = app[SETTINGS], app[TOOLS].http
    control: CallControl | None = None
    if http is not None and carrier == "telnyx" and settings.telnyx_api_key:
        control = TelnyxRest(
            http,
            api_key=settings.telnyx_api_key.get_secret_value(),
            base_url=settings.telnyx_api_url,
        )
    elif http is not None and carrier == "plivo" and settings.plivo_auth_id:
        control = PlivoRest(
            http,
            auth_id=settings.plivo_auth_id,
            auth_token=reveal(settings.plivo_auth_token) or "",
            public_url=settings.public_url,
            base_url=settings.plivo_api_url,
        )
    cache[carrier] = control
    return control
