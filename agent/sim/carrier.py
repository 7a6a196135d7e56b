"""Carrier simulator: places calls into the bridge the way Twilio does, from WAV files, offline.

A developer without a phone line (or without the internet) runs ``agent call order-status --out
heard.wav``; the integration tests do the same in-process. The simulator speaks the bridge's real
contract, following Twilio's Media Streams, TwiML and webhook-security documentation:

1. ``POST {url}/twilio/voice`` with Twilio's voice-webhook form fields, signed with
   ``X-Twilio-Signature`` when an auth token is configured;
2. read ``<Connect><Stream url=…><Parameter …/>`` from the TwiML it answers;
3. open that WebSocket and send ``connected``, ``start``, a continuous stream of 20 ms ``media``
   frames and finally ``stop``, while playing back what the bridge sends (``media``, ``mark``,
   ``clear``) exactly as Twilio's buffer would.

The simulated phone is the sans-I/O :class:`Phone`: it is driven by a *tick* every 20 ms of audio
time and by the server messages it is given, and returns the messages to send. Everything it decides
(when the caller speaks, when a mark is echoed, what the caller heard) is a function of ticks and
messages, never of the wall clock, so it is tested with literal messages and no event loop.
:func:`place_call` is the thin asyncio adapter around it: it paces ticks at ``20 ms / speed`` of
wall time against a fixed start (no drift) and pumps the WebSocket.

The caller's script, in audio time: wait until the line has been quiet for ``lead_ms`` (so a
greeting is heard out), say the first utterance, then wait for the reply to be heard (it started
playing, then nothing played for ``gap_ms``) before the next one; or, with ``barge_in_ms``, cut in
that long after the reply started. The reply to an utterance is the first audio played that arrived
after the utterance started and after any ``clear`` the bridge sent while the caller was talking:
what the agent was still saying, or flushed because the caller interrupted, does not answer it.

The bridge may also act on the call through Twilio's REST API (hang up, transfer): give
:func:`place_call` a running :class:`TwilioApiSimulator`, point the bridge's ``TWILIO_API_URL`` at
it, and a ``Status=completed`` or ``<Dial>`` update ends the simulated call the way Twilio would
(the stream gets its ``stop``), with the report saying so.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import importlib.resources
import json
import math
import secrets
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import aiohttp
import numpy as np
from aiohttp import web

from agent.audio.codec import (
    ULAW_SILENCE,
    pcm16_to_ulaw,
    read_wav,
    resample_offline,
    ulaw_to_pcm16,
)
from agent.errors import TelephonyError
from agent.telephony.rest import is_e164
from agent.telephony.webhooks import compute_signature

__all__ = [
    "BUNDLED_CALLER_CLIPS",
    "ENDED_BY_CALLER",
    "ENDED_BY_MAX_DURATION",
    "ENDED_BY_REST_HANG_UP",
    "ENDED_BY_REST_REDIRECT",
    "ENDED_BY_REST_TRANSFER",
    "ENDED_BY_SERVER",
    "CallReport",
    "CallUpdate",
    "CarrierOptions",
    "Phone",
    "StreamInstruction",
    "TwilioApiSimulator",
    "UtteranceReport",
    "load_caller_audio",
    "new_sid",
    "parse_stream_twiml",
    "place_call",
    "voice_webhook_params",
]

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

    def __post_init__(self) -> None:
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

    def server_hung_up(self) -> None:
        """The server closed the WebSocket: the call ends (no ``stop``: there is no socket left)."""
        if self._ended_by is None:
            self._ended_by = ENDED_BY_SERVER

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
        self._heard += frame.ljust(FRAME_BYTES, bytes([ULAW_SILENCE]))
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
                "timestamp": str(self._tick * FRAME_MS),
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


# -- the voice webhook and its TwiML (pure) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamInstruction:
    """What ``<Connect><Stream>`` told Twilio to do."""

    url: str
    parameters: dict[str, str] = field(default_factory=dict)
    #: Things real Twilio would reject or warn about (the simulator goes ahead, and reports them).
    problems: tuple[str, ...] = ()


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two-letter prefix ("CA", "AC", "MZ") and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def voice_webhook_params(
    *,
    call_sid: str,
    account_sid: str,
    from_number: str,
    to_number: str,
    stir_verstat: str | None = None,
) -> dict[str, str]:
    """The form fields Twilio POSTs to the voice webhook when an inbound call rings
    (``StirVerstat`` only when the caller ID carried a STIR/SHAKEN attestation, as on Twilio)."""
    extra = {"StirVerstat": stir_verstat} if stir_verstat else {}
    return extra | {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": to_number,
        "Caller": from_number,
        "Direction": "inbound",
        "From": from_number,
        "To": to_number,
    }


def parse_stream_twiml(twiml: str) -> StreamInstruction:
    """The ``<Connect><Stream>`` in the voice webhook's TwiML (``TelephonyError`` if none)."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise TelephonyError(
            f"the voice webhook answered invalid XML ({exc}): {_short(twiml)}"
        ) from exc
    stream = root.find("./Connect/Stream") if root.tag == "Response" else None
    if stream is None:
        raise TelephonyError(
            f"the voice webhook's TwiML has no <Response><Connect><Stream>: {_short(twiml)}"
        )
    url = stream.get("url")
    if not url:
        raise TelephonyError(f"<Stream> has no url attribute: {_short(twiml)}")
    if urlsplit(url).scheme not in ("ws", "wss"):
        raise TelephonyError(f"<Stream url> must be a ws:// or wss:// URL, got {url!r}")
    # Twilio itself insists on wss://, but a bridge on a developer's machine serves ws://, so that
    # is not reported: the report should flag bridge bugs, not the local set-up.
    problems = []
    if "?" in url:
        problems.append(f"<Stream url> {url!r} has a query string, which Twilio does not allow")
    if len(root.findall("./Connect/Stream")) > 1:
        problems.append("more than one <Connect><Stream>: Twilio allows one per call")
    parameters: dict[str, str] = {}
    for param in stream.findall("Parameter"):
        name, value = param.get("name"), param.get("value", "")
        if not name:
            problems.append("a <Parameter> without a name")
            continue
        if len(name) + len(value) >= _PARAMETER_LIMIT:
            problems.append(f"<Parameter> {name!r} reaches Twilio's {_PARAMETER_LIMIT}-char limit")
        parameters[name] = value
    return StreamInstruction(url=url, parameters=parameters, problems=tuple(problems))


