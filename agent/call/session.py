"""One phone call: a carrier's media stream (Twilio's, or the console softphone's,
:class:`~agent.telephony.carrier.CarrierStream`) joined to a Live API session.

A :class:`CallSession` owns everything the call starts: the two pumps (caller -> model and
model -> caller) and a supervisor for its timers, run in one task group, plus the per-direction
transcoders, the playback tracker, the transcript and the Live link. When any of them ends the
call, the task group cancels the rest and the session closes the Live link, so nothing outlives it.

The pumps are the per-frame path (100 times a second per call): no logging, no JSON work beyond the
protocol cores, one await per message sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

import structlog
from aiohttp import WSMsgType

from agent.audio.codec import ULAW_SILENCE, pcm16_to_ulaw, read_wav, ulaw_to_pcm16
from agent.audio.dtmf import tones as dtmf_tones
from agent.audio.transcoder import InboundTranscoder, OutboundTranscoder
from agent.audio.vad import EnergyVad, VoiceActivity
from agent.clock import REAL_TIME, Clock
from agent.cluster.journal import CallJournal
from agent.cluster.state import CallSnapshot, SavedTurn
from agent.config.models import AgentConfig
from agent.errors import AgentError, LiveError
from agent.live import protocol
from agent.live.link import LiveLink, LiveReconnected, LiveUnavailableError, Opener
from agent.live.protocol import (
    FunctionCall,
    FunctionResult,
    GenerationComplete,
    GoAway,
    GroundingMetadata,
    InputTranscription,
    InteractionStatusChanged,
    InterimInputTranscription,
    Interrupted,
    LiveProtocolError,
    ModelAudio,
    ModelText,
    OutputTranscription,
    ResumptionHandle,
    ToolCallCancelled,
    ToolCallRequested,
    TurnComplete,
    UnknownFields,
    UsageReported,
    VoiceActivityReported,
)
from agent.observability.metrics import Metrics
from agent.observability.pricing import PriceTable
from agent.records.store import CallRecorder
from agent.telephony.carrier import CarrierStream
from agent.telephony.outbound import AnswerGate
from agent.telephony.twilio import (
    DtmfReceived,
    MarkPlayed,
    MediaReceived,
    ProtocolError,
    StreamStarted,
    StreamStopped,
)
from agent.tools import (
    Action,
    CallContext,
    EndCall,
    HandOff,
    PressKeys,
    Toolbox,
    TransferCall,
)

from .control import CallControl, WarmTransfers
from .cost import CostGuard, CostLimitReached
from .media import MediaSocket
from .playback import MARK_EVERY_FRAMES, Playback
from .timers import (
    ENDING,
    CallTimers,
    HoldOn,
    IdleCheck,
    IdleTimeout,
    KeypadGroup,
    MaxDuration,
    Stall,
    TimerEvent,
    WrapUp,
)
from .tools import ToolRunner, ToolStats
from .transcript import Role, Transcript, Turn

log = structlog.get_logger("agent.call")

FALLBACK_AUDIO = resources.files("agent") / "assets" / "fallback-apology-8k.wav"
HOLD_AUDIO = resources.files("agent") / "assets" / "hold-on-8k.wav"
TRANSFER_AUDIO = resources.files("agent") / "assets" / "transfer-8k.wav"
HOLD_MUSIC = resources.files("agent") / "assets" / "hold-music-8k.wav"

# Ending reasons, as recorded and counted.
CALLER_HUNG_UP = "caller hung up"
AGENT_ENDED = "agent ended"
TRANSFERRED = "transferred"
TIMED_OUT = "timed out"
COST_LIMIT = "cost limit"  # max_call_tokens or max_call_cost_usd reached; the agent said goodbye
ERROR = "error"
SHUTDOWN = "shutdown"  # the server stopped with the call still in progress
# The media stream ended with the call still up: Twilio asks <Connect action> what next, and the
# call goes on (on this replica or another) from its journal.
STREAM_LOST = "stream lost"
HANDED_OVER = "handed over"  # this replica let the stream go at a quiet moment (a deploy)
# An outbound call answered by a machine: the agent left its voicemail message, or hung up.
VOICEMAIL_LEFT = "voicemail left"
ANSWERING_MACHINE = "answering machine"

#: What the session does at each stall in a row (see ``CallSession._on_stall``), and the
#: reason its reconnection carries.
STALL_ACTIONS = ("nudge", "reconnect", "fallback")
STALL_RESTART = "stall"
# The reasons a call's link reconnects to take another agent's setup (see change_agent).
HAND_OFF_RESTART = "hand_off"
RELOAD_RESTART = "reload"
# Endings after which the call goes on elsewhere: its journal must not say it ended.
# (A shutdown ends the stream, not the call: with another replica up, the call goes on there.)
CONTINUED_ELSEWHERE = frozenset({STREAM_LOST, HANDED_OVER, SHUTDOWN})

# Protocol errors logged in full per call; after these, one line per thousand.
PROTOCOL_ERRORS_LOGGED = 10

# What the model is told when an outbound call reached an answering machine whose beep is past.
VOICEMAIL_PROMPT = (
    "This call reached an answering machine and its beep has sounded: you are now recording a "
    "voicemail. Say this message, in your own voice, and nothing else: {message}"
)

# What the colleague of a warm transfer hears when the model gave no summary.
WARM_TRANSFER_SUMMARY = "A caller is being transferred to you from the phone agent."
# What the model is told when a warm transfer's colleague did not answer.
WARM_TRANSFER_UNANSWERED = (
    "The colleague you tried to transfer the caller to did not answer; the caller is back with "
    "you, on the line. Tell them so, briefly, and offer to help another way or to take a message."
)

#: An answering-machine verdict is awaited in waits of at most this long (call-clock seconds):
#: a verdict that reached another replica is seen through the shared state.
VERDICT_WAIT_S = 0.5
#: The longest the model may take to say a voicemail message before the call is hung up.
VOICEMAIL_TURN_S = 60.0

# What the model is told when a call continues on a new media stream.
CONTINUE_MESSAGE = (
    "The phone line dropped for a moment and the caller is back. The last thing they heard from "
    'you was: "{heard}". Do not greet them again; pick the conversation up from there, briefly.'
)


class _CallEnded(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Raised inside the task group to end the call; the group then cancels the other tasks."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class CallStats:
    """Counters for the call's one summary line (``call.ended``)."""

    frames_in: int = 0
    model_turns: int = 0
    barge_ins: int = 0
    reconnects: int = 0
    protocol_errors: int = 0
    dtmf_groups: int = 0
    holds: int = 0  # "one moment, please" while a blocking tool ran
    stalls: int = 0  # times the model owed an answer and sent nothing for stall_after_s
    first_audio_ms: float | None = None  # from the stream's start to the first frame sent
    usage: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallAgent:
    """An agent as one call runs it: ``agent`` rendered for the call (its prompt templated with
    the numbers and the time), the ``toolbox`` and trusted ``context`` its tools run with, how
    the call's Live connection opens for it (``opener``: its setup), and ``source``, the agent
    file's version it was rendered from (a reload compares against it)."""

    agent: AgentConfig
    toolbox: Toolbox | None
    context: CallContext | None
    opener: Opener
    source: AgentConfig


