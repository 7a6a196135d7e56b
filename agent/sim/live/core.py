"""The local Live API emulator's decisions, sans-I/O.

:class:`LiveEmulatorCore` is one emulated ``BidiGenerateContent`` connection. The adapter
(:mod:`agent.sim.live.server`) feeds it every client frame with :meth:`~LiveEmulatorCore.receive`,
lets it act on its timers with :meth:`~LiveEmulatorCore.poll` and sends what
:meth:`~LiveEmulatorCore.data_to_send` returns, in that order. The core never touches a socket or
reads a clock: ``now_ms`` is *emulated* time that the adapter hands in (wall time multiplied by the
speed-up, on one clock for the whole emulator), and the voice activity detector runs on audio time
(sample counts), so a session behaves the same at any speed and in a unit test with no event loop.

What it emulates, following ``docs/live-api-protocol.md``: the ``setup`` handshake and its errors
(as close frames, never exceptions) down to unknown fields in nested setup objects, camelCase and
snake_case keys, both base64 alphabets, an energy VAD honouring ``automaticActivityDetection``,
manual activity signals, answers streamed from bundled clips (audio with transcriptions, or text
parts for ``responseModalities: ["TEXT"]``), barge-in, ``usageMetadata`` on the final frame of a
turn, session resumption (handles naming snapshots in a :class:`ResumptionStore` shared by every
connection of an emulator), the ~10-minute connection cap with its ``goAway``, the 15-minute session
limit without context compression, scripted function calls (:mod:`agent.sim.live.scenario`) with
``NON_BLOCKING`` scheduling and cancellation, calls to the declared functions an unscripted turn's
words ask for (:mod:`agent.sim.live.functions`), and injected faults (:class:`Fault`).

``EmulatorOptions.backend = "vertex"`` makes it Vertex AI's: publisher model resource names, the
capability table's Vertex rows, ``explicitVadSignal`` and ``sessionResumption.transparent``, whose
handles each name a snapshot at a client message index (``lastConsumedClientMessageIndex``) so a
resumed session holds exactly the messages up to it and a client's replay completes it.

Hearing and speaking (``hears``/``speaks``) stay sans-I/O too: the core hands the adapter a
:class:`Transcribe` or :class:`Synthesise` request and goes on when the adapter hands back the
words (:meth:`LiveEmulatorCore.heard`) or the audio (:meth:`LiveEmulatorCore.voiced`). The words
reach the turn logic through :meth:`LiveEmulatorCore.unscripted_step`.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import math
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np

from agent.sim.live.functions import (
    DeclaredFunction,
    calls_for,
    declared_functions,
    result_told,
    step_for_calls,
)
from agent.sim.live.options import (
    AbortConnection,
    AnswerClips,
    CloseConnection,
    EmulatedSessionRecord,
    EmulatorOptions,
    Fault,
    HistoryEntry,
    JsonObject,
    Outgoing,
    SendMessage,
    Stall,
    Synthesise,
    ToolCallRecord,
    ToolCancellationRecord,
    ToolResponseRecord,
    Transcribe,
)
from agent.sim.live.resumption import (
    ConversationSnapshot,
    PendingSpeech,
    ResumptionStore,
    SessionLine,
)
from agent.sim.live.scenario import (
    CLIP_RATE,
    Clip,
    ScriptedCall,
    Speech,
    Step,
    render_template,
)
from agent.sim.live.setup_checks import (
    HANG,
    check_context_update,
    check_model_capabilities,
    check_one_response_modality,
    check_setup_fields,
    model_default_behavior,
    vertex_model_name,
)
from agent.sim.live.vad import (
    DEFAULT_PREFIX_PADDING_MS,
    DEFAULT_SILENCE_DURATION_MS,
    EmulatorVad,
    SpeechStarted,
    VadSettings,
)
from agent.sim.live.wire import (
    CLIENT_MESSAGE_FIELDS,
    CLOSE_INTERNAL,
    CLOSE_INVALID,
    CLOSE_POLICY,
    DEADLINE_EXPIRED,
    EXPLICIT_ACTIVITY_WITH_VAD,
    INTERNAL_ERROR,
    INVALID_ARGUMENT,
    MODALITIES,
    OUTPUT_MIME_TYPE,
    RETIRED_MODELS,
    SCHEDULING_VALUES,
    SESSION_LIMIT_CODE,
    SESSION_LIMIT_REASON,
    WORDS_PER_TEXT_CHUNK,
    RequestRejectedError,
    audio_tokens,
    camel_case,
    decode_base64,
    duration_string,
    normalise_keys,
    pcm_rate,
    text_tokens,
    truncate_reason,
)

__all__ = [
    "AbortConnection",
    "AnswerClips",
    "Clip",
    "CloseConnection",
    "ConversationSnapshot",
    "EmulatedSessionRecord",
    "EmulatorOptions",
    "EmulatorVad",
    "Fault",
    "HistoryEntry",
    "LiveEmulatorCore",
    "PendingSpeech",
    "ResumptionStore",
    "SendMessage",
    "Stall",
    "Synthesise",
    "ToolCallRecord",
    "ToolCancellationRecord",
    "ToolResponseRecord",
    "Transcribe",
    "VadSettings",
]

DEFAULT_LANGUAGE = "en-US"
"""The language a session is heard in when its setup names none."""
PREROLL_MS = 300
"""Caller audio kept from before the detector's start: the onset it needs to be sure of."""
MAX_HEARD_MS = 60_000
"""The longest stretch of one caller turn passed to the recogniser (the rest is still counted)."""


@dataclass(slots=True)
class _PendingCall:
    """A function call sent to the client and not answered (or cancelled) yet."""

    id: str
    spec: ScriptedCall


@dataclass(slots=True)
class _Scheduled:
    """One frame of a model turn, due at ``at_ms``.

    ``spoken`` is the part of the answer's text this frame delivers (for history, whether or not
    transcription is on); ``calls`` are registered as pending when a ``toolCall`` frame goes out;
    ``last`` is the frame that completes the turn.
    """

    at_ms: float
    message: JsonObject
    audio_ms: float = 0.0
    spoken: str = ""
    calls: tuple[_PendingCall, ...] = ()
    last: bool = False


@dataclass(slots=True)
class _Turn:
    """The model turn in progress: from the client turn (or function result) that started it to
    its ``turnComplete``.

    A turn with blocking calls sends its ``toolCall`` and then has no frames left until every
    call in ``waiting`` is answered; then ``then`` is scheduled.
    """

    frames: deque[_Scheduled] = field(default_factory=deque)
    waiting: set[str] = field(default_factory=set)
    then: Speech | None = None
    audio_sent_ms: float = 0.0
    spoken: list[str] = field(default_factory=list)
    speaking: bool = False
    """Whether speech (audio or text) has been scheduled in this turn."""
    voicing: int | None = None
    """The :class:`Synthesise` request this turn's speech waits for, if any."""


@dataclass(frozen=True, slots=True)
class _QueuedTurn:
    """A client turn waiting for the model to finish its current answer, with what was said."""

    source: Literal["client", "caller"]
    heard: str | None = None


@dataclass(slots=True)
class _Hearing:
    """A caller audio turn whose words the recogniser has not returned yet."""

    request: int
    duration_ms: float
    ended_ms: float
    words: str | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class _Voicing:
    """Speech waiting for its synthesised audio: what to schedule when :meth:`voiced` comes, and
    the clip whose audio stands in if no audio comes."""

    request: int
    text: str
    start_ms: float
    fallback: Clip