# -- caller audio ----------------------------------------------------------------------------------


def load_caller_audio(name_or_path: str) -> bytes:
    """PCM16 8 kHz caller audio: a bundled clip by short name (see ``BUNDLED_CALLER_CLIPS``) or a
    mono 16-bit WAV file at any rate, resampled to 8 kHz.

    Raises ``FileNotFoundError`` (naming the bundled clips) when it is neither, and ``AudioError``
    when the file is not audio the simulator can send.
    """
    if name_or_path in BUNDLED_CALLER_CLIPS:
        clip = importlib.resources.files("agent") / "sim" / "assets" / f"caller-{name_or_path}.wav"
        with importlib.resources.as_file(clip) as path:
            pcm, rate = read_wav(path)
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"caller audio {name_or_path!r} is neither a WAV file nor a bundled clip "
                f"({', '.join(BUNDLED_CALLER_CLIPS)})"
            )
        pcm, rate = read_wav(path)
    if rate != SAMPLE_RATE:
        pcm = resample_offline(pcm, rate, SAMPLE_RATE)
    return pcm


# -- the asyncio adapter ---------------------------------------------------------------------------


async def place_call(
    options: CarrierOptions,
    utterances: Sequence[bytes],
    *,
    rest: TwilioApiSimulator | None = None,
) -> CallReport:
    """Call the bridge at ``options.url`` and say ``utterances`` (PCM16 8 kHz), as Twilio would.

    With ``rest``, the call is placed under that simulator's account and can be updated through
    its REST API while it lasts (hung up, transferred), as a real call can through Twilio's.

    Returns the report once the caller hangs up, the server closes the stream, the bridge ends
    or moves the call through the REST API, or the maximum duration passes. Raises
    ``TelephonyError`` when the call cannot be set up (webhook unreachable or answering non-2xx,
    TwiML without a stream, WebSocket refused) and ``AudioError`` for PCM that is not 16-bit.
    """
    caller_audio = [pcm16_to_ulaw(pcm) for pcm in utterances]
    call_sid, stream_sid = new_sid("CA"), new_sid("MZ")
    account_sid = rest.account_sid if rest is not None else new_sid("AC")
    phone = Phone(
        options, caller_audio, call_sid=call_sid, account_sid=account_sid, stream_sid=stream_sid
    )
    if rest is not None:
        # Routable from the moment it rings: Twilio accepts updates for a ringing call too.
        rest.attach(phone)
    try:
        timeout = aiohttp.ClientTimeout(total=_HTTP_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            twiml = await ring(http, options, call_sid=call_sid, account_sid=account_sid)
            if phone.finished:  # ended over REST while the webhook was answering
                return phone.report()
            stream = parse_stream_twiml(twiml)
            for problem in stream.problems:
                phone.note_problem(problem)
            ws = await open_stream(http, stream.url, options.auth_token)
            try:
                await run_stream(ws, phone, stream.parameters, options.speed, rest=rest)
            finally:
                await ws.close()
    finally:
        if rest is not None:
            rest.detach(call_sid)
    return phone.report()


async def ring(
    http: aiohttp.ClientSession, options: CarrierOptions, *, call_sid: str, account_sid: str
) -> str:
    """POST the voice webhook; the TwiML it answers."""
    url = options.url.rstrip("/") + "/twilio/voice"
    params = voice_webhook_params(
        call_sid=call_sid,
        account_sid=account_sid,
        from_number=options.from_number,
        to_number=options.to_number,
        stir_verstat=options.stir_verstat,
    )
    headers = {}
    if options.auth_token is not None:
        # Signed over the exact URL we POST, as Twilio signs the URL it requests.
        headers["X-Twilio-Signature"] = compute_signature(options.auth_token, url, params)
    try:
        async with http.post(url, data=params, headers=headers) as response:
            body = await response.text()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TelephonyError(f"could not reach the voice webhook {url}: {exc!r}") from exc
    if not 200 <= status < 300:
        raise TelephonyError(f"the voice webhook {url} answered {status}: {_short(body.strip())}")
    return body


async def open_stream(
    http: aiohttp.ClientSession, url: str, auth_token: str | None
) -> aiohttp.ClientWebSocketResponse:
    """Open the media-stream WebSocket at ``url`` exactly as the TwiML gave it."""
    headers = {}
    if auth_token is not None:
        # Twilio signs the upgrade request too, over the stream URL as written, with no params.
        headers["X-Twilio-Signature"] = compute_signature(auth_token, url, {})
    try:
        return await http.ws_connect(
            url,
            headers=headers,
            autoping=True,
            timeout=aiohttp.ClientWSTimeout(ws_close=_WS_CLOSE_TIMEOUT_S),
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TelephonyError(f"could not open the media stream {url}: {exc!r}") from exc


class StreamObserver(Protocol):
    """Watches a simulated call's messages as they cross the socket (the benchmarks time them)."""

    def sent(self, message: Message) -> None: ...

    def received(self, text: str) -> None: ...

    def hang_up_now(self) -> bool:
        """Checked every tick: True makes the caller hang up at once."""
        ...


async def run_stream(
    ws: aiohttp.ClientWebSocketResponse,
    phone: Phone,
    parameters: Mapping[str, str],
    speed: float,
    *,
    rest: TwilioApiSimulator | None = None,
    observer: StreamObserver | None = None,
) -> None:
    """Drive ``phone`` over ``ws`` until the call ends: paced ticks, a reader and a writer."""
    # One writer sends everything in the order the phone produced it, so sequence numbers go out in
    # order even though both the tick loop and the reader produce messages.
    outbox: asyncio.Queue[Message | None] = asyncio.Queue()

    def post(messages: list[Message]) -> None:
        for message in messages:
            outbox.put_nowait(message)

    async def write() -> None:
        while (message := await outbox.get()) is not None:
            if ws.closed:
                phone.undelivered(message)
                continue
            try:
                await ws.send_str(json.dumps(message))
            except (aiohttp.ClientError, ConnectionError):
                phone.server_hung_up()
                phone.undelivered(message)
                continue
            if observer is not None:
                observer.sent(message)

    async def read() -> None:
        async for frame in ws:
            if frame.type is aiohttp.WSMsgType.TEXT:
                if observer is not None:
                    observer.received(frame.data)
                post(phone.receive_text(frame.data))
            elif frame.type is aiohttp.WSMsgType.BINARY:
                phone.receive_binary(frame.data)
            else:  # ERROR: the connection is gone
                break
        # The iterator also ends when we close after our own stop; then the call is already over.
        phone.server_hung_up()

    async def run_ticks() -> None:
        loop = asyncio.get_running_loop()
        period = FRAME_MS / 1000 / speed
        started = loop.time()
        while not phone.finished:
            # Scheduled against the start, not the previous tick, so pacing never drifts; when
            # behind, ticks run back to back (still yielding so the reader keeps up).
            await asyncio.sleep(max(0.0, started + phone.ticks * period - loop.time()))
            if observer is not None and observer.hang_up_now():
                post(phone.hang_up())
                continue
            post(phone.tick())

    post(phone.connect(parameters))
    if rest is not None:
        # From now on a REST update's ``stop`` goes out through the same writer, in order.
        rest.attach(phone, post)
    # The task group ties the reader and writer to this call: if either fails, the call fails.
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(read())
        writer = tasks.create_task(write())
        await run_ticks()
        outbox.put_nowait(None)  # after the stop (or the server's hang-up), nothing more to send
        await writer
        await ws.close()  # ends the reader


# -- Twilio's REST API: the Calls update endpoint --------------------------------------------------

#: Where Twilio's API takes a call update (``POST``, form-encoded).
CALL_UPDATE_PATH: Final = "/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json"
_ERRORS_URL: Final = "https://www.twilio.com/docs/errors/"
#: Twilio's "not found": for a call update, a CallSid that is unknown or whose call has ended.
NOT_FOUND_CODE: Final = 20404
#: Twilio's "Authenticate": missing or wrong credentials.
AUTHENTICATE_CODE: Final = 20003
# For a malformed update. Twilio's own codes for these vary by parameter; the simulator reports one
# generic code and says in the message what is wrong.
_BAD_REQUEST_CODE: Final = 20001
#: Twilio's "Document parse failure", for a ``Twiml`` parameter that is not XML.
_PARSE_FAILURE_CODE: Final = 12100

Send = Callable[[list[Message]], None]


@dataclass(frozen=True, slots=True)
class CallUpdate:
    """One request to the Calls update endpoint, and how the simulator answered it."""

    call_sid: str
    params: dict[str, str]
    status: int
    code: int | None = None


@dataclass(slots=True)
class _LiveCall:
    phone: Phone
    send: Send | None = None  # None until the media stream runs (the call is still ringing)


class TwilioApiSimulator:
    """A local stand-in for Twilio's REST API, as far as a bridge uses it during a call.

    It serves ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` on loopback (port
    0: any free port) and routes each update to the :class:`Phone` that :func:`place_call`
    attached for that CallSid:

    * ``Status=completed`` ends the call: the stream gets its ``stop`` and the report says
      ``hung up via REST`` (:data:`ENDED_BY_REST_HANG_UP`);
    * ``Twiml`` with ``<Dial>`` ends the stream and records the number the call moved to
      (``transferred via REST``, ``CallReport.transferred_to``); ``<Hangup/>`` hangs up; any other
      TwiML, or ``Url``, ends the stream as ``redirected via REST``;
    * an unknown CallSid, or a call that has ended, is a 404 with code 20404, as Twilio answers.

    Requests must carry HTTP Basic credentials: the account SID and ``auth_token``. Without an
    ``auth_token`` (development) any password is accepted, but the account SID must still match.
    Every request is kept in :attr:`updates`; what real Twilio would warn about (``Twiml`` and
    ``Url`` together, ``Status=canceled`` on a call in progress) is noted in the call's report.
    """

    def __init__(
        self,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.account_sid = account_sid or new_sid("AC")
        self._auth_token = auth_token
        self._host = host
        self._port = port
        self._calls: dict[str, _LiveCall] = {}
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self.updates: list[CallUpdate] = []

    def __repr__(self) -> str:
        return f"TwilioApiSimulator(account_sid={self.account_sid!r}, url={self._url!r})"

    @property
    def url(self) -> str:
        """The base URL to give the bridge as ``TWILIO_API_URL`` (once started)."""
        if self._url is None:
            raise RuntimeError("the Twilio API simulator is not started")
        return self._url

    def app(self) -> web.Application:
        """The aiohttp application (what :meth:`start` serves; tests may serve it themselves)."""
        app = web.Application()
        app.router.add_post(CALL_UPDATE_PATH, self._update_call)
        return app

    async def start(self) -> str:
        """Listen on ``host:port``; returns :attr:`url`."""
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"
        return self._url

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> TwilioApiSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def attach(self, phone: Phone, send: Send | None = None) -> None:
        """Route updates for ``phone.call_sid`` to ``phone``; ``send`` delivers the messages an
        update produces (the ``stop``) to the media stream. Attaching again replaces ``send``."""
        self._calls[phone.call_sid] = _LiveCall(phone, send)

    def detach(self, call_sid: str) -> None:
        """The call is over: later updates for it get 20404."""
        self._calls.pop(call_sid, None)

    async def _update_call(self, request: web.Request) -> web.Response:
        account_sid = request.match_info["account_sid"]
        call_sid = request.match_info["call_sid"]
        form = await request.post()
        params = {name: value for name, value in form.items() if isinstance(value, str)}

        def error(status: int, code: int, message: str) -> web.Response:
            self.updates.append(CallUpdate(call_sid, params, status, code))
            body = {
                "code": code,
                "message": message,
                "more_info": f"{_ERRORS_URL}{code}",
                "status": status,
            }
            headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if status == 401 else None
            return web.json_response(body, status=status, headers=headers)

        if not self._authorised(request.headers.get("Authorization"), account_sid):
            return error(401, AUTHENTICATE_CODE, "Authenticate")
        live = self._calls.get(call_sid)
        if live is None or live.phone.finished:
            return error(
                404, NOT_FOUND_CODE, f"The requested resource {request.path} was not found"
            )
        phone = live.phone
        status = params.get("Status")
        twiml = params.get("Twiml")
        url = params.get("Url")
        if status is not None and status not in ("completed", "canceled"):
            return error(400, _BAD_REQUEST_CODE, f"Status must be completed or canceled: {status}")
        dial: str | None = None
        messages: list[Message] = []
        if url is not None or twiml is not None:
            if url is not None and twiml is not None:
                phone.note_problem("REST update with both Twiml and Url (Twilio warning 32019)")
                twiml = None  # Twilio follows the Url
            if twiml is not None:
                try:
                    verb, dial = _twiml_verb(twiml)
                except ValueError as exc:
                    return error(400, _PARSE_FAILURE_CODE, f"Document parse failure: {exc}")
                if verb == "Hangup":
                    messages = phone.hang_up_via_rest()
                else:
                    if verb == "Dial" and (dial is None or not is_e164(dial)):
                        phone.note_problem(f"REST <Dial> to {dial!r}, not an E.164 number")
                    messages = phone.redirect_via_rest(dial)
            else:
                messages = phone.redirect_via_rest(None)
        elif status == "canceled" and live.send is not None:
            # Twilio cancels only queued or ringing calls; one in progress needs "completed".
            phone.note_problem("REST Status=canceled on a call in progress has no effect")
        elif status is not None:
            messages = phone.hang_up_via_rest()
        else:
            return error(400, _BAD_REQUEST_CODE, "Nothing to update: give Status, Twiml or Url")
        if messages and live.send is not None:
            live.send(messages)
        self.updates.append(CallUpdate(call_sid, params, 200))
        body = {
            "sid": call_sid,
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "status": "completed" if phone.finished and dial is None else "in-progress",
            "uri": request.path,
        }
        return web.json_response(body)

    def _authorised(self, header: str | None, account_sid: str) -> bool:
        if header is None or account_sid != self.account_sid:
            return False
        scheme, _, encoded = header.partition(" ")
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        login, colon, password = decoded.partition(":")
        if scheme.lower() != "basic" or not colon:
            return False
        if not hmac.compare_digest(login.encode(), self.account_sid.encode()):
            return False
        return self._auth_token is None or hmac.compare_digest(
            password.encode(), self._auth_token.encode()
        )


def _twiml_verb(twiml: str) -> tuple[str, str | None]:
    """The first verb of a REST update's TwiML, and for ``<Dial>`` the number dialled."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise ValueError(str(exc)) from exc
    if root.tag != "Response" or len(root) == 0:
        raise ValueError("expected <Response> with at least one verb")
    verb = root[0]
    if verb.tag != "Dial":
        return verb.tag, None
    number = verb.find("Number")
    text = number.text if number is not None else verb.text
    return "Dial", (text or "").strip() or None
