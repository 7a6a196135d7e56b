"""The aiohttp application: Twilio's voice webhook, the media-stream WebSocket and health checks.

``create_app(settings)`` builds the whole server with its state in typed ``AppKey`` slots and its
lifecycle in ``cleanup_ctx``, so tests build a real app in-process with their own Live target.

Routes:
    POST /twilio/voice    the number's "A call comes in" webhook -> TwiML <Connect><Stream>
    GET  /twilio/stream   Twilio's bidirectional media stream (WebSocket)
    POST /twilio/continue the <Connect action>: a stream ended with the call up -> a new stream
    GET  /healthz         liveness
    GET  /readyz          readiness for new calls (503 while shutting down)
    GET  /metrics         Prometheus metrics
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from agent.call.active import ActiveCalls
from agent.call.session import CallSession
from agent.clock import REAL_TIME, Clock
from agent.cluster.journal import CallJournal
from agent.cluster.state import CallSnapshot, SharedState, shared_state_from_url
from agent.config.models import AgentConfig
from agent.config.registry import AgentRegistry
from agent.config.reload import AgentRegistryHolder, reloading
from agent.config.templates import TemplateContext, format_local_time, render_for_call
from agent.crm import Crm
from agent.errors import ConfigError, SharedStateError, SignatureError
from agent.live import protocol
from agent.live.connection import LiveConnection
from agent.live.link import LiveLink, ReconnectPolicy
from agent.live.protocol import check_backend
from agent.live.targets import LiveEndpoint, live_endpoint
from agent.observability.metrics import Metrics
from agent.observability.pricing import PriceTable
from agent.observability.privacy import add_secrets
from agent.records.store import CallRecordStore, RecordStore
from agent.server.settings import Settings, reveal
from agent.telephony.rest import TwilioRest
from agent.telephony.twilio import (
    Connected,
    ProtocolError,
    StreamStarted,
    TwilioMediaStream,
)
from agent.telephony.webhooks import (
    StreamTicket,
    StreamTokens,
    connect_stream_twiml,
    hangup_twiml,
    stream_url_from_public_url,
    verify_signature,
)
from agent.tools import CallContext, Toolbox, validate_specs

log = structlog.get_logger("agent.app")

VOICE_PATH = "/twilio/voice"
STREAM_PATH = "/twilio/stream"
CONTINUE_PATH = "/twilio/continue"
# Twilio's final call statuses: an action request for such a call can only hang up.
_CALL_OVER = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


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
class ServerState:
    """Whether this process still takes new calls (false once draining for a shutdown)."""

    draining: bool = False


@dataclass(slots=True)
class LiveBackend:
    """Where calls' Live sessions go. Mutable so a start-up hook can fill it in (the emulator)."""

    target: LiveEndpoint | None = None


@dataclass(slots=True)
class Tools:
    """What tools run with: one HTTP session, the CRM, the Twilio REST client (made at start-up,
    on the running loop) and a toolbox per agent configuration."""

    http: aiohttp.ClientSession | None = None
    crm: Crm | None = None
    twilio: TwilioRest | None = None
    toolboxes: dict[int, tuple[object, Toolbox]] = field(default_factory=dict)


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
PRECONNECTS: web.AppKey[dict[str, Preconnect]] = web.AppKey("preconnects")
BACKGROUND = web.AppKey("background", Background)
STATE = web.AppKey("state", ServerState)
METRICS = web.AppKey("metrics", Metrics)
RECORDS: web.AppKey[CallRecordStore] = web.AppKey("records")
PRICES = web.AppKey("prices", PriceTable)
SHARED: web.AppKey[SharedState] = web.AppKey("shared")

#: How often a replica asks the shared state whether another replica took the stream of a call it
#: pre-connected (then it releases that Live session rather than keeping it open until it expires).
PRECONNECT_POLL_S = 2.0


