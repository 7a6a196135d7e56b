"""The aiohttp application: Twilio's voice webhook, the media-stream WebSocket and health checks.

``create_app(settings)`` builds the whole server with its state in typed ``AppKey`` slots and its
lifecycle in ``cleanup_ctx``, so tests build a real app in-process with their own Live target.

Routes:
    POST /twilio/voice    the number's "A call comes in" webhook -> TwiML <Connect><Stream>
    GET  /twilio/stream   Twilio's bidirectional media stream (WebSocket)
    POST /twilio/continue the <Connect action>: a stream ended with the call up -> a new stream
    POST /calls           place an outbound call (Bearer CALLS_API_TOKEN; off without one)
    POST /twilio/outbound an outbound call was answered -> TwiML <Connect><Stream>
    POST /twilio/amd      Twilio's answering-machine verdict (AnsweredBy) for an outbound call
    POST /twilio/call-status  an outbound call's progress: busy / no-answer / failed recorded
    POST /twilio/warm-status  a warm transfer's colleague answered, or did not
    GET  /healthz         liveness
    GET  /readyz          readiness for new calls (503 while shutting down, at MAX_CALLS,
                          while call records fail, or while the Live API refuses the server's
                          key or a model: the preflight)
    GET  /metrics         Prometheus metrics
    /console              the browser softphone and call console, with CONSOLE_ENABLED
                          (agent.server.console)
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import structlog
from aiohttp import WSCloseCode, web

from agent.call.active import ActiveCalls
from agent.call.session import SHUTDOWN
from agent.clock import REAL_TIME, Clock
from agent.cluster.state import shared_state_from_url
from agent.config.loader import EnvAllow
from agent.config.models import AgentConfig
from agent.config.registry import AgentRegistry
from agent.config.reload import AgentRegistryHolder, reloading
from agent.crm import Crm
from agent.errors import ConfigError, SharedStateError
from agent.live.budget import CircuitBreaker
from agent.live.link import ReconnectPolicy
from agent.live.models import check_model
from agent.live.preflight import PreflightSchedule
from agent.live.protocol import check_backend
from agent.live.targets import LiveEndpoint, settings_endpoint
from agent.observability.metrics import Metrics
from agent.observability.pricing import PriceTable
from agent.observability.privacy import add_secrets
from agent.records.store import CRASH_HORIZON_S, CallRecordStore, RecordStore
from agent.server.carriers import add_carriers
from agent.server.console import add_console
from agent.server.context import reload_into_calls
from agent.server.outbound import (
    AMD_PATH,
    ANSWER_PATH,
    CALLS_PATH,
    STATUS_PATH,
    amd_status,
    answer_outbound,
    call_status,
    cancel_retries,
    create_call,
    warm_status,
)
from agent.server.preconnect import release_preconnect, release_taken_preconnects
from agent.server.preflight import run_preflight
from agent.server.siblings import WorkerLoads
from agent.server.state import (
    AGENTS,
    BACKGROUND,
    CALL_CLOCK,
    CALL_SOCKETS,
    CALLS,
    CLOCK,
    LIVE_BACKEND,
    LIVE_BREAKER,
    LIVE_PREFLIGHT,
    METRICS,
    OUTBOUND,
    PRECONNECTS,
    PRICES,
    RECONNECT_POLICY,
    RECORDS,
    SETTINGS,
    SHARED,
    STATE,
    STREAM_TOKENS,
    TOOLS,
    WORKER_LOADS,
    Background,
    LiveBackend,
    LivePreflight,
    OutboundCalls,
    Preconnect,
    ServerState,
    Tools,
)
from agent.server.stream import STREAM_PATH, media_stream
from agent.server.transfer import WARM_STATUS_PATH
from agent.server.webhooks import (
    CONTINUE_PATH,
    VOICE_PATH,
    call_load,
    continue_call,
    is_full,
    publish_load,
    voice_webhook,
)
from agent.settings import Settings, reveal
from agent.telephony.rest import TwilioRest
from agent.telephony.webhooks import (
    StreamTokens,
)
from agent.tools import validate_specs
from agent.tools.availability import unavailable_tools

log = structlog.get_logger("agent.app")


#: The largest request body the app reads (aiohttp answers 413 beyond it).
MAX_REQUEST_BYTES = 64 * 1024


def create_app(
    settings: Settings,
    *,
    live_target: LiveEndpoint | None = None,
    agent: AgentConfig | None = None,
    agents: AgentRegistryHolder | None = None,
    reconnect_policy: ReconnectPolicy = ReconnectPolicy(),  # noqa: B008 (frozen)
    live_breaker: CircuitBreaker | None = None,
    clock: Callable[[], float] = time.time,
    call_clock: Clock = REAL_TIME,
    metrics: Metrics | None = None,
    records: CallRecordStore | None = None,
    worker_loads: WorkerLoads | None = None,
) -> web.Application:
    """The whole bridge. Without ``live_target`` it uses ``LIVE_API_URL`` / Google's endpoint,
    unless a start-up hook (the CLI's embedded emulator) sets ``app[LIVE_BACKEND].target``.

    Agents come from ``agents``, or one ``agent`` built in code (tests), or else the YAML files
    in ``AGENTS_PATH`` (reloaded on SIGHUP). Invalid agents raise :class:`ConfigError` here,
    before anything listens. ``worker_loads``: this worker's view of its siblings under
    ``agent serve --workers N`` (default: from the supervisor's environment; None alone).
    """
    # Twilio's webhook forms are a few KiB: 64 KiB, not aiohttp's 1 MiB, for any request body.
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[SETTINGS] = settings
    # However logging was configured, this app's own secrets are masked in every line from now on.
    add_secrets(*settings.secrets())
    # A malformed PRICE_TABLE stops the server here, not at the end of the first call.
    app[PRICES] = PriceTable.from_spec(settings.price_table)
    if live_target is None and not settings.use_emulator:
        live_target = settings_endpoint(settings)
    reloadable = agents is None and agent is None
    if agents is None:
        if agent is not None:
            problems = validate_specs(agent.tool_specs)
            if problems:
                raise ConfigError("invalid tools:\n  " + "\n  ".join(problems), key="tools")
            agents = AgentRegistryHolder.of(AgentRegistry.of(agent))
        else:
            backend = live_target.backend if live_target is not None else "gemini"
            agents = AgentRegistryHolder(
                settings.agents_path,
                env_allow=EnvAllow(settings.agent_env_prefix, settings.agent_env_allow),
                check_tools=validate_specs,
                # A setting the model does not accept is refused at load, as by agent check.
                check_agent=lambda configured: check_model(configured, backend),
            )
    add_secrets(*agents.current.secrets())
    agents.add_listener(lambda registry: _agents_changed(app, registry))
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
    add_carriers(app, secret)  # Telnyx's and Plivo's routes, their tickets keyed alike
    app[CALL_SOCKETS] = set()
    app_metrics = metrics if metrics is not None else Metrics()
    app[CALLS] = ActiveCalls(on_change=app_metrics.set_active_calls)
    app[METRICS] = app_metrics
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
    app[LIVE_BREAKER] = live_breaker if live_breaker is not None else CircuitBreaker()
    interval = settings.live_preflight_interval_s
    app[LIVE_PREFLIGHT] = LivePreflight(PreflightSchedule(interval)) if interval > 0 else None
    app[PRECONNECTS] = {}
    app[BACKGROUND] = Background()
    app[STATE] = ServerState()
    app[WORKER_LOADS] = (
        worker_loads if worker_loads is not None else WorkerLoads.from_environ(os.environ)
    )
    app.router.add_post(VOICE_PATH, voice_webhook)
    app.router.add_get(STREAM_PATH, media_stream)
    app.router.add_post(CONTINUE_PATH, continue_call)
    app[OUTBOUND] = OutboundCalls()
    app.router.add_post(CALLS_PATH, create_call)
    app.router.add_post(ANSWER_PATH, answer_outbound)
    app.router.add_post(AMD_PATH, amd_status)
    app.router.add_post(STATUS_PATH, call_status)
    app.router.add_post(WARM_STATUS_PATH, warm_status)
    app.on_shutdown.append(cancel_retries)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    if settings.console_enabled:
        add_console(app)
    app.cleanup_ctx.append(_announce)
    app.cleanup_ctx.append(_close_records)
    app.cleanup_ctx.append(_tools)
    app.cleanup_ctx.append(_shared_state)
    if app[WORKER_LOADS] is not None:
        app.cleanup_ctx.append(_publish_load)
    app.cleanup_ctx.append(run_preflight)
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


def _agents_changed(app: web.Application, registry: AgentRegistry) -> None:
    """A reload swapped in ``registry``: mask its secrets in the logs from now on, and let the
    calls in progress whose agent says ``on_reload: update`` take the new version."""
    add_secrets(*registry.secrets())
    if BACKGROUND in app and app[CALLS].active:
        app[BACKGROUND].spawn(reload_into_calls(app, registry))


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
            for configured in app[AGENTS].current.agents.values():
                for tool in unavailable_tools(configured, rest=False):
                    log.warning(
                        "tool.not_declared",
                        agent=configured.name,
                        tool=tool.name,
                        missing=tool.missing,
                        message=tool.message,
                    )
        yield
    finally:
        for versions in tools.toolboxes.values():
            for _, toolbox in versions:
                await toolbox.close()
        if tools.crm is not None:
            await tools.crm.close()
        await tools.http.close()


#: How often a worker under ``--workers`` publishes its load for its siblings (when it changed).
LOAD_PUBLISH_S = 0.2


async def _publish_load(app: web.Application) -> AsyncIterator[None]:
    """Keep this worker's load file current (see :mod:`agent.server.siblings`)."""
    loads = app[WORKER_LOADS]
    assert loads is not None

    async def keep_publishing() -> None:
        while True:
            publish_load(app)
            await asyncio.sleep(LOAD_PUBLISH_S)

    task = asyncio.get_running_loop().create_task(keep_publishing(), name="worker load")
    try:
        yield
    finally:
        task.cancel()
        loads.withdraw()


def begin_drain(app: web.Application) -> None:
    """Take no new calls from now on (the webhook answers 503, /readyz says draining)."""
    app[STATE].draining = True
    publish_load(app)  # the other workers stop counting on this one at once
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
    """On shutdown (the drain is over, or a second signal), end everything at once, all in
    parallel: unclaimed pre-connected sessions are released, each call in progress ends with
    reason ``shutdown`` (closing its own stream and Live session, each close bounded; its journal
    does not say it ended, so another replica can continue it), and any
    stream that never started is closed with GOING_AWAY, so no handler hangs."""
    app[STATE].stopping = True
    preconnects: dict[str, Preconnect] = app[PRECONNECTS]
    await asyncio.gather(
        *(release_preconnect(app, sid, "server shutdown") for sid in list(preconnects))
    )
    await app[BACKGROUND].drain()
    for session in list(app[CALLS].active.values()):
        session.end(SHUTDOWN)
    sockets: set[web.WebSocketResponse] = app[CALL_SOCKETS]
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for ws in sockets)
    )


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
        poll = asyncio.get_running_loop().create_task(release_taken_preconnects(app))
    try:
        yield
    finally:
        if poll is not None:
            poll.cancel()
            await asyncio.wait([poll])
        await app[SHARED].close()


