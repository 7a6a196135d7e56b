"""What an emulator is told to do (options, injected faults), what it records of each session, and
the actions the core returns to its adapter.

Part of the emulator's sans-I/O core (see :mod:`agent.sim.live.core`)."""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.sim.live.scenario import Clip, Scenario

JsonObject = dict[str, Any]


EmulatedBackend = Literal["gemini", "vertex"]
"""Which Live API an emulator speaks: the Gemini Developer API or Vertex AI's ``LlmBidiService``."""

FaultKind = Literal[
    "close", "abort", "stall", "mute", "delay_setup", "go_away", "oversized", "ignore_results"
]


@dataclass(frozen=True, slots=True)
class Fault:
    """A failure the emulator injects into a connection, for testing a client's recovery.

    Build one with the class methods (``Fault.close(after_s=5)``). Times are emulated seconds
    from the moment the connection opened (scaled by ``speed`` on the wall clock). ``connection``
    is the 0-based index of the connection it hits, as in ``RunningEmulator.sessions``; ``None``
    hits every connection. With ``after_setup`` the time counts from ``setupComplete`` instead
    (``Fault.close(0, after_setup=True)``: every connection is accepted, then fails at once).
    """

    kind: FaultKind
    after_s: float = 0.0
    """When it strikes (not used by ``delay_setup``, which strikes at ``setup``)."""
    duration_s: float = 0.0
    """``stall``, ``mute``: how long; ``delay_setup``: the delay; ``go_away``: the ``timeLeft``
    announced."""
    code: int = 1011
    """``close``: the close code."""
    reason: str = "Internal error occurred."
    """``close``: the close reason."""
    connection: int | None = None
    after_setup: bool = False
    """``after_s`` counts from ``setupComplete`` (not used by ``delay_setup`` and ``stall``)."""
    size: int = 0
    """``oversized``: the frame's size in bytes."""

    @classmethod
    def close(
        cls,
        after_s: float,
        code: int = 1011,
        reason: str = "Internal error occurred.",
        *,
        connection: int | None = None,
        after_setup: bool = False,
    ) -> Fault:
        """Close the connection with ``code`` and ``reason`` (a mid-session 1011 by default)."""
        return cls(
            "close",
            after_s=after_s,
            code=code,
            reason=reason,
            connection=connection,
            after_setup=after_setup,
        )

    @classmethod
    def abort(
        cls, after_s: float, *, connection: int | None = None, after_setup: bool = False
    ) -> Fault:
        """Drop the TCP connection with no close frame: the client sees 1006."""
        return cls("abort", after_s=after_s, connection=connection, after_setup=after_setup)

    @classmethod
    def stall(cls, after_s: float, for_s: float, *, connection: int | None = None) -> Fault:
        """Stop reading and sending for ``for_s``; what fell due meanwhile goes out afterwards."""
        return cls("stall", after_s=after_s, duration_s=for_s, connection=connection)

    @classmethod
    def mute(cls, after_s: float, for_s: float, *, connection: int | None = None) -> Fault:
        """The model goes silent for ``for_s``: the connection stays up and reads everything,
        but no model content (audio, text, transcriptions, turn ends, tool calls) goes out, and
        what it would have said is lost: the stalls users of Live bridges report (a model that
        never resumes after a tool, audio that stops mid-answer)."""
        return cls("mute", after_s=after_s, duration_s=for_s, connection=connection)

    @classmethod
    def ignore_results(cls, *, connection: int | None = None) -> Fault:
        """The model takes function results and never speaks of them, though it answers
        everything else: the stall users of Live bridges report as "a model that never
        resumes after a tool" (after a blocking result, or a non-blocking one scheduled
        ``WHEN_IDLE`` or ``INTERRUPT``)."""
        return cls("ignore_results", connection=connection)

    @classmethod
    def delay_setup(cls, delay_ms: float, *, connection: int | None = None) -> Fault:
        """Send ``setupComplete`` ``delay_ms`` after the ``setup`` arrives."""
        return cls("delay_setup", duration_s=delay_ms / 1000, connection=connection)

    @classmethod
    def go_away(
        cls,
        after_s: float,
        time_left_s: float = 50.0,
        *,
        connection: int | None = None,
        after_setup: bool = False,
    ) -> Fault:
        """Send ``goAway`` early, then end the connection ``time_left_s`` later as the cap does."""
        return cls(
            "go_away",
            after_s=after_s,
            duration_s=time_left_s,
            connection=connection,
            after_setup=after_setup,
        )

    @classmethod
    def oversized(
        cls,
        after_s: float,
        size: int = 5 * 2**20,
        *,
        connection: int | None = None,
        after_setup: bool = False,
    ) -> Fault:
        """Send one text frame of ``size`` bytes (a model turn of that much text), as a service
        misbehaving might: more than a client that bounds its frames will take."""
        return cls(
            "oversized", after_s=after_s, size=size, connection=connection, after_setup=after_setup
        )

    def applies_to(self, connection: int) -> bool:
        return self.connection is None or self.connection == connection

    def __post_init__(self) -> None:
        if not (math.isfinite(self.after_s) and self.after_s >= 0):
            raise ValueError(f"a fault's after_s must be >= 0, not {self.after_s!r}")
        if not (math.isfinite(self.duration_s) and self.duration_s >= 0):
            raise ValueError(f"a fault's duration must be >= 0, not {self.duration_s!r}")
        if not 1000 <= self.code <= 4999:
            raise ValueError(f"a close code must be between 1000 and 4999, not {self.code!r}")


