"""CallSession without a server: a fake media socket on one side, the Live API emulator on the
other.

The fake socket is the smallest Twilio: it hands the session the messages the test puts in, and
echoes every mark at once (as if the audio before it had played). The call control is a fake too,
recording what the session asked of the phone call. No aiohttp server and no carrier simulator:
the session is the unit under test. It lives with the integration tests for their simulated clock
(see ``conftest.py``), so the emulator's pacing and the session's bounds are one clock, and a busy
machine makes a run slower, never different.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import WSMsgType
from structlog.testing import capture_logs
from timing import scaled_timeout

from agent.call.media import MediaMessage
from agent.call.session import CallSession
from agent.config.models import AgentConfig, CallPolicy, FallbackConfig
from agent.config.tools import ToolSpec
from agent.errors import LiveConnectError, TelephonyError
from agent.live.connection import LiveConnection
from agent.live.link import LiveLink, ReconnectPolicy
from agent.live.protocol import (
    InteractionStatusChanged,
    LiveEvent,
    OutputTranscription,
    TurnComplete,
    UnknownFields,
)
from agent.live.targets import DeveloperApiTarget
from agent.sim.live.scenario import scenario_from_data
from agent.sim.live.server import EmulatorOptions, RunningEmulator, start_emulator
from agent.telephony.twilio import StreamStarted, TwilioMediaStream
from agent.tools import Action, CallContext, EndCall, ToolOutcome, TransferCall

CALL_SID = "CA" + "3" * 32
STREAM_SID = "MZ" + "3" * 32
ACCOUNT_SID = "AC" + "3" * 32
NO_TIMERS = CallPolicy(idle_timeout_s=None, max_duration_s=None)
AGENT = AgentConfig(greeting="Greet the caller.", call=NO_TIMERS)
HUMAN = "+15555550142"


@dataclass(frozen=True, slots=True)
class Frame:
    type: WSMsgType
    data: Any = None


class FakeTwilio:
    """A media socket: what the test sends in, and an instant player that echoes marks."""

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[Frame | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.audio_arrived = asyncio.Event()
        self._closed = False

    def push(self, message: Mapping[str, Any]) -> None:
        self._inbox.put_nowait(Frame(WSMsgType.TEXT, json.dumps(message)))

    def stop(self) -> None:
        """The caller hangs up."""
        self.push({"event": "stop", "streamSid": STREAM_SID, "stop": {"callSid": CALL_SID}})

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["event"] == kind]

    # -- MediaSocket ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aiter__(self) -> AsyncIterator[MediaMessage]:
        while (frame := await self._inbox.get()) is not None:
            yield frame

    async def send_str(self, data: str) -> None:
        if self._closed:
            raise ConnectionResetError("the socket is closed")
        message = json.loads(data)
        self.sent.append(message)
        if message["event"] == "media":
            self.audio_arrived.set()
        if message["event"] == "mark":
            self.push({"event": "mark", "streamSid": STREAM_SID, "mark": message["mark"]})

    async def close(self) -> bool:
        was_open, self._closed = not self._closed, True
        self._inbox.put_nowait(None)
        return was_open


class FakeCallControl:
    """Records the session's updates to the phone call; ``refuse`` makes each one fail."""

    def __init__(self, socket: FakeTwilio, *, refuse: bool = False) -> None:
        self._socket = socket
        self._refuse = refuse
        self.updates: list[tuple[str, ...]] = []
        self.media_sent_before: int | None = None  # media messages sent when the update came

    def _update(self, *update: str) -> None:
        self.updates.append(update)
        self.media_sent_before = len(self._socket.events("media"))
        if self._refuse:
            raise TelephonyError("Twilio refused the call update")

    async def hang_up(self, call_sid: str) -> bool:
        self._update("hang_up", call_sid)
        return True

    async def transfer(self, call_sid: str, number: str, *, announce: str | None = None) -> None:
        self._update("transfer", call_sid, number, str(announce))

    async def say_and_hang_up(self, call_sid: str, message: str) -> None:
        self._update("say_and_hang_up", call_sid, message)