def create_app(
    settings: Settings,
    *,
    live_target: LiveEndpoint | None = None,
    agent: AgentConfig | None = None,
    agents: AgentRegistryHolder | None = None,
    reconnect_policy: ReconnectPolicy = ReconnectPolicy(),  # noqa: B008 (frozen)
    clock: Callable[[], float] = time.time,
    call_clock: Clock = REAL_TIME,
    metrics: Metrics | None = None,
    records: CallRecordStore | None = None,
) -> web.Application:
    """The whole bridge. Without ``live_target`` it uses ``LIVE_API_URL`` / Google's endpoint,
    unless a start-up hook (the CLI's embedded emulator) sets ``app[LIVE_BACKEND].target``.

    Agents come from ``agents``, or one ``agent`` built in code (tests), or else the YAML files
    in ``AGENTS_PATH`` (reloaded on SIGHUP). Invalid agents raise :class:`ConfigError` here,
    before anything listens.
    """
    app = web.Application()
    app[SETTINGS] = settings
    # However logging was configured, this app's own secrets are masked in every line from now on.
    add_secrets(*settings.secrets())
    # A malformed PRICE_TABLE stops the server here, not at the end of the first call.
    app[PRICES] = PriceTable.from_spec(settings.price_table)
    if live_target is None and not settings.use_emulator:
        live_target = live_endpoint(
            settings.live_backend,
            base_url=settings.live_api_url,
            api_key=reveal(settings.gemini_api_key),
            vertex_project=settings.vertex_project,
            vertex_location=settings.vertex_location,
        )
    reloadable = agents is None and agent is None
    if agents is None:
        if agent is not None:
            problems = validate_specs(agent.tool_specs)
            if problems:
                raise ConfigError("invalid tools:\n  " + "\n  ".join(problems), key="tools")
            agents = AgentRegistryHolder.of(AgentRegistry.of(agent))
        else:
            agents = AgentRegistryHolder(
                settings.agents_path,
                check_tools=validate_specs,
                on_change=lambda registry: add_secrets(*registry.secrets()),
            )
    add_secrets(*agents.current.secrets())
    if live_target is not None:
        # A Vertex-only field on the Developer API fails at start-up, not on the first call.
        for configured in agents.current.agents.values():
            check_backend(configured, live_target.backend)
    app[AGENTS] = agents
    app[TOOLS] = Tools()
    app[LIVE_BACKEND] = LiveBackend(live_target)
    # Tickets must open on any replica behind the same number: key them with a secret they share.
    shared_secret = settings.stream_token_secret or settings.twilio_auth_token
    secret = shared_secret.get_secret_value().encode() if shared_secret else secrets.token_bytes(32)
    app[STREAM_TOKENS] = StreamTokens(secret)
    app[CALL_SOCKETS] = set()
    app[CALLS] = ActiveCalls()
    app[METRICS] = metrics if metrics is not None else Metrics()
    calls = app[CALLS]
    app[METRICS].track_active_calls(lambda: len(calls.active))
    # Opened here rather than at start-up: app state cannot change once the app is frozen.
    app[RECORDS] = (
        records
        if records is not None
        else RecordStore.from_url(
            settings.database_url,
            redact_fields=settings.record_redact_fields,
            mask_caller_numbers=settings.mask_caller_numbers,
            on_drop=app[METRICS].records_dropped.inc,
        )
    )
    app[CLOCK] = clock
    app[CALL_CLOCK] = call_clock
    app[RECONNECT_POLICY] = reconnect_policy
    app[PRECONNECTS] = {}
    app[BACKGROUND] = Background()
    app[STATE] = ServerState()
    app.router.add_post(VOICE_PATH, voice_webhook)
    app.router.add_get(STREAM_PATH, media_stream)
    app.router.add_post(CONTINUE_PATH, continue_call)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.cleanup_ctx.append(_announce)
    app.cleanup_ctx.append(_close_records)
    app.cleanup_ctx.append(_tools)
    app.cleanup_ctx.append(_shared_state)
    if reloadable:
        app.cleanup_ctx.append(_agents_reload)
    app.on_shutdown.append(_close_calls)
    return app


