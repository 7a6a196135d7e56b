"""The media stream: wait for ``start``, claim its ticket, then run a :class:`CallSession`.

:func:`run_call` is the part every carrier shares (the console's softphone too,
:mod:`agent.server.console`): once a stream has started and its ticket is claimed, the call's
record, journal, tools and session are set up and run the same way."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from agent.call.control import CallControl
from agent.call.session import CallSession
from agent.cluster.journal import CallJournal
from agent.cluster.state import CallSnapshot
from agent.config.models import AgentConfig
from agent.config.templates import format_local_date, format_local_time
from agent.errors import SharedStateError, SignatureError
from agent.live.link import LiveLink
from agent.server.context import CallAgents, agent_for_call, identity, toolbox_for
from agent.server.preconnect import new_link
from agent.server.state import (
    AGENTS,
    CALL_CLOCK,
    CALL_SOCKETS,
    CALLS,
    CLOCK,
    METRICS,
    PRECONNECTS,
    PRICES,
    RECORDS,
    SETTINGS,
    SHARED,
    STREAM_TOKENS,
    TOOLS,
)
from agent.server.transfer import ServerWarmTransfers
from agent.server.verdicts import forget, load_plan, wait_verdict
from agent.telephony.carrier import CarrierStream
from agent.telephony.outbound import AnswerGate, OutboundPlan
from agent.telephony.twilio import (
    Connected,
    ProtocolError,
    StreamStarted,
    TwilioMediaStream,
)
from agent.telephony.webhooks import (
    StreamTicket,
    StreamTokens,
)
from agent.tools import CallContext

log = structlog.get_logger("agent.app")

#: How long closing a media stream waits for Twilio's closing handshake.
CLOSE_TIMEOUT_S = 2.0


STREAM_PATH = "/twilio/stream"

#: An outbound call's greeting waits for Twilio's verdict up to its ``MachineDetectionTimeout``
#: and this much more (the callback's trip), then the agent greets: the verdict is ``unknown``.
VERDICT_GRACE_S = 5.0


#: Before ``start`` a socket is unauthenticated (its ticket is in ``start``): it may send this
#: much in all, and no message larger than :data:`PRE_START_MESSAGE_BYTES`, or it is closed with
#: 1009. Twilio's ``connected`` and ``start`` together are under 2 KiB (the ticket included).
PRE_START_BYTES = 8 * 1024
PRE_START_MESSAGE_BYTES = 4 * 1024

#: The largest message a started stream may send; a larger one ends the stream (1009, logged as
#: ``twilio.stream_error``; the call is continuable, reason "stream lost"). Twilio's messages are
#: a few hundred bytes (a 20 ms ``media`` frame is ~300); 64 KiB, not aiohttp's 1 MiB default,
#: so that a hostile peer cannot make the bridge buffer and decode megabytes per message.
STREAM_MESSAGE_BYTES = 64 * 1024


async def media_stream(request: web.Request) -> web.StreamResponse:
    """Twilio's media stream for one call: wait for ``start``, then run a :class:`CallSession`."""
    return await carrier_socket(request, _serve_stream)


async def carrier_socket(
    request: web.Request,
    serve: Callable[[web.Application, web.WebSocketResponse], Awaitable[None]],
) -> web.WebSocketResponse:
    """Accept a carrier's media-stream WebSocket (Twilio's, the console softphone's) and
    ``serve`` it, the socket tracked meanwhile so that a shutdown can close it."""
    app = request.app
    # timeout: how long our close waits for the peer's close frame (aiohttp's default is 10 s).
    ws = web.WebSocketResponse(max_msg_size=STREAM_MESSAGE_BYTES, timeout=CLOSE_TIMEOUT_S)
    await ws.prepare(request)
    app[CALL_SOCKETS].add(ws)
    try:
        await serve(app, ws)
    finally:
        app[CALL_SOCKETS].discard(ws)
    return ws


async def _serve_stream(app: web.Application, ws: web.WebSocketResponse) -> None:
    stream = TwilioMediaStream()
    ticket: StreamTicket | None = None
    try:
        started = await await_start(ws, stream, app[SETTINGS].stream_start_timeout_s)
        if started is not None:
            ticket = await claim_ticket(app, started)
    except SignatureError as exc:
        log.warning("call.rejected", reason=str(exc))
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"stream not authorised")
        return
    if started is None:
        await ws.close()
        return
    current = app[CALLS].active.get(started.call_sid)
    if current is not None and (ticket is None or ticket.leg <= current.leg):
        # One live stream per call: a second one for a call in progress is a replay, never
        # Twilio (which opens one <Connect><Stream> per call, and a new one, the next leg, only
        # after the first has ended: its ticket then names a later leg).
        log.warning("call.duplicate_stream", call_sid=started.call_sid, security=True)
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"call already streaming")
        return
    continuation = await _continuation(app, ticket)
    # An outbound call's plan (None: inbound): its session holds the greeting for the verdict.
    plan = await load_plan(app, started.call_sid) if continuation is None else None
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
        # The agent comes from the signed ticket, never from an unsigned <Parameter>: without a
        # ticket (development, no webhook here) the number's agent answers.
        named = ticket.agent if ticket else None
        if continuation is not None:
            named = continuation.agent
        caller = ticket.from_number if ticket else None
        called = ticket.to_number if ticket else None
        verified = ticket.caller_verified if ticket else False
        configured = registry.by_name(named) or registry.for_number(called)
        agent, _ = await agent_for_call(
            app,
            configured,
            started.call_sid,
            caller,
            called,
            verified,
            params=plan.params if plan is not None else None,
        )
        link, ready = new_link(app, agent), None
    await run_call(
        app,
        ws,
        stream,
        started,
        CallParty(agent, caller, called, verified),
        link=link,
        ready=ready,
        call_control=app[TOOLS].twilio,
        ticket=ticket is not None,
        continuation=continuation,
        plan=plan,
    )