class ActionToolbox:
    """The built-in tools, as far as the session sees them: each call returns ``action``."""

    def __init__(self, action: Action) -> None:
        self._action = action

    def spec(self, name: str) -> ToolSpec | None:
        return None

    async def run(
        self,
        name: str,
        args: Mapping[str, Any],
        context: CallContext,
        *,
        on_arguments: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> ToolOutcome:
        return ToolOutcome(
            response={"result": "ok"}, outcome="ok", latency_s=0.0, action=self._action
        )


def stream_started() -> tuple[TwilioMediaStream, StreamStarted]:
    stream = TwilioMediaStream()
    stream.receive_text(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    start = {
        "accountSid": ACCOUNT_SID,
        "streamSid": STREAM_SID,
        "callSid": CALL_SID,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {},
    }
    started = stream.receive_text(
        json.dumps(
            {"event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID, "start": start}
        )
    )
    assert isinstance(started, StreamStarted)
    return stream, started


def tool_context() -> CallContext:
    return CallContext(
        call_sid=CALL_SID,
        account_sid=ACCOUNT_SID,
        stream_sid=STREAM_SID,
        agent=AGENT.name,
        caller_number=None,
        called_number=None,
        local_time="2025-06-02T10:00:00-04:00",
    )


@pytest.fixture
async def scripted_emulator() -> AsyncIterator[RunningEmulator]:
    """The greeting turn calls a (non-blocking) built-in and speaks the greeting meanwhile."""
    scenario = {"steps": [{"say": "greeting", "calls": [{"name": "end_call", "wait": False}]}]}
    running = await start_emulator(
        EmulatorOptions(speed=20.0, scenario=scenario_from_data(scenario))
    )
    yield running
    await running.close()


def session(
    socket: FakeTwilio,
    live: LiveLink,
    *,
    agent: AgentConfig = AGENT,
    action: Action | None = None,
    control: FakeCallControl | None = None,
) -> CallSession:
    stream, started = stream_started()
    return CallSession(
        ws=socket,
        stream=stream,
        started=started,
        agent=agent,
        live=live,
        toolbox=ActionToolbox(action) if action is not None else None,  # type: ignore[arg-type]
        tool_context=tool_context() if action is not None else None,
        call_control=control,
    )


def emulated_live(emulator: RunningEmulator, agent: AgentConfig = AGENT) -> LiveLink:
    target = DeveloperApiTarget(base_url=emulator.url)
    return LiveLink(lambda handle: LiveConnection.open(target, agent, resumption_handle=handle))


async def run(call: CallSession) -> str:
    async with asyncio.timeout(scaled_timeout(20)):
        return await call.run()


@pytest.mark.parametrize(
    ("action", "update", "reason"),
    [
        (EndCall(), ("hang_up", CALL_SID), "agent ended"),
        (TransferCall(HUMAN), ("transfer", CALL_SID, HUMAN, "None"), "transferred"),
    ],
)
async def test_the_agent_ends_or_moves_the_call_through_the_call_control_after_its_words(
    scripted_emulator: RunningEmulator, action: Action, update: tuple[str, ...], reason: str
) -> None:
    socket = FakeTwilio()
    control = FakeCallControl(socket)
    call = session(socket, emulated_live(scripted_emulator), action=action, control=control)
    assert await run(call) == reason
    assert control.updates == [update]
    # The greeting went out whole, and was played (marks echoed), before the call was touched.
    media = len(socket.events("media"))
    assert media > 0
    assert control.media_sent_before == media
    assert call.playback.pending_marks == 0
    assert call.transcript.turns[0].role == "agent"
    assert socket.closed
    assert call.live_closed


@pytest.mark.parametrize(
    ("action", "reason", "logged"),
    [
        (EndCall(), "agent ended", {"event": "call.hang_up", "via": "stream"}),
        (
            TransferCall(HUMAN),
            "error",
            {"event": "call.transfer_unavailable", "transfer_to": HUMAN},
        ),
    ],
)
async def test_without_a_call_control_end_call_closes_the_stream_and_a_transfer_fails(
    scripted_emulator: RunningEmulator, action: Action, reason: str, logged: dict[str, str]
) -> None:
    socket = FakeTwilio()
    with capture_logs() as logs:
        assert await run(session(socket, emulated_live(scripted_emulator), action=action)) == reason
    assert socket.closed
    assert any(line["event"] == "tool.action_without_rest_api" for line in logs)
    assert any(logged.items() <= line.items() for line in logs)


async def test_a_refused_transfer_ends_the_call_as_an_error(
    scripted_emulator: RunningEmulator,
) -> None:
    socket = FakeTwilio()
    control = FakeCallControl(socket, refuse=True)
    call = session(
        socket, emulated_live(scripted_emulator), action=TransferCall(HUMAN), control=control
    )
    assert await run(call) == "error"
    assert control.updates == [("transfer", CALL_SID, HUMAN, "None")]


async def test_the_caller_hanging_up_ends_the_call_and_its_live_session(
    scripted_emulator: RunningEmulator,
) -> None:
    socket = FakeTwilio()
    call = session(socket, emulated_live(scripted_emulator))
    running = asyncio.ensure_future(run(call))
    async with asyncio.timeout(scaled_timeout(20)):
        await socket.audio_arrived.wait()  # the greeting has started
    socket.stop()
    assert await running == "caller hung up"
    assert call.live_closed


async def refused(handle: str | None) -> LiveConnection:
    raise LiveConnectError("connection refused")


@pytest.mark.parametrize(
    ("fallback", "update"),
    [
        (
            {"message": "Sorry.", "transfer_to": HUMAN},
            ("transfer", CALL_SID, HUMAN, "Sorry."),
        ),
        ({"message": "Sorry, goodbye."}, ("say_and_hang_up", CALL_SID, "Sorry, goodbye.")),
    ],
)
async def test_an_unreachable_live_api_gets_the_configured_fallback(
    fallback: dict[str, str], update: tuple[str, ...]
) -> None:
    socket = FakeTwilio()
    control = FakeCallControl(socket)
    agent = AgentConfig(call=NO_TIMERS, fallback=FallbackConfig(**fallback))
    live = LiveLink(refused, ReconnectPolicy(deadline_s=0.05, first_delay_s=0.01))
    call = session(socket, live, agent=agent, control=control)
    assert await run(call) == "error"
    assert control.updates == [update]
    assert socket.events("media") == []  # Twilio speaks; the bundled recording does not play


async def test_a_refused_fallback_update_plays_the_bundled_apology() -> None:
    socket = FakeTwilio()
    control = FakeCallControl(socket, refuse=True)
    agent = AgentConfig(call=NO_TIMERS, fallback=FallbackConfig(transfer_to=HUMAN))
    live = LiveLink(refused, ReconnectPolicy(deadline_s=0.05, first_delay_s=0.01))
    call = session(socket, live, agent=agent, control=control)
    with capture_logs() as logs:
        assert await run(call) == "error"
    assert len(control.updates) == 1
    assert len(socket.events("media")) == 1  # the apology, in one message
    events = [line["event"] for line in logs]
    assert "call.fallback_failed" in events
    assert "call.fallback_unconfirmed" not in events  # its mark came back: heard to its end


class ScriptedConnection:
    """A Live connection that delivers ``events``, then stays open until closed."""

    def __init__(self, events: Sequence[LiveEvent]) -> None:
        self._events = list(events)
        self.sent: list[str] = []
        self._closed = asyncio.Event()

    def send_now(self, message: str) -> bool:
        self.sent.append(message)
        return True

    async def send(self, message: str) -> None:
        self.sent.append(message)

    async def events(self) -> AsyncIterator[LiveEvent]:
        for event in self._events:
            yield event
        await self._closed.wait()

    async def close(self) -> None:
        self._closed.set()


async def test_fields_of_a_newer_protocol_are_logged_once_per_call_and_the_call_goes_on() -> None:
    newer = UnknownFields(("serverContent.sparkle", "futureThing"))
    connection = ScriptedConnection(
        [
            newer,
            InteractionStatusChanged("IN_PROGRESS"),
            newer,
            UnknownFields(("serverContent.sparkle",)),
            OutputTranscription("Hello!"),  # the greeting (in text: nothing to play)
            TurnComplete(None),
            InteractionStatusChanged("IDLE"),
        ]
    )

    async def opener(handle: str | None) -> LiveConnection:
        return connection  # type: ignore[return-value]

    socket = FakeTwilio()
    call = session(socket, LiveLink(opener))
    with capture_logs() as logs:
        running = asyncio.ensure_future(run(call))
        await call.turn_completed(1)  # every event before it was taken in stride
        socket.stop()
        assert await running == "caller hung up"
    unknown = [line for line in logs if line["event"] == "live.unknown_fields"]
    assert unknown == [
        {
            "event": "live.unknown_fields",
            "log_level": "debug",
            "fields": ["futureThing", "serverContent.sparkle"],
        }
    ]
    statuses = [line["status"] for line in logs if line["event"] == "model.interaction_status"]
    assert statuses == ["IN_PROGRESS", "IDLE"]
    assert not [line for line in logs if line["log_level"] in ("warning", "error")]


class ModelStandIn:
    """A Live service whose model the test plays: each connection delivers what the test
    ``push``-es to it, and records what the session sent; ``sent_changed`` pulses on each."""

    def __init__(self) -> None:
        self.connections: list[tuple[asyncio.Queue[LiveEvent | None], list[str]]] = []
        self.sent_changed = asyncio.Event()

    async def open(self, handle: str | None) -> LiveConnection:
        inbox: asyncio.Queue[LiveEvent | None] = asyncio.Queue()
        sent: list[str] = []
        self.connections.append((inbox, sent))
        stand_in = self

        class Connection:
            def send_now(self, message: str) -> bool:
                sent.append(message)
                stand_in.sent_changed.set()
                return True

            async def send(self, message: str) -> None:
                sent.append(message)
                stand_in.sent_changed.set()

            async def events(self) -> AsyncIterator[LiveEvent]:
                while (event := await inbox.get()) is not None:
                    yield event

            async def close(self) -> None:
                inbox.put_nowait(None)

        self.sent_changed.set()
        return Connection()  # type: ignore[return-value]

    def push(self, *events: LiveEvent) -> None:
        for event in events:
            self.connections[-1][0].put_nowait(event)

    async def until_sent(self, text: str, connection: int) -> None:
        """Until the session has sent ``text`` on ``connection``."""
        while not (
            len(self.connections) > connection
            and any(text in message for message in self.connections[connection][1])
        ):
            self.sent_changed.clear()
            await self.sent_changed.wait()


STALLING = AgentConfig(greeting="Greet the caller.", call=NO_TIMERS)  # stall_after_s: 8 s
NUDGE = "The caller is waiting for your answer"


def stalls(logs: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    return [(line["cause"], line["action"]) for line in logs if line["event"] == "model.stalled"]


async def test_an_empty_turn_where_an_answer_was_owed_gets_a_nudge_and_then_the_answer() -> None:
    model = ModelStandIn()
    socket = FakeTwilio()
    call = session(socket, LiveLink(model.open), agent=STALLING)
    with capture_logs() as logs:
        running = asyncio.ensure_future(run(call))
        await model.until_sent("Greet the caller.", 0)
        model.push(TurnComplete(None))  # done, having said nothing
        async with asyncio.timeout(scaled_timeout(20)):
            await model.until_sent(NUDGE, 0)
        model.push(OutputTranscription("Hello, sorry about that!"), TurnComplete(None))
        await call.turn_completed(2)
        socket.stop()
        assert await running == "caller hung up"
    assert stalls(logs) == [("empty_turn", "nudge")]
    assert call.stats.stalls == 1
    assert len(model.connections) == 1


async def test_a_silent_model_is_nudged_then_reconnected_with_a_filler_and_is_heard() -> None:
    model = ModelStandIn()
    socket = FakeTwilio()
    call = session(socket, LiveLink(model.open), agent=STALLING)
    with capture_logs() as logs:
        running = asyncio.ensure_future(run(call))
        async with asyncio.timeout(scaled_timeout(60)):
            # Nothing comes for the greeting: a nudge at 8 s, a new connection at 16 s.
            await model.until_sent(NUDGE, 1)
        assert len(socket.events("media")) == 1  # "One moment, please." while it reconnected
        model.push(OutputTranscription("Hello!"), TurnComplete(None))
        await call.turn_completed(1)
        socket.stop()
        assert await running == "caller hung up"
    assert stalls(logs) == [("prompt", "nudge"), ("prompt", "reconnect")]
    reconnected = [line for line in logs if line["event"] == "live.reconnected"]
    assert [line["reason"] for line in reconnected] == ["stall"]


async def test_a_model_silent_after_a_nudge_and_a_reconnection_gets_the_fallback() -> None:
    model = ModelStandIn()
    socket = FakeTwilio()
    call = session(socket, LiveLink(model.open), agent=STALLING)
    with capture_logs() as logs:
        async with asyncio.timeout(scaled_timeout(60)):  # three stalls: 24 s of the call's time
            assert await call.run() == "error"
    assert stalls(logs) == [("prompt", "nudge"), ("prompt", "reconnect"), ("prompt", "fallback")]
    # The filler, then the bundled apology: the caller was never left in silence.
    assert len(socket.events("media")) == 2
    assert any(line["event"] == "live.unavailable" for line in logs)


async def test_the_cost_limit_hangs_up_through_the_call_control_once_the_goodbye_played() -> None:
    """The greeting's usage passes a one-token limit: the model is asked for its goodbye, and
    the hang-up reaches Twilio's REST API only after every frame of it was sent and played."""
    emulator = await start_emulator(EmulatorOptions(speed=20.0))
    try:
        agent = dataclasses.replace(AGENT, call=dataclasses.replace(NO_TIMERS, max_tokens=1))
        socket = FakeTwilio()
        control = FakeCallControl(socket)
        call = session(socket, emulated_live(emulator, agent), agent=agent, control=control)
        assert await run(call) == "cost limit"
    finally:
        await emulator.close()
    assert control.updates == [("hang_up", CALL_SID)]
    assert control.media_sent_before == len(socket.events("media"))  # the goodbye went out whole
    assert call.playback.pending_marks == 0  # ...and was played
    (live_session,) = emulator.sessions
    assert live_session.answers_completed == 2  # the greeting, then the goodbye
    assert [t.role for t in call.transcript.turns] == ["agent", "agent"]
    assert socket.closed
    assert call.live_closed


async def test_a_handover_waits_while_the_model_reports_it_is_still_working() -> None:
    """Extended thinking: between turns the model may say IN_PROGRESS (reasoning, a tool in
    the background) and speak again unprompted; letting the stream go then would cut that
    answer off, so a handover waits for IDLE."""
    model = ModelStandIn()
    socket = FakeTwilio()
    call = session(socket, LiveLink(model.open), agent=STALLING)
    running = asyncio.ensure_future(run(call))
    await model.until_sent("Greet the caller.", 0)
    model.push(OutputTranscription("Hello!"), TurnComplete(None))
    await call.turn_completed(1)
    model.push(InteractionStatusChanged("IN_PROGRESS"))
    call.hand_over()
    # Three seconds of the call's (simulated) time: quiet otherwise, but not to be let go.
    done, _ = await asyncio.wait({running}, timeout=3.0)
    assert not done
    model.push(InteractionStatusChanged("IDLE"))
    assert await running == "handed over"