@dataclass(slots=True)
class CallerWords:
    """What the caller says in each coming stretch of speech, in order, when a test knows it.

    ``agent test`` plays a test file's text turns as audio that stands for the words; it queues
    the words here so the emulator hears them as a perfect recogniser would (``None`` for a WAV
    turn: heard as the emulator hears any audio). Shared by every connection of an emulator, so
    the words follow the call across reconnections.
    """

    coming: deque[str | None] = field(default_factory=deque)

    def say(self, words: str | None) -> None:
        """The next stretch of caller speech says ``words`` (``None``: unknown)."""
        self.coming.append(words)

    def take(self) -> str | None:
        """The words of the stretch of speech that just ended, if known."""
        return self.coming.popleft() if self.coming else None


@dataclass(frozen=True, slots=True)
class EmulatorOptions:
    """How an emulator behaves; one set of options serves every session it accepts.

    Every duration is emulated time: the wall clock runs it ``speed`` times faster.
    """

    speed: float = 1.0
    """1.0 = real time; 10.0 answers ten times faster. Scales every wall-clock wait."""
    think_ms: int = 0
    """Model "thinking" time from the end of a caller turn to its first audio (audio-time ms)."""
    chunk_ms: int = 40
    """Duration of each streamed audio chunk of an answer (and the pace of text chunks)."""
    api_key: str | None = None
    """When set, a client must present it (``x-goog-api-key`` header or ``?key=``); any other
    key is refused as Google refuses one: the handshake succeeds, then a 1007 close "API key not
    valid. Please pass a valid API key."."""
    models: frozenset[str] | None = None
    """When set, the only models served (bare names: ``gemini-3.8-live``); a setup naming any
    other is refused 1008 "models/X is not found for API version ...", as Google refuses an
    unknown model. ``None``: every model not retired."""
    connection_lifetime_s: float = 600.0
    """The connection cap: closed 1011 "Deadline expired..." this long after it opened
    (``math.inf``: never)."""
    go_away_before_s: float = 50.0
    """``goAway`` comes this long before the cap, announcing it as ``timeLeft``."""
    session_limit_s: float = 900.0
    """Without ``contextWindowCompression`` a session (counted across resumptions, connected
    time only) is closed when it reaches this; with compression it is unlimited."""
    scenario: Scenario | None = None
    """What the model says and calls, turn by turn; ``None``: the bundled greeting and reply."""
    faults: Sequence[Fault] = ()
    """Failures to inject (see :class:`Fault`); kept as a tuple."""
    caller_words: CallerWords | None = None
    """The words of the caller's coming turns, when known (``agent test``); else none."""
    backend: EmulatedBackend = "gemini"
    """``"vertex"``: speak Vertex AI's Live API instead of the Developer API: its WebSocket path
    (``/ws/google.cloud.aiplatform.{v1|v1beta1}.LlmBidiService/BidiGenerateContent``), an
    ``Authorization: Bearer`` token required at the handshake (HTTP 401 without one), model
    resource names ``projects/{p}/locations/{l}/publishers/google/models/{m}``, the capability
    table's Vertex rows, the Vertex-only setup fields (``explicitVadSignal``: its VAD's speech
    start and end reported as ``voiceActivityDetectionSignal``; ``sessionResumption.transparent``),
    ``willContinue`` refused and ``scheduling`` ignored in a function response, and
    ``candidatesTokenCount`` in usage. ``api_key`` does not apply."""
    access_token: str | None = field(default=None, repr=False)
    """Vertex mode: when set, the only bearer token accepted (any other is refused HTTP 401);
    ``None``: any non-empty token."""
    transparent_update_every: int = 25
    """Vertex mode with ``sessionResumption.transparent``: while the model is idle, a fresh
    handle (with ``lastConsumedClientMessageIndex``) goes out after this many client messages
    (25 audio chunks of 20 ms: every half second), as well as whenever the model falls idle."""

    def __post_init__(self) -> None:
        if not (self.speed > 0 and math.isfinite(self.speed)):
            raise ValueError(f"speed must be a positive number, not {self.speed!r}")
        if self.think_ms < 0:
            raise ValueError(f"think_ms must not be negative, not {self.think_ms!r}")
        # Above a few seconds one chunk's base64 would approach the SDK's 1 MiB frame limit.
        if not 1 <= self.chunk_ms <= 5000:
            raise ValueError(f"chunk_ms must be between 1 and 5000, not {self.chunk_ms!r}")
        if not self.connection_lifetime_s > 0:
            raise ValueError(
                f"connection_lifetime_s must be positive, not {self.connection_lifetime_s!r}"
            )
        if not (math.isfinite(self.go_away_before_s) and self.go_away_before_s >= 0):
            raise ValueError(f"go_away_before_s must be >= 0, not {self.go_away_before_s!r}")
        if self.transparent_update_every < 1:
            raise ValueError(
                "transparent_update_every must be at least 1, "
                f"not {self.transparent_update_every!r}"
            )
        if not self.session_limit_s > 0:
            raise ValueError(f"session_limit_s must be positive, not {self.session_limit_s!r}")
        # A list is friendlier to write; a frozen dataclass wants a tuple.
        object.__setattr__(self, "faults", tuple(self.faults))
        if self.models is not None:
            object.__setattr__(
                self, "models", frozenset(m.removeprefix("models/") for m in self.models)
            )


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One item of a conversation's history, as the emulated model remembers it.

    Caller speech is remembered as the recogniser heard it, or as ``[caller speech 1.2 s]`` where
    the emulator has no recogniser (for the session's language).
    """

    role: Literal["user", "model"]
    kind: Literal["text", "audio", "function_call", "function_response"]
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """A function call the emulated model made (one entry of a ``toolCall`` message)."""

    id: str
    name: str
    args: Mapping[str, Any]
    wait: bool
    """``True``: blocking (the model waits); ``False``: ``NON_BLOCKING``."""
    at_ms: float


@dataclass(frozen=True, slots=True)
class ToolResponseRecord:
    """A function response the client sent, as received."""

    id: str
    name: str
    response: Mapping[str, Any]
    scheduling: str | None
    """``SILENT``/``WHEN_IDLE``/``INTERRUPT`` found beside or inside ``response``; ``None``."""
    will_continue: bool
    at_ms: float


@dataclass(frozen=True, slots=True)
class ToolCancellationRecord:
    """A ``toolCallCancellation`` the emulator sent."""

    ids: tuple[str, ...]
    at_ms: float


@dataclass(slots=True)
class EmulatedSessionRecord:
    """What happened on one emulated connection, filled in as it runs (tests, diagnostics)."""

    setup: JsonObject = field(default_factory=dict)
    """The received ``setup`` body, normalised to camelCase."""
    audio_bytes_received: int = 0
    """PCM16 bytes of realtime audio (``realtimeInput.audio`` and audio ``mediaChunks``)."""
    session_audio_bytes: int = 0
    """PCM16 bytes of caller audio in the session's state as this connection holds it: what the
    snapshot it resumed from held, plus what it received since. Against the caller audio a
    client sent, it shows frames lost (fewer) or taken twice (more) across resumptions."""
    audio_chunks_received: int = 0
    caller_turns: int = 0
    """Caller turns detected: VAD or ``activityStart``/``activityEnd`` turns and
    ``realtimeInput.text``. A ``clientContent`` turn (such as a request for the greeting) is the
    bridge's, not the caller's, and is not counted."""
    turns: int = 0
    """Every turn that asked for an answer on this connection: caller turns and ``clientContent``
    turns. A scenario's step index counts these across the whole (resumed) session."""
    answers_started: int = 0
    answers_completed: int = 0
    interruptions: int = 0
    answers_cut: int = 0
    """Answers cut short by an ``INTERRUPT``-scheduled function result (no ``interrupted``)."""
    client_messages: list[str] = field(default_factory=list, repr=False)
    """The kind of every client message in order: ``"setup"``, ``"realtimeInput.audio"``, ..."""
    closed_code: int | None = None
    connection: int = 0
    """This connection's index in ``RunningEmulator.sessions``."""
    resumed_from: str | None = None
    """The resumption handle the setup presented, when it resumed a session."""
    resumption_handles: list[str] = field(default_factory=list)
    """Every ``newHandle`` sent, in order."""
    consumed_indices: list[int] = field(default_factory=list)
    """Beside each of ``resumption_handles``: the index of the last client message on this
    connection its state includes (``setup`` is 0), as ``lastConsumedClientMessageIndex`` says
    with transparent resumption."""
    resumed_at_index: int | None = None
    """Of the handle the setup presented: the index on the connection that issued it of the
    last client message its state includes."""
    message_digests: list[str] = field(default_factory=list, repr=False)
    """Vertex mode with transparent resumption: a short digest of every client message after
    ``setup``, in order, so a test can tell which were sent again after a resumption."""
    go_aways: list[str] = field(default_factory=list)
    """The ``timeLeft`` of every ``goAway`` sent."""
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    tool_responses: list[ToolResponseRecord] = field(default_factory=list)
    tool_cancellations: list[ToolCancellationRecord] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    """The kind of every injected fault that struck, in order."""
    context_updates: list[JsonObject] = field(default_factory=list)
    """Every ``contextUpdate`` body taken, in order (normalised to camelCase)."""
    history: list[HistoryEntry] = field(default_factory=list, repr=False)
    """The conversation as the model sees it, including what a resumed session brought along."""
    heard: list[str] = field(default_factory=list)
    """What the model heard of each caller audio turn, in order: the recogniser's words, or the
    ``[caller speech 3.4 s]`` placeholder where there was none (for that language)."""
    voiced: list[str] = field(default_factory=list)
    """Every text the model spoke in a synthesised voice (not a bundled or scenario clip)."""


@dataclass(frozen=True, slots=True)
class AnswerClips:
    """The clips the emulated model speaks: a greeting for a ``clientContent`` turn, a reply for a
    caller's turn."""

    greeting: Clip
    reply: Clip


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Send ``message`` as one JSON frame (binary, as Google's servers do)."""

    message: JsonObject

    def encode(self) -> bytes:
        return json.dumps(self.message, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Close the WebSocket with ``code`` and ``reason``; nothing is sent after it."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class AbortConnection:
    """Drop the TCP connection without a close frame (the client sees 1006); nothing follows."""


@dataclass(frozen=True, slots=True)
class Stall:
    """Stop reading and sending until emulated ``until_ms``, then go on with what follows."""

    until_ms: float


@dataclass(frozen=True, slots=True)
class Transcribe:
    """Recognise what the caller said in one turn: ``pcm`` (PCM16 mono at ``rate`` Hz) in
    ``language``. Nothing is sent; the adapter runs its recogniser off the event loop and hands
    the words (or ``None``: no recogniser for that language) to
    :meth:`~agent.sim.live.core.LiveEmulatorCore.heard` with the same ``request``."""

    request: int
    pcm: bytes = field(repr=False)
    rate: int
    language: str


@dataclass(frozen=True, slots=True)
class Synthesise:
    """Voice ``text`` as PCM16 mono at ``rate`` Hz (the Live API's 24 kHz). Nothing is sent; the
    adapter runs its TTS off the event loop and hands the audio (or ``None``: no TTS) to
    :meth:`~agent.sim.live.core.LiveEmulatorCore.voiced` with the same ``request``."""

    request: int
    text: str
    rate: int


Outgoing = SendMessage | CloseConnection | AbortConnection | Stall | Transcribe | Synthesise