AgentSwitch = Callable[[str], Awaitable[CallAgent | None]]
"""Renders the agent of that name for this call (None: there is no such agent now)."""


class CallSession:
    """Runs one call from Twilio's ``start`` until it ends, and says why it ended."""

    def __init__(
        self,
        *,
        ws: MediaSocket,
        stream: CarrierStream,
        started: StreamStarted,
        agent: AgentConfig,
        live: LiveLink,
        live_ready: Awaitable[None] | None = None,
        clock: Clock = REAL_TIME,
        metrics: Metrics | None = None,
        recorder: CallRecorder | None = None,
        wall_started_at: float | None = None,
        prices: PriceTable | None = None,
        toolbox: Toolbox | None = None,
        tool_context: CallContext | None = None,
        call_control: CallControl | None = None,
        journal: CallJournal | None = None,
        continuation: CallSnapshot | None = None,
        switch_agent: AgentSwitch | None = None,
        source_agent: AgentConfig | None = None,
        answer_gate: AnswerGate | None = None,
        verdict: Callable[[float], Awaitable[str | None]] | None = None,
        warm_transfers: WarmTransfers | None = None,
    ) -> None:
        """``live_ready`` is a pre-connect already under way (started at the voice webhook, with
        the greeting requested unless the agent's ``greeting_at`` is ``stream_start``, when the
        session asks for it); without it the session connects and greets itself.
        ``call_control`` (Twilio's REST API) hangs up and transfers for the built-in tools and
        carries out ``agent.fallback``; without it ``end_call`` closes the media stream,
        ``transfer_call`` fails, and the fallback is the bundled apology. ``journal`` keeps the
        call's snapshot in the state replicas share; ``continuation`` is the snapshot an
        earlier media stream of this call left, which this one continues (no greeting).
        ``switch_agent`` renders another agent for this call, for a ``hand_off``;
        ``source_agent`` is the agent file's version ``agent`` was rendered from (a reload
        that changes it reaches this call when its ``on_reload`` says ``update``).

        ``answer_gate`` makes this an outbound call whose first words wait for the
        answering-machine verdict: the caller's audio is not sent to the model, and the model
        is not prompted, until ``verdict(wait_s)`` (Twilio's ``AnsweredBy``, or None after
        waiting up to ``wait_s``) says a person answered, or the gate's bound passes; on a
        machine the agent leaves its voicemail message or hangs up, as the agent file says.
        ``warm_transfers`` carries out a ``transfer_call`` with ``warm: true`` (without it, such
        a transfer is reported to the model as unavailable)."""
        self._ws = ws
        self._stream = stream
        self.started = started
        self.agent = agent
        self.source_agent = source_agent or agent
        self._switch_agent = switch_agent
        self.policy = agent.call
        self._live = live
        self._live_ready = live_ready
        clock = clock.on_running_loop()  # a call lives on one loop: bind it once
        self._clock = clock.now
        self._wall = clock.wall
        self._inbound = InboundTranscoder()
        self._outbound = OutboundTranscoder()
        # The bridge's own VAD: turn signals when the Live API's is off, and idle detection.
        manual = agent.vad.disabled
        self._vad = EnergyVad(start_ms=20 if manual else 60)
        self._manual_activity = manual
        self._wake = asyncio.Event()  # the timers' next deadline may have moved closer
        # Set while everything sent to Twilio has been played; the playback tracker decides.
        self._drained = asyncio.Event()
        self._drained.set()
        self._handover = False  # asked to let the stream go at the next quiet moment
        set_drained = _event_setter(self._drained)

        def on_drained(drained: bool) -> None:
            set_drained(drained)
            if drained and self._handover:
                self._wake.set()  # perhaps the quiet moment a handover waits for

        self.playback = Playback(on_drained=on_drained)
        self.transcript = Transcript()
        self._continuation = continuation
        if continuation is not None:
            self.transcript.restore([_restored(turn) for turn in continuation.turns])
        live.conversation = self.transcript.history  # what a fresh session is seeded with
        self.stats = CallStats()
        self.ended_reason: str | None = None
        self.preconnected = live_ready is not None
        self._began = clock.now()
        self._timers = CallTimers(agent.call, self._began)
        # Records carry wall-clock times; the call clock may run fast in simulations.
        self._wall_began = time.time() if wall_started_at is None else wall_started_at
        self._speed = clock.speed
        self._metrics = metrics or Metrics()
        self._prices = prices or PriceTable()
        self._frame_timer = self._metrics.frame_timer()
        self._recorder = recorder or CallRecorder.discarding(started.call_sid)
        # An earlier stream of the call recorded its turns: this one carries on after them.
        self._recorded_turns = len(self.transcript.turns)
        self._journal = journal
        self._unknown_fields: set[str] = set()  # server message fields already logged as unknown
        self._turn_content = False  # the model's current turn has had text or a tool call
        self._model_busy = False  # the model said IN_PROGRESS (interactionStatus) and not IDLE
        # Which stream of the call this is: the journal's snapshot says it for the shared
        # state, and the session must not work it out a second time.
        self.leg = (
            journal.snapshot.leg
            if journal is not None
            else 1
            if continuation is None
            else continuation.leg + 1
        )
        self._toolbox = toolbox
        self._tool_context = tool_context
        self._call_control = call_control
        self._tools: ToolRunner | None = None
        self._handed_from: str | None = None  # the agent a reconnecting hand-off left
        self._result_owed = False  # a result to speak about came while the model was speaking
        if toolbox is not None and tool_context is not None:
            self._tools = ToolRunner(
                toolbox=toolbox,
                context=tool_context,
                live=live,
                recorder=self._recorder,
                on_action=self._on_action,
                max_concurrent=agent.call.max_concurrent_tools,
                on_waiting=self._tool_waiting,
                on_hand_off=self._hand_off,
                on_answer_owed=self._tool_result_owed,
            )
        self._ending: str | None = None  # set when the agent starts ending the call
        self._cost = CostGuard(agent.call, agent.model, self._prices)
        # The cost guard's goodbye: None, "due" (asked for at the model's turn's end), "asked"
        # (the model is saying it), "said" (hanging up once it has played).
        self._goodbye: Literal["due", "asked", "said"] | None = None
        self._group: asyncio.TaskGroup | None = None
        self._turn_completed = asyncio.Event()  # pulsed at each model turn's end
        # The model owes an answer: to a prompt (the greeting, pre-connected or not), or to the
        # caller, who spoke since its last turn. A handover waits until it has been given.
        self._warm_transfers = warm_transfers
        self._gate = answer_gate
        self._verdict = verdict
        # Set while no caller audio is to reach the model: an outbound call waiting for its
        # verdict (or leaving a voicemail), a caller on hold during a warm transfer.
        self._holding = answer_gate is not None
        self._answer_expected = bool(agent.greeting) and continuation is None and not self._holding
        if self._answer_expected:  # the greeting, asked for here or at the webhook
            self._timers.answer_owed("prompt", self._began)

    # -- the call -------------------------------------------------------------------------------

    async def run(self) -> str:
        """Run the call to its end and return the ending reason; logs one ``call.ended`` line."""
        if self._journal is not None:
            self._journal.save()
        try:
            if self._live_ready is not None:
                await self._live_ready
                if (
                    self.agent.greeting
                    and self.policy.greeting_at == "stream_start"
                    and not self._holding
                ):
                    await self._prompt(self.agent.greeting)  # the pre-connect did not ask
            elif self._continuation is not None:
                await self._live.resume(self._continuation.handle)
                if not self._continuation.quiet:
                    heard = self._continuation.last_heard
                    await self._prompt(CONTINUE_MESSAGE.format(heard=heard or "-"))
            else:
                await self._live.start()
                if self.agent.greeting and not self._holding:
                    await self._prompt(self.agent.greeting)
            log.info(
                "live.connected",
                model=self.agent.model,
                preconnected=self.preconnected,
                leg=self.leg,
            )
            if self._cost.unpriced:
                log.warning("call.cost_limit_unpriced", model=self.agent.model)
            async with asyncio.TaskGroup() as group:
                self._group = group
                if self._tools is not None:
                    self._tools.attach(group)
                group.create_task(self._caller_pump(), name="caller->model")
                group.create_task(self._model_pump(), name="model->caller")
                group.create_task(self._supervisor(), name="timers")
                if self._gate is not None:
                    group.create_task(self._await_answer(self._gate), name="answering machine")
        except* _CallEnded as ended:
            # An ending the agent started (hang-up, transfer) wins over the stream closing
            # because of it.
            self.ended_reason = self._ending or _first_reason(ended)
        except* ConnectionResetError:
            # Writing to Twilio's socket after it closed: the caller is gone.
            self.ended_reason = self.ended_reason or CALLER_HUNG_UP
        except* LiveUnavailableError as unavailable:
            self.ended_reason = ERROR
            log.error("live.unavailable", error=str(unavailable.exceptions[0]))
            await self._fallback()
        except* LiveError as failed:
            self.ended_reason = ERROR
            log.error("live.failed", error=str(failed.exceptions[0]))
            await self._fallback()
        finally:
            self._log_summary()
            # Before the stream closes: Twilio requests <Connect action> the moment it does, and
            # the answer depends on whether the call's journal says the bridge ended it.
            await self._close_journal()
            # Then Twilio: closing the stream is what ends the caller's call (or this leg of it).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._wall(5.0)):  # a dead peer must not hold us
                    await self._ws.close()
            await self._live.close()
        return self.ended_reason or ERROR

    async def turn_completed(self, count: int) -> None:
        """Until the model has completed ``count`` turns in this session (for operators' tools
        and tests that act at a point in the conversation)."""
        while self.stats.model_turns < count:
            await self._turn_completed.wait()

    def hand_over(self, *, now: bool = False) -> None:
        """Let the media stream go at the next quiet moment (the model between turns, everything
        it said played), so Twilio's ``<Connect action>`` moves the call to another replica;
        ``now``: at once, wherever the conversation is (the handover deadline passed)."""
        self._handover = True
        if now:
            self.ended_reason = HANDED_OVER
        self._wake.set()

    def _quiet(self) -> bool:
        """A moment to let the stream go without cutting anyone off: the model is not speaking
        and owes no answer (to a prompt we sent, or to the caller), and everything it said has
        played."""
        return (
            self._drained.is_set()
            and not self.playback.turn_open
            and not self._answer_expected
            and not self._model_busy
        )

    async def _prompt(self, text: str) -> None:
        """Send the model a text turn (it answers it)."""
        self._answer_expected = True
        self._timers.answer_owed("prompt", self._clock())
        self._wake.set()  # a stall deadline now runs
        await self._live.send(protocol.text_turn_message(text))

    async def _close_journal(self) -> None:
        journal = self._journal
        if journal is None:
            return
        if self.ended_reason not in CONTINUED_ELSEWHERE:
            journal.ended()  # a <Connect action> request for this call now hangs up
        else:
            journal.handed_over(quiet=self.ended_reason == HANDED_OVER and self._quiet())
        # Bounded: a stalled store must not hold a call's handler (or a replica's shutdown).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._wall(5.0)):
                await journal.flush()

    @property
    def live_closed(self) -> bool:
        """The call's Live session is closed (true once the call has ended)."""
        return self._live.is_closed

    @property
    def live_replayed_frames(self) -> int:
        """Caller frames resent after abnormal Live closes (``ReconnectPolicy.replay_ms``)."""
        return self._live.replayed_frames

    @property
    def caller_level_dbfs(self) -> float | None:
        """The level of the caller's last frame (None before any): for the call console."""
        rms = self._vad.rms
        return None if self.stats.frames_in == 0 else _dbfs(rms)

    @property
    def caller_speaking(self) -> bool:
        """The bridge's VAD hears the caller speaking now."""
        return self._vad.speaking

    def end(self, reason: str) -> None:
        """Ask the call to end (a tool hanging up or transferring); takes effect at once."""
        self.ended_reason = reason
        self._wake.set()

    def _wall_time(self, t: float) -> float:
        return self._wall_began + (t - self._began) / self._speed

    def _record_closed_turns(self, *, final: bool = False) -> None:
        """Write each turn the transcript has closed, once, in order: a crash loses only the
        turn in progress."""
        turns = self.transcript.turns
        while self._recorded_turns < len(turns):
            turn = turns[self._recorded_turns]
            ended = turn.ended_at
            if ended is None:
                if not final:
                    return
                ended = self._clock()
            self._recorder.turn(
                index=self._recorded_turns,
                role=turn.role,
                said=turn.said,
                heard=turn.heard,
                started_at=self._wall_time(turn.started_at),
                ended_at=self._wall_time(ended),
                interrupted=turn.interrupted,
            )
            self._recorded_turns += 1
            if self._journal is not None:
                self._journal.turns(
                    [_saved(turn) for turn in self.transcript.turns[: self._recorded_turns]]
                )

    def _log_summary(self) -> None:
        now = self._clock()
        reason = self.ended_reason or ERROR
        self.transcript.agent_turn_ended(now)
        self._record_closed_turns(final=True)
        self._frame_timer.flush()
        self._metrics.count_call_ended(self.agent.name, reason)
        summary = {
            "reason": reason,
            "leg": self.leg,
            "duration_s": round(now - self._began, 3),
            "turns": len(self.transcript.turns),
            "model_turns": self.stats.model_turns,
            "barge_ins": self.stats.barge_ins,
            "reconnects": self.stats.reconnects,
            "frames_in": self.stats.frames_in,
            "frames_out": self.playback.frames_sent,
            "played_ms": self.playback.played_ms,
            "discarded_ms": self.playback.frames_discarded * 20,
            "first_audio_ms": self.stats.first_audio_ms,
            "preconnected": self.preconnected,
            "dtmf_groups": self.stats.dtmf_groups,
            "holds": self.stats.holds,
            "stalls": self.stats.stalls,
            "protocol_errors": self.stats.protocol_errors,
            "tokens": self.stats.usage,
            "cost_limit": None if self._cost.reached is None else self._cost.reached.limit,
            **self._tool_summary(),
            **self._prices.estimate(self.agent.model, self.stats.usage).summary_fields(),
        }
        self._recorder.usage(self.stats.usage)
        self._recorder.ended(reason=reason, ended_at=self._wall_time(now), summary=summary)
        log.info("call.ended", **summary)

    def _tool_summary(self) -> dict[str, object]:
        """Tool calls for ``call.ended``: a slow or failing tool is a common cause of silence."""
        tools = self._tools.stats if self._tools is not None else ToolStats()
        return {
            "tool_calls": tools.calls,
            "tool_errors": tools.errors,
            "tool_cancelled": tools.cancelled,
            "slowest_tool": tools.slowest_tool,
            "slowest_tool_ms": tools.slowest_ms if tools.slowest_tool is not None else None,
        }

    # -- caller -> model ------------------------------------------------------------------------

    async def _caller_pump(self) -> None:
        """Twilio -> Live: decode each media frame and forward it at once."""
        live, stream, inbound, stats = self._live, self._stream, self._inbound, self.stats
        rate = self.agent.input_sample_rate
        vad, clock, timer, timers = self._vad, self._clock, self._frame_timer, self._timers
        async for message in self._ws:
            if message.type is WSMsgType.TEXT:
                event = stream.receive_text(message.data)
            elif message.type is WSMsgType.BINARY:
                event = stream.receive_bytes(message.data)
            else:  # ERROR: the socket failed under us (a frame over the size limit, say)
                log.warning("twilio.stream_error", error=str(message.data)[:200])
                break
            if type(event) is MediaReceived:
                stats.frames_in += 1
                if self._holding:  # waiting for a verdict, or on hold: not for the model
                    continue
                sampled = timer.start()
                pcm8k = ulaw_to_pcm16(event.payload)  # decoded once, for the VAD and the model
                activity = vad.process(pcm8k)
                if vad.speaking:
                    timers.caller_spoke(clock())
                    self._answer_expected = True
                # 8 kHz goes as it came (the Live API resamples); 16 kHz is upsampled here.
                pcm = pcm8k if rate == 8000 else inbound.process_pcm16(pcm8k)
                timer.inbound(sampled)
                if activity is not None:
                    if activity is VoiceActivity.ENDED and self._answer_expected:
                        timers.answer_owed("caller", clock())
                        self._wake.set()  # a stall deadline now runs
                    if self._manual_activity:
                        await self._signal_activity(activity)
                await live.send_audio(pcm, rate)
            elif type(event) is MarkPlayed:
                self.playback.mark_played(event.name, clock())
            elif type(event) is StreamStopped:
                raise _CallEnded(CALLER_HUNG_UP)
            elif type(event) is DtmfReceived:
                await self._on_dtmf(event.digit)
            elif type(event) is ProtocolError:
                stats.protocol_errors += 1
                # A broken or hostile peer can send thousands a second: the first few, then
                # one line per thousand, each with the running count.
                count = stats.protocol_errors
                if count <= PROTOCOL_ERRORS_LOGGED or count % 1000 == 0:
                    log.warning(
                        "twilio.protocol_error", reason=event.reason, raw=event.raw, count=count
                    )
        # The socket closed without Twilio's stop: the stream is gone, the call may not be.
        raise _CallEnded(self.ended_reason or STREAM_LOST)

    async def _signal_activity(self, activity: VoiceActivity) -> None:
        """Automatic VAD is off: the bridge marks the caller's turns itself."""
        if activity is VoiceActivity.STARTED:
            await self._live.send(protocol.activity_start_message())
        else:
            await self._live.send(protocol.activity_end_message())

    async def _on_dtmf(self, digit: str) -> None:
        log.debug("caller.dtmf", digit=digit)  # a key may be part of a PIN or a card number
        group = self._timers.key_pressed(digit, self._clock())
        if group:
            await self._send_dtmf(group)
        self._wake.set()  # the group's deadline moved

    async def _send_dtmf(self, digits: str) -> None:
        self.stats.dtmf_groups += 1
        log.info("caller.dtmf_group", digits=len(digits))
        await self._live.send(
            protocol.text_turn_message(self.policy.dtmf_message.format(digits=digits))
        )

    # -- model -> caller ------------------------------------------------------------------------

    async def _model_pump(self) -> None:
        """Live -> Twilio: the model's speech as 20 ms frames with a mark per chunk; barge-in."""
        playback, transcript, stats, clock = self.playback, self.transcript, self.stats, self._clock
        async for event in self._live.events():
            match event:
                case ModelAudio():  # the hot path, checked first
                    await self._play(event)
                case Interrupted():
                    self._timers.model_heard(clock(), answered=True)  # the caller has the floor
                    await self._barge_in()
                case GenerationComplete():
                    await self._flush_outbound()
                case TurnComplete(reason=reason):
                    self._turn_ended(playback.sent_in_turn > 0 or self._turn_content)
                    await self._flush_outbound()
                    playback.end_turn()
                    stats.model_turns += 1
                    transcript.agent_turn_ended(clock())
                    self._record_closed_turns()
                    log.info("model.turn_complete", reason=reason)
                    self._answer_expected = False
                    self._turn_completed.set()  # wakes every waiter; the pulse is over at once
                    self._turn_completed.clear()
                    if self._handover:
                        self._wake.set()  # perhaps the quiet moment a handover waits for
                    if self._goodbye is not None:
                        await self._goodbye_turn_ended()
                case OutputTranscription(text=text):
                    self._heard_from_model()
                    transcript.agent_text(text, playback.sent_in_turn, clock())
                    self._record_closed_turns()
                case InputTranscription(text=text):
                    transcript.caller_text(text, clock())
                    self._record_closed_turns()
                case UsageReported(prompt_by_modality=prompt, response_by_modality=response):
                    _add_usage(stats.usage, "prompt", prompt)
                    _add_usage(stats.usage, "response", response)
                    self._metrics.count_tokens(prompt, response)
                    self._recorder.usage(stats.usage)
                    reached = self._cost.usage(stats.usage)
                    if reached is not None:
                        await self._cost_limit_reached(reached)
                case LiveReconnected(reason=reason):
                    stats.reconnects += 1
                    self._metrics.count_live_reconnect(reason)
                    if reason == HAND_OFF_RESTART:
                        await self._taken_over()
                    else:
                        await self._resume_cut_turn()
                    if reason == STALL_RESTART:
                        # The new connection has not heard the nudge: ask it to answer.
                        await self._prompt(self.policy.stall_message)
                case ModelText(text=text, thought=False):
                    self._heard_from_model()
                    log.info("model.text", text=text)
                case ModelText():
                    pass  # thoughts never reach the caller, nor the logs
                case ResumptionHandle(handle=handle, resumable=True) if handle:
                    # The link acts on it; the journal keeps it for a continuation elsewhere.
                    if self._journal is not None:
                        self._journal.handle(handle)
                case GoAway() | ResumptionHandle():
                    pass  # the link acts on these
                case ToolCallRequested(calls=calls):
                    self._heard_from_model()
                    await self._tool_calls(calls)
                case ToolCallCancelled(ids=ids):
                    if self._tools is not None:
                        self._tools.cancelled(ids)
                case GroundingMetadata(data=data):
                    log.info("model.grounding", metadata=dict(data))
                case InteractionStatusChanged(status=status):
                    # IN_PROGRESS: background work goes on after the turn (thinking models'
                    # tools and fillers): not a quiet moment to hand the call over.
                    self._model_busy = status == "IN_PROGRESS"
                    if self._handover and not self._model_busy:
                        self._wake.set()  # perhaps the quiet moment a handover waits for
                    log.debug("model.interaction_status", status=status)
                case UnknownFields(names=names):
                    # A newer protocol than this parser: said once per call and field, quietly.
                    if fresh := set(names) - self._unknown_fields:
                        self._unknown_fields |= fresh
                        log.debug("live.unknown_fields", fields=sorted(fresh))
                case InterimInputTranscription() | VoiceActivityReported():
                    pass  # the final transcription and our own VAD are what the call acts on
                case LiveProtocolError(reason=reason, raw=raw):
                    log.warning("live.protocol_error", reason=reason, raw=raw)
                case _:
                    log.debug("live.event_ignored", kind=type(event).__name__)
        raise _CallEnded(self.ended_reason or AGENT_ENDED)

    def _heard_from_model(self) -> None:
        """Content from the model other than audio (text, a tool call): it is not stalled."""
        self._turn_content = True
        self._timers.model_heard(self._clock(), answered=False)

    def _turn_ended(self, had_content: bool) -> None:
        """``turnComplete``: an answer given, or, when one was owed, an empty turn (a stall
        the Live API is known for: the model says it is done without saying anything)."""
        now = self._clock()
        if had_content or not self._answer_expected:
            self._timers.model_heard(now, answered=True)
        else:
            self._timers.answer_owed("empty_turn", now)
            self._wake.set()
        self._turn_content = False
        if self._result_owed:
            # A result it is to speak about came during this turn: that answer comes next.
            self._result_owed = False
            self._timers.answer_owed("tool", now)
            self._wake.set()

    async def _resume_cut_turn(self) -> None:
        """After a new connection: if the old one died mid-answer, the rest of that answer is
        gone. Play what we have, then tell the model what the caller heard and ask it to go on,
        rather than leave the caller in silence until they speak."""
        heard = await self._end_cut_turn()
        if heard is None:
            return
        log.info("model.turn_resumed", heard_chars=len(heard))
        await self._live.send(
            protocol.text_turn_message(self.agent.call.resume_message.format(heard=heard or "-"))
        )

    async def _end_cut_turn(self) -> str | None:
        """Close the model's turn a new connection cut short; what the caller heard of it
        (None: no turn was open)."""
        await self._flush_outbound()
        if not self.playback.turn_open:
            return None
        self.playback.end_turn()
        now = self._clock()
        # No clear follows a reconnect: everything already sent will still be played.
        turn = self.transcript.agent_turn_ended(now, heard_frames=self.playback.sent_in_turn)
        self._record_closed_turns()
        return turn.heard.strip() if turn else ""

    async def _taken_over(self) -> None:
        """The new connection of a hand-off (a model without ``contextUpdate``): the agent
        taking over has the conversation but not the function call that brought it there, so
        it is told, and answers."""
        heard = await self._end_cut_turn()
        if heard is None:
            heard = next(
                (t.heard for t in reversed(self.transcript.turns) if t.role == "agent"), ""
            )
        await self._prompt(
            self.policy.hand_off_message.format(agent=self._handed_from or "-", heard=heard or "-")
        )

    # -- changing agent -------------------------------------------------------------------------

    async def change_agent(self, new: CallAgent, reason: str) -> str:
        """Run the rest of the call with ``new``'s instructions and tools (a ``hand_off``, or a
        reload with ``on_reload: update``): a ``contextUpdate`` on a model that takes one, in
        order with the caller's audio, else a new connection with ``new``'s setup that resumes
        the conversation (or is seeded with it). The call keeps its model, voice and policy
        (timers, limits, fallback): those are the answering agent's. Returns how:
        ``context_update`` or ``reconnect``."""
        previous = self.agent.name
        # Off the model's turn: a new connection waits for it to end, so nothing it says is cut.
        if self._live.wire.context_update:
            await self._live.send(
                protocol.context_update_message(
                    system_instruction=new.agent.system_instruction or "",
                    tools=new.agent.tools,
                    wire=self._live.wire,
                )
            )
            how = "context_update"
        else:
            self._handed_from = previous
            await self._live.reconfigure(new.opener, reason)
            how = "reconnect"
        self.agent = dataclasses.replace(new.agent, call=self.policy)
        self.source_agent = new.source
        if self._tools is not None and new.toolbox is not None and new.context is not None:
            self._tools.swap(new.toolbox, new.context)
        if self._journal is not None:
            self._journal.agent(new.agent.name)  # a continuation elsewhere goes on with it
        structlog.contextvars.bind_contextvars(agent=new.agent.name)
        self._metrics.count_agent_change(reason, how)
        log.info(
            "call.agent_changed",
            from_agent=previous,
            to_agent=new.agent.name,
            reason=reason,
            how=how,
        )
        return how

    async def agent_reloaded(self, source: AgentConfig) -> str | None:
        """This call's agent was reloaded as ``source``: take its new instructions and tools if
        they changed and its file says ``on_reload: update``. Returns how (see
        :meth:`change_agent`), or None when the call keeps what it has."""
        if source == self.source_agent or self._switch_agent is None:
            return None
        if source.call.on_reload != "update":
            log.info("call.agent_kept", on_reload=source.call.on_reload)
            return None
        new = await self._switch_agent(source.name)
        if new is None:
            return None
        return await self.change_agent(new, RELOAD_RESTART)

    async def _hand_off(
        self, action: HandOff, response: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        """The model handed the call to ``action.agent``: switch, then let the new agent have
        the function's result (mid-session), or nothing (a new session, which is told)."""
        new = None if self._switch_agent is None else await self._switch_agent(action.agent)
        if new is None:
            log.error("call.hand_off_failed", to_agent=action.agent, error="no such agent")
            return {
                "error": f"The {action.agent} agent is not available; help the caller yourself."
            }
        await self.change_agent(new, HAND_OFF_RESTART)
        # Mid-session the new agent has it; otherwise the old one does, says its last words,
        # and the new connection (at the end of that turn) has the whole exchange.
        return response

    async def _tool_calls(self, calls: Sequence[FunctionCall]) -> None:
        if self._tools is not None:
            await self._tools.requested(calls)
            return
        # The model called a function this agent has no runner for: say so, never leave it waiting.
        log.warning("tool.unavailable", tools=[call.name for call in calls])
        results = [
            FunctionResult(id=c.id, name=c.name, response={"error": "This tool is not available."})
            for c in calls
        ]
        await self._live.send(protocol.tool_response_message(results))

    async def _on_action(self, action: Action) -> None:
        """Hang up or transfer, once the caller has heard the model's goodbye; press keys."""
        if isinstance(action, HandOff):  # the tool runner hands these to _hand_off
            log.error("call.hand_off_failed", to_agent=action.agent, error="no tool runner")
            return
        if isinstance(action, PressKeys):
            # After whatever audio is already on its way (Twilio plays in order); the call
            # goes on. The keys are not logged: they may be a PIN.
            log.info("call.keys_pressed", keys=len(action.digits))
            await self._send_frames(_key_frames(action.digits))
            return
        await self._wait_until_played()
        if isinstance(action, TransferCall) and action.warm:
            await self._warm_transfer(action)
            return
        # The caller hears why the line changes before it does, from the bridge itself: a model
        # that calls the tool before speaking would otherwise leave them in silence until the
        # new party answers. Played, and confirmed by its mark, before the REST redirect (which
        # ends this stream and anything still queued on it); never when no redirect can follow.
        if (
            isinstance(action, TransferCall)
            and action.announce
            and action.announcement is None
            and self._call_control is not None
        ):
            log.info("call.transfer_announced", via="recording")
            await self._send_frames(_transfer_frames())
            await self._wait_until_played()
        reason = TRANSFERRED if isinstance(action, TransferCall) else AGENT_ENDED
        if isinstance(action, EndCall) and self._cost.reached is not None:
            reason = COST_LIMIT  # the model hung up as part of the goodbye it was asked for
        # Twilio may close the stream before its REST answer arrives: the reason is already ours.
        self._ending = reason
        try:
            done = await self._perform(action)
        except AgentError as exc:
            log.error("call.action_failed", action=type(action).__name__, error=str(exc))
            done = False
        if isinstance(action, EndCall):
            # Without a REST client, closing the media stream hangs up (no TwiML follows it).
            log.info("call.hang_up", via="rest" if done else "stream", reason=reason)
            self.end(reason)
        elif done:
            # ``transfer_to`` is masked like a caller's number when MASK_CALLER_NUMBERS is on.
            log.info("call.transferred", transfer_to=action.number)
            self.end(reason)
        else:
            log.error("call.transfer_unavailable", transfer_to=action.number)
            self._ending = ERROR
            self.end(ERROR)

    async def _warm_transfer(self, action: TransferCall) -> None:
        """Hold music for the caller (and none of their audio to the model) while the colleague
        is dialled and told the summary; then join them, or, if nobody answers, hand the
        caller back to the agent, who says so."""
        transfers = self._warm_transfers
        caller_id = self._tool_context.called_number if self._tool_context else None
        summary = action.summary or WARM_TRANSFER_SUMMARY
        outcome = "unavailable"
        if transfers is not None and caller_id is not None and self._group is not None:
            self._holding = True
            log.info("call.on_hold", transfer_to=action.number)
            music = self._group.create_task(self._play_hold_music(), name="hold music")
            try:
                outcome = await transfers.call_colleague(
                    self.started.call_sid,
                    action.number,
                    caller_id=caller_id,
                    summary=summary,
                    ring_timeout_s=action.ring_timeout_s,
                )
            except AgentError as exc:
                log.error("call.action_failed", action="warm transfer", error=str(exc))
                outcome = "failed"
            finally:
                music.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await music
        if outcome == "answered" and transfers is not None:
            # Twilio may close the stream before the REST answer arrives: the reason is ours.
            self._ending = TRANSFERRED
            try:
                await transfers.join(self.started.call_sid)
            except AgentError as exc:
                log.error("call.action_failed", action="warm transfer join", error=str(exc))
                self._ending = None
                outcome = "failed"
            else:
                log.info("call.transferred", transfer_to=action.number, warm=True)
                self.end(TRANSFERRED)
                return
        log.info("call.warm_transfer_unanswered", transfer_to=action.number, outcome=outcome)
        self._holding = False
        self._timers.caller_spoke(self._clock())  # the hold was not the caller's silence
        await self._flush_outbound()
        await self._prompt(WARM_TRANSFER_UNANSWERED)

    async def _play_hold_music(self) -> None:
        """The bundled hold music, over and over, until cancelled."""
        frames = _music_frames()
        while True:
            await self._send_frames(frames)
            await self._wait_until_played()

    async def _cost_limit_reached(self, reached: CostLimitReached) -> None:
        """A cost limit was reached: the model says goodbye (now, or at the end of the turn it
        is in: a new turn would cut it off), then the call ends."""
        policy = self.policy
        log.info(
            "call.cost_limit",
            limit=reached.limit,
            tokens=reached.tokens,
            cost_usd=reached.cost_usd,
            max_tokens=policy.max_tokens,
            max_cost_usd=policy.max_cost_usd,
        )
        self._goodbye = "due"
        if not self.playback.turn_open:
            await self._ask_for_goodbye()

    async def _ask_for_goodbye(self) -> None:
        self._goodbye = "asked"
        self._cost.goodbye_requested(self._clock())
        self._wake.set()  # the goodbye's deadline is now the supervisor's nearest
        await self._prompt(self.policy.cost_limit_message)

    async def _goodbye_turn_ended(self) -> None:
        """A model turn ended while the cost guard's goodbye was due or being said."""
        if self._goodbye == "due":
            await self._ask_for_goodbye()
        elif self._goodbye == "asked":
            self._goodbye = "said"
            assert self._group is not None
            # Its own task: the model pump must go on reading while the goodbye plays out.
            self._group.create_task(self._hang_up_after_goodbye(), name="cost limit")

    async def _hang_up_after_goodbye(self) -> None:
        await self._wait_until_played()
        await self._hang_up(COST_LIMIT)

    async def _hang_up(self, reason: str) -> None:
        """End the call with ``reason``: through Twilio's REST API, else by closing the stream."""
        self._ending = reason
        try:
            done = await self._perform(EndCall())
        except AgentError as exc:
            log.error("call.action_failed", action="EndCall", error=str(exc))
            done = False
        log.info("call.hang_up", via="rest" if done else "stream", reason=reason)
        self.end(reason)

    async def _perform(self, action: EndCall | TransferCall) -> bool:
        """Carry out a built-in's action through the call control (Twilio's REST API). False
        when there is none (development without Twilio credentials): the call must then end
        another way. ``TelephonyError`` when Twilio refuses; hanging up a call that has already
        ended is not an error."""
        control = self._call_control
        if control is None:
            log.warning("tool.action_without_rest_api", action=type(action).__name__)
            return False
        if isinstance(action, EndCall):
            await control.hang_up(self.started.call_sid)
        elif isinstance(action, TransferCall):
            announce = action.announcement if action.announce else None
            await control.transfer(self.started.call_sid, action.number, announce=announce)
        return True

    async def _wait_until_played(self) -> None:
        """Until the model has finished its turn and Twilio has played everything we sent (a
        goodbye must not be cut), bounded so a lost mark cannot keep the call open."""
        now = self._clock()
        bound = self.playback.unplayed_ms(now) / 1000 + 15.0
        try:
            async with asyncio.timeout(self._wall(bound)):
                await self._drained.wait()
        except TimeoutError:
            log.warning("call.playback_unconfirmed")

    async def _play(self, audio: ModelAudio) -> None:
        if audio.sample_rate != protocol.OUTPUT_SAMPLE_RATE:
            log.error("live.unexpected_audio_rate", sample_rate=audio.sample_rate)
            return
        now = self._clock()
        self._timers.model_heard(now, answered=False)
        if not self.playback.turn_open:
            # Once per agent turn: the silence the caller sat through since they last spoke.
            log.info(
                "model.responding",
                wait_ms=round((now - self._timers.last_caller_activity) * 1000),
            )
            self.playback.start_turn()
            # It owes the rest of this turn: audio that stops without a turnComplete is a stall.
            self._timers.answer_owed("audio", now)
            self._wake.set()
        sampled = self._frame_timer.start()
        frames = self._outbound.process(audio.pcm)
        if frames:
            await self._send_frames(frames, sampled, mark=False)

    async def _flush_outbound(self) -> None:
        """The end of a turn: send its last partial frame (and the resampler's tail), and a mark
        after the turn's last frame, so that its end is proven played."""
        tail = self._outbound.flush()
        if tail:
            await self._send_frames(tail)
        elif self.playback.unmarked_frames:
            await self._ws.send_str(self._stream.mark(self.playback.mark()))

    async def _barge_in(self) -> None:
        """The model was interrupted: flush everything queued for the caller in this loop turn."""
        received = time.perf_counter()
        self._outbound.reset()
        now = self._clock()
        cleared = self.playback.clear(now)
        await self._ws.send_str(self._stream.clear())
        latency_ms = (time.perf_counter() - received) * 1000
        self.stats.barge_ins += 1
        turn = self.transcript.agent_turn_ended(now, heard_frames=cleared.heard_frames)
        self._record_closed_turns()
        self._metrics.count_interruption()
        log.info(
            "caller.barge_in",
            heard_ms=cleared.heard_frames * 20,
            discarded_ms=cleared.discarded_frames * 20,
            clear_latency_ms=round(latency_ms, 3),
            heard_text=turn.heard if turn else None,
        )

    async def _send_frames(
        self, frames: list[bytes], sampled: int = 0, *, mark: bool = True
    ) -> None:
        """One media message for a chunk's 20 ms frames (Twilio takes any payload size; each
        message is a socket write, the bridge's main cost), then a mark after them: always
        (``mark``: a clip, a turn's last frames), else once ``MARK_EVERY_FRAMES`` are unmarked
        (the model's speech, chunk by chunk; see :mod:`agent.call.playback`)."""
        self._frame_timer.outbound(sampled, len(frames))
        ws, stream, playback = self._ws, self._stream, self.playback
        await ws.send_str(stream.media(frames[0] if len(frames) == 1 else b"".join(frames)))
        now = self._clock()
        if self.stats.first_audio_ms is None:
            self.stats.first_audio_ms = round((now - self._began) * 1000, 3)
            log.info("call.first_audio", ms_since_start=self.stats.first_audio_ms)
        playback.sent(len(frames), now)
        self._timers.agent_heard_until(now + playback.unplayed_ms(now) / 1000)
        if mark or playback.unmarked_frames >= MARK_EVERY_FRAMES:
            await ws.send_str(stream.mark(playback.mark()))

    # -- timers ---------------------------------------------------------------------------------

    async def _supervisor(self) -> None:
        """Sleeps until the timers' next deadline (or a wake-up), then acts on what fired."""
        timers = self._timers
        while True:
            if self.ended_reason is not None:
                raise _CallEnded(self.ended_reason)
            if self._handover and self._quiet():
                log.info("call.handing_over")
                raise _CallEnded(HANDED_OVER)
            deadline = timers.next_deadline()
            goodbye_by = self._cost.deadline
            if goodbye_by is not None and (deadline is None or goodbye_by < deadline):
                deadline = goodbye_by
            self._wake.clear()
            try:
                wait = None if deadline is None else self._wall(max(0.0, deadline - self._clock()))
                async with asyncio.timeout(wait):
                    await self._wake.wait()
                continue
            except TimeoutError:
                pass
            # Having slept until the deadline, it is reached: the clock may read a hair before
            # it (a wait too small to move the loop's float time, asyncio firing a tick early),
            # and a deadline that never quite comes would have this loop spin on it.
            assert deadline is not None
            now = max(self._clock(), deadline)
            if self._cost.overdue(now) and self._goodbye != "said":
                # The model has not finished its goodbye: the bill is not to grow further.
                log.warning(
                    "call.cost_limit_goodbye_overdue", waited_s=self.policy.cost_limit_goodbye_s
                )
                await self._hang_up(COST_LIMIT)
                continue
            for event in timers.expired(now):
                await self._on_timer(event)

    def _tool_waiting(self, waiting: bool) -> None:
        now = self._clock()
        self._timers.tool_wait(waiting, now)
        if not waiting:
            self._timers.answer_owed("tool", now)  # the model has its result: it owes an answer
        self._wake.set()  # a hold-on or stall deadline may now be the nearest

    def _tool_result_owed(self) -> None:
        """A non-blocking result the model is to speak about went to it: it owes an answer,
        from now, or, if it is speaking (``WHEN_IDLE`` waits for that turn to end; an
        ``INTERRUPT`` ends it), from the end of the turn."""
        if self.playback.turn_open:
            self._result_owed = True
            return
        self._timers.answer_owed("tool", self._clock())
        self._wake.set()  # a stall deadline now runs

    async def _hold_on(self, waited_s: float) -> None:
        """A blocking tool keeps the caller waiting: tell them so, unless something is already
        playing (the model's own "let me check" covers it)."""
        if self.playback.turn_open or not self._drained.is_set():
            return
        log.info("call.hold_on", waited_s=waited_s)
        self.stats.holds += 1
        await self._send_frames(_hold_frames())

    async def _on_stall(self, cause: str, silent_s: float, attempt: int) -> None:
        """The model owes an answer and has gone silent. First nudge it (a text turn asking it
        to answer); then leave its connection for a new one (resumed, or a fresh session
        seeded with the conversation) while the caller hears "One moment, please."; then give
        up on it: the fallback, as when the Live API is unreachable."""
        action = STALL_ACTIONS[min(attempt, len(STALL_ACTIONS)) - 1]
        self.stats.stalls += 1
        self._metrics.count_stall(cause, action)
        log.warning("model.stalled", cause=cause, silent_s=silent_s, attempt=attempt, action=action)
        if action == "nudge":
            await self._prompt(self.policy.stall_message)
        elif action == "reconnect":
            if not self.playback.turn_open and self._drained.is_set():
                await self._send_frames(_hold_frames())  # something for the caller meanwhile
            await self._live.restart(STALL_RESTART)
        else:
            raise LiveUnavailableError(
                f"the model stalled ({cause}) and stayed silent after a nudge and a new connection"
            )

    async def _await_answer(self, gate: AnswerGate) -> None:
        """An outbound call: wait for the answering-machine verdict (bounded), then greet a
        person, or leave the voicemail message after a machine's beep, or hang up."""
        decision = gate.decision(self._clock())
        while decision is None:
            wait_s = min(VERDICT_WAIT_S, max(0.0, gate.deadline - self._clock()))
            answered_by = await self._verdict(wait_s) if self._verdict is not None else None
            if answered_by is None and self._verdict is None:
                await asyncio.sleep(self._wall(wait_s))
            if answered_by is not None:
                gate.verdict(answered_by)
            decision = gate.decision(self._clock())
        waited_ms = round((self._clock() - gate.opened_at) * 1000)
        log.info(
            "call.answered_by",
            answered_by=gate.answered_by or "no verdict",
            decision=decision,
            waited_ms=waited_ms,
        )
        now = self._clock()
        if decision == "greet":
            self._holding = False
            self._timers.caller_spoke(now)  # the wait was not the callee's silence
            if self.agent.greeting:
                await self._prompt(self.agent.greeting)
            return
        if decision == "hang_up":
            await self._hang_up(ANSWERING_MACHINE)
            return
        message = self.agent.outbound.voicemail_message
        assert message is not None  # the agent file refuses voicemail without a message
        turns = self.stats.model_turns
        await self._prompt(VOICEMAIL_PROMPT.format(message=message))
        with contextlib.suppress(TimeoutError):  # a model that never answers: hang up anyway
            async with asyncio.timeout(self._wall(VOICEMAIL_TURN_S)):
                await self.turn_completed(turns + 1)
        await self._wait_until_played()
        await self._hang_up(VOICEMAIL_LEFT)

    async def _on_timer(self, event: TimerEvent) -> None:
        if self._holding and not isinstance(event, MaxDuration):
            # Waiting for the verdict (or recording a voicemail): nobody is to be prompted,
            # nudged, asked whether they are still there, or hung up on for their silence.
            return
        policy = self.policy
        match event:
            case HoldOn(waited_s=waited_s):
                await self._hold_on(waited_s)
            case Stall(cause=cause, silent_s=silent_s, attempt=attempt):
                await self._on_stall(cause, silent_s, attempt)
            case KeypadGroup(digits=digits):
                await self._send_dtmf(digits)
            case WrapUp():
                log.info("call.wrap_up")
                await self._prompt(policy.wrap_up_message)
            case IdleCheck(silent_s=silent_s):
                log.info("call.idle_prompt", silent_s=silent_s)
                await self._prompt(policy.idle_message)
            case IdleTimeout(silent_s=silent_s):
                log.info("call.idle_timeout", silent_s=silent_s)
            case MaxDuration(seconds=seconds):
                log.info("call.max_duration", seconds=seconds)
        if isinstance(event, ENDING):
            raise _CallEnded(TIMED_OUT)

    # -- fallback -------------------------------------------------------------------------------

    async def _fallback(self) -> None:
        """The model cannot be reached: do what ``agent.fallback`` says. Transfer to
        ``transfer_to`` (saying ``message`` first, if set), else have Twilio say ``message`` and
        hang up, else play the bundled apology; the first two need Twilio's REST API, and when
        it is missing or refuses, the apology plays instead."""
        if self._ws.closed:
            return  # the caller is gone: there is no one to tell
        fallback = self.agent.fallback
        message = fallback.message if fallback.message and fallback.message.strip() else None
        number = fallback.transfer_to
        if message is None and number is None:
            await self._play_fallback()
            return
        if self._call_control is None:
            log.warning("call.fallback_without_rest", transfer_to=number is not None)
            await self._play_fallback()
            return
        call_sid = self.started.call_sid
        try:
            if number is not None:
                await self._call_control.transfer(call_sid, number, announce=message)
            else:
                assert message is not None
                await self._call_control.say_and_hang_up(call_sid, message)
        except AgentError as exc:
            log.error("call.fallback_failed", error=str(exc))
            await self._play_fallback()
            return
        # Twilio now runs the new TwiML: the media stream is over, whatever it sends next.
        log.info("call.fallback", via="transfer" if number is not None else "say", number=number)

    async def _play_fallback(self) -> None:
        """Tell the caller, instead of leaving dead air, and wait until they have heard it."""
        if self._ws.closed:
            return
        self._outbound.reset()
        self.playback.clear(self._clock())
        frames = _fallback_frames()
        try:
            await self._ws.send_str(self._stream.clear())
            await self._send_frames(frames)
        except ConnectionResetError:
            return  # the caller had already hung up
        last_mark = f"m{self.playback.marks_sent}"
        # The pumps are gone: read Twilio ourselves until that mark is played or the caller leaves.
        try:
            async with asyncio.timeout(self._wall(len(frames) * 0.02 + 5.0)):
                async for message in self._ws:
                    if message.type is not WSMsgType.TEXT:
                        break
                    event = self._stream.receive_text(message.data)
                    if type(event) is StreamStopped:
                        break
                    if type(event) is MarkPlayed and event.name == last_mark:
                        break
        except TimeoutError:
            log.warning("call.fallback_unconfirmed")


def _saved(turn: Turn) -> SavedTurn:
    return SavedTurn(turn.role, turn.said, turn.heard, turn.interrupted)


def _restored(turn: SavedTurn) -> Turn:
    role: Role = "caller" if turn.role == "caller" else "agent"
    # Times are the earlier stream's and already recorded; 0.0 marks the turn closed.
    return Turn(role, 0.0, turn.said, turn.heard, turn.interrupted, ended_at=0.0)


def _event_setter(event: asyncio.Event) -> Callable[[bool], None]:
    """A callback that sets ``event`` on True and clears it on False."""

    def update(value: bool) -> None:
        if value:
            event.set()
        else:
            event.clear()

    return update


def _first_reason(group: BaseExceptionGroup[_CallEnded]) -> str:
    first = group.exceptions[0]
    return first.reason if isinstance(first, _CallEnded) else _first_reason(first)


def _dbfs(rms: float) -> float:
    return -120.0 if rms <= 0 else round(20 * math.log10(rms / 32768.0), 1)


def _add_usage(totals: dict[str, int], direction: str, by_modality: Mapping[str, int]) -> None:
    for modality, count in by_modality.items():
        key = f"{direction}_{modality.lower()}"
        totals[key] = totals.get(key, 0) + count


@cache
def _fallback_frames() -> list[bytes]:
    """The bundled apology as 20 ms mu-law frames (read once per process)."""
    return _clip_frames(str(FALLBACK_AUDIO))


@cache
def _hold_frames() -> list[bytes]:
    """ "One moment, please." as 20 ms mu-law frames (read once per process)."""
    return _clip_frames(str(HOLD_AUDIO))


@cache
def _transfer_frames() -> list[bytes]:
    """ "Putting you through now. Please hold." as 20 ms mu-law frames (read once per process)."""
    return _clip_frames(str(TRANSFER_AUDIO))


@cache
def _music_frames() -> list[bytes]:
    return _clip_frames(str(HOLD_MUSIC))


def _key_frames(digits: str) -> list[bytes]:
    """The keys' DTMF tones as 20 ms mu-law frames (the last padded with silence)."""
    ulaw = pcm16_to_ulaw(dtmf_tones(digits))
    size = OutboundTranscoder.FRAME_BYTES
    ulaw += bytes([ULAW_SILENCE]) * (-len(ulaw) % size)
    return [ulaw[i : i + size] for i in range(0, len(ulaw), size)]


def _clip_frames(path: str) -> list[bytes]:
    pcm, rate = read_wav(path)
    if rate != 8000:
        raise LiveError(f"bundled audio must be 8 kHz, got {rate} Hz: {path}")
    ulaw = pcm16_to_ulaw(pcm)
    size = OutboundTranscoder.FRAME_BYTES
    return [ulaw[i : i + size].ljust(size, b"\xff") for i in range(0, len(ulaw), size)]
