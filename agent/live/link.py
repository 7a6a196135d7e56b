"""A Live API session that outlives its connections.

The Live API ends every connection after about ten minutes (announced by ``goAway``) and now and
then closes one mid-call (1011) or loses it (1006). Callers must not notice. :class:`LiveLink`
owns the current :class:`~agent.live.connection.LiveConnection` and replaces it:

* on ``goAway`` it switches at the next moment the model is not speaking, and at the latest a
  safety margin before ``timeLeft`` runs out;
* on any unexpected close it reconnects at once, then with bounded, jittered backoff, whatever
  the failure: an attempt that fails to open, or a connection that ends before it worked (see
  :mod:`agent.live.budget`);
* it resumes with the newest resumable handle; without one it opens a fresh session seeded with the
  conversation so far (the call's transcript, through :attr:`LiveLink.conversation`);
* caller audio and other client messages sent during a switch are buffered (bounded) and sent, in
  order, on the new connection, so none is lost; tool results that finish during the switch go out
  after it; after an abnormal close the last ``replay_ms`` of caller audio is sent again, since it
  may have been written into a socket the server no longer read;
* a refusal no retry can fix (a bad API key, an unknown model, no permission:
  :mod:`agent.live.failures`) is not retried: :class:`~agent.errors.LiveRefusedError` goes up at
  once and the call plays its fallback after one attempt instead of ~14 s of silence;
* if no working connection can be had within ``deadline_s``, or the call makes more than
  ``max_attempts_per_minute`` attempts, it raises :class:`LiveUnavailableError`, and the call plays
  its fallback instead of dead air; a per-process :class:`~agent.live.budget.CircuitBreaker`
  makes new attempts fail fast while the backend is seen to be broken;
* a storm (reconnections with failures in between) is logged once, ``live.reconnect_storm``,
  not once per attempt.

The caller's pump only ever calls :meth:`send_audio`, which never waits on a reconnection. What
the link remembers across connections (handle, turn state, ``goAway`` deadline, held and recent
messages) lives in the pure :mod:`agent.live.session_state`; this module keeps the awaits.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from agent.clock import REAL_TIME, Clock
from agent.errors import LiveClosedError, LiveConnectError, LiveError, LiveRefusedError
from agent.live import protocol
from agent.live.budget import CircuitBreaker, ReconnectBudget, Storm
from agent.live.connection import LiveConnection
from agent.live.protocol import GoAway, LiveEvent, ResumptionHandle, TurnComplete
from agent.live.session_state import HeldMessages, ResumptionState

log = structlog.get_logger("agent.live")

Opener = Callable[[str | None], Awaitable[LiveConnection]]
Sleep = Callable[[float], Awaitable[None]]


class LiveUnavailableError(LiveError):
    """No Live connection could be (re)established before the deadline."""


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How hard to try. Defaults suit a phone call: the caller waits seconds, not minutes."""

    # Give up (and play the fallback) after this long without a working connection: one on which
    # the model completed a turn, or that stayed open ``working_after_s``.
    deadline_s: float = 15.0
    working_after_s: float = 5.0
    # Give up, too, past this many connection attempts in any rolling minute, working or not.
    max_attempts_per_minute: int = 20
    first_delay_s: float = 0.1  # the first retry; the first attempt itself is immediate
    max_delay_s: float = 2.0
    go_away_margin_s: float = 5.0  # switch at least this long before goAway's timeLeft runs out
    max_buffered_audio_ms: int = 20_000  # caller audio kept during a switch; oldest dropped past it
    # After an abnormal close (1011, a dropped socket) the last frames written may never have been
    # read: the Developer API does not say what it consumed. Resend this much recent caller audio
    # on the new connection: a possible duplicate of a syllable rather than a lost one.
    replay_ms: int = 200


@dataclass(frozen=True, slots=True)
class LiveReconnected:
    """A new connection replaced the old one (an event for the call's log and metrics)."""

    reason: str  # "go_away", "closed_1011", "dropped", ...
    resumed: bool  # True: resumed with a handle; False: a fresh session seeded with history
    attempts: int
    switch_ms: float  # from losing (or leaving) the old connection to the new one being ready
    buffered_messages: int  # client messages held during the switch (and replayed), now sent
    replayed_frames: int  # recent caller frames sent again after an abnormal close
    dropped_audio_frames: int  # caller frames lost to the buffer bound (0 unless a switch is long)


