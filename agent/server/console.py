"""The console at ``/console``: a browser softphone and a live view of the calls.

On when ``CONSOLE_ENABLED=true``. Every route but the static assets takes the console's
credential, ``CONSOLE_TOKEN``, as ``Authorization: Bearer <token>`` or as the password of basic
auth (any user name; a browser asks for it after the 401's ``WWW-Authenticate``). Without a token
(allowed on loopback only, :meth:`Settings.check_exposure`) the console is open.

Routes:
    GET  /console                         the page
    GET  /console/assets/{name}           its scripts (plain modules, no build step; no secrets)
    GET  /console/api/agents              the agents one can call
    POST /console/api/calls               a softphone call: a call SID and a one-use ticket
    GET  /console/api/calls               calls in progress (here, and in the shared records)
                                          and recent ones
    GET  /console/api/calls/{sid}         one call's record; ``/timeline.svg`` its picture
    GET  /console/api/calls/{sid}/events  its live timeline, as server-sent events
    GET  /console/phone                   the softphone's WebSocket (agent.telephony.browser)

A browser cannot put a header on a WebSocket, so the softphone socket is authorised by a ticket
instead: ``POST /console/api/calls`` (authenticated) issues one, signed, bound to the new call's
SID, valid for a minute and good once (:func:`agent.telephony.webhooks.console_tickets`); the
page sends it in its ``start``. Console tickets and Twilio's stream tokens are keyed apart, so
neither opens the other's stream. The POST takes JSON only: a cross-site form cannot send it
(and the answer is unreadable across origins), so another site cannot place calls with a
browser's remembered basic-auth credential.

The event stream is polled by its watcher (the record, and the session's own counters for a
call on this replica) a few times a second; the call itself does no extra work for it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Final

import structlog
from aiohttp import WSCloseCode, web

from agent.call.session import CallSession
from agent.errors import SignatureError
from agent.observability.privacy import mask_numbers_in_text
from agent.records.store import CallRecord
from agent.records.timeline import CallFeed, LiveSample, dumps, record_json, timeline_svg
from agent.server.context import agent_for_call
from agent.server.preconnect import new_link
from agent.server.state import AGENTS, CALLS, CLOCK, PRICES, RECORDS, SETTINGS, STATE
from agent.server.stream import CallParty, await_start, carrier_socket, claim_ticket, run_call
from agent.server.webhooks import is_full
from agent.settings import reveal
from agent.telephony.browser import BrowserMediaStream
from agent.telephony.webhooks import StreamTokens, console_tickets

log = structlog.get_logger("agent.console")

CONSOLE_PATH: Final = "/console"
PHONE_PATH: Final = "/console/phone"
ASSETS = resources.files("agent") / "assets" / "console"
_TYPES: Final = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
#: How often a watcher's event stream looks at its call.
FEED_INTERVAL_S: Final = 0.25
#: Calls listed besides those in progress.
RECENT_CALLS: Final = 20
#: A record left open longer than this is a crashed call, not one in progress (Twilio's limit).
IN_PROGRESS_HORIZON_S: Final = 4 * 3600.0
#: The longest caller ID the page may set (a number or a SIP-like name).
CALLER_ID_LIMIT: Final = 64
_REALM: Final = 'Basic realm="agent console", charset="UTF-8"'
# The page loads its own scripts and talks to this origin only.
_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

CONSOLE_TICKETS = web.AppKey("console_tickets", StreamTokens)
CONSOLE_STOPPING = web.AppKey("console_stopping", asyncio.Event)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def authorized(header: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries the console token: ``Bearer <token>``, or
    basic auth with the token as password (any user). No token configured: everyone is (the
    settings allow that on loopback only). Compared in constant time."""
    if token is None:
        return True
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        given = value
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):  # bad base64, or not UTF-8
            return False
        _, colon, given = decoded.partition(":")
        if not colon:
            return False
    else:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def _guarded(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        token = reveal(request.app[SETTINGS].console_token)
        given = request.headers.get("Authorization")
        if not authorized(given, token):
            if given:  # a wrong credential; none at all is a browser's first request
                log.warning("console.unauthorized", path=request.path, security=True)
            else:
                log.info("console.unauthorized", path=request.path, security=False)
            raise web.HTTPUnauthorized(
                headers={"WWW-Authenticate": _REALM}, text="console credential required"
            )
        response = await handler(request)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return guarded


def add_console(app: web.Application) -> None:
    """Serve the console on ``app`` (``create_app`` calls this when CONSOLE_ENABLED is on)."""
    settings = app[SETTINGS]
    secret = settings.console_token or settings.stream_token_secret or settings.twilio_auth_token
    key = secret.get_secret_value().encode() if secret else secrets.token_bytes(32)
    app[CONSOLE_TICKETS] = console_tickets(key)
    app[CONSOLE_STOPPING] = asyncio.Event()
    router = app.router
    router.add_get(CONSOLE_PATH, _guarded(_page))
    router.add_get(CONSOLE_PATH + "/", _guarded(_page))
    router.add_get(CONSOLE_PATH + "/assets/{name}", _asset)
    router.add_get(CONSOLE_PATH + "/api/agents", _guarded(_agents))
    router.add_post(CONSOLE_PATH + "/api/calls", _guarded(_new_call))
    router.add_get(CONSOLE_PATH + "/api/calls", _guarded(_calls))
    router.add_get(CONSOLE_PATH + "/api/calls/{sid}", _guarded(_call))
    router.add_get(CONSOLE_PATH + "/api/calls/{sid}/timeline.svg", _guarded(_call_svg))
    router.add_get(CONSOLE_PATH + "/api/calls/{sid}/events", _guarded(_call_events))
    router.add_get(PHONE_PATH, _phone)
    app.on_shutdown.append(_stop_feeds)


async def _stop_feeds(app: web.Application) -> None:
    app[CONSOLE_STOPPING].set()  # event streams end, so shutdown does not wait on watchers


# -- the page -----------------------------------------------------------------------------------


async def _page(request: web.Request) -> web.StreamResponse:
    html = (ASSETS / "index.html").read_text(encoding="utf-8")
    return web.Response(
        text=html, content_type="text/html", headers={"Content-Security-Policy": _CSP}
    )


async def _asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    resource = ASSETS / name
    # Only files of the assets folder, by plain name: no path can leave it.
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in _TYPES:
        raise web.HTTPNotFound()
    if not resource.is_file():
        raise web.HTTPNotFound()
    return web.Response(
        body=resource.read_bytes(),
        content_type=_TYPES[suffix],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


async def _agents(request: web.Request) -> web.StreamResponse:
    registry = request.app[AGENTS].current
    # Names and greetings only: prompts and tool settings can hold what the page must not show.
    agents = [
        {"name": name, "default": name == registry.default.name} for name in sorted(registry.agents)
    ]
    return web.json_response({"agents": agents})


# -- softphone calls ----------------------------------------------------------------------------


async def _new_call(request: web.Request) -> web.StreamResponse:
    app = request.app
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="send JSON")
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="invalid JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    registry = app[AGENTS].current
    name = body.get("agent") or registry.default.name
    if not isinstance(name, str) or registry.by_name(name) is None:
        raise web.HTTPNotFound(text="no such agent")
    caller = body.get("caller_id") or None
    if caller is not None and (not isinstance(caller, str) or len(caller) > CALLER_ID_LIMIT):
        raise web.HTTPBadRequest(text=f"caller_id must be text of at most {CALLER_ID_LIMIT}")
    if app[STATE].draining or is_full(app):
        raise web.HTTPServiceUnavailable(text="not taking calls now")
    call_sid = "CO" + secrets.token_hex(16)
    ticket = app[CONSOLE_TICKETS].issue(
        call_sid, app[CLOCK](), agent=name, from_number=caller, caller_verified=False
    )
    log.info("console.call_issued", call_sid=call_sid, agent=name)
    return web.json_response({"call_sid": call_sid, "ticket": ticket, "path": PHONE_PATH})


async def _phone(request: web.Request) -> web.StreamResponse:
    """The softphone's socket: ``start`` with its ticket, then a call like any other."""
    return await carrier_socket(request, _serve_phone)


async def _serve_phone(app: web.Application, ws: web.WebSocketResponse) -> None:
    stream = BrowserMediaStream()
    started = await await_start(ws, stream, app[SETTINGS].stream_start_timeout_s)
    if started is None:
        await ws.close()
        return
    try:
        ticket = await claim_ticket(app, started, app[CONSOLE_TICKETS], required=True)
    except SignatureError as exc:
        log.warning("call.rejected", reason=str(exc), carrier="console", security=True)
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"call not authorised")
        return
    assert ticket is not None
    if started.call_sid in app[CALLS].active:
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"call already streaming")
        return
    registry = app[AGENTS].current
    configured = registry.by_name(ticket.agent) or registry.default
    # The page's caller ID is whatever its user typed: never attested, like a withheld
    # STIR/SHAKEN verdict, so agents that trust only verified numbers do not trust it.
    caller = ticket.from_number
    agent, _ = await agent_for_call(
        app, configured, started.call_sid, caller, None, False, rest=False
    )
    await run_call(
        app,
        ws,
        stream,
        started,
        CallParty(agent, caller, None, verified=False),
        link=new_link(app, agent),
        ready=None,
        # No carrier REST API: hanging up closes the socket; transfer_call is not offered.
        call_control=None,
        ticket=True,
    )


