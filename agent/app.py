"""The aiohttp application: Twilio's voice webhook, the media-stream WebSocket and health checks.

``create_app(settings)`` builds the whole server with its state in typed ``AppKey`` slots and its
lifecycle in ``cleanup_ctx``, so tests build a real app in-process with their own Live target.

Routes:
    POST /twilio/voice    the number's "A call comes in" webhook -> TwiML <Connect><Stream>
    GET  /twilio/stream   Twilio's bidirectional media stream (WebSocket)
    GET  /healthz         liveness
    GET  /readyz          readiness for new calls (503 while shutting down)
    GET  /metrics         Prometheus metrics
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from agent.call.registry import CallRegistry
from agent.call.session import CallSession
from agent.clock import REAL_TIME, Clock
from agent.config import DEFAULT_AGENT, AgentConfig
from agent.errors import SignatureError
from agent.live import protocol
from agent.live.connection import LiveConnection
from agent.live.link import LiveLink, ReconnectPolicy
from agent.live.protocol import check_backend
from agent.live.targets import LiveEndpoint, live_endpoint
from agent.metrics import Metrics
from agent.records import CallRecordStore, RecordStore
from agent.settings import Settings
from agent.telephony.twilio import (
    Connected,
    ProtocolError,
    StreamStarted,
    TwilioMediaStream,
)
from agent.telephony.webhooks import (
    StreamTokens,
    connect_stream_twiml,
    stream_url_from_public_url,
    verify_signature,
)

log = structlog.get_logger("agent.app")

VOICE_PATH = "/twilio/voice"
STREAM_PATH = "/twilio/stream"


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

    link: LiveLink
    ready: asyncio.Task[None]
    expiry: asyncio.TimerHandle
    from_number: str | None = None
    to_number: str | None = None


@dataclass(slots=True)
class LiveBackend:
    """Where calls' Live sessions go. Mutable so a start-up hook can fill it in (the emulator)."""

    target: LiveEndpoint | None = None


SETTINGS = web.AppKey("settings", Settings)
AGENT = web.AppKey("agent", AgentConfig)
LIVE_BACKEND = web.AppKey("live_backend", LiveBackend)
STREAM_TOKENS = web.AppKey("stream_tokens", StreamTokens)
CALL_SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("call_sockets")
CALLS = web.AppKey("calls", CallRegistry)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
CALL_CLOCK = web.AppKey("call_clock", Clock)
RECONNECT_POLICY = web.AppKey("reconnect_policy", ReconnectPolicy)
PRECONNECTS: web.AppKey[dict[str, Preconnect]] = web.AppKey("preconnects")
BACKGROUND = web.AppKey("background", Background)
METRICS = web.AppKey("metrics", Metrics)
RECORDS: web.AppKey[CallRecordStore] = web.AppKey("records")


def create_app(
    settings: Settings,
    *,
    live_target: LiveEndpoint | None = None,
    agent: AgentConfig = DEFAULT_AGENT,
    reconnect_policy: ReconnectPolicy = ReconnectPolicy(),  # noqa: B008 (frozen)
    clock: Callable[[], float] = time.time,
    call_clock: Clock = REAL_TIME,
    metrics: Metrics | None = None,
    records: CallRecordStore | None = None,
) -> web.Application:
    """The whole bridge. Without ``live_target`` it uses ``LIVE_API_URL`` / Google's endpoint,
    unless a start-up hook (the CLI's embedded emulator) sets ``app[LIVE_BACKEND].target``."""
    app = web.Application()
    app[SETTINGS] = settings
    app[AGENT] = agent
    if live_target is None and not settings.use_emulator:
        live_target = live_endpoint(
            settings.live_backend,
            base_url=settings.live_api_url,
            api_key=settings.gemini_api_key,
            vertex_project=settings.vertex_project,
            vertex_location=settings.vertex_location,
        )
    if live_target is not None:
        # A Vertex-only field on the Developer API fails at start-up, not on the first call.
        check_backend(agent, live_target.backend)
    app[LIVE_BACKEND] = LiveBackend(live_target)
    # Tokens must verify on any worker behind the same number: key them with the auth token.
    secret = (
        settings.twilio_auth_token.encode()
        if settings.twilio_auth_token
        else secrets.token_bytes(32)
    )
    app[STREAM_TOKENS] = StreamTokens(secret)
    app[CALL_SOCKETS] = set()
    app[CALLS] = CallRegistry()
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
    app.router.add_post(VOICE_PATH, voice_webhook)
    app.router.add_get(STREAM_PATH, media_stream)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.cleanup_ctx.append(_announce)
    app.cleanup_ctx.append(_close_records)
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
    log.info("server.started", public_url=settings.public_url, agent=app[AGENT].name)
    yield


