"""LiveLink: one Live session across connections, with fake connections (no sockets)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from timing import scaled_timeout

from agent.clock import Clock
from agent.errors import LiveClosedError, LiveConnectError, LiveRefusedError
from agent.live import protocol
from agent.live.budget import CircuitBreaker
from agent.live.link import (
    LinkEvent,
    LiveLink,
    LiveReconnected,
    LiveUnavailableError,
    Opener,
    ReconnectPolicy,
)
from agent.live.protocol import (
    GenerationComplete,
    GoAway,
    LiveEvent,
    ModelAudio,
    ResumptionHandle,
    TurnComplete,
)
from agent.observability.metrics import Metrics

FAST = ReconnectPolicy(first_delay_s=0.001, max_delay_s=0.002, deadline_s=1.0)


class FakeConnection:
    """A Live connection whose server side the test scripts through ``push``."""

    def __init__(self, handle: str | None) -> None:
        self.handle = handle
        self.sent: list[str] = []
        self.closed = False
        self._inbox: asyncio.Queue[LiveEvent | Exception | None] = asyncio.Queue()

    def push(self, item: LiveEvent | Exception | None) -> None:
        self._inbox.put_nowait(item)

    def send_now(self, message: str) -> bool:
        if self.closed:
            return False  # the link then awaits send(), which raises as the real one does
        self.sent.append(message)
        return True

    async def send(self, message: str) -> None:
        if self.closed:
            raise LiveClosedError(1011, "closed")
        self.sent.append(message)

    async def events(self) -> AsyncIterator[LiveEvent]:
        while True:
            item = await self._inbox.get()
            if item is None:
                return
            if isinstance(item, Exception):
                self.closed = True
                raise item
            yield item

    async def close(self) -> None:
        self.closed = True
        self.push(None)


class FakeService:
    """Hands out FakeConnections; can refuse a number of attempts first."""

    def __init__(self, failures: Sequence[Exception] | None = None) -> None:
        self.connections: list[FakeConnection] = []
        self.failures = list(failures or [])
        self.attempts: list[str | None] = []
        self.dead_on_arrival: set[int] = set()  # indexes of connections that die at once
        # When set, the next open() reports itself on ``attempting`` and waits for ``release``.
        self.hold_next = False
        self.attempting = asyncio.Event()
        self.release = asyncio.Event()

    async def open(self, handle: str | None) -> FakeConnection:
        self.attempts.append(handle)
        if self.hold_next:
            self.hold_next = False
            self.attempting.set()
            await self.release.wait()
        if self.failures:
            raise self.failures.pop(0)
        conn = FakeConnection(handle)
        if len(self.connections) in self.dead_on_arrival:
            conn.closed = True  # accepted, then its first send finds it closed
        self.connections.append(conn)
        return conn


def audio_of(message: str) -> bytes:
    return protocol.decode_b64(json.loads(message)["realtimeInput"]["audio"]["data"])


async def start(service: FakeService, policy: ReconnectPolicy = FAST) -> LiveLink:
    link = LiveLink(service.open, policy)  # type: ignore[arg-type]
    await link.start()
    return link


async def next_event(events: AsyncIterator[LinkEvent]) -> LinkEvent:
    async with asyncio.timeout(scaled_timeout(5)):
        return await anext(events)


async def test_a_dropped_connection_is_resumed_with_the_newest_handle_and_no_audio_is_lost() -> (
    None
):
    service = FakeService()
    link = await start(service)
    first = service.connections[0]
    events = link.events()
    first.push(ResumptionHandle("h-1", True))
    first.push(ResumptionHandle(None, False))  # mid-turn: not resumable, keep h-1
    assert await next_event(events) == ResumptionHandle("h-1", True)
    assert await next_event(events) == ResumptionHandle(None, False)
    await link.send_audio(b"\x01\x00")
    service.hold_next = True
    first.push(LiveClosedError(1011, "Internal error occurred."))
    reconnected = asyncio.ensure_future(next_event(events))
    await service.attempting.wait()
    # While the switch is under way the caller keeps talking: held, not sent into the dead socket.
    await link.send_audio(b"\x02\x00")
    await link.send_audio(b"\x03\x00")
    assert len(first.sent) == 1
    service.release.set()
    event = await reconnected
    assert isinstance(event, LiveReconnected)
    assert event.reason == "closed_1011"
    assert event.resumed
    second = service.connections[1]
    assert second.handle == "h-1"
    await link.send_audio(b"\x04\x00")
    # Frame 1 went into a socket the server then closed: it may be unread, so it is sent again
    # (replay window), ahead of the frames held during the switch.
    assert [audio_of(m) for m in first.sent] == [b"\x01\x00"]
    assert [audio_of(m) for m in second.sent] == [
        b"\x01\x00",
        b"\x02\x00",
        b"\x03\x00",
        b"\x04\x00",
    ]
    assert event.replayed_frames == 1
    await link.close()


async def test_a_go_away_switch_replays_nothing() -> None:
    service = FakeService()
    link = await start(service)
    events = link.events()
    first = service.connections[0]
    await link.send_audio(b"\x01\x00")
    first.push(ResumptionHandle("h-1", True))
    first.push(GoAway(50.0))
    assert await next_event(events) == ResumptionHandle("h-1", True)
    assert await next_event(events) == GoAway(50.0)
    event = await next_event(events)
    assert isinstance(event, LiveReconnected)
    assert event.replayed_frames == 0
    await link.send_audio(b"\x02\x00")
    assert [audio_of(m) for m in service.connections[1].sent] == [b"\x02\x00"]
    await link.close()


async def test_with_transparent_resumption_a_switch_replays_exactly_the_unconsumed_audio() -> None:
    service = FakeService()
    link = LiveLink(service.open, ReconnectPolicy(), transparent=True)  # type: ignore[arg-type]
    await link.start()
    events = link.events()
    first = service.connections[0]
    for frame in (b"\x01\x00", b"\x02\x00", b"\x03\x00"):
        await link.send_audio(frame)  # messages 1, 2, 3 after setup
    first.push(ResumptionHandle("h-1", True, 1))  # the state includes the first frame only
    first.push(GoAway(50.0))
    assert await next_event(events) == ResumptionHandle("h-1", True, 1)
    assert await next_event(events) == GoAway(50.0)
    event = await next_event(events)
    assert isinstance(event, LiveReconnected)
    assert service.attempts[-1] == "h-1"
    # A clean switch, yet the 2nd and 3rd frames are not in the state resumed: sent again,
    # once each, in order; without transparent resumption nothing would be (see above).
    assert [audio_of(m) for m in service.connections[1].sent] == [b"\x02\x00", b"\x03\x00"]
    assert event.replayed_frames == 2
    await link.close()


async def test_go_away_between_turns_switches_at_once() -> None:
    service = FakeService()
    link = await start(service)
    events = link.events()
    first = service.connections[0]
    first.push(ResumptionHandle("h-1", True))
    first.push(GoAway(50.0))
    assert await next_event(events) == ResumptionHandle("h-1", True)
    assert await next_event(events) == GoAway(50.0)
    event = await next_event(events)
    assert isinstance(event, LiveReconnected)
    assert event.reason == "go_away"
    assert first.closed  # closed before resuming: the service refuses a resume otherwise
    assert service.connections[1].handle == "h-1"
    await link.close()


async def test_go_away_while_the_model_speaks_waits_for_the_end_of_its_turn() -> None:
    service = FakeService()
    link = await start(service)
    events = link.events()
    first = service.connections[0]
    first.push(ResumptionHandle("h-old", True))
    first.push(ModelAudio(b"\x00\x00" * 480))
    first.push(GoAway(50.0))
    first.push(ModelAudio(b"\x00\x00" * 480))
    first.push(GenerationComplete())  # generated, but the turn is not over yet
    first.push(TurnComplete())
    first.push(ResumptionHandle("h-new", True))  # the handle that covers the finished turn
    seen = [await next_event(events) for _ in range(7)]
    assert [type(e) for e in seen] == [
        ResumptionHandle,
        ModelAudio,
        GoAway,
        ModelAudio,
        GenerationComplete,
        TurnComplete,
        ResumptionHandle,
    ]
    assert len(service.connections) == 1  # the turn was not cut
    event = await next_event(events)
    assert isinstance(event, LiveReconnected)
    assert event.reason == "go_away"
    # Resumed from the handle issued after the turn, so the last exchange is not forgotten.
    assert service.connections[1].handle == "h-new"
    await link.close()


async def test_a_new_connection_that_fails_while_catching_up_is_replaced_without_loss() -> None:
    service = FakeService()
    link = await start(service)
    events = link.events()
    first = service.connections[0]
    service.hold_next = True
    first.push(LiveClosedError(1011, "Internal error occurred."))
    reconnected = asyncio.ensure_future(next_event(events))
    await service.attempting.wait()
    await link.send_audio(b"\x05\x00")
    await link.send_audio(b"\x06\x00")
    service.dead_on_arrival.add(1)  # the next connection dies on its first send
    service.release.set()
    event = await reconnected
    assert isinstance(event, LiveReconnected)
    third = service.connections[2]
    assert [audio_of(m) for m in third.sent] == [b"\x05\x00", b"\x06\x00"]
    await link.close()


async def test_go_away_switches_before_time_runs_out_even_mid_turn() -> None:
    service = FakeService()
    link = await start(service, ReconnectPolicy(first_delay_s=0.001, go_away_margin_s=5.0))
    events = link.events()
    first = service.connections[0]
    first.push(ModelAudio(b"\x00\x00"))
    first.push(GoAway(5.0))  # no time to wait for the turn to end
    assert type(await next_event(events)) is ModelAudio
    assert type(await next_event(events)) is GoAway
    event = await next_event(events)
    assert isinstance(event, LiveReconnected)
    assert event.reason == "go_away"
    await link.close()


async def test_without_a_handle_a_fresh_session_is_seeded_with_the_conversation() -> None:
    service = FakeService()
    link = await start(service)
    link.conversation = lambda: [("user", "Where is my order?"), ("model", "It shipped.")]
    events = link.events()
    first = service.connections[0]
    first.push(LiveClosedError(None, "connection lost"))
    event = await next_event(events)
    assert isinstance(event, LiveReconnected)
    assert event.reason == "dropped"
    assert not event.resumed
    second = service.connections[1]
    assert second.handle is None
    assert json.loads(second.sent[0]) == {
        "clientContent": {
            "turns": [
                {"role": "user", "parts": [{"text": "Where is my order?"}]},
                {"role": "model", "parts": [{"text": "It shipped."}]},
            ],
            "turnComplete": False,
        }
    }
    await link.close()


async def test_a_refused_handle_falls_back_to_a_fresh_session() -> None:
    service = FakeService()
    link = await start(service)
    events = link.events()
    first = service.connections[0]
    first.push(ResumptionHandle("stale", True))
    await next_event(events)
    service.failures.append(LiveConnectError("setup refused", code=1007))
    first.push(LiveClosedError(1011, "Internal error occurred."))
    event = await next_event(events)
    assert isinstance(event, LiveReconnected)
    assert service.attempts == [None, "stale", None]
    assert not event.resumed
    await link.close()


async def test_retries_with_backoff_then_gives_up_at_the_deadline() -> None:
    refusals = [LiveConnectError("connection refused") for _ in range(1000)]
    service = FakeService(failures=refusals)
    slept: list[float] = []

    async def recording_sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    link = LiveLink(
        service.open,  # type: ignore[arg-type]
        ReconnectPolicy(first_delay_s=0.001, max_delay_s=0.004, deadline_s=0.05),
        sleep=recording_sleep,
        jitter=lambda: 0.5,  # jitter factor exactly 1
    )
    with pytest.raises(LiveUnavailableError, match="no Live connection"):
        await link.start()
    # The delay doubles up to its cap, and every wait is followed by another attempt.
    assert slept[:4] == pytest.approx([0.001, 0.002, 0.004, 0.004])
    assert len(service.attempts) == len(slept) + 1


async def test_waits_between_attempts_are_jittered() -> None:
    service = FakeService(failures=[LiveConnectError("refused"), LiveConnectError("refused")])
    slept: list[float] = []
    draws = iter([0.0, 0.999])

    async def recording_sleep(seconds: float) -> None:
        slept.append(seconds)

    link = LiveLink(
        service.open,  # type: ignore[arg-type]
        ReconnectPolicy(first_delay_s=0.1, max_delay_s=1.0),
        sleep=recording_sleep,
        jitter=lambda: next(draws),
    )
    await link.start()
    assert slept == pytest.approx([0.1 * 0.5, 0.2 * 1.499])
    await link.close()


async def test_a_transient_refusal_is_retried() -> None:
    service = FakeService(failures=[LiveConnectError("refused"), LiveConnectError("refused")])
    await start(service)
    assert len(service.attempts) == 3
    assert len(service.connections) == 1


async def test_a_bad_api_key_is_not_retried_the_call_gives_up_after_one_attempt() -> None:
    refusal = LiveRefusedError(
        "Live API closed the connection during setup (code=1007, reason='API key not valid. "
        "Please pass a valid API key.')",
        code=1007,
        kind="auth",
        fix="set GEMINI_API_KEY to a valid key",
    )
    service = FakeService(failures=[refusal, refusal])
    slept: list[float] = []

    async def recording_sleep(seconds: float) -> None:
        slept.append(seconds)

    link = LiveLink(service.open, FAST, sleep=recording_sleep)  # type: ignore[arg-type]
    with capture_logs() as logs, pytest.raises(LiveRefusedError, match="API key not valid"):
        await link.start()
    assert len(service.attempts) == 1
    assert slept == []
    refused = [line for line in logs if line["event"] == "live.refused"]
    assert [(r["kind"], r["fix"]) for r in refused] == [
        ("auth", "set GEMINI_API_KEY to a valid key")
    ]


async def test_a_refusal_while_reconnecting_ends_the_session_at_once() -> None:
    service = FakeService()
    link = await start(service)
    events = link.events()
    service.failures.append(
        LiveRefusedError("models/x is not found", code=1008, kind="model", fix="set model:")
    )
    service.connections[0].push(LiveClosedError(1011, "Internal error occurred."))
    with pytest.raises(LiveRefusedError):
        await next_event(events)
    assert len(service.attempts) == 2
    await link.close()


async def test_the_buffer_bound_drops_oldest_audio_but_keeps_other_messages() -> None:
    service = FakeService()
    link = await start(service, ReconnectPolicy(first_delay_s=0.001, max_buffered_audio_ms=40))
    events = link.events()
    first = service.connections[0]
    service.hold_next = True
    first.push(LiveClosedError(1006, "connection lost"))
    reconnected = asyncio.ensure_future(next_event(events))
    await service.attempting.wait()
    await link.send(protocol.text_turn_message("tool result"))
    for sample in (b"\x01\x00", b"\x02\x00", b"\x03\x00"):
        await link.send_audio(sample)
    service.release.set()
    event = await reconnected
    assert isinstance(event, LiveReconnected)
    assert event.dropped_audio_frames == 1
    second = service.connections[1]
    kinds = [next(iter(json.loads(m))) for m in second.sent]
    assert kinds == ["clientContent", "realtimeInput", "realtimeInput"]
    assert [audio_of(m) for m in second.sent[1:]] == [b"\x02\x00", b"\x03\x00"]
    assert event.replayed_frames == 0  # nothing had been sent before the drop
    await link.close()


async def test_closing_the_link_ends_its_events_quietly() -> None:
    service = FakeService()
    link = await start(service)
    events = link.events()
    pending = asyncio.ensure_future(next_event(events))
    await link.close()
    with pytest.raises(StopAsyncIteration):
        await pending


class ManualTime:
    """A call clock that moves only when the link sleeps (its waits are recorded)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.clock = Clock(source=lambda: self.now)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing_at_once(service: FakeService) -> Opener:
    """Every connection is accepted, then closed 1011 before the model says anything."""

    async def open_(handle: str | None) -> FakeConnection:
        conn = await service.open(handle)
        conn.push(LiveClosedError(1011, "Internal error occurred."))
        return conn

    return open_  # type: ignore[return-value]