_Queued = _QueuedTurn | PendingSpeech


@dataclass(order=True, slots=True)
class _Timer:
    at_ms: float
    seq: int
    action: Callable[[float], None] = field(compare=False)


class LiveEmulatorCore:
    """One emulated Live API connection: parsed client frames in, server frames and a close out.

    Feed it with :meth:`receive` (each client frame) and :meth:`poll` (when :meth:`next_deadline`
    comes due); send :meth:`data_to_send` after each call. Every ``now_ms`` is emulated time in
    milliseconds on one monotonic clock of the adapter's choosing; ``now_ms`` given to the
    constructor is when the connection opened (its lifetime and faults count from there).
    Sessions resumed across connections share ``store``.

    With ``hears`` the core asks its adapter to recognise each caller audio turn
    (:class:`Transcribe`, answered by :meth:`heard`) and answers once it has the words; with
    ``speaks`` it asks for the agent's own words in a synthesised voice (:class:`Synthesise`,
    answered by :meth:`voiced`): the greeting the client's turn asks for and every scripted line
    with a text of its own. Without them (the defaults) it answers with the placeholder
    ``[caller speech 3.4 s]`` and the bundled clips, as an emulator with no speech engines does.
    """

    def __init__(
        self,
        options: EmulatorOptions,
        clips: AnswerClips,
        *,
        api_version: str = "v1beta",
        record: EmulatedSessionRecord | None = None,
        store: ResumptionStore | None = None,
        connection: int = 0,
        now_ms: float = 0.0,
        hears: bool = False,
        speaks: bool = False,
    ) -> None:
        self.options = options
        self.hears = hears
        self.speaks = speaks
        self.clips = clips
        self.api_version = api_version
        self.backend = options.backend
        self.record = record if record is not None else EmulatedSessionRecord()
        self.record.connection = connection
        self.store = store if store is not None else ResumptionStore()
        self.connection = connection
        self.closed = False
        self._outbox: list[Outgoing] = []
        self._now_ms = now_ms
        self._timers: list[_Timer] = []
        self._timer_seq = 0
        self._setup_done = False
        self._vad: EmulatorVad | None = None
        self._interrupts = True
        self._input_transcription = False
        self._muted_until_ms = -math.inf  # Fault.mute: no model content goes out until then
        self._reports_interaction = False  # the model sends interactionStatus (see _send)
        self._output_transcription = False
        self._text_mode = False
        self._functions: tuple[DeclaredFunction, ...] = ()  # the setup's, for unscripted turns
        self._model = ""  # the setup's model name
        # The setup's instruction and tools, as a contextUpdate last replaced them.
        self._setup_instruction: Any = None
        self._setup_tools: Any = None
        self._remainder = b""  # half a sample left over from an odd-length chunk
        # Manual activity (automatic VAD disabled): open between activityStart and activityEnd.
        self._activity_open = False
        self._activity_ms = 0.0
        self._turn: _Turn | None = None
        self._queued: deque[_Queued] = deque()  # turns waiting for the current answer to end
        self._pending: dict[str, _PendingCall] = {}  # function calls awaiting a response
        # The conversation (restored on resumption).
        self._history = self.record.history
        self._instruction_tokens = 0  # system instruction and tools: in every prompt
        self._context_text_tokens = 0
        self._context_audio_tokens = 0
        self._turns_total = 0
        self._calls_issued = 0
        self._results: dict[str, Any] = {}
        # Session resumption.
        self._line: SessionLine | None = None
        self._session_started_ms = now_ms
        self._resumption = False
        self._resumable = False  # the state the client was last told
        # Client messages on this connection: the index of the last one taken (setup: 0). The
        # SDK's docs say lastConsumedClientMessageIndex is the "index of last message sent by
        # client that is included in state" but not where counting starts; the bridge counts
        # setup as 0 (agent.live.session_state.HeldMessages), and so does the emulator.
        # https://googleapis.github.io/js-genai/release_docs/interfaces/types.LiveServerSessionResumptionUpdate.html
        self._client_index = -1
        self._transparent = False  # Vertex's sessionResumption.transparent
        self._vad_signals = False  # Vertex's explicitVadSignal: report the VAD's decisions
        self._since_update = 0  # client messages since the last handle (transparent)
        # Speech: the caller's audio of the turn in progress, and requests out to the adapter.
        self._language = DEFAULT_LANGUAGE
        self._caller_audio = bytearray()
        self._caller_rate = 16000
        self._requests = 0
        self._hearings: deque[_Hearing] = deque()  # in turn order: answered in that order
        self._voicing: _Voicing | None = None
        self._schedule_connection_timers(now_ms)

    # -- the adapter's side --------------------------------------------------------------------

    def receive(self, data: str | bytes, now_ms: float) -> None:
        """Act on one client frame (a TEXT or BINARY WebSocket message) received at ``now_ms``."""
        if self.closed:
            return
        self._now_ms = max(self._now_ms, now_ms)
        self._client_index += 1
        try:
            self._receive(data, now_ms)
        except RequestRejectedError as rejected:
            self.close(rejected.code, rejected.reason)
            return
        if self._transparent and self._client_index > 0:
            self.record.message_digests.append(_digest(data))
            self._since_update += 1
            if self._since_update >= self.options.transparent_update_every and self._caller_quiet():
                # Vertex reports what it consumed as the session goes, not only between turns:
                # the client buffers no more than it must.
                self._became_idle(now_ms)

    def poll(self, now_ms: float) -> None:
        """Emit every scheduled frame and fire every timer due by ``now_ms``, in time order."""
        self._now_ms = max(self._now_ms, now_ms)
        while not self.closed:
            frame_at = self._next_frame_at()
            timer_at = self._timers[0].at_ms if self._timers else None
            # On a tie the answer's frame goes first: a close at the same instant follows it.
            if (
                frame_at is not None
                and frame_at <= now_ms
                and (timer_at is None or frame_at <= timer_at)
            ):
                self._send_frame()
            elif timer_at is not None and timer_at <= now_ms:
                timer = heapq.heappop(self._timers)
                timer.action(timer.at_ms)
            else:
                return

    def next_deadline(self) -> float | None:
        """When :meth:`poll` next has something to do (emulated ms), or ``None``."""
        if self.closed:
            return None
        times = [at for at in (self._next_frame_at(),) if at is not None]
        if self._timers:
            times.append(self._timers[0].at_ms)
        return min(times) if times else None

    def data_to_send(self) -> list[Outgoing]:
        """The frames (and perhaps a final close) to send now, in order; empties the outbox."""
        outgoing, self._outbox = self._outbox, []
        return outgoing

    def heard(self, request: int, words: str | None, now_ms: float) -> None:
        """The recogniser's words for :class:`Transcribe` ``request`` (``None``: it had none for
        this language, so the turn is heard as the placeholder). Turns are answered in the
        order they were spoken, whatever order their words come back in."""
        if self.closed:
            return
        self._now_ms = max(self._now_ms, now_ms)
        for hearing in self._hearings:
            if hearing.request == request and not hearing.done:
                hearing.words, hearing.done = words, True
                break
        else:
            return
        while self._hearings and self._hearings[0].done:
            hearing = self._hearings.popleft()
            # The answer starts think_ms after the turn ended, as without hearing, or at once
            # when the words took longer than that (frames are never scheduled in the past).
            at_ms = max(hearing.ended_ms, now_ms - self.options.think_ms)
            self._caller_heard(hearing.duration_ms, hearing.words, at_ms)

    def voiced(self, request: int, pcm: bytes | None, now_ms: float) -> None:
        """The synthesised audio (PCM16 mono, 24 kHz) for :class:`Synthesise` ``request``;
        ``None`` (no TTS after all) falls back to the bundled clip with the same words. Audio
        for speech that no longer matters (the caller barged in) is dropped."""
        if self.closed:
            return
        self._now_ms = max(self._now_ms, now_ms)
        voicing, turn = self._voicing, self._turn
        if voicing is None or voicing.request != request:
            return
        self._voicing = None
        if turn is None or turn.voicing != request:
            return
        turn.voicing = None
        start = max(voicing.start_ms, now_ms)
        if pcm is None:
            self.speaks = False  # the adapter says why; the rest of the session uses clips
            clip = voicing.fallback
            self._schedule_clip(turn, Clip(clip.pcm, clip.rate, voicing.text), start)
        else:
            self.record.voiced.append(voicing.text)
            self._schedule_clip(turn, Clip(pcm, CLIP_RATE, voicing.text), start)

    def close(self, code: int, reason: str) -> None:
        """Close the connection: stop answering and queue the close frame."""
        if self.closed:
            return
        self._shut()
        self._outbox.append(CloseConnection(code, truncate_reason(reason)))

    def abort(self) -> None:
        """Drop the connection with no close frame (the client sees 1006)."""
        if self.closed:
            return
        self._shut()
        self._outbox.append(AbortConnection())

    def go_away(self, time_left_s: float, now_ms: float) -> None:
        """Send ``goAway`` now and end the connection ``time_left_s`` later, as the cap does."""
        if self.closed:
            return
        self._now_ms = max(self._now_ms, now_ms)
        self._send_go_away(time_left_s, now_ms)
        self._at(now_ms + time_left_s * 1000, self._deadline_expired)

    def connection_lost(self) -> None:
        """The socket is gone (the client closed it): forget everything pending."""
        self._shut()
        self._outbox.clear()

    def snapshot(self) -> ConversationSnapshot:
        """The conversation as it stands, as a resumption handle would name it."""
        return ConversationSnapshot(
            history=tuple(self._history),
            text_tokens=self._context_text_tokens,
            audio_tokens=self._context_audio_tokens,
            turns=self._turns_total,
            calls_issued=self._calls_issued,
            when_idle=tuple(item for item in self._queued if isinstance(item, PendingSpeech)),
            results=dict(self._results),
            consumed_index=max(self._client_index, 0),
            audio_bytes=self.record.session_audio_bytes,
        )

    def _shut(self) -> None:
        self.closed = True
        self._turn = None
        self._queued.clear()
        self._pending.clear()
        self._timers.clear()
        self._hearings.clear()
        self._voicing = None
        self._caller_audio.clear()
        if self._line is not None and self._line.attached:
            # The session is free to be resumed from now on.
            self._line.attached = False
            self._line.connected_ms += max(0.0, self._now_ms - self._session_started_ms)

    # -- timers --------------------------------------------------------------------------------

    def _at(self, at_ms: float, action: Callable[[float], None]) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, _Timer(at_ms, self._timer_seq, action))

    def _schedule_connection_timers(self, opened_ms: float) -> None:
        options = self.options
        lifetime_ms = options.connection_lifetime_s * 1000
        if math.isfinite(lifetime_ms):
            before_s = min(options.go_away_before_s, options.connection_lifetime_s)
            self._at(
                opened_ms + lifetime_ms - before_s * 1000,
                lambda at: self._send_go_away(before_s, at),
            )
            self._at(opened_ms + lifetime_ms, self._deadline_expired)
        for fault in options.faults:
            # delay_setup strikes at setup, ignore_results at each result (_ignores_results).
            if fault.applies_to(self.connection) and fault.kind not in (
                "delay_setup",
                "ignore_results",
            ):
                if _after_setup(fault):
                    continue  # scheduled by _complete_setup
                self._at(opened_ms + fault.after_s * 1000, self._fault_action(fault))

    def _fault_action(self, fault: Fault) -> Callable[[float], None]:
        def strike(at_ms: float) -> None:
            self.record.faults.append(fault.kind)
            if fault.kind == "close":
                self.close(fault.code, fault.reason)
            elif fault.kind == "abort":
                self.abort()
            elif fault.kind == "stall":
                self._outbox.append(Stall(at_ms + fault.duration_s * 1000))
            elif fault.kind == "mute":
                self._muted_until_ms = at_ms + fault.duration_s * 1000
            elif fault.kind == "oversized":
                filler = "x" * max(0, fault.size - 60)  # the JSON around it is ~60 bytes
                self._send({"serverContent": {"modelTurn": {"parts": [{"text": filler}]}}})
            else:
                self.go_away(fault.duration_s, at_ms)

        return strike

    def _send_go_away(self, time_left_s: float, at_ms: float) -> None:
        left = duration_string(time_left_s)
        self.record.go_aways.append(left)
        self._send({"goAway": {"timeLeft": left}})

    def _deadline_expired(self, at_ms: float) -> None:
        self.close(CLOSE_INTERNAL, DEADLINE_EXPIRED)

    # -- client messages -------------------------------------------------------------------------

    def _receive(self, data: str | bytes, now_ms: float) -> None:
        try:
            message = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            self.record.client_messages.append("<invalid>")
            raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT) from None
        if not isinstance(message, dict) or len(message) != 1:
            self.record.client_messages.append("<invalid>")
            raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        ((raw_kind, raw_body),) = message.items()
        kind = camel_case(raw_kind)
        if kind not in CLIENT_MESSAGE_FIELDS:
            self.record.client_messages.append(raw_kind)
            raise RequestRejectedError(
                CLOSE_INVALID,
                f'Invalid JSON payload received. Unknown name "{raw_kind}": Cannot find field.',
            )
        if kind == "setup":
            self.record.client_messages.append("setup")
            self._on_setup(raw_body, now_ms)
            return
        body = normalise_keys(raw_body)
        if not isinstance(body, dict):
            self.record.client_messages.append(kind)
            raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        if kind == "realtimeInput":
            self.record.client_messages.append(".".join([kind, "+".join(body)]) if body else kind)
        else:
            self.record.client_messages.append(kind)
        if not self._setup_done:
            raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        if kind == "realtimeInput":
            self._on_realtime_input(body, now_ms)
        elif kind == "clientContent":
            self._on_client_content(body, now_ms)
        elif kind == "toolResponse":
            self._on_tool_response(body, now_ms)
        elif kind == "contextUpdate":
            self._on_context_update(body)

    def _on_context_update(self, body: JsonObject) -> None:
        """New system instruction and/or tools for the rest of the session (3.8 Live), in order
        with the other input: the next unscripted turn calls the new functions."""
        check_context_update(self._model, self.backend)
        self.record.context_updates.append(body)
        instruction = body.get("systemInstruction")
        tools = _object(body.get("tools")).get("tools") if "tools" in body else None
        if instruction is not None:
            self._setup_instruction = instruction
        if tools is not None:
            self._setup_tools = tools
            self._functions = declared_functions(
                tools, model_default_behavior({"model": self._model}, self.backend)
            )
        self._instruction_tokens = _setup_tokens(
            {"systemInstruction": self._setup_instruction, "tools": self._setup_tools}
        )

    def _on_setup(self, raw: Any, now_ms: float) -> None:
        if self._setup_done or not isinstance(raw, dict):
            raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        check_setup_fields(raw, self.backend)
        setup: JsonObject = normalise_keys(raw)
        self.record.setup = setup
        model = setup.get("model")
        if not isinstance(model, str) or not model:
            raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        served = self.options.models
        if self.backend == "vertex":
            vertex_model_name(model, served)
        elif (
            not model.startswith("models/")
            or model in RETIRED_MODELS
            or (served is not None and model.removeprefix("models/") not in served)
        ):
            name = model if model.startswith("models/") else f"models/{model}"
            raise RequestRejectedError(
                CLOSE_POLICY,
                f"{name} is not found for API version {self.api_version}, "
                "or is not supported for bidiGenerateContent.",
            )
        generation = _object(setup.get("generationConfig"))
        modalities = _list(generation.get("responseModalities"))
        for index, modality in enumerate(modalities):
            if modality not in MODALITIES:
                raise RequestRejectedError(
                    CLOSE_INVALID,
                    "Invalid value at 'setup.generation_config.response_modalities"
                    f"[{index}]' (type.googleapis.com/google.ai.generativelanguage."
                    f'{self.api_version}.GenerationConfig.Modality), "{modality}"',
                )
        check_one_response_modality(modalities)
        hang = check_model_capabilities(setup, self.backend) == HANG
        self._reports_interaction = model.rsplit("/", 1)[-1] in INTERACTION_STATUS_MODELS
        self._text_mode = modalities == ["TEXT"]
        realtime = _object(setup.get("realtimeInputConfig"))
        vad_settings = _vad_settings(_object(realtime.get("automaticActivityDetection")))
        handling = realtime.get("activityHandling", "START_OF_ACTIVITY_INTERRUPTS")
        if handling not in (
            "START_OF_ACTIVITY_INTERRUPTS",
            "NO_INTERRUPTION",
            "ACTIVITY_HANDLING_UNSPECIFIED",
        ):
            raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        self._interrupts = handling != "NO_INTERRUPTION"
        self._vad = None if vad_settings.disabled else EmulatorVad(vad_settings)
        # Only Vertex knows the field (check_setup_fields refuses it elsewhere).
        self._vad_signals = setup.get("explicitVadSignal") is True and self._vad is not None
        self._input_transcription = "inputAudioTranscription" in setup
        self._output_transcription = "outputAudioTranscription" in setup
        self._language = _language(generation, setup)
        self._setup_instruction = setup.get("systemInstruction")
        self._setup_tools = setup.get("tools")
        self._instruction_tokens = _setup_tokens(setup)
        self._model = model
        self._functions = declared_functions(
            setup.get("tools"), model_default_behavior(setup, self.backend)
        )
        self._attach_session(setup, now_ms)
        if hang:
            return  # accepted, never completed: the client's own timeout is all it has
        self._setup_done = True
        delay_ms = sum(
            fault.duration_s * 1000
            for fault in self.options.faults
            if fault.kind == "delay_setup" and fault.applies_to(self.connection)
        )
        if delay_ms > 0:
            self.record.faults.append("delay_setup")
            self._at(now_ms + delay_ms, self._complete_setup)
        else:
            self._complete_setup(now_ms)

    def _attach_session(self, setup: JsonObject, now_ms: float) -> None:
        """Start a session, or resume the one ``sessionResumption.handle`` names."""
        resumption = setup.get("sessionResumption")
        self._resumption = resumption is not None
        # Only Vertex knows the field (check_setup_fields refuses it elsewhere).
        self._transparent = _object(resumption).get("transparent") is True
        handle = _object(resumption).get("handle")
        if handle is not None and not isinstance(handle, str):
            raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        if handle:
            found = self.store.find(handle, now_ms)
            if found is None:
                raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
            line, snapshot = found
            if line.attached:
                # The doc's pitfall: the old socket must be closed before its session resumes.
                raise RequestRejectedError(CLOSE_INTERNAL, INTERNAL_ERROR)
            self._restore(snapshot)
            self.record.resumed_from = handle
            self.record.resumed_at_index = snapshot.consumed_index
        else:
            line = self.store.open_line()
        line.attached = True
        self._line = line
        self._session_started_ms = now_ms
        limit_ms = self.options.session_limit_s * 1000
        if "contextWindowCompression" not in setup and math.isfinite(limit_ms):
            remaining = max(0.0, limit_ms - line.connected_ms)
            self._at(now_ms + remaining, self._session_limit_reached)

    def _restore(self, snapshot: ConversationSnapshot) -> None:
        self._history.extend(snapshot.history)
        # The new setup's instruction and tools replace the old ones; the turns carry over.
        self._context_text_tokens = snapshot.text_tokens
        self._context_audio_tokens = snapshot.audio_tokens
        self._turns_total = snapshot.turns
        self._calls_issued = snapshot.calls_issued
        self._queued.extend(snapshot.when_idle)
        self._results = dict(snapshot.results)
        # Exactly the client messages up to the snapshot's index: what followed them on the old
        # connection is not in the state (a transparent client sends it again).
        self.record.session_audio_bytes = snapshot.audio_bytes

    def _complete_setup(self, at_ms: float) -> None:
        self._send({"setupComplete": {}})
        for fault in self.options.faults:
            if _after_setup(fault) and fault.applies_to(self.connection):
                self._at(at_ms + fault.after_s * 1000, self._fault_action(fault))
        if self._queued:
            self._start_next(at_ms)
        else:
            self._became_idle(at_ms)

    def _session_limit_reached(self, at_ms: float) -> None:
        self.close(SESSION_LIMIT_CODE, SESSION_LIMIT_REASON)

    def _on_realtime_input(self, body: JsonObject, now_ms: float) -> None:
        # The SDK sends one field per message; the proto allows several, so take them in the order
        # that makes sense on a timeline.
        if "activityStart" in body:
            self._on_activity_start(now_ms)
        if "audio" in body:
            self._on_audio(_object(body["audio"]), now_ms)
        for chunk in _list(body.get("mediaChunks")):
            blob = _object(chunk)
            if str(blob.get("mimeType", "audio/pcm")).startswith("audio/"):
                self._on_audio(blob, now_ms)
        if "text" in body:
            text = body["text"]
            if not isinstance(text, str):
                raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
            self.record.caller_turns += 1
            self._context_text_tokens += text_tokens(text)
            self._history.append(HistoryEntry("user", "text", text))
            self._turn_ended("caller", now_ms, text)
        if body.get("audioStreamEnd") is True and self._vad is not None:
            ended = self._vad.end_speech()
            if ended is not None:
                if self._vad_signals:
                    self._send_vad_signal(False)
                self._caller_audio_turn(ended.duration_ms, now_ms)
        if "activityEnd" in body:
            self._on_activity_end(now_ms)

    def _on_audio(self, blob: JsonObject, now_ms: float) -> None:
        data = blob.get("data", "")
        if not isinstance(data, str):
            raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        try:
            pcm = decode_base64(data)
        except ValueError:
            raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT) from None
        rate = pcm_rate(blob.get("mimeType"))
        self.record.audio_bytes_received += len(pcm)
        self.record.session_audio_bytes += len(pcm)
        self.record.audio_chunks_received += 1
        pcm = self._remainder + pcm
        usable = len(pcm) - len(pcm) % 2
        self._remainder = pcm[usable:]
        samples = np.frombuffer(pcm[:usable], dtype="<i2").astype(np.int16)
        if self.hears:
            self._keep_caller_audio(pcm[:usable], rate)
        if self._vad is None:
            if self._activity_open:
                self._activity_ms += len(samples) / rate * 1000
            return
        for event in self._vad.feed(samples, rate):
            if self._vad_signals:
                self._send_vad_signal(isinstance(event, SpeechStarted))
            if isinstance(event, SpeechStarted):
                self._caller_started(now_ms)
            else:
                self._caller_audio_turn(event.duration_ms, now_ms)

    def _keep_caller_audio(self, pcm: bytes, rate: int) -> None:
        """Keep the caller's audio for the recogniser: all of a turn in progress, and a short
        pre-roll before one (the detector starts a turn only after some speech)."""
        buffer = self._caller_audio
        if rate != self._caller_rate:
            buffer.clear()  # audio at two rates cannot be joined; a rate change is rare
            self._caller_rate = rate
        speaking = self._activity_open or (self._vad is not None and self._vad.speaking)
        limit_ms = MAX_HEARD_MS if speaking else PREROLL_MS
        buffer += pcm
        excess = len(buffer) - rate * limit_ms // 1000 * 2
        if excess > 0 and (not speaking or excess >= len(pcm)):
            # Trimmed in whole chunks while waiting (cheap); a turn longer than the limit keeps
            # its first MAX_HEARD_MS.
            if speaking:
                del buffer[-len(pcm) :]
            else:
                del buffer[:excess]

    def _on_activity_start(self, now_ms: float) -> None:
        if self._vad is not None:
            raise RequestRejectedError(CLOSE_INVALID, EXPLICIT_ACTIVITY_WITH_VAD)
        self._activity_open = True
        self._activity_ms = 0.0
        self._caller_audio.clear()
        self._caller_started(now_ms)

    def _on_activity_end(self, now_ms: float) -> None:
        if self._vad is not None:
            raise RequestRejectedError(CLOSE_INVALID, EXPLICIT_ACTIVITY_WITH_VAD)
        if not self._activity_open:
            return
        self._activity_open = False
        self._caller_audio_turn(self._activity_ms, now_ms)

    def _on_client_content(self, body: JsonObject, now_ms: float) -> None:
        turns = body.get("turns", [])
        if isinstance(turns, dict):  # a single Content is accepted too
            turns = [turns]
        if not isinstance(turns, list):
            raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
        said: list[str] = []  # the user's words in this message, for the turn logic
        for turn in turns:
            content = _object(turn)
            texts = []
            for part in _list(content.get("parts")):
                text = _object(part).get("text")
                if isinstance(text, str):
                    self._context_text_tokens += text_tokens(text)
                    texts.append(text)
            if texts:
                role: Literal["user", "model"] = (
                    "model" if content.get("role") == "model" else "user"
                )
                self._history.append(HistoryEntry(role, "text", "".join(texts)))
                if role == "user":
                    said.append("".join(texts))
        if body.get("turnComplete") is True:
            self._turn_ended("client", now_ms, " ".join(said) if said else None)

    def _on_tool_response(self, body: JsonObject, now_ms: float) -> None:
        responses = body.get("functionResponses", [])
        if isinstance(responses, dict):
            responses = [responses]
        for item in _list(responses):
            answer = _object(item)
            call_id = answer.get("id")
            if not isinstance(call_id, str) or not call_id:
                raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
            response = _object(answer.get("response"))
            beside = answer.get("scheduling")
            if beside is not None and beside not in SCHEDULING_VALUES:
                raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
            inside = response.get("scheduling")
            # The docs' examples put it inside the response too; beside it wins.
            scheduling = next(
                (
                    value
                    for value in (beside, inside)
                    if value in SCHEDULING_VALUES and value != "SCHEDULING_UNSPECIFIED"
                ),
                None,
            )
            if self.backend == "vertex":
                if "willContinue" in answer:
                    # google-genai refuses to send it to Vertex ("only supported in Gemini
                    # Developer API mode"); the wording of a refusal is the emulator's own.
                    raise RequestRejectedError(
                        CLOSE_INVALID,
                        'Invalid JSON payload received. Unknown name "willContinue" at '
                        "'tool_response.function_responses': Cannot find field.",
                    )
                # Vertex does not honour scheduling (see agent.live.models, Vertex rows): a
                # result is taken as the default WHEN_IDLE. Still recorded as sent.
                honoured = None
            else:
                honoured = scheduling
            name = answer.get("name")
            will_continue = answer.get("willContinue") is True
            self.record.tool_responses.append(
                ToolResponseRecord(
                    call_id,
                    name if isinstance(name, str) else "",
                    response,
                    scheduling,
                    will_continue,
                    now_ms,
                )
            )
            if self._ignores_results():
                self._pending.pop(call_id, None)  # taken; never spoken of
                if "ignore_results" not in self.record.faults:
                    self.record.faults.append("ignore_results")
                continue
            self._on_function_result(call_id, response, honoured, will_continue, now_ms)

    def _ignores_results(self) -> bool:
        return any(
            fault.kind == "ignore_results" and fault.applies_to(self.connection)
            for fault in self.options.faults
        )

    # -- turns and answers -----------------------------------------------------------------------

    def _caller_started(self, now_ms: float) -> None:
        """The caller began speaking: barge in on the model's turn, unless told not to.

        Function calls still pending are cancelled: the turn that made them is over.
        """
        turn = self._turn
        if turn is None or not self._interrupts:
            return
        self._account_spoken(turn)
        self._turn = None
        if self._pending:
            ids = tuple(self._pending)
            self._pending.clear()
            self.record.tool_cancellations.append(ToolCancellationRecord(ids, now_ms))
            self._send({"toolCallCancellation": {"ids": list(ids)}})
        self.record.interruptions += 1
        self._send({"serverContent": {"interrupted": True}})
        self._send({"serverContent": {"turnComplete": True}})
        self._became_idle(now_ms)

    def _caller_audio_turn(self, duration_ms: float, now_ms: float) -> None:
        """The caller's audio turn ended: hear it (the words a test queued, else the adapter's
        recogniser), then answer."""
        known = self.options.caller_words
        words = known.take() if known is not None else None
        if words is not None and self.hears:
            self._caller_audio = bytearray()  # nothing to recognise: the words are known
            if self._hearings:
                # Turns are answered in the order they were spoken: after those still heard.
                self._requests += 1
                self._hearings.append(_Hearing(self._requests, duration_ms, now_ms, words, True))
                return
        if words is not None or not self.hears:
            self._caller_heard(duration_ms, words, now_ms)
            return
        self._requests += 1
        request = self._requests
        self._hearings.append(_Hearing(request, duration_ms, now_ms))
        pcm, self._caller_audio = bytes(self._caller_audio), bytearray()
        self._outbox.append(Transcribe(request, pcm, self._caller_rate, self._language))

    def _caller_heard(self, duration_ms: float, words: str | None, now_ms: float) -> None:
        """Take the caller's turn in: its words (or, with none, an honest placeholder), then the
        answer."""
        self.record.caller_turns += 1
        self._context_audio_tokens += audio_tokens(duration_ms)
        heard = f"[caller speech {duration_ms / 1000:.1f} s]" if words is None else words
        self.record.heard.append(heard)
        self._history.append(HistoryEntry("user", "audio", heard))
        if self._input_transcription:
            self._send({"serverContent": {"inputTranscription": {"text": heard}}})
        self._turn_ended("caller", now_ms, words)

    def _turn_ended(
        self, source: Literal["client", "caller"], now_ms: float, heard: str | None = None
    ) -> None:
        """Answer a finished client turn, after any answer still in progress. ``heard`` is what
        it said in words (caller speech as recognised, a text turn's text), when known."""
        if self._turn is None:
            self._start_step(source, now_ms, heard)
        else:
            self._queued.append(_QueuedTurn(source, heard))

    def _step_for(self, source: Literal["client", "caller"], heard: str | None) -> Step:
        """The scenario's step for the next turn, or :meth:`unscripted_step`'s."""
        index = self._turns_total
        self._turns_total += 1
        self.record.turns += 1
        scenario = self.options.scenario
        step = scenario.step(index) if scenario is not None else None
        if step is None:
            step = self.unscripted_step(source, heard)
        return step

    def unscripted_step(self, source: Literal["client", "caller"], heard: str | None) -> Step:
        """What the model does with a turn no scenario scripts (the hook for turn logic).

        ``source`` is who asked: ``"client"`` for a ``clientContent`` turn (the bridge asking for
        the greeting), ``"caller"`` for caller speech or ``realtimeInput.text``. ``heard`` is what
        the turn said in words: the client's text, the text input, or the caller's speech as the
        recogniser heard it (``None`` when there was no recogniser, or for silence).

        Words that name a declared function or match its description call it, with the
        arguments they fill (:mod:`agent.sim.live.functions`). Otherwise a speaking emulator
        greets with the agent's own greeting (:func:`greeting_words`); else the bundled
        greeting, and the bundled reply to a caller.
        """
        if heard is not None and self._functions:
            calls = calls_for(heard, self._functions)
            if calls:
                return step_for_calls(calls)
        if source == "client":
            words = greeting_words(heard) if self.speaks and heard else None
            return Step(say=Speech("greeting", text=None if words is None else _literal(words)))
        return Step(say=Speech("reply"))

    def _start_step(
        self, source: Literal["client", "caller"], at_ms: float, heard: str | None = None
    ) -> None:
        """Begin the model's turn for a client turn: its calls, then (or meanwhile) its speech."""
        step = self._step_for(source, heard)
        turn = self._begin_turn()
        start = at_ms + self.options.think_ms
        if not step.calls:
            self._schedule_speech(turn, step.say, self._template_context(), start)
            return
        calls = tuple(_PendingCall(self._new_call_id(), spec) for spec in step.calls)
        message = {
            "toolCall": {
                "functionCalls": [
                    {"id": call.id, "name": call.spec.name, "args": dict(call.spec.args)}
                    for call in calls
                ]
            }
        }
        turn.frames.append(_Scheduled(start, message, calls=calls))
        if any(call.spec.wait for call in calls):
            turn.then = step.say  # spoken once every blocking call is answered
        else:
            # NON_BLOCKING: the model carries on at once, usually with a filler.
            self._schedule_speech(turn, step.say, self._template_context(), start)

    def _begin_turn(self) -> _Turn:
        turn = _Turn()
        self._turn = turn
        if self._resumption and self._resumable:
            self._resumable = False
            self._send({"sessionResumptionUpdate": {"resumable": False}})
        return turn

    def _new_call_id(self) -> str:
        self._calls_issued += 1
        # Real ids are "function-call-" and a large decimal number; these stay unique per session.
        serial = self._line.serial if self._line is not None else 0
        return f"function-call-{serial:06d}{self._calls_issued:013d}"

    def _resolve(self, speech: Speech) -> Clip:
        if speech.audio is not None:
            return speech.audio
        return self.clips.greeting if speech.clip == "greeting" else self.clips.reply

    def _schedule_speech(
        self, turn: _Turn, speech: Speech | None, context: Mapping[str, Any], start: float
    ) -> None:
        """Append ``speech`` and the frames closing the turn to ``turn``, from ``start``."""
        if speech is None:
            # A silent turn: nothing to say, just the end of it.
            usage = self._usage(0, "TEXT" if self._text_mode else "AUDIO")
            turn.frames.append(_Scheduled(start, _turn_complete(usage), last=True))
            return
        clip = self._resolve(speech)
        text = clip.transcript if speech.text is None else render_template(speech.text, context)
        self.record.answers_started += 1
        turn.speaking = True
        if self._text_mode:
            end = self._schedule_text(turn, text, start)
            usage = self._usage(text_tokens(text), "TEXT")
            turn.frames.append(_Scheduled(end, {"serverContent": {"generationComplete": True}}))
            turn.frames.append(_Scheduled(end, _turn_complete(usage), last=True))
        elif self.speaks and speech.audio is None and speech.text is not None and text.strip():
            # The agent's own words, not the clip's: voiced by the adapter's TTS, scheduled when
            # the audio comes back (see voiced).
            self._requests += 1
            turn.voicing = self._requests
            self._voicing = _Voicing(self._requests, text, start, clip)
            self._outbox.append(Synthesise(self._requests, text, CLIP_RATE))
        else:
            self._schedule_clip(turn, Clip(clip.pcm, clip.rate, text), start)

    def _schedule_clip(self, turn: _Turn, clip: Clip, start: float) -> None:
        """Append ``clip`` (its audio, saying its transcript) and the end of the turn."""
        end = self._schedule_audio(turn, clip, clip.transcript, start)
        usage = self._usage(audio_tokens(clip.duration_ms), "AUDIO")
        turn.frames.append(_Scheduled(end, {"serverContent": {"generationComplete": True}}))
        turn.frames.append(_Scheduled(end, _turn_complete(usage), last=True))

    def _schedule_audio(self, turn: _Turn, clip: Clip, text: str, start: float) -> float:
        """Audio chunks paced by ``chunk_ms`` with the transcript's words riding along."""
        chunk_ms = self.options.chunk_ms
        chunk_bytes = max(2, clip.rate * chunk_ms // 1000 * 2)
        chunks = [clip.pcm[i : i + chunk_bytes] for i in range(0, len(clip.pcm), chunk_bytes)]
        words = text.split()
        # Every word but the last rides along the audio; the last closes the turn, as Gemini's does.
        words_at: dict[int, list[str]] = {}
        for index, word in enumerate(words[:-1]):
            position = index * len(chunks) // max(1, len(words) - 1)
            words_at.setdefault(position, []).append(word if index == 0 else " " + word)
        last = (words[-1] if len(words) == 1 else " " + words[-1]) if words else ""
        for index, chunk in enumerate(chunks):
            at = start + index * chunk_ms
            part = {"inlineData": {"mimeType": OUTPUT_MIME_TYPE, "data": _b64(chunk)}}
            said = words_at.get(index, [])
            turn.frames.append(
                _Scheduled(
                    at,
                    {"serverContent": {"modelTurn": {"role": "model", "parts": [part]}}},
                    audio_ms=len(chunk) / 2 / clip.rate * 1000,
                    spoken="".join(said) + (last if index == len(chunks) - 1 else ""),
                )
            )
            if self._output_transcription:
                for word in said:
                    turn.frames.append(_Scheduled(at, _output_transcription(word)))
        end = start + max(0, len(chunks) - 1) * chunk_ms
        if not chunks and text:
            # A clip with no audio still says its words (all at once).
            turn.frames.append(_Scheduled(end, {}, spoken=" ".join(words)))
            if self._output_transcription:
                turn.frames.append(_Scheduled(end, _output_transcription(" ".join(words))))
        elif last and self._output_transcription:
            turn.frames.append(_Scheduled(end, _output_transcription(last)))
        return end

    def _schedule_text(self, turn: _Turn, text: str, start: float) -> float:
        """``TEXT`` modality: the answer as text parts, a few words each, paced by ``chunk_ms``."""
        words = text.split(" ") if text else []
        pieces = [
            ("" if i == 0 else " ") + " ".join(words[i : i + WORDS_PER_TEXT_CHUNK])
            for i in range(0, len(words), WORDS_PER_TEXT_CHUNK)
        ]
        for index, piece in enumerate(pieces):
            turn.frames.append(
                _Scheduled(
                    start + index * self.options.chunk_ms,
                    {"serverContent": {"modelTurn": {"role": "model", "parts": [{"text": piece}]}}},
                    spoken=piece,
                )
            )
        return start + max(0, len(pieces) - 1) * self.options.chunk_ms

    def _next_frame_at(self) -> float | None:
        turn = self._turn
        if turn is None or not turn.frames:
            return None
        return turn.frames[0].at_ms

    def _send_frame(self) -> None:
        turn = self._turn
        assert turn is not None
        item = turn.frames.popleft()
        turn.audio_sent_ms += item.audio_ms
        if item.spoken:
            turn.spoken.append(item.spoken)
        if item.message:
            self._send(item.message)
        for call in item.calls:
            self._pending[call.id] = call
            if call.spec.wait:
                turn.waiting.add(call.id)
            args = dict(call.spec.args)
            self.record.tool_calls.append(
                ToolCallRecord(call.id, call.spec.name, args, call.spec.wait, item.at_ms)
            )
            self._context_text_tokens += text_tokens(json.dumps(args, separators=(",", ":")))
            self._history.append(
                HistoryEntry(
                    "model",
                    "function_call",
                    f"{call.spec.name}({json.dumps(args, sort_keys=True)})",
                )
            )
        if item.last:
            self._finish_turn(item.at_ms)

    def _account_spoken(self, turn: _Turn) -> None:
        """Put what the model got to say of ``turn`` into the context and the history."""
        if self._text_mode:
            self._context_text_tokens += text_tokens("".join(turn.spoken))
        else:
            self._context_audio_tokens += audio_tokens(turn.audio_sent_ms)
        said = "".join(turn.spoken)
        if said:
            kind: Literal["text", "audio"] = "text" if self._text_mode else "audio"
            self._history.append(HistoryEntry("model", kind, said))

    def _finish_turn(self, at_ms: float) -> None:
        turn = self._turn
        assert turn is not None
        self._account_spoken(turn)
        self._turn = None
        if turn.speaking:
            self.record.answers_completed += 1
        # Scheduled from the end of the previous answer, not from whenever poll ran: no drift.
        self._start_next(at_ms)

    def _start_next(self, at_ms: float) -> None:
        """Start what waited for the model to finish, or tell the client the session is idle."""
        if not self._queued:
            self._became_idle(at_ms)
            return
        item = self._queued.popleft()
        if isinstance(item, _QueuedTurn):
            self._start_step(item.source, at_ms, item.heard)
        else:
            self._speak_result(item, at_ms)

    def _became_idle(self, at_ms: float) -> None:
        """Nothing in progress: a resumable moment, so hand the client a fresh handle."""
        if not self._resumption or self._turn is not None or self._queued or self._pending:
            return
        if self._line is None or not self._setup_done:
            return
        snapshot = self.snapshot()
        handle = self.store.issue(self._line, snapshot, at_ms)
        self._resumable = True
        self._since_update = 0
        self.record.resumption_handles.append(handle)
        self.record.consumed_indices.append(snapshot.consumed_index)
        update: JsonObject = {"newHandle": handle, "resumable": True}
        if self._transparent:
            # An int64, so a JSON string (as the SDKs' types have it).
            update["lastConsumedClientMessageIndex"] = str(snapshot.consumed_index)
        self._send({"sessionResumptionUpdate": update})

    def _send_vad_signal(self, started: bool) -> None:
        """Vertex with ``explicitVadSignal``: say where the service's VAD found speech start or
        end (the SDK's ``VoiceActivityDetectionSignal``, ``VAD_SIGNAL_TYPE_SOS``/``_EOS``:
        https://googleapis.github.io/java-genai/javadoc/google-genai/com.google.genai.types/-live-client-setup/explicit-vad-signal.html)."""
        kind = "VAD_SIGNAL_TYPE_SOS" if started else "VAD_SIGNAL_TYPE_EOS"
        self._send({"voiceActivityDetectionSignal": {"vadSignalType": kind}})

    def _caller_quiet(self) -> bool:
        """No caller speech in progress: a snapshot now leaves no half-heard turn behind."""
        if self._activity_open:
            return False
        return self._vad is None or not self._vad.speaking

    # -- function results ------------------------------------------------------------------------

    def _template_context(
        self, call: _PendingCall | None = None, response: Mapping[str, Any] | None = None
    ) -> JsonObject:
        """What a scenario's text templates can name (see :func:`render_template`)."""
        context: JsonObject = {"results": dict(self._results), "told": self._told()}
        if call is not None and response is not None:
            result = response.get("result", response)
            context.update(
                result=result, response=dict(response), name=call.spec.name, args=call.spec.args
            )
        return context

    def _told(self) -> dict[str, str]:
        """Each function's latest result in words (``{told.order_status}`` in a template)."""
        return {name: result_told(result) for name, result in self._results.items()}

    def _on_function_result(
        self,
        call_id: str,
        response: Mapping[str, Any],
        scheduling: str | None,
        will_continue: bool,
        now_ms: float,
    ) -> None:
        """Act on one function response: resume a waiting turn or schedule the result's speech.

        Responses to unknown, answered or cancelled calls are recorded and otherwise ignored.
        """
        call = self._pending.get(call_id)
        if call is None:
            return
        if not will_continue:
            del self._pending[call_id]
        text = json.dumps(dict(response), separators=(",", ":"), sort_keys=True)
        self._context_text_tokens += text_tokens(text)
        self._history.append(HistoryEntry("user", "function_response", f"{call.spec.name}: {text}"))
        context = self._template_context(call, response)
        self._results[call.spec.name] = context["result"]
        context["results"] = dict(self._results)
        context["told"] = self._told()
        turn = self._turn
        if call.spec.wait:
            # Blocking: the scheduling field does not apply; the waiting turn goes on.
            if turn is not None and call_id in turn.waiting:
                turn.waiting.discard(call_id)
                if not turn.waiting:
                    self._schedule_speech(turn, turn.then, context, now_ms + self.options.think_ms)
            return
        pending = PendingSpeech(call.spec.say or Speech("reply"), context)
        effective = scheduling or "WHEN_IDLE"
        if effective == "SILENT":
            self._became_idle(now_ms)
        elif turn is None:
            self._speak_result(pending, now_ms)
        elif effective == "WHEN_IDLE":
            self._queued.append(pending)
        elif turn.waiting or any(frame.calls for frame in turn.frames):
            # The model is about to call or waiting on a blocking call: the result goes first
            # once that turn is done.
            self._queued.appendleft(pending)
        else:
            self._cut_turn(turn)
            self._speak_result(pending, now_ms)

    def _cut_turn(self, turn: _Turn) -> None:
        """``INTERRUPT``: the model stops its answer where it is (no ``interrupted``: nobody
        barged in) and completes the turn, so it can speak the result next."""
        response = (
            text_tokens("".join(turn.spoken))
            if self._text_mode
            else audio_tokens(turn.audio_sent_ms)
        )
        usage = self._usage(response, "TEXT" if self._text_mode else "AUDIO")
        self._account_spoken(turn)
        self._turn = None
        self.record.answers_cut += 1
        self._send(_turn_complete(usage))

    def _speak_result(self, pending: PendingSpeech, at_ms: float) -> None:
        turn = self._begin_turn()
        self._schedule_speech(turn, pending.speech, pending.context, at_ms + self.options.think_ms)

    def _usage(self, response_tokens: int, modality: str = "AUDIO") -> JsonObject:
        prompt_details = [
            {"modality": name, "tokenCount": count}
            for name, count in (
                ("TEXT", self._instruction_tokens + self._context_text_tokens),
                ("AUDIO", self._context_audio_tokens),
            )
            if count
        ]
        prompt = self._instruction_tokens + self._context_text_tokens + self._context_audio_tokens
        # Vertex names the response count as generateContent does (live-api-protocol.md).
        response_key = "candidatesTokenCount" if self.backend == "vertex" else "responseTokenCount"
        return {
            "promptTokenCount": prompt,
            response_key: response_tokens,
            "totalTokenCount": prompt + response_tokens,
            "promptTokensDetails": prompt_details,
            "responseTokensDetails": [{"modality": modality, "tokenCount": response_tokens}],
        }

    def _send(self, message: JsonObject) -> None:
        if self._muted_until_ms > self._now_ms and _MODEL_CONTENT.intersection(message):
            return  # a muted model (Fault.mute): its content is lost, the connection lives on
        if self._reports_interaction and message.get("serverContent", {}).get("turnComplete"):
            # "interaction_status: IN_PROGRESS during background processing and IDLE when the
            # overall task completes", alongside turnComplete (the Live API's thinking page).
            status = "IN_PROGRESS" if self._pending or self._queued else "IDLE"
            message = {**message, "serverContent": {**message["serverContent"]}}
            message["serverContent"]["interactionStatus"] = status
        self._outbox.append(SendMessage(message))


#: Models that send ``interactionStatus`` beside ``turnComplete``
#: (https://ai.google.dev/gemini-api/docs/live-api/thinking).
INTERACTION_STATUS_MODELS = frozenset({"gemini-3.8-live-extended-thinking"})

# What a muted model does not send; setup, goAway, usage and resumption updates still go out.
_MODEL_CONTENT = frozenset({"serverContent", "toolCall", "toolCallCancellation"})


def _digest(data: str | bytes) -> str:
    """A short fingerprint of one client message, to tell a message sent again from others."""
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def _b64(data: bytes) -> str:
    # Google's servers send the standard alphabet, padded.
    return base64.b64encode(data).decode("ascii")


def _output_transcription(text: str) -> JsonObject:
    return {"serverContent": {"outputTranscription": {"text": text}}}


def _turn_complete(usage: JsonObject) -> JsonObject:
    return {"serverContent": {"turnComplete": True}, "usageMetadata": usage}


def _object(value: Any) -> JsonObject:
    """``value`` if it is a JSON object; a wrong type is a request the service would reject."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
    return value


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
    return value


def _sensitivity(value: Any, prefix: str) -> Literal["HIGH", "LOW"]:
    if value is None or value == f"{prefix}_UNSPECIFIED":
        return "HIGH"  # the Developer API's default (Vertex defaults to LOW)
    if value == f"{prefix}_HIGH":
        return "HIGH"
    if value == f"{prefix}_LOW":
        return "LOW"
    raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)


def _after_setup(fault: Fault) -> bool:
    """The fault's time counts from ``setupComplete`` (close, abort and go_away faults only)."""
    return fault.after_setup and fault.kind in ("close", "abort", "go_away", "oversized")


def _milliseconds(value: Any, default: int) -> int:
    """An int32 field, which proto JSON also accepts as a decimal string."""
    if value is None:
        return default
    if isinstance(value, bool):
        raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's 1e999 is inf
        raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT) from None
    if number < 0 or (isinstance(value, float) and value != number):
        raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
    return number