# -- the calls ----------------------------------------------------------------------------------


async def _calls(request: web.Request) -> web.StreamResponse:
    app = request.app
    rows = await asyncio.to_thread(app[RECORDS].list_calls, RECENT_CALLS + 50)
    now = app[CLOCK]()
    here = app[CALLS].active
    calls: list[dict[str, Any]] = []
    listed: set[str] = set()
    for row in rows:
        open_ = row.ended_at is None and now - row.started_at < IN_PROGRESS_HORIZON_S
        if row.ended_at is None and not open_:
            continue  # a crashed call's record, not a call in progress
        listed.add(row.call_sid)
        calls.append(
            {
                "call_sid": row.call_sid,
                "agent": row.agent,
                "from": row.from_number,
                "started_at": row.started_at,
                "ended_at": row.ended_at,
                "end_reason": row.end_reason,
                "turns": row.turns,
                "tool_calls": row.tool_calls,
                "in_progress": open_,
                "here": row.call_sid in here,
            }
        )
    for call_sid, session in here.items():
        if call_sid not in listed:  # its record is not written yet
            calls.insert(
                0,
                {
                    "call_sid": call_sid,
                    "agent": session.agent.name,
                    "from": None,
                    "started_at": None,
                    "ended_at": None,
                    "end_reason": None,
                    "turns": 0,
                    "tool_calls": 0,
                    "in_progress": True,
                    "here": True,
                },
            )
    active = [c for c in calls if c["in_progress"]]
    recent = [c for c in calls if not c["in_progress"]][:RECENT_CALLS]
    return web.json_response({"active": active, "recent": recent})