@dataclass(frozen=True, slots=True)
class CallParty:
    """Who a call is between: the agent (rendered for the call), the caller's and the called
    number as the carrier gave them, and whether the caller's number is attested."""

    agent: AgentConfig
    caller: str | None
    called: str | None
    verified: bool


async def run_call(
    app: web.Application,
    ws: web.WebSocketResponse,
    stream: CarrierStream,
    started: StreamStarted,
    party: CallParty,
    *,
    link: LiveLink,
    ready: asyncio.Task[None] | None,
    call_control: CallControl | None,
    ticket: bool,
    continuation: CallSnapshot | None = None,
    plan: OutboundPlan | None = None,
) -> None:
    """Run one call whose stream has started, whichever carrier it came through (a Twilio
    media stream, the console's softphone): its record, journal, tools and session, to its end.
    ``link`` is its Live session (``ready`` a pre-connect under way); ``call_control`` what
    hangs up and transfers beyond the stream (None: closing the stream is all there is);
    ``plan`` an outbound call's (its greeting waits for the answering-machine verdict)."""
    agent, caller, called, verified = party.agent, party.caller, party.called, party.verified
    preconnected = ready is not None
    try:
        structlog.contextvars.bind_contextvars(
            call_sid=started.call_sid, stream_sid=started.stream_sid, agent=agent.name
        )
        log.info(
            "call.started",
            tracks=list(started.tracks),
            preconnected=preconnected,
            ticket=ticket,
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
            caller_number=identity(agent, caller, verified=verified),
            called_number=called,
            local_time=format_local_time(datetime.fromtimestamp(wall_started, UTC), agent.timezone),
            local_date=format_local_date(datetime.fromtimestamp(wall_started, UTC), agent.timezone),
        )
        twilio = app[TOOLS].twilio
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
            toolbox=toolbox_for(app, agent),
            tool_context=tool_context,
            prices=app[PRICES],
            call_control=call_control,
            warm_transfers=None
            if twilio is None or call_control is None
            else ServerWarmTransfers(app, twilio),
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
            switch_agent=CallAgents(
                app,
                started.call_sid,
                caller,
                called,
                verified,
                tool_context,
                rest=call_control is not None,
                params=plan.params if plan is not None else None,
            ),
            source_agent=app[AGENTS].current.by_name(agent.name),
            answer_gate=None
            if plan is None
            else AnswerGate(
                opened_at=app[CALL_CLOCK].now(),
                wait_s=agent.outbound.amd_timeout_s + VERDICT_GRACE_S,
                on_machine=agent.outbound.on_machine,
                has_voicemail=agent.outbound.voicemail_message is not None,
            ),
            verdict=None
            if plan is None
            else functools.partial(wait_verdict, app, started.call_sid),
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
        if plan is not None:
            forget(app, started.call_sid)


async def await_start(
    ws: web.WebSocketResponse, stream: CarrierStream, timeout_s: float
) -> StreamStarted | None:
    """Read ``connected`` and ``start``; None if the socket closes, ``start`` never comes, or
    the socket sends more than the pre-start window allows (then it is closed with 1009)."""
    received = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    if message.type is WSMsgType.BINARY:
                        log.warning("twilio.protocol_error", reason="binary frame before start")
                    return None
                text: str = message.data
                # Characters first: a huge message is refused without encoding it.
                size = len(text) if len(text) > PRE_START_MESSAGE_BYTES else len(text.encode())
                received += size
                if size > PRE_START_MESSAGE_BYTES or received > PRE_START_BYTES:
                    # Checked before parsing: an unauthenticated socket gets no JSON decoding of
                    # large messages, and one line, then it is closed.
                    log.warning(
                        "twilio.pre_start_too_big",
                        message_bytes=size,
                        received_bytes=received,
                        limit_bytes=PRE_START_BYTES,
                        message_limit_bytes=PRE_START_MESSAGE_BYTES,
                    )
                    await ws.close(
                        code=WSCloseCode.MESSAGE_TOO_BIG, message=b"too much before start"
                    )
                    return None
                event = stream.receive_text(text)
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


async def claim_ticket(
    app: web.Application,
    started: StreamStarted,
    tokens: StreamTokens | None = None,
    *,
    required: bool | None = None,
) -> StreamTicket | None:
    """The stream's ticket, used up so no other stream (on any replica) can present it again.

    With an auth token configured, only streams our signed webhook announced may run: a missing,
    forged, expired or reused ticket raises :class:`SignatureError`. Without one (development) a
    stream runs anyway, with the ticket's facts only if it is valid and unused. If the shared
    state cannot be reached the ticket is accepted on its signature alone (bound to this CallSid
    and unexpired): refusing would drop a real caller over a store outage.
    """
    now = app[CLOCK]()
    # ``tokens``: whose tickets (default the voice webhook's); ``required``: refuse a stream
    # without one (default: when TWILIO_AUTH_TOKEN is set).
    authenticated = bool(app[SETTINGS].twilio_auth_token) if required is None else required
    ticket = (tokens or app[STREAM_TOKENS]).open(
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