async def _close_calls(app: web.Application) -> None:
    """On shutdown, close every open media stream with GOING_AWAY so no handler hangs."""
    preconnects: dict[str, Preconnect] = app[PRECONNECTS]
    for call_sid in list(preconnects):
        await _release_preconnect(app, call_sid, "server shutdown")
    await app[BACKGROUND].drain()
    sockets: set[web.WebSocketResponse] = app[CALL_SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


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
    if app[RECORDS].closed:
        problems.append("shutting down")
    body = {
        "status": "unavailable" if problems else "ready",
        "problems": problems,
        "active_calls": len(app[CALLS].active),
        "records_backlog": app[RECORDS].backlog,
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
    settings = app[SETTINGS]
    form = await request.post()
    params = {key: value for key, value in form.items() if isinstance(value, str)}
    if settings.twilio_auth_token:
        # Rebuild the URL Twilio signed from PUBLIC_URL: behind a proxy the Host header lies.
        url = settings.public_url + request.path_qs
        signature = request.headers.get("X-Twilio-Signature")
        if not verify_signature(settings.twilio_auth_token, url, params, signature):
            log.warning(
                "twilio.signature_rejected",
                path=request.path,
                call_sid=params.get("CallSid"),
                has_signature=signature is not None,
            )
            raise web.HTTPForbidden(text="invalid X-Twilio-Signature")
    call_sid = params.get("CallSid")
    if not call_sid:
        raise web.HTTPBadRequest(text="missing CallSid")
    token = app[STREAM_TOKENS].issue(call_sid, app[CLOCK]())
    # Start the Live session now, so the greeting is ready when the media stream starts.
    await _preconnect(app, call_sid, params.get("From"), params.get("To"))
    twiml = connect_stream_twiml(
        stream_url_from_public_url(settings.public_url, STREAM_PATH),
        {"agent": app[AGENT].name, "token": token},
    )
    log.info(
        "call.webhook",
        call_sid=call_sid,
        to=params.get("To"),
        direction=params.get("Direction"),
    )
    return web.Response(text=twiml, content_type="text/xml")


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
    try:
        started = await _await_start(ws, stream, app[SETTINGS].stream_start_timeout_s)
        if started is not None:
            _check_stream_token(app, started)
    except SignatureError as exc:
        log.warning("call.rejected", reason=str(exc))
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"stream not authorised")
        return
    if started is None:
        await ws.close()
        return
    structlog.contextvars.bind_contextvars(
        call_sid=started.call_sid, stream_sid=started.stream_sid, agent=app[AGENT].name
    )
    log.info("call.started", tracks=list(started.tracks))
    preconnect = app[PRECONNECTS].pop(started.call_sid, None)
    if preconnect is not None:
        preconnect.expiry.cancel()
        link, ready = preconnect.link, preconnect.ready
    else:
        link, ready = _new_link(app, app[AGENT]), None
    wall_started = app[CLOCK]()
    recorder = app[RECORDS].recorder(started.call_sid)
    recorder.started(
        call_sid=started.call_sid,
        stream_sid=started.stream_sid,
        agent=app[AGENT].name,
        from_number=preconnect.from_number if preconnect else None,
        to_number=preconnect.to_number if preconnect else None,
        started_at=wall_started,
    )
    session = CallSession(
        ws=ws,
        stream=stream,
        started=started,
        agent=app[AGENT],
        live=link,
        live_ready=ready,
        clock=app[CALL_CLOCK],
        metrics=app[METRICS],
        recorder=recorder,
        wall_started_at=wall_started,
    )
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
                        continue
                    return None
                event = stream.receive_text(message.data)
                if isinstance(event, StreamStarted):
                    return event
                if isinstance(event, ProtocolError):
                    log.warning("twilio.protocol_error", reason=event.reason, raw=event.raw)
                elif not isinstance(event, Connected):
                    log.warning("twilio.unexpected_before_start", kind=type(event).__name__)
    except TimeoutError:
        log.warning("call.no_start", timeout_s=timeout_s)
    return None


def _check_stream_token(app: web.Application, started: StreamStarted) -> None:
    """With an auth token configured, only streams our signed webhook announced may run."""
    if not app[SETTINGS].twilio_auth_token:
        return
    token = started.custom_parameters.get("token", "")
    if not app[STREAM_TOKENS].verify(token, started.call_sid, app[CLOCK]()):
        raise SignatureError("missing, expired or reused stream token")


def _new_link(app: web.Application, agent: AgentConfig) -> LiveLink:
    return LiveLink(
        lambda handle: _connect_live(app, agent, handle),
        app[RECONNECT_POLICY],
        clock=app[CALL_CLOCK],
    )


async def _preconnect(
    app: web.Application, call_sid: str, from_number: str | None, to_number: str | None
) -> None:
    """Open the call's Live session and ask for the greeting before the stream exists."""
    await _release_preconnect(app, call_sid, "webhook repeated")  # Twilio may retry a webhook
    agent = app[AGENT]
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
    app[PRECONNECTS][call_sid] = Preconnect(link, task, expiry, from_number, to_number)


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