async def test_connections_that_fail_right_after_setup_back_off_and_give_up_at_the_deadline() -> (
    None
):
    service = FakeService()
    time = ManualTime()
    breaker = CircuitBreaker(storms=1)
    metrics = Metrics(CollectorRegistry())
    link = LiveLink(
        failing_at_once(service),
        ReconnectPolicy(),
        clock=time.clock,
        sleep=time.sleep,
        jitter=lambda: 0.5,
        breaker=breaker,
        health=metrics,
    )
    await link.start()
    with capture_logs() as logs, pytest.raises(LiveUnavailableError, match="no working connection"):
        async for _ in link.events():
            pass
    # The backoff applies although every attempt succeeded in opening a connection.
    assert time.slept == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert time.now == pytest.approx(13.1)
    assert len(service.connections) == 11
    # One line for the storm; the per-attempt lines went to debug.
    storms = [e for e in logs if e["event"] == "live.reconnect_storm"]
    assert [(s["outcome"], s["attempts"], s["failures"]) for s in storms] == [("gave_up", 11, 11)]
    assert [e["event"] for e in logs if e["log_level"] != "debug"] == [
        "live.connection_lost",
        "live.reconnect_storm",
        "live.circuit_open",
    ]
    # The next call fails fast: no attempt while the breaker is open.
    other = FakeService()
    later = LiveLink(
        other.open,  # type: ignore[arg-type]
        ReconnectPolicy(),
        clock=time.clock,
        breaker=breaker,
        health=metrics,
    )
    with pytest.raises(LiveUnavailableError, match="failed other calls"):
        await later.start()
    assert other.attempts == []
    await link.close()
    # What an on-call engineer's dashboard sees of it: one storm given up, the breaker opened
    # once and then refusing the next call's attempt.
    sample = metrics.registry.get_sample_value
    assert sample("agent_live_reconnect_storms_total", {"outcome": "gave_up"}) == 1
    assert sample("agent_live_breaker_total", {"event": "opened"}) == 1
    assert sample("agent_live_breaker_total", {"event": "refused"}) == 1


