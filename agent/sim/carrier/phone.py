"""The simulated caller's phone, without I/O: ticks and server messages in, messages out.

See :mod:`agent.sim.carrier` for what the simulator does as a whole.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

import numpy as np

from agent.audio.codec import (
    ULAW_SILENCE,
    ulaw_to_pcm16,
)
from agent.audio.dtmf import DtmfDetector

#: Audio time per tick: Twilio sends (and plays) 20 ms frames.
FRAME_MS: Final = 20
#: One 20 ms frame of 8 kHz mu-law.
FRAME_BYTES: Final = 160
SAMPLE_RATE: Final = 8000

#: The caller clips shipped in ``agent/sim/assets`` as ``caller-<name>.wav``.
BUNDLED_CALLER_CLIPS: Final[tuple[str, ...]] = ("order-status", "interrupt", "goodbye", "transfer")

ENDED_BY_CALLER: Final = "caller hung up"
ENDED_BY_SERVER: Final = "server hung up"
ENDED_BY_MAX_DURATION: Final = "max duration"
#: The bridge ended the call through the REST API (``Status=completed``).
ENDED_BY_REST_HANG_UP: Final = "hung up via REST"
#: The bridge moved the call to a number through the REST API (``Twiml=<Dial>``).
ENDED_BY_REST_TRANSFER: Final = "transferred via REST"
#: The bridge moved the call into a conference through the REST API (a warm transfer's join).
ENDED_BY_REST_CONFERENCE: Final = "joined a conference via REST"
#: The bridge gave the call other TwiML, or a ``Url``, through the REST API: the stream ends.
ENDED_BY_REST_REDIRECT: Final = "redirected via REST"

#: Twilio's limit on a <Parameter>'s name and value together.
_PARAMETER_LIMIT: Final = 500
# Bounds the closing handshake, so a bridge that never answers our close frame cannot hang the call.
_WS_CLOSE_TIMEOUT_S: Final = 5.0
_HTTP_TIMEOUT_S: Final = 30.0

Message = dict[str, Any]


# -- options and report ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CarrierOptions:
    """How to place a call: where the bridge is, how fast to run, and the caller's turn-taking.

    All durations are in *audio* time; ``speed`` only compresses wall time (20 ms of audio take
    ``0.020 / speed`` seconds), so the same options give the same call at any speed.
    """

    #: The bridge's base URL; the voice webhook is ``{url}/twilio/voice``.
    url: str = "http://127.0.0.1:8080"
    speed: float = 1.0
    #: When set, requests carry ``X-Twilio-Signature`` computed with this token, as Twilio's do.
    auth_token: str | None = None
    from_number: str = "+15555550100"
    to_number: str = "+15555550199"
    #: Silence the caller waits for before the first utterance (longer if a greeting is playing).
    lead_ms: int = 500
    #: Silence after the reply that tells the caller the agent has finished its turn.
    gap_ms: int = 800
    #: When set, the caller interrupts: the next utterance starts this long after the reply began.
    barge_in_ms: int | None = None
    #: The caller moves on when no reply audio starts within this long after an utterance.
    reply_timeout_ms: int = 10000
    #: The caller hangs up after this long whatever happens, so a call never runs forever.
    max_duration_s: float = 120.0
    #: After the last reply the caller stays on the line, silent, this long before hanging up.
    linger_ms: int = 0
    #: Keys pressed on the keypad: ``(at_ms, digit)``, sent as ``dtmf`` events at those times.
    keypad: tuple[tuple[int, str], ...] = ()
    #: Twilio's STIR/SHAKEN verdict on the caller ID, e.g. ``TN-Validation-Passed-A`` (None:
    #: the call carried no attestation and Twilio sends no ``StirVerstat``).
    stir_verstat: str | None = None
    #: Listen for DTMF tones in what the bridge plays (an IVR would): ``CallReport.keys_heard``.
    #: Off by default: a Goertzel detector per tick is work most calls need not do.
    detect_keys: bool = False
    #: Whose wire the call speaks: ``twilio``, ``telnyx`` or ``plivo`` (sim.carrier.dialects).
    carrier: str = "twilio"
    #: Telnyx: the base64 Ed25519 private key (32 bytes) that signs webhooks; the bridge's
    #: ``TELNYX_PUBLIC_KEY`` is its public half. (Plivo signs with ``auth_token``.)
    telnyx_signing_key: str | None = None

    def __post_init__(self) -> None:
        if self.carrier not in ("twilio", "telnyx", "plivo"):
            raise ValueError(f"carrier must be twilio, telnyx or plivo, got {self.carrier!r}")
        if not self.speed > 0 or not math.isfinite(self.speed):
            raise ValueError(f"speed must be a positive number, got {self.speed}")
        if not self.max_duration_s > 0 or not math.isfinite(self.max_duration_s):
            raise ValueError(f"max_duration_s must be a positive number, got {self.max_duration_s}")
        for name in ("lead_ms", "gap_ms", "reply_timeout_ms", "linger_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.barge_in_ms is not None and self.barge_in_ms < 0:
            raise ValueError(f"barge_in_ms must not be negative, got {self.barge_in_ms}")
        for at_ms, digit in self.keypad:
            if at_ms < 0 or len(digit) != 1 or digit not in "0123456789*#ABCD":
                raise ValueError(f"a key press is (at_ms >= 0, one of 0-9 * # A-D), got {digit!r}")


@dataclass
class UtteranceReport:
    """One caller utterance, in audio-time milliseconds from the start of the call.

    ``first_reply_ms`` is when the agent's reply to it started playing (None: no reply before the
    caller moved on); the reply latency the caller perceived is ``first_reply_ms - end_ms``. It is
    negative when the agent spoke over the caller and did not yield.
    """

    start_ms: int
    end_ms: int
    first_reply_ms: int | None


@dataclass
class CallReport:
    """Everything the simulated caller observed during one call."""

    call_sid: str
    stream_sid: str
    #: PCM16 8 kHz: the caller's timeline, one 20 ms frame per tick (what played, else silence).
    heard: bytes
    utterances: list[UtteranceReport]
    #: ``(tick index when it arrived, payload bytes)`` for every ``media`` message.
    media_received: list[tuple[int, int]]
    #: Tick index of each ``clear`` received.
    clears: list[int]
    #: ``(tick, event)`` for every media, mark and clear received, in arrival order: within one
    #: tick this tells a frame that arrived before a ``clear`` from one that came after it.
    arrivals: list[tuple[int, str]]
    #: ``(name, played)`` per echoed mark; ``played`` is False when echoed because of a ``clear``.
    marks_echoed: list[tuple[str, bool]]
    barge_ins: int
    protocol_errors: list[str]
    #: ``"caller hung up"``, ``"server hung up"``, ``"max duration"``, or one of the REST
    #: endings (``ENDED_BY_REST_*``) when the bridge updated the call through the REST API.
    ended_by: str
    #: The number a REST ``<Dial>`` moved the call to (None: not transferred).
    transferred_to: str | None = None
    #: Every media stream the call had, in order: more than one when a stream ended while the
    #: call was up and the ``<Connect action>`` answered with a new ``<Stream>``.
    stream_sids: list[str] = field(default_factory=list)
    #: ``(tick the stream ended, tick the next one started)`` for each gap between streams: the
    #: caller heard silence and said nothing anyone received.
    stream_gaps: list[tuple[int, int]] = field(default_factory=list)
    #: What Twilio's text-to-speech said to the caller, from REST ``<Say>`` verbs, in order.
    twilio_said: tuple[str, ...] = ()
    #: DTMF keys heard in what played, in order (with ``CarrierOptions.detect_keys``).
    keys_heard: str = ""
    #: The conference a REST ``<Dial><Conference>`` moved the call into (None: none).
    conference: str | None = None

    def reply_latencies_ms(self) -> list[int | None]:
        """Per utterance, the time from its end to the first reply audio heard (None: no reply)."""
        return [
            None if u.first_reply_ms is None else u.first_reply_ms - u.end_ms
            for u in self.utterances
        ]

    def summary(self) -> str:
        """A human-readable account: reply latencies, barge-ins, clears, audio heard, the ending."""
        frames = np.frombuffer(self.heard, dtype="<i2")
        frames = frames[: len(frames) // FRAME_BYTES * FRAME_BYTES].reshape(-1, FRAME_BYTES)
        agent_s = int(np.count_nonzero(frames.any(axis=1))) * FRAME_MS / 1000
        call_s = len(self.heard) / 2 / SAMPLE_RATE
        lines = [
            f"call {self.call_sid} (stream {self.stream_sid}): {self.ended_by} after {call_s:.1f} s"
        ]
        lines.extend(f"  Twilio said: {_short(text)!r}" for text in self.twilio_said)
        if self.transferred_to is not None:
            lines.append(f"  transferred to {self.transferred_to}")
        for n, (utt, latency) in enumerate(
            zip(self.utterances, self.reply_latencies_ms(), strict=True), start=1
        ):
            reply = "no reply" if latency is None else f"reply audio {latency} ms after its end"
            lines.append(
                f"  utterance {n} ({utt.start_ms / 1000:.2f}-{utt.end_ms / 1000:.2f} s): {reply}"
            )
        flushed = sum(1 for _, played in self.marks_echoed if not played)
        lines.append(
            f"  barge-ins: {self.barge_ins}, clears: {len(self.clears)}, "
            f"marks echoed: {len(self.marks_echoed)} ({flushed} by a clear)"
        )
        lines.append(f"  heard {agent_s:.1f} s of agent audio")
        if self.protocol_errors:
            lines.append(f"  protocol errors: {len(self.protocol_errors)}")
            lines.extend(f"    {error}" for error in self.protocol_errors[:10])
            if len(self.protocol_errors) > 10:
                lines.append(f"    … and {len(self.protocol_errors) - 10} more")
        return "\n".join(lines)


# -- the simulated phone (sans-I/O) ----------------------------------------------------------------


class _Step(Enum):
    """Where the caller is in its script."""

    LEAD = "waiting to speak first"
    SPEAKING = "speaking"
    WAITING = "waiting for the reply"
    LINGERING = "silent on the line after the last reply"
    DONE = "done"


@dataclass(slots=True)
class _Utterance:
    audio: bytes  # mu-law
    sent: int = 0
    start_tick: int | None = None
    end_tick: int | None = None
    first_reply_tick: int | None = None
    # Only audio from media messages numbered at least this counts as the reply to this utterance:
    # what the agent was still saying when the caller started speaking is not an answer to it.
    reply_floor: int = 0
    # Agent audio played while this utterance was being spoken (the caller talked over the agent).
    overlapped: bool = False
    barge_in_counted: bool = False


@dataclass(slots=True)
class _Chunk:
    """Part of one received ``media`` payload still to be played."""

    data: bytes
    index: int  # which media message (0-based) it came from
    offset: int = 0


@dataclass(frozen=True, slots=True)
class _PendingMark:
    name: str


def _ticks(ms: float) -> int:
    """Whole ticks covering ``ms`` of audio time, rounding up so a wait is never cut short."""
    return math.ceil(ms / FRAME_MS)


class Phone:
    """The caller's phone as Twilio runs it, without I/O: ticks and server messages in, messages
    out.

    Call :meth:`connect` once, then :meth:`tick` every 20 ms of audio time and
    :meth:`receive_text` / :meth:`receive_binary` for each WebSocket frame from the server; each
    returns the messages to send, in order. When :attr:`finished` is true the call is over (the
    last tick returned ``stop``, or :meth:`server_hung_up` was called) and :meth:`report` says
    what happened.

    Each tick sends exactly one inbound frame (the caller's next 20 ms, or mu-law silence between
    utterances: a real phone streams continuously) and plays exactly one frame of the outbound
    buffer into the ``heard`` timeline. Playback follows Twilio: marks are echoed once all audio
    received before them has played, and ``clear`` empties the buffer and echoes pending marks at
    once. Malformed or unknown messages become protocol errors in the report; nothing from the
    wire raises.
    """

    def __init__(
        self,
        options: CarrierOptions,
        utterances: Sequence[bytes],
        *,
        call_sid: str,
        account_sid: str,
        stream_sid: str,
    ) -> None:
        """``utterances`` are the caller's clips as 8 kHz mu-law, spoken in order."""
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.stream_sid = stream_sid
        self._utterances = [_Utterance(bytes(audio)) for audio in utterances]
        self._lead_ticks = _ticks(options.lead_ms)
        self._gap_ticks = _ticks(options.gap_ms)
        self._barge_in_ticks = None if options.barge_in_ms is None else _ticks(options.barge_in_ms)
        self._reply_timeout_ticks = _ticks(options.reply_timeout_ms)
        self._max_ticks = math.floor(options.max_duration_s * 1000 / FRAME_MS)
        self._linger_ticks = _ticks(options.linger_ms)
        self._linger_until = 0
        self._keypad: dict[int, list[str]] = {}
        for at_ms, digit in options.keypad:
            self._keypad.setdefault(_ticks(at_ms), []).append(digit)

        self._step = _Step.LEAD
        self._current = -1  # index of the utterance being spoken or answered
        self._tick = 0  # ticks done so far = index of the next tick
        self._sequence = 0  # last sequenceNumber sent
        self._chunks_sent = 0
        self._media_count = 0  # media messages received
        self._buffer: deque[_Chunk | _PendingMark] = deque()
        self._quiet_ticks = 0  # consecutive ticks that played nothing
        self._heard = bytearray()  # mu-law, one frame per tick
        self._media_received: list[tuple[int, int]] = []
        self._clears: list[int] = []
        self._arrivals: list[tuple[int, str]] = []
        self._marks_echoed: list[tuple[str, bool]] = []
        self._barge_ins = 0
        self._protocol_errors: list[str] = []
        self._ended_by: str | None = None
        self._transferred_to: str | None = None
        self._twilio_said: list[str] = []
        self._streaming = True  # a media stream is open (False between streams)
        self._stream_started_tick = 0
        self._stream_sids = [stream_sid]
        self._gaps: list[tuple[int, int]] = []
        self._gap_began: int | None = None
        self._keys = DtmfDetector() if options.detect_keys else None
        self._keys_heard: list[str] = []
        self._conference: str | None = None

    # -- state -------------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether the call is over (no more ticks or messages are taken)."""
        return self._ended_by is not None

    @property
    def ended_by(self) -> str | None:
        return self._ended_by

    @property
    def ticks(self) -> int:
        """Ticks done so far, which is also the index of the next tick."""
        return self._tick

    @property
    def streaming(self) -> bool:
        """Whether a media stream is open (False between a lost stream and the next one)."""
        return self._streaming and self._ended_by is None

    # -- driving it --------------------------------------------------------------------------------

    def connect(self, custom_parameters: Mapping[str, str]) -> list[Message]:
        """The ``connected`` and ``start`` messages that open the stream."""
        return [
            {"event": "connected", "protocol": "Call", "version": "1.0.0"},
            {
                "event": "start",
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": dict(custom_parameters),
                },
            },
        ]

    def tick(self) -> list[Message]:
        """Advance 20 ms of audio time.

        Returns one inbound ``media`` frame plus the echoes of marks whose audio has now played; or
        ``stop`` when the caller hangs up (script over, or the maximum duration reached).
        """
        if self._ended_by is not None:
            return []
        if self._tick >= self._max_ticks:
            return self._hang_up(ENDED_BY_MAX_DURATION)
        self._advance_script()
        if self._step is _Step.DONE:
            return self._hang_up(ENDED_BY_CALLER)
        if not self._streaming:
            # No stream: the caller goes on (speaking into nothing) and hears silence.
            self._next_inbound_frame()
            self._quiet_ticks += 1
            self._heard += bytes([ULAW_SILENCE]) * FRAME_BYTES
            self._tick += 1
            return []
        out = [self._media_message(self._next_inbound_frame())]
        out.extend(self._dtmf_message(digit) for digit in self._keypad.pop(self._tick, ()))
        out.extend(self._play_frame())
        self._tick += 1
        return out

    def receive_text(self, text: str) -> list[Message]:
        """Handle one text frame from the server; returns the mark echoes it causes."""
        if self._ended_by is not None:
            return []
        try:
            message = json.loads(text)
        except ValueError:
            return self._protocol_error(f"not JSON: {_short(text)}")
        if not isinstance(message, dict):
            return self._protocol_error(f"not a JSON object: {_short(text)}")
        event = message.get("event")
        if event not in ("media", "mark", "clear"):
            return self._protocol_error(
                f"unknown event {event!r} (Twilio error 31924): {_short(text)}"
            )
        if message.get("streamSid") != self.stream_sid:
            return self._protocol_error(
                f"{event} with streamSid {message.get('streamSid')!r}, expected {self.stream_sid!r}"
            )
        if event == "media":
            return self._on_media(message, text)
        if event == "mark":
            return self._on_mark(message, text)
        return self._on_clear()

    def receive_binary(self, data: bytes) -> None:
        """A binary frame: Twilio ignores it with warning 31950, so the report records it."""
        if self._ended_by is None:
            self._protocol_error(f"binary frame of {len(data)} bytes (Twilio warning 31950)")

    def undelivered(self, message: Message) -> None:
        """``message`` (one this phone returned) never reached the server: the socket was gone.

        A mark echo is reported only once it is sent, as Twilio's log would show it; one the
        phone made as the stream closed is taken back.
        """
        if message.get("event") == "mark":
            name = message["mark"]["name"]
            for i in range(len(self._marks_echoed) - 1, -1, -1):
                if self._marks_echoed[i][0] == name:
                    del self._marks_echoed[i]
                    return

    def note_problem(self, problem: str) -> None:
        """Record something Twilio would reject or warn about that the phone did not see itself."""
        self._protocol_errors.append(problem)

    def said_by_twilio(self, text: str) -> None:
        """A REST update's ``<Say>``: Twilio speaks ``text`` to the caller (recorded, not
        synthesised: the stream has ended, so it is not part of ``heard``)."""
        if self._ended_by is None:
            self._twilio_said.append(text)

    def hang_up_via_rest(self) -> list[Message]:
        """The REST API completed the call (``Status=completed``): the stream stops.

        Returns the ``stop`` to send (nothing if the call was already over)."""
        if self._ended_by is not None:
            return []
        return self._hang_up(ENDED_BY_REST_HANG_UP)

    def redirect_via_rest(self, dial: str | None) -> list[Message]:
        """The REST API gave the call new TwiML (or a ``Url``): the stream stops, and the call
        goes on elsewhere, to ``dial`` for a ``<Dial>``. Returns the ``stop`` to send."""
        if self._ended_by is not None:
            return []
        self._transferred_to = dial
        return self._hang_up(ENDED_BY_REST_TRANSFER if dial else ENDED_BY_REST_REDIRECT)

    def join_conference_via_rest(self, room: str) -> list[Message]:
        """The REST API moved the call into the conference ``room``: the stream stops, and the
        caller is elsewhere (talking to whoever is in it). Returns the ``stop`` to send."""
        if self._ended_by is not None:
            return []
        self._conference = room
        return self._hang_up(ENDED_BY_REST_CONFERENCE)

    def server_hung_up(self) -> None:
        """The server closed the WebSocket: the call ends (no ``stop``: there is no socket left)."""
        if self._ended_by is None:
            self._ended_by = ENDED_BY_SERVER

    def stream_lost(self) -> None:
        """The WebSocket closed (the server closed it, or it dropped) but the call is still up,
        as when ``<Connect>`` has an ``action``: Twilio asks that URL what to do next.

        Audio buffered for playback is gone with the stream, and marks still pending are never
        echoed (there is no socket to echo them on). Ticks go on: the caller hears silence.
        """
        if self._ended_by is not None or not self._streaming:
            return
        self._streaming = False
        self._buffer.clear()
        self._gap_began = self._tick

    def new_stream(self, stream_sid: str, custom_parameters: Mapping[str, str]) -> list[Message]:
        """A new ``<Connect><Stream>`` for the same call: its ``connected`` and ``start``.

        Sequence numbers, chunks and media timestamps start again, as on every Twilio stream.
        """
        if self._ended_by is not None:
            return []
        if self._gap_began is not None:
            self._gaps.append((self._gap_began, self._tick))
            self._gap_began = None
        self.stream_sid = stream_sid
        self._stream_sids.append(stream_sid)
        self._streaming = True
        self._sequence = 0
        self._chunks_sent = 0
        self._stream_started_tick = self._tick
        return self.connect(custom_parameters)

    def report(self) -> CallReport:
        """What the caller observed so far (normally called once the call is finished)."""
        utterances = []
        for utt in self._utterances:
            if utt.start_tick is None:
                continue  # the call ended before the caller got to say it
            end_tick = self._tick if utt.end_tick is None else utt.end_tick
            utterances.append(
                UtteranceReport(
                    start_ms=utt.start_tick * FRAME_MS,
                    end_ms=end_tick * FRAME_MS,
                    first_reply_ms=None
                    if utt.first_reply_tick is None
                    else utt.first_reply_tick * FRAME_MS,
                )
            )
        return CallReport(
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            heard=ulaw_to_pcm16(bytes(self._heard)),
            utterances=utterances,
            media_received=list(self._media_received),
            clears=list(self._clears),
            arrivals=list(self._arrivals),
            marks_echoed=list(self._marks_echoed),
            barge_ins=self._barge_ins,
            protocol_errors=list(self._protocol_errors),
            ended_by=self._ended_by or ENDED_BY_CALLER,
            transferred_to=self._transferred_to,
            twilio_said=tuple(self._twilio_said),
            stream_sids=list(self._stream_sids),
            stream_gaps=list(self._gaps),
            keys_heard="".join(self._keys_heard),
            conference=self._conference,
        )

    # -- the caller's script -----------------------------------------------------------------------

    def _advance_script(self) -> None:
        """Move the script on as far as this tick allows (several steps past empty utterances)."""
        while True:
            step, current = self._step, self._current
            if step is _Step.LEAD:
                # "lead_ms of silence": a greeting that is playing is listened to first.
                if self._line_quiet_for(self._lead_ticks):
                    self._begin_next_utterance()
            elif step is _Step.WAITING and self._reply_over(self._utterances[self._current]):
                self._begin_next_utterance()
            elif step is _Step.LINGERING and self._tick >= self._linger_until:
                self._step = _Step.DONE
            if (self._step, self._current) == (step, current):
                return

    def _reply_over(self, utt: _Utterance) -> bool:
        """Whether the caller stops waiting for the reply to ``utt``."""
        assert utt.end_tick is not None
        if utt.first_reply_tick is None:
            return self._tick - utt.end_tick >= self._reply_timeout_ticks
        is_last = self._current == len(self._utterances) - 1
        # The last utterance has nothing to interrupt with, so it waits for the whole reply.
        if (
            self._barge_in_ticks is not None
            and not is_last
            and self._tick - utt.first_reply_tick >= self._barge_in_ticks
        ):
            return True
        return self._line_quiet_for(self._gap_ticks)

    def _line_quiet_for(self, ticks: int) -> bool:
        """Nothing has played for ``ticks`` ticks and nothing is waiting to be played."""
        return self._quiet_ticks >= ticks and not self._has_audio()

    def _begin_next_utterance(self) -> None:
        self._current += 1
        if self._current >= len(self._utterances):
            self._step = _Step.LINGERING if self._linger_ticks else _Step.DONE
            self._linger_until = self._tick + self._linger_ticks
            return
        utt = self._utterances[self._current]
        utt.start_tick = self._tick
        utt.reply_floor = self._media_count
        if utt.audio:
            self._step = _Step.SPEAKING
        else:
            utt.end_tick = self._tick
            self._step = _Step.WAITING

    def _next_inbound_frame(self) -> bytes:
        if self._step is not _Step.SPEAKING:
            return bytes([ULAW_SILENCE]) * FRAME_BYTES
        utt = self._utterances[self._current]
        frame = utt.audio[utt.sent : utt.sent + FRAME_BYTES]
        utt.sent += len(frame)
        if utt.sent >= len(utt.audio):
            utt.end_tick = self._tick + 1  # the utterance ends with this frame
            self._step = _Step.WAITING
        return frame.ljust(FRAME_BYTES, bytes([ULAW_SILENCE]))

    # -- playback ----------------------------------------------------------------------------------

    def _has_audio(self) -> bool:
        # Marks never sit at the head of the buffer (they are echoed as soon as they get there), so
        # a non-empty buffer always has audio to play.
        return bool(self._buffer)

    def _play_frame(self) -> list[Message]:
        """Play one frame from the buffer into ``heard``; echo marks whose audio has now played."""
        utt = self._answered_utterance()
        frame = bytearray()
        echoes: list[Message] = []
        while len(frame) < FRAME_BYTES and self._buffer:
            head = self._buffer[0]
            if isinstance(head, _PendingMark):
                self._buffer.popleft()
                echoes.append(self._echo_mark(head.name, played=True))
                continue
            piece = head.data[head.offset : head.offset + FRAME_BYTES - len(frame)]
            head.offset += len(piece)
            frame += piece
            if utt is not None and utt.first_reply_tick is None and head.index >= utt.reply_floor:
                utt.first_reply_tick = self._tick
            if head.offset >= len(head.data):
                self._buffer.popleft()
        echoes.extend(self._echo_marks_at_head())
        if frame:
            self._quiet_ticks = 0
            if self._step is _Step.SPEAKING and utt is not None:
                utt.overlapped = True
        else:
            self._quiet_ticks += 1
        played = frame.ljust(FRAME_BYTES, bytes([ULAW_SILENCE]))
        self._heard += played
        if self._keys is not None:
            self._keys_heard.extend(self._keys.feed(ulaw_to_pcm16(bytes(played))))
        return echoes

    def _answered_utterance(self) -> _Utterance | None:
        """The utterance whose reply is awaited: the one being spoken or just spoken."""
        if self._step in (_Step.SPEAKING, _Step.WAITING):
            return self._utterances[self._current]
        return None

    def _echo_marks_at_head(self) -> list[Message]:
        echoes = []
        while self._buffer and isinstance(self._buffer[0], _PendingMark):
            mark = self._buffer.popleft()
            assert isinstance(mark, _PendingMark)
            echoes.append(self._echo_mark(mark.name, played=True))
        return echoes

    # -- server messages ---------------------------------------------------------------------------

    def _on_media(self, message: Message, raw: str) -> list[Message]:
        media = message.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            return self._protocol_error(f"media without a payload string: {_short(raw)}")
        try:
            audio = base64.b64decode(payload, validate=True)
        except binascii.Error:
            return self._protocol_error(f"media payload is not base64: {_short(raw)}")
        self._media_received.append((self._tick, len(audio)))
        self._arrivals.append((self._tick, "media"))
        if audio:
            self._buffer.append(_Chunk(audio, self._media_count))
        self._media_count += 1
        return []

    def _on_mark(self, message: Message, raw: str) -> list[Message]:
        mark = message.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            return self._protocol_error(f"mark without a name string: {_short(raw)}")
        self._arrivals.append((self._tick, "mark"))
        if not self._buffer:  # nothing buffered: Twilio echoes it at once
            return [self._echo_mark(name, played=True)]
        self._buffer.append(_PendingMark(name))
        return []

    def _on_clear(self) -> list[Message]:
        self._clears.append(self._tick)
        self._arrivals.append((self._tick, "clear"))
        echoes = [
            self._echo_mark(item.name, played=False)
            for item in self._buffer
            if isinstance(item, _PendingMark)
        ]
        self._buffer.clear()
        utt = self._answered_utterance()
        # A reply that began while the caller was still talking, and that the agent now flushes, was
        # talking over the caller, not answering: the answer is whatever comes after the clear.
        if utt is not None and (
            utt.first_reply_tick is None
            or utt.end_tick is None
            or utt.first_reply_tick < utt.end_tick
        ):
            utt.first_reply_tick = None
            utt.reply_floor = self._media_count
            if utt.overlapped and not utt.barge_in_counted:
                utt.barge_in_counted = True
                self._barge_ins += 1
        return echoes

    # -- messages out ------------------------------------------------------------------------------

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def _media_message(self, frame: bytes) -> Message:
        self._chunks_sent += 1
        return {
            "event": "media",
            "sequenceNumber": self._next_sequence(),
            "streamSid": self.stream_sid,
            "media": {
                "track": "inbound",
                "chunk": str(self._chunks_sent),
                "timestamp": str((self._tick - self._stream_started_tick) * FRAME_MS),
                "payload": base64.b64encode(frame).decode("ascii"),
            },
        }

    def _dtmf_message(self, digit: str) -> Message:
        return {
            "event": "dtmf",
            "sequenceNumber": self._next_sequence(),
            "streamSid": self.stream_sid,
            "dtmf": {"track": "inbound_track", "digit": digit},
        }

    def _echo_mark(self, name: str, *, played: bool) -> Message:
        self._marks_echoed.append((name, played))
        return {
            "event": "mark",
            "sequenceNumber": self._next_sequence(),
            "streamSid": self.stream_sid,
            "mark": {"name": name},
        }

    def hang_up(self) -> list[Message]:
        """The caller hangs up now (a tool driving the phone decides): the ``stop`` message."""
        return [] if self._ended_by is not None else self._hang_up(ENDED_BY_CALLER)

    def _hang_up(self, reason: str) -> list[Message]:
        self._ended_by = reason
        return [
            {
                "event": "stop",
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        ]

    def _protocol_error(self, problem: str) -> list[Message]:
        self._protocol_errors.append(f"at {self._tick * FRAME_MS} ms: {problem}")
        return []


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two-letter prefix ("CA", "AC", "MZ") and 32 hex digits."""
    return prefix + secrets.token_hex(16)