async def _record(app: web.Application, call_sid: str) -> CallRecord | None:
    return await asyncio.to_thread(app[RECORDS].get_call, call_sid)


async def _call(request: web.Request) -> web.StreamResponse:
    record = await _record(request.app, request.match_info["sid"])
    if record is None:
        raise web.HTTPNotFound(text="no such call")
    return web.json_response({**record_json(record), "svg": timeline_svg(record)}, dumps=dumps)


async def _call_svg(request: web.Request) -> web.StreamResponse:
    record = await _record(request.app, request.match_info["sid"])
    if record is None:
        raise web.HTTPNotFound(text="no such call")
    return web.Response(text=timeline_svg(record), content_type="image/svg+xml")


async def _call_events(request: web.Request) -> web.StreamResponse:
    """The call's timeline as it happens: an event per turn, tool call, barge-in, reconnect,
    token update, and a level a few times a second, until the call has ended (docs/console.md)."""
    app = request.app
    call_sid = request.match_info["sid"]
    record = await _record(app, call_sid)
    if record is None and call_sid not in app[CALLS].active:
        raise web.HTTPNotFound(text="no such call")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a proxy in front must not hold the events back
        }
    )
    await response.prepare(request)
    feed = CallFeed()
    stopping = app[CONSOLE_STOPPING]
    try:
        while True:
            session = app[CALLS].active.get(call_sid)
            sample = _sample(app, session) if session is not None else None
            cost = _record_cost(app, record) if sample is None else None
            for event in feed.update(record, sample, app[CLOCK](), cost):
                await response.write(f"data: {dumps(event)}\n\n".encode())
            if feed.ended or stopping.is_set():
                break
            # A watcher's poll, bounded by the server stopping; the call itself is not touched.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FEED_INTERVAL_S):
                    await stopping.wait()
            record = await _record(app, call_sid)
    except ConnectionResetError:
        pass  # the watcher left
    return response


def _record_cost(app: web.Application, record: CallRecord | None) -> float | None:
    """What a record's tokens cost, priced by its agent's model as this replica knows it."""
    if record is None or not record.usage or record.agent is None:
        return None
    agent = app[AGENTS].current.by_name(record.agent)
    return None if agent is None else app[PRICES].estimate(agent.model, record.usage).usd


def _sample(app: web.Application, session: CallSession) -> LiveSample:
    """A call in progress here, from the counters the session keeps anyway."""
    stats = session.stats
    open_turn: tuple[str, str] | None = None
    turns = session.transcript.turns
    if turns and turns[-1].ended_at is None and turns[-1].said:
        text = turns[-1].said
        if app[SETTINGS].mask_caller_numbers:
            text = mask_numbers_in_text(text)
        open_turn = (turns[-1].role, text)
    return LiveSample(
        caller_level_dbfs=session.caller_level_dbfs,
        caller_speaking=session.caller_speaking,
        agent_frames=session.playback.frames_sent,
        barge_ins=stats.barge_ins,
        reconnects=stats.reconnects,
        tokens=dict(stats.usage),
        cost_usd=app[PRICES].estimate(session.agent.model, stats.usage).usd,
        open_turn=open_turn,
    )