async def _announce(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.twilio_auth_token:
        log.warning(
            "server.unauthenticated",
            message="TWILIO_AUTH_TOKEN is not set: webhooks and streams are not verified "
            "(development only)",
        )
    log.info(
        "server.started",
        public_url=settings.public_url,
        agents=sorted(app[AGENTS].current.agents),
        default_agent=app[AGENTS].current.default.name,
    )
    yield


async def _agents_reload(app: web.Application) -> AsyncIterator[None]:
    """Reload agent files on SIGHUP (and by polling when configured) while the server runs."""
    async with reloading(app[AGENTS], interval_s=app[SETTINGS].agents_reload_interval_s):
        yield


async def _tools(app: web.Application) -> AsyncIterator[None]:
    """Tools' shared resources for the server's lifetime; closed after the calls have ended."""
    settings, tools = app[SETTINGS], app[TOOLS]
    tools.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        tools.crm = await Crm.open(settings.crm_database_url)
        if settings.twilio_account_sid and (
            settings.twilio_api_key_sid or settings.twilio_auth_token
        ):
            tools.twilio = TwilioRest(
                tools.http,
                account_sid=settings.twilio_account_sid,
                auth_token=None
                if settings.twilio_api_key_sid
                else reveal(settings.twilio_auth_token),
                api_key_sid=settings.twilio_api_key_sid,
                api_key_secret=reveal(settings.twilio_api_key_secret),
                base_url=settings.twilio_api_url,
            )
        else:
            log.warning(
                "server.no_twilio_rest",
                message="TWILIO_ACCOUNT_SID and credentials are not set: end_call closes the "
                "media stream and transfer_call is unavailable",
            )
        yield
    finally:
        for _, toolbox in tools.toolboxes.values():
            await toolbox.close()
        if tools.crm is not None:
            await tools.crm.close()
        await tools.http.close()


def _toolbox(app: web.Application, agent: AgentConfig) -> Toolbox | None:
    """The toolbox for an agent's tools (one per configuration, reused by its calls)."""
    tools = app[TOOLS]
    if not agent.tool_specs or tools.http is None or tools.crm is None:
        return None
    key = id(agent.tool_specs)  # the specs object is kept in the value, so the id stays unique
    cached = tools.toolboxes.get(key)
    if cached is None:
        toolbox = Toolbox(
            agent.tool_specs,
            http=tools.http,
            crm=tools.crm,
            metrics=app[METRICS],
            redact_fields=app[SETTINGS].record_redact_fields,
        )
        cached = tools.toolboxes[key] = (agent.tool_specs, toolbox)
    return cached[1]


def begin_drain(app: web.Application) -> None:
    """Take no new calls from now on (the webhook answers 503, /readyz says draining)."""
    app[STATE].draining = True
    log.info("server.draining", active_calls=len(app[CALLS].active))


async def drain(app: web.Application, timeout_s: float) -> int:
    """Stop taking calls and wait (up to ``timeout_s``) for the calls in progress to end, so a
    deploy or a scale-down does not hang up on anyone. Returns how many calls were still active
    at the deadline (they are then closed by the shutdown)."""
    if not app[STATE].draining:
        begin_drain(app)
    calls = app[CALLS]
    try:
        async with asyncio.timeout(timeout_s):
            while calls.active:
                await calls.wait_ended(next(iter(calls.active)), timeout_s)
    except TimeoutError:
        log.warning("server.drain_timeout", active_calls=len(calls.active))
    return len(calls.active)


async def hand_over(app: web.Application, timeout_s: float) -> int:
    """Stop taking calls and move each call in progress to another replica: its stream is let
    go at a quiet moment (the model between turns, everything it said played), Twilio requests
    the ``<Connect action>`` (which a ready replica answers) and the conversation continues
    there. Calls not quiet within ``timeout_s`` are let go at once. Returns how many calls were
    still active at the end (then closed by the shutdown)."""
    if not app[STATE].draining:
        begin_drain(app)
    calls = app[CALLS]
    for session in list(calls.active.values()):
        session.hand_over()
    for now in (False, True):
        try:
            async with asyncio.timeout(timeout_s if not now else 5.0):
                while calls.active:
                    await calls.wait_ended(next(iter(calls.active)), timeout_s)
        except TimeoutError:
            log.warning("server.handover_timeout", active_calls=len(calls.active), forced=now)
            for session in list(calls.active.values()):
                session.hand_over(now=True)
    return len(calls.active)


async def _close_calls(app: web.Application) -> None:
    """On shutdown, close every open media stream with GOING_AWAY so no handler hangs."""
    preconnects: dict[str, Preconnect] = app[PRECONNECTS]
    for call_sid in list(preconnects):
        await _release_preconnect(app, call_sid, "server shutdown")
    await app[BACKGROUND].drain()
    sockets: set[web.WebSocketResponse] = app[CALL_SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


async def _shared_state(app: web.Application) -> AsyncIterator[None]:
    """The state replicas share (used stream tickets), and the poll that releases pre-connected
    sessions whose streams another replica took."""
    settings = app[SETTINGS]
    try:
        app[SHARED] = await shared_state_from_url(settings.shared_state_url)
    except SharedStateError as exc:
        raise ConfigError(str(exc), key="SHARED_STATE_URL") from exc
    poll = None
    if app[SHARED].shared:
        poll = asyncio.get_running_loop().create_task(_release_taken_preconnects(app))
    try:
        yield
    finally:
        if poll is not None:
            poll.cancel()
            await asyncio.wait([poll])
        await app[SHARED].close()


async def _release_taken_preconnects(app: web.Application) -> None:
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
            await _release_preconnect(app, call_sid, "stream taken by another replica")


async def _close_records(app: web.Application) -> AsyncIterator[None]:
    """Drain call records after shutdown has closed the calls and their handlers returned."""
    yield
    await app[RECORDS].close()


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves requests."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: can this instance take a new call? 503 with the reasons when not."""
    app = request.app
    problems = []
    if app[LIVE_BACKEND].target is None:
        problems.append("no Live API backend yet")
    if app[STATE].draining:
        problems.append("draining: finishing calls in progress, taking no new ones")
    if app[RECORDS].closed:
        problems.append("shutting down")
    body = {
        "status": "unavailable" if problems else "ready",
        "problems": problems,
        "active_calls": len(app[CALLS].active),
        "records_backlog": app[RECORDS].backlog,
        "pid": os.getpid(),  # which process answered (agent serve --workers runs several)
    }
    return web.json_response(body, status=503 if problems else 200)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text exposition of this process's metrics."""
    body, content_type = request.app[METRICS].render()
    # headers=, not content_type=: aiohttp rejects a charset inside content_type.
    return web.Response(body=body, headers={"Content-Type": content_type})


async def voice_webhook(request: web.Request) -> web.Response:
    """Answer an incoming call with TwiML that connects it to our media stream."""
    app = request.app
    params, call_sid = await _signed_request(request)
    if app[STATE].draining:
        # Twilio then tries the number's fallback URL: another instance takes the call.
        log.warning("call.refused_draining", call_sid=call_sid)
        raise web.HTTPServiceUnavailable(text="this instance is draining")
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
    agent, customer = await _agent_for_call(app, configured, call_sid, caller, called, verified)
    # Start the Live session now, so the greeting is ready when the media stream starts.
    await _preconnect(app, call_sid, agent, caller, called, caller_verified=verified)
    twiml = _stream_twiml(app, agent.name, token)
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


async def _signed_request(request: web.Request) -> tuple[dict[str, str], str]:
    """A Twilio webhook's form and its CallSid; 403 unless Twilio signed it (with an auth token
    configured), 400 without a CallSid."""
    settings = request.app[SETTINGS]
    form = await request.post()
    params = {key: value for key, value in form.items() if isinstance(value, str)}
    if settings.twilio_auth_token:
        # Rebuild the URL Twilio signed from PUBLIC_URL: behind a proxy the Host header lies.
        url = settings.public_url + request.path_qs
        signature = request.headers.get("X-Twilio-Signature")
        token = settings.twilio_auth_token.get_secret_value()
        if not verify_signature(token, url, params, signature):
            log.warning(
                "twilio.signature_rejected",
                path=request.path,
                call_sid=(params.get("CallSid") or "")[:64],
                has_signature=signature is not None,
            )
            raise web.HTTPForbidden(text="invalid X-Twilio-Signature")
    call_sid = params.get("CallSid")
    if not call_sid:
        raise web.HTTPBadRequest(text="missing CallSid")
    return params, call_sid


def _stream_twiml(app: web.Application, agent: str, token: str) -> str:
    """``<Connect><Stream>`` to our media stream, with ``<Connect action>`` so that a stream
    that ends while the call is up brings Twilio back to :func:`continue_call`."""
    public_url = app[SETTINGS].public_url
    return connect_stream_twiml(
        stream_url_from_public_url(public_url, STREAM_PATH),
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
    params, call_sid = await _signed_request(request)
    structlog.contextvars.bind_contextvars(call_sid=call_sid)
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
    log.info("call.continuing", leg=leg, snapshot=snapshot is not None, agent=agent)
    return web.Response(text=_stream_twiml(app, agent, token), content_type="text/xml")


async def media_stream(request: web.Request) -> web.StreamResponse:
    """Twilio's media stream for one call: wait for ``start``, then run a :class:`CallSession`."""
    app = request.app
    ws = web.WebSocketResponse(max_msg_size=1 << 20)
    await ws.prepare(request)
    app[CALL_SOCKETS].add(ws)
    try:
        await _serve_stream(app, ws)
    finally:
        app[CALL_SOCKETS].discard(ws)
    return ws


async def _serve_stream(app: web.Application, ws: web.WebSocketResponse) -> None:
    stream = TwilioMediaStream()
    ticket: StreamTicket | None = None
    try:
        started = await _await_start(ws, stream, app[SETTINGS].stream_start_timeout_s)
        if started is not None:
            ticket = await _claim_ticket(app, started)
    except SignatureError as exc:
        log.warning("call.rejected", reason=str(exc))
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"stream not authorised")
        return
    if started is None:
        await ws.close()
        return
    continuation = await _continuation(app, ticket)
    preconnect = app[PRECONNECTS].pop(started.call_sid, None)
    if preconnect is not None:
        preconnect.expiry.cancel()
        agent, link, ready = preconnect.agent, preconnect.link, preconnect.ready
        caller, called = preconnect.from_number, preconnect.to_number
        verified = preconnect.caller_verified
    else:
        # The webhook was answered elsewhere (another replica, or this one before a restart):
        # the ticket says what it learned, so this call runs as if it had been here.
        registry = app[AGENTS].current
        named = ticket.agent if ticket else started.custom_parameters.get("agent")
        if continuation is not None:
            named = continuation.agent
        caller = ticket.from_number if ticket else None
        called = ticket.to_number if ticket else None
        verified = ticket.caller_verified if ticket else False
        configured = registry.by_name(named) or registry.for_number(called)
        agent, _ = await _agent_for_call(
            app, configured, started.call_sid, caller, called, verified
        )
        link, ready = _new_link(app, agent), None
    try:
        structlog.contextvars.bind_contextvars(
            call_sid=started.call_sid, stream_sid=started.stream_sid, agent=agent.name
        )
        log.info(
            "call.started",
            tracks=list(started.tracks),
            preconnected=preconnect is not None,
            ticket=ticket is not None,
            continued=continuation is not None,
        )
        wall_started = app[CLOCK]()
        recorder = app[RECORDS].recorder(started.call_sid)
        recorder.started(
            call_sid=started.call_sid,
            stream_sid=started.stream_sid,
            agent=agent.name,
            from_number=caller,
            to_number=called,
            started_at=wall_started,
        )
        tool_context = CallContext(
            call_sid=started.call_sid,
            account_sid=started.account_sid,
            stream_sid=started.stream_sid,
            agent=agent.name,
            caller_number=_identity(agent, caller, verified=verified),
            called_number=called,
            local_time=format_local_time(datetime.fromtimestamp(wall_started, UTC), agent.timezone),
        )
        session = CallSession(
            ws=ws,
            stream=stream,
            started=started,
            agent=agent,
            live=link,
            live_ready=ready,
            clock=app[CALL_CLOCK],
            metrics=app[METRICS],
            recorder=recorder,
            wall_started_at=wall_started,
            toolbox=_toolbox(app, agent),
            tool_context=tool_context,
            prices=app[PRICES],
            call_control=app[TOOLS].twilio,
            journal=CallJournal(
                app[SHARED],
                CallSnapshot(
                    call_sid=started.call_sid,
                    agent=agent.name,
                    from_number=caller,
                    to_number=called,
                    caller_verified=verified,
                    leg=1 if continuation is None else continuation.leg + 1,
                    handle=None if continuation is None else continuation.handle,
                    turns=() if continuation is None else continuation.turns,
                ),
                wall=app[CLOCK],
            ),
            continuation=continuation,
        )
    except BaseException:
        # Nothing may leak a Live session opened for this call (a bug above, or cancellation).
        if ready is not None:
            ready.cancel()
        await link.close()
        raise
    app[CALLS].started(session)
    try:
        await session.run()
    except Exception:
        # The call boundary: a bug in one call must not take the server (or other calls) down.
        log.exception("call.failed")
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")
    finally:
        app[CALLS].ended(session)


async def _await_start(
    ws: web.WebSocketResponse, stream: TwilioMediaStream, timeout_s: float
) -> StreamStarted | None:
    """Read ``connected`` and ``start``; None if the socket closes or ``start`` never comes."""
    try:
        async with asyncio.timeout(timeout_s):
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    if message.type is WSMsgType.BINARY:
                        log.warning("twilio.protocol_error", reason="binary frame before start")
                    return None
                event = stream.receive_text(message.data)
                if isinstance(event, StreamStarted):
                    return event
                # Twilio sends nothing but connected before start: anything else is not Twilio,
                # and an unauthenticated socket must not get to fill the logs. Close it.
                if isinstance(event, ProtocolError):
                    log.warning("twilio.protocol_error", reason=event.reason, raw=event.raw)
                    return None
                if not isinstance(event, Connected):
                    log.warning("twilio.unexpected_before_start", kind=type(event).__name__)
                    return None
    except TimeoutError:
        log.warning("call.no_start", timeout_s=timeout_s)
    return None


async def _claim_ticket(app: web.Application, started: StreamStarted) -> StreamTicket | None:
    """The stream's ticket, used up so no other stream (on any replica) can present it again.

    With an auth token configured, only streams our signed webhook announced may run: a missing,
    forged, expired or reused ticket raises :class:`SignatureError`. Without one (development) a
    stream runs anyway, with the ticket's facts only if it is valid and unused. If the shared
    state cannot be reached the ticket is accepted on its signature alone (bound to this CallSid
    and unexpired): refusing would drop a real caller over a store outage.
    """
    now = app[CLOCK]()
    authenticated = bool(app[SETTINGS].twilio_auth_token)
    ticket = app[STREAM_TOKENS].open(
        started.custom_parameters.get("token", ""), started.call_sid, now
    )
    if ticket is not None:
        try:
            fresh = await app[SHARED].claim_ticket(ticket, now)
        except SharedStateError as exc:
            log.warning("shared_state.unavailable", error=str(exc), action="ticket accepted")
            fresh = True
        if not fresh:
            ticket = None
    if ticket is None and authenticated:
        raise SignatureError("missing, expired or reused stream token")
    return ticket


async def _continuation(app: web.Application, ticket: StreamTicket | None) -> CallSnapshot | None:
    """For a stream that continues a call (its ticket's leg is 2 or more), the snapshot the
    call's earlier stream left; None for a new call, or when none can be found (then the call
    starts afresh rather than not at all)."""
    if ticket is None or ticket.leg < 2:
        return None
    try:
        snapshot = await app[SHARED].load_call(ticket.call_sid)
    except SharedStateError as exc:
        log.warning("shared_state.unavailable", error=str(exc), action="call starts afresh")
        return None
    if snapshot is None or snapshot.ended:
        log.warning("call.continuation_missing", leg=ticket.leg)
        return None
    return snapshot


async def _agent_for_call(
    app: web.Application,
    configured: AgentConfig,
    call_sid: str,
    caller: str | None,
    called: str | None,
    verified: bool,
) -> tuple[AgentConfig, Mapping[str, Any] | None]:
    """``configured`` rendered for this call (prompt templated with the numbers, the local time and
    the caller's CRM record), and that record."""
    customer = await _prefetch_customer(
        app, configured, _identity(configured, caller, verified=verified)
    )
    agent = render_for_call(
        configured,
        TemplateContext(
            caller_number=caller,
            called_number=called,
            call_sid=call_sid,
            now=datetime.fromtimestamp(app[CLOCK](), UTC),
            customer=customer,
        ),
    )
    return agent, customer


def _new_link(app: web.Application, agent: AgentConfig) -> LiveLink:
    return LiveLink(
        lambda handle: _connect_live(app, agent, handle),
        app[RECONNECT_POLICY],
        clock=app[CALL_CLOCK],
    )


def _identity(agent: AgentConfig, caller: str | None, *, verified: bool) -> str | None:
    """The caller's number as their identity (CRM prefetch, tools bound to ``caller_number``),
    or None when the agent trusts only attested caller IDs and this one is not."""
    if agent.trust_caller_id == "verified" and not verified:
        return None
    return caller


async def _prefetch_customer(
    app: web.Application, agent: AgentConfig, caller: str | None
) -> Mapping[str, Any] | None:
    """The caller's CRM record, so the first model turn knows who is calling (bounded: a slow
    CRM costs the greeting at most a second, and a failure only the personal touch)."""
    crm = app[TOOLS].crm
    if not agent.prefetch_crm or crm is None or not caller:
        return None
    try:
        async with asyncio.timeout(1.0):
            return await crm.lookup_caller(caller)
    except Exception as exc:
        log.warning("crm.prefetch_failed", error=str(exc) or type(exc).__name__)
        return None


async def _preconnect(
    app: web.Application,
    call_sid: str,
    agent: AgentConfig,
    from_number: str | None,
    to_number: str | None,
    *,
    caller_verified: bool = False,
) -> None:
    """Open the call's Live session and ask for the greeting before the stream exists."""
    await _release_preconnect(app, call_sid, "webhook repeated")  # Twilio may retry a webhook
    link = _new_link(app, agent)

    async def ready() -> None:
        await link.start()
        if agent.greeting:
            await link.send(protocol.text_turn_message(agent.greeting))

    task = asyncio.get_running_loop().create_task(ready(), name=f"preconnect {call_sid}")
    expiry = asyncio.get_running_loop().call_later(
        agent.call.preconnect_timeout_s,
        lambda: app[BACKGROUND].spawn(
            _release_preconnect(app, call_sid, "no media stream arrived")
        ),
    )
    app[PRECONNECTS][call_sid] = Preconnect(
        agent, link, task, expiry, from_number, to_number, caller_verified
    )


async def _release_preconnect(app: web.Application, call_sid: str, why: str) -> None:
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


async def _connect_live(
    app: web.Application, agent: AgentConfig, resumption_handle: str | None
) -> LiveConnection:
    target = app[LIVE_BACKEND].target
    if target is None:
        raise RuntimeError("no Live API backend configured")
    began = time.perf_counter()
    connection = await LiveConnection.open(
        target,
        agent,
        resumption_handle=resumption_handle,
        timeout_s=app[SETTINGS].live_connect_timeout_s,
    )
    app[METRICS].observe_live_connect(time.perf_counter() - began)
    return connection