async def test_too_many_reconnects_in_a_minute_give_up_even_if_each_connection_worked() -> None:
    service = FakeService()
    time = ManualTime()

    async def open_(handle: str | None) -> FakeConnection:
        conn = await service.open(handle)
        conn.push(TurnComplete())  # it worked...
        conn.push(LiveClosedError(1006, "connection lost"))  # ...then dropped at once
        return conn

    link = LiveLink(
        open_,  # type: ignore[arg-type]
        ReconnectPolicy(max_attempts_per_minute=5),
        clock=time.clock,
        sleep=time.sleep,
    )
    await link.start()
    with capture_logs() as logs, pytest.raises(LiveUnavailableError, match="in a minute"):
        async for _ in link.events():
            pass
    assert len(service.connections) == 5
    assert time.slept == []  # each one worked: reconnected at once
    storms = [e for e in logs if e["event"] == "live.reconnect_storm"]
    assert [(s["outcome"], s["attempts"]) for s in storms] == [("gave_up", 5)]
    await link.close()


async def test_an_open_breaker_lets_a_working_call_switch_connections() -> None:
    service = FakeService()
    time = ManualTime()
    breaker = CircuitBreaker(storms=1)
    link = LiveLink(
        service.open,  # type: ignore[arg-type]
        ReconnectPolicy(),
        clock=time.clock,
        sleep=time.sleep,
        breaker=breaker,
    )
    await link.start()
    events = link.events()
    first = service.connections[0]
    first.push(TurnComplete())
    assert await next_event(events) == TurnComplete()
    assert breaker.gave_up(time.now)  # another call gave up: the breaker opens
    first.push(GoAway(0.0))
    assert await next_event(events) == GoAway(0.0)
    event = await next_event(events)
    assert isinstance(event, LiveReconnected)  # an ordinary switch still goes ahead
    assert len(service.connections) == 2
    await link.close()