LinkEvent = LiveEvent | LiveReconnected


class _Switch(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Leave the current connection and move to a new one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LinkHealth(Protocol):
    """Where a link reports how the Live backend is doing, for the process's metrics
    (:class:`~agent.observability.metrics.Metrics` is one); off the per-frame path."""

    def count_live_storm(self, outcome: str) -> None:
        """A storm ended: ``recovered``, ``gave_up`` or ``call_ended``."""

    def count_live_breaker(self, event: str) -> None:
        """The process's breaker ``opened``, or ``refused`` a connection attempt."""


class LiveLink:
    """One Live session for one call, across as many connections as it takes."""

    def __init__(
        self,
        opener: Opener,
        policy: ReconnectPolicy = ReconnectPolicy(),
        *,
        clock: Clock = REAL_TIME,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        breaker: CircuitBreaker | None = None,
        health: LinkHealth | None = None,
        transparent: bool = False,
        wire: protocol.WireProfile = protocol.DEFAULT_WIRE,
    ) -> None:
        """``sleep`` waits between connection attempts (wall seconds) and ``jitter`` draws from
        [0, 1) to spread them (each wait is scaled by ``0.5 + jitter()``); tests replace both.
        ``breaker`` is shared by the links of a process (the app keeps one); ``None``: none.
        ``health`` counts storms and breaker events (the app's metrics); ``None``: nowhere.
        ``transparent``: the setup asks for transparent resumption (Vertex AI), so after a
        switch exactly the messages the server had not consumed are sent again. ``wire``: what
        the model takes (:func:`agent.live.models.wire_profile`), for the call's own messages
        (tool results, context updates)."""
        self._opener = opener
        self.wire = wire
        self.policy = policy
        clock = clock.on_running_loop()  # a call lives on one loop: bind it once
        self._clock = clock.now
        self._wall = clock.wall
        self._sleep = sleep
        self._jitter = jitter
        self._conn: LiveConnection | None = None
        self._held = HeldMessages(
            max_audio_frames=policy.max_buffered_audio_ms // 20,
            replay_s=policy.replay_ms / 1000,
            transparent=transparent,
        )
        self._state = ResumptionState(policy.go_away_margin_s)
        self._budget = ReconnectBudget(
            deadline_s=policy.deadline_s,
            first_delay_s=policy.first_delay_s,
            max_delay_s=policy.max_delay_s,
            working_after_s=policy.working_after_s,
            max_attempts_per_minute=policy.max_attempts_per_minute,
        )
        self._breaker = breaker
        self._health = health
        # The conversation so far as (role, text), for seeding a fresh session when no handle is
        # left. The call's transcript knows it best (what the caller heard): the session sets it.
        self.conversation: Callable[[], Sequence[tuple[str, str]]] = tuple
        self._closed = False
        self._restart_reason: str | None = None  # restart() asked to leave the connection
        self.reconnects = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the first connection (with the same retries and deadline as a reconnection)."""
        self._conn, _ = await self._open(resume=False)
        self._held.new_connection()

    async def resume(self, handle: str | None) -> None:
        """Open the first connection of a call continued from an earlier media stream (another
        replica's, perhaps): resume the session ``handle`` names, or, without one or if the
        service refuses it, a fresh session seeded with :attr:`conversation`."""
        self._state.handle = handle
        self._conn, _ = await self._open_and_flush()

    async def restart(self, reason: str) -> None:
        """Leave the current connection and carry on with a new one (resumed with the handle,
        or a fresh session seeded with :attr:`conversation`), as after a ``goAway``: for a
        connection that is open but no longer answering (a stalled model). :meth:`events`
        yields the :class:`LiveReconnected` with ``reason``."""
        conn = self._conn
        if conn is None or self._closed:
            return
        self._restart_reason = reason
        await conn.close()  # its event stream ends; events() reconnects

    async def reconfigure(self, opener: Opener, reason: str, *, within_s: float = 15.0) -> None:
        """From now on connect with ``opener`` (a new agent's setup: its instructions and
        tools), and move to a new connection at the next quiet moment, as for a ``goAway``
        (the model's turn over, the handle covering it), at the latest ``within_s`` from now:
        resumed with the handle, which keeps the conversation (a resumed session takes a new
        setup's instruction and tools; only the model cannot change), or a fresh session
        seeded with :attr:`conversation`. For a model that cannot take a ``contextUpdate``
        mid-session; :meth:`events` yields the :class:`LiveReconnected` with ``reason``."""
        self._opener = opener
        self._state.ask_switch(reason, self._clock(), within_s)
        if self._state.switch_now:
            await self.restart(reason)  # already quiet: no event may come to act on

    async def close(self) -> None:
        """End the session: close the current connection; buffered messages are dropped."""
        self._closed = True
        self._log_storm(self._budget.finish(self._clock()), "call_ended")
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    @property
    def is_closed(self) -> bool:
        """Closed by :meth:`close`, with no connection left open."""
        return self._closed and self._conn is None

    # -- caller side ----------------------------------------------------------------------------

    async def send_audio(self, pcm: bytes, sample_rate: int = 16000) -> None:
        """Send caller audio (PCM16 at ``sample_rate``) now, or hold it (bounded) while the
        connection is being replaced."""
        message = protocol.audio_message(pcm, sample_rate)
        if not self._sent_at_once(message, audio=True):
            await self._send(message, audio=True)

    async def send(self, message: str) -> None:
        """Send a client message (text turn, tool response...); held during a switch."""
        if not self._sent_at_once(message, audio=False):
            await self._send(message, audio=False)

    def _sent_at_once(self, message: str, *, audio: bool) -> bool:
        """The usual case, without an await: written to an open socket that has room (see
        LiveConnection.send_now) and remembered for a replay. False: :meth:`_send` it."""
        conn = self._conn
        if conn is None or not conn.send_now(message):
            return False
        self._held.sent(message, audio=audio, now=self._clock())
        return True

    async def _send(self, message: str, *, audio: bool) -> None:
        """The slow path: held while there is no connection, else awaited until the socket
        takes it; a socket found closed holds it for the next connection."""
        conn = self._conn
        if conn is None:
            self._held.hold(message, audio=audio)
            return
        try:
            await conn.send(message)
        except LiveClosedError:
            # The model pump will see the close and reconnect; keep this one for the new socket.
            if self._conn is conn:
                self._conn = None
            self._held.hold(message, audio=audio)
            return
        self._held.sent(message, audio=audio, now=self._clock())

    @property
    def replayed_frames(self) -> int:
        """Caller frames sent again after abnormal closes, over the whole session."""
        return self._held.replayed_frames

    # -- model side -----------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[LinkEvent]:
        """Every server event of the session, across connections, plus :class:`LiveReconnected`.

        Raises :class:`LiveUnavailableError` when no connection can be had before the deadline.
        """
        while not self._closed:
            conn = self._conn
            if conn is None:  # a send found the socket closed before this loop did
                self._held.replay_recent()
                yield await self._reconnect("dropped", lost_at=self._clock())
                continue
            try:
                async for event in self._events_of(conn):
                    yield event
                if self._closed:
                    return
                reason, lost_at = "closed", self._clock()
                if self._restart_reason is not None:
                    # We left it: the audio it was sent stays unanswered, so send it again.
                    reason, self._restart_reason = self._restart_reason, None
                    self._held.replay_recent()
            except _Switch as switch:
                # We close the old socket after our last frame: it read everything we sent.
                self._held.forget_recent()
                reason, lost_at = switch.reason, self._clock()
            except LiveClosedError as exc:
                if self._closed:
                    return
                lost_at = self._clock()
                if self._restart_reason is not None:  # our own close, as restart() asked
                    reason, self._restart_reason = self._restart_reason, None
                else:
                    reason = f"closed_{exc.code}" if exc.code else "dropped"
                    self._warn("live.connection_lost", code=exc.code, reason=exc.reason)
                self._held.replay_recent()
            yield await self._reconnect(reason, lost_at=lost_at)

    async def _events_of(self, conn: LiveConnection) -> AsyncIterator[LiveEvent]:
        """One connection's events; raises :class:`_Switch` when it is time to leave it."""
        state = self._state
        state.connected()
        iterator = conn.events().__aiter__()
        while True:
            try:
                switch_by = state.switch_by
                if switch_by is None:  # the usual case: no timer per event
                    event = await anext(iterator)
                else:
                    async with asyncio.timeout_at(self._switch_deadline(switch_by)):
                        event = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise _Switch(state.switch_reason) from None
            now = self._clock()
            state.observe(event, now)
            kind = type(event)
            if kind is ResumptionHandle:
                assert isinstance(event, ResumptionHandle)
                if event.last_consumed_index is not None and event.resumable:
                    self._held.consumed(event.last_consumed_index)
            if kind is TurnComplete:
                self._log_storm(self._budget.turn_completed(now), "recovered")
            elif kind is GoAway:
                assert isinstance(event, GoAway)
                self._info("live.go_away", time_left_s=event.time_left_s)
            yield event
            if state.switch_now:
                # The model's turn is over and the handle covers it: the quietest moment to
                # change connections without losing the last exchange.
                raise _Switch(state.switch_reason)

    def _switch_deadline(self, go_away_at: float) -> float:
        # asyncio deadlines are on the loop's clock; goAway time is on ours. Convert.
        loop = asyncio.get_running_loop()
        return loop.time() + self._wall(max(0.0, go_away_at - self._clock()))

    # -- switching connections ------------------------------------------------------------------

    async def _reconnect(self, reason: str, *, lost_at: float) -> LiveReconnected:
        old, self._conn = self._conn, None
        if old is not None:
            # The service refuses a resume while the old socket is open: close it first.
            await old.close()
        await self._back_off(reason, reason)
        self._state.switching()
        held, replayed = self._held.switch_started()
        conn, attempts = await self._open_and_flush()
        dropped = self._held.switch_done()
        self._conn = conn
        self.reconnects += 1
        event = LiveReconnected(
            reason=reason,
            resumed=self._state.handle is not None,
            attempts=attempts,
            switch_ms=round((self._clock() - lost_at) * 1000, 1),
            buffered_messages=held,
            replayed_frames=replayed,
            dropped_audio_frames=dropped,
        )
        self._info(
            "live.reconnected",
            reason=event.reason,
            resumed=event.resumed,
            attempts=event.attempts,
            switch_ms=event.switch_ms,
            buffered_messages=event.buffered_messages,
            replayed_frames=event.replayed_frames,
            dropped_audio_frames=event.dropped_audio_frames,
        )
        return event

    async def _open_and_flush(self) -> tuple[LiveConnection, int]:
        """A new connection with everything held for it sent, in order. If it fails before it
        is published, nothing is lost: the unsent messages stay held and the next one gets them.
        """
        total = 0
        while True:
            conn, attempts = await self._open(resume=True)
            total += attempts
            self._held.new_connection()
            try:
                history = self.conversation() if self._state.handle is None else ()
                if history:
                    seed = protocol.history_message(history)
                    await conn.send(seed)
                    self._held.sent(seed, audio=False, now=self._clock())
                # A message leaves the buffer only once sent; no await between the last send
                # and publishing the connection, so nothing can slip into the buffer unseen.
                while (message := self._held.first()) is not None:
                    await conn.send(message)
                    self._held.first_sent()
            except LiveClosedError as exc:
                self._warn("live.connection_lost", code=exc.code, reason=exc.reason)
                await conn.close()
                reason = f"closed_{exc.code}" if exc.code else "dropped"
                await self._back_off(reason, str(exc))
                continue
            except BaseException:
                await conn.close()  # cancelled mid-flush (the call ended): never leak it
                raise
            if self._closed:  # the call ended while we were connecting
                await conn.close()
            return conn, total

    async def _open(self, *, resume: bool) -> tuple[LiveConnection, int]:
        """Connect, with backoff between attempts, until the budget is spent; (connection,
        attempts)."""
        budget = self._budget
        attempts = 0
        while True:
            self._check_breaker()
            attempts += 1
            budget.attempt(self._clock())
            handle = self._state.handle if resume else None
            try:
                # The deadline is a promise to the caller: no attempt may run past it.
                remaining = budget.remaining(self._clock())
                async with asyncio.timeout(self._wall(max(remaining, 0.001))):
                    conn = await self._opener(handle)
            except TimeoutError as exc:
                budget.failed(self._clock(), "timeout", "the last attempt timed out")
                raise self._give_up("the last attempt timed out") from exc
            except LiveRefusedError as exc:
                # Every retry would be refused the same way: the caller hears the fallback now.
                # The breaker is not told: it guards against a backend that fails now and then,
                # and the preflight (agent.live.preflight) reports a refusal on /readyz.
                budget.failed(self._clock(), exc.kind, str(exc))
                self._log_storm(budget.finish(self._clock()), "gave_up")
                log.error(
                    "live.refused", kind=exc.kind, attempt=attempts, error=str(exc), fix=exc.fix
                )
                raise
            except LiveConnectError as exc:
                if handle is not None and exc.code == 1007:
                    # The service rejected the handle (expired, unknown): start afresh instead.
                    log.warning("live.resume_refused", error=str(exc))
                    self._state.handle_refused()
                    continue
                self._warn("live.connect_failed", attempt=attempts, error=str(exc))
                await self._back_off("connect_failed", str(exc))
                continue
            budget.connected(self._clock())
            return conn, attempts

    async def _back_off(self, reason: str, error: str) -> None:
        """A connection ended or an attempt failed: wait as the budget says, or give up."""
        delay = self._budget.failed(self._clock(), reason, error)
        self._log_storm(self._budget.ended_storm, "recovered")
        if delay is None:
            raise self._give_up(error)
        if delay > 0:
            await self._sleep(self._wall(delay) * (0.5 + self._jitter()))

    def _give_up(self, error: str) -> LiveUnavailableError:
        """The budget is spent: log the storm, tell the breaker; the error to raise."""
        now = self._clock()
        budget = self._budget
        storm = budget.storm
        attempts = storm.attempts if storm is not None else 0
        why = (
            f"more than {self.policy.max_attempts_per_minute} attempts in a minute"
            if budget.spent_because == "rate"
            else f"no working connection in {self.policy.deadline_s:g} s"
        )
        self._log_storm(budget.finish(now), "gave_up")
        breaker = self._breaker
        if breaker is not None and breaker.gave_up(now):
            if self._health is not None:
                self._health.count_live_breaker("opened")
            log.error(
                "live.circuit_open",
                storms=breaker.storms,
                window_s=breaker.window_s,
                cool_down_s=breaker.cool_down_s,
            )
        return LiveUnavailableError(f"no Live connection: {why} ({attempts} attempts): {error}")

    def _check_breaker(self) -> None:
        """Fail fast while the process's breaker is open, unless this is the first attempt to
        replace a working connection (an ordinary switch of a call in progress)."""
        breaker = self._breaker
        if breaker is None or (self._budget.ever_worked and self._budget.failures == 0):
            return
        now = self._clock()
        if breaker.is_open(now):
            if self._health is not None:
                self._health.count_live_breaker("refused")
            raise LiveUnavailableError(
                f"no Live connection: the Live API failed other calls; not trying for another "
                f"{breaker.retry_in(now):.1f} s"
            )

    # -- logging --------------------------------------------------------------------------------

    def _quiet(self) -> bool:
        """In a storm: per-attempt lines go to debug; ``live.reconnect_storm`` sums them up."""
        return self._budget.in_storm(self._clock())

    def _warn(self, event: str, **fields: object) -> None:
        (log.debug if self._quiet() else log.warning)(event, **fields)

    def _info(self, event: str, **fields: object) -> None:
        (log.debug if self._quiet() else log.info)(event, **fields)

    def _log_storm(self, storm: Storm | None, outcome: str) -> None:
        if storm is None:
            return
        if self._health is not None:
            self._health.count_live_storm(outcome)
        level = log.error if outcome == "gave_up" else log.warning
        level("live.reconnect_storm", outcome=outcome, **storm.fields(self._clock()))