def _vad_settings(config: Mapping[str, Any]) -> VadSettings:
    disabled = config.get("disabled", False)
    if not isinstance(disabled, bool):
        raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
    return VadSettings(
        disabled=disabled,
        start_sensitivity=_sensitivity(config.get("startOfSpeechSensitivity"), "START_SENSITIVITY"),
        end_sensitivity=_sensitivity(config.get("endOfSpeechSensitivity"), "END_SENSITIVITY"),
        prefix_padding_ms=_milliseconds(config.get("prefixPaddingMs"), DEFAULT_PREFIX_PADDING_MS),
        silence_duration_ms=_milliseconds(
            config.get("silenceDurationMs"), DEFAULT_SILENCE_DURATION_MS
        ),
    )


def _setup_tokens(setup: JsonObject) -> int:
    """Tokens the setup puts in every prompt: the system instruction and the tool declarations."""
    tokens = 0
    instruction = setup.get("systemInstruction")
    if isinstance(instruction, str):
        tokens += text_tokens(instruction)
    elif isinstance(instruction, dict):
        for part in instruction.get("parts") or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                tokens += text_tokens(part["text"])
    if setup.get("tools"):
        tokens += text_tokens(json.dumps(setup["tools"], separators=(",", ":")))
    return tokens


def _language(generation: JsonObject, setup: JsonObject) -> str:
    """The language the caller is heard in: ``speechConfig.languageCode``, else the first of
    ``inputAudioTranscription.languageCodes``, else :data:`DEFAULT_LANGUAGE`."""
    speech = generation.get("speechConfig")
    if isinstance(speech, dict) and isinstance(speech.get("languageCode"), str):
        return str(speech["languageCode"])
    transcription = setup.get("inputAudioTranscription")
    if isinstance(transcription, dict):
        codes = transcription.get("languageCodes")
        if isinstance(codes, list) and codes and isinstance(codes[0], str):
            return codes[0]
    return DEFAULT_LANGUAGE


_QUOTED: Final = re.compile(r"[\"\u201c]([^\"\u201c\u201d]{2,})[\"\u201d]")


def greeting_words(prompt: str) -> str:
    """What the emulated model says when the client's turn ``prompt`` asks for the greeting.

    A real model follows the prompt; this one says the first quoted line in it (a greeting written
    as an instruction, ``Greet the caller with "Thanks for calling Bright Smile Dental."``), and
    otherwise the prompt itself, word for word (a greeting written as the line to say).
    """
    quoted = _QUOTED.search(prompt)
    words = quoted.group(1) if quoted is not None else prompt
    return " ".join(words.split())


def _literal(text: str) -> str:
    """``text`` as a template that renders as itself (see :func:`render_template`)."""
    return text.replace("{", "{{").replace("}", "}}")