def crash_horizon_s(settings: Settings) -> float:
    """How old a call's last write must be before start-up closes it as crashed.

    ``RECORDS_CRASH_HORIZON_S`` if set; else 0 for SQLite with one process (no other process
    can be running a call in that file, and this one has none yet), else
    :data:`~agent.records.store.CRASH_HORIZON_S`: replicas or workers share the records, and a
    call in one of them (or continuing there after a failover) must not be closed by another.
    """
    if settings.records_crash_horizon_s is not None:
        return settings.records_crash_horizon_s
    if settings.database_url.startswith("sqlite:///") and settings.workers == 1:
        return 0.0
    return CRASH_HORIZON_S


async def _close_records(app: web.Application) -> AsyncIterator[None]:
    """At start-up, close the records a crash left open; after shutdown has closed the calls
    and their handlers returned, drain the call records."""
    records = app[RECORDS]
    try:
        await asyncio.to_thread(
            records.close_crashed,
            horizon_s=crash_horizon_s(app[SETTINGS]),
            active=set(app[CALLS].active),
        )
    except Exception as exc:
        # The store passed its check moments ago; a failure here costs only stale "no ending
        # recorded" rows, not the server.
        log.error("records.close_crashed_failed", error=repr(exc))
    yield
    await records.close()


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves requests. It says which process (a random id per process)
    and the ``PUBLIC_URL`` it was given, for ``agent doctor`` to see where PUBLIC_URL leads."""
    app = request.app
    return web.json_response(
        {"status": "ok", "instance": app[STATE].instance, "public_url": app[SETTINGS].public_url}
    )


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
    max_calls = app[SETTINGS].max_calls
    loads = app[WORKER_LOADS]
    siblings = loads.siblings() if loads is not None else []
    if is_full(app):
        where = f", {len(siblings) + 1} workers" if loads is not None else ""
        problems.append(
            f"full: {call_load(app) + sum(s.calls for s in siblings)} calls{where}, "
            f"MAX_CALLS={max_calls} per worker; taking no new ones"
        )
    if (records_problem := app[RECORDS].problem) is not None:
        # Calls would go unrecorded: let the balancer send them to a replica whose writes work.
        problems.append(records_problem)
    preflight = app[LIVE_PREFLIGHT]
    if preflight is not None:
        # A refused key or model fails every call: no balancer should send this one any.
        problems.extend(preflight.schedule.problems)
    # Not a problem of this instance (every replica shares the backend): said, still 200.
    breaker, now = app[LIVE_BREAKER], app[CALL_CLOCK].now()
    body: dict[str, object] = {
        "status": "unavailable" if problems else "ready",
        "problems": problems,
        "active_calls": len(app[CALLS].active),
        "pending_calls": len(app[PRECONNECTS]),  # webhooks answered, streams not started yet
        "max_calls": max_calls,
        "records_backlog": app[RECORDS].backlog,
        "live_circuit": "open" if breaker.is_open(now) else "closed",
        "live_preflight": preflight.schedule.status() if preflight else {"status": "off"},
        "pid": os.getpid(),  # which process answered (agent serve --workers runs several)
    }
    if loads is not None:  # the machine's other workers, as they last said
        body["workers"] = [
            {"index": s.index, "pid": s.pid, "calls": s.calls, "taking_calls": s.taking_calls}
            for s in siblings
        ]
    return web.json_response(body, status=503 if problems else 200)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text exposition of this process's metrics."""
    body, content_type = request.app[METRICS].render()
    # headers=, not content_type=: aiohttp rejects a charset inside content_type.
    return web.Response(body=body, headers={"Content-Type": content_type})
