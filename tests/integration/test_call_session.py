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
import json
from collections.abc import AsyncIterator, Callable, Mapping
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
