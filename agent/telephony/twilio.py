"""Sans-I/O server side of a bidirectional Twilio Media Stream.

Twilio sends JSON in WebSocket TEXT frames (``connected``, ``start``, ``media``, ``dtmf``, ``mark``,
``stop``); we send ``media``, ``mark`` and ``clear``. This module turns one incoming frame into one
typed event and builds the outgoing frames as strings. It owns no socket, logs nothing and reads no
clock, so it is tested with literal payloads and no event loop; the WebSocket adapter is a few lines
around it.

Wire input never raises: anything unknown or malformed (bad JSON, missing or mistyped fields, bad
base64, an unknown event, a binary frame, stream events before ``start`` or after ``stop``, a
foreign streamSid) comes back as a :class:`ProtocolError` event for the caller to log and drop,
which is what Twilio itself does with our malformed messages (error 31924). Misusing the builders
(sending before the stream has started) is a programming error and raises
:class:`~agent.errors.TelephonyError`.

The media path runs 50 times a second per call, so it does one JSON parse, one base64 decode and
a handful of type checks, and the media builder is string concatenation rather than ``json.dumps``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from agent import wire
from agent.errors import TelephonyError

__all__ = [
    "Connected",
    "DtmfReceived",
    "MarkPlayed",
    "MediaReceived",
    "ProtocolError",
    "StreamStarted",
    "StreamStopped",
    "TwilioEvent",
    "TwilioMediaStream",
]

#: How much of an offending frame a ProtocolError keeps: enough to recognise it in a log line.
RAW_LIMIT: Final = 200

# Numeric strings longer than this are not chunk counters or millisecond timestamps; the bound also
# keeps int() clear of Python's 4300-digit conversion limit, which would raise.
_MAX_DIGITS: Final = 18


# https://www.twilio.com/docs/voice/media-streams/websocket-messages: media frames carry the
# track they belong to, keypad presses one digit, and a <Connect><Stream> is 8 kHz mono mu-law.
_MEDIA_TRACKS: Final = frozenset({"inbound", "outbound"})
_DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")
_MEDIA_FORMAT: Final = ("audio/x-mulaw", 8000, 1)


@dataclass(frozen=True, slots=True)
class Connected:
    """Twilio's first message on a new stream socket (``protocol`` is ``"Call"``)."""

    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """The stream's metadata, sent once after ``connected``; ``custom_parameters`` are the TwiML
    ``<Parameter>`` values, read-only."""

    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    encoding: str
    sample_rate: int
    channels: int
    custom_parameters: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class MediaReceived:
    """One chunk of caller audio: ``payload`` is raw mu-law 8 kHz mono, of no guaranteed size."""

    payload: bytes
    track: str
    chunk: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """Twilio echoed a mark we sent: the audio before it has played, *or* a ``clear`` flushed it."""

    name: str


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """The caller pressed a key."""

    digit: str
    track: str


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """The stream ended, normally because the call ended."""

    call_sid: str


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """A frame we could not use, to log and drop; ``raw`` is it cut to ``RAW_LIMIT`` chars."""

    reason: str
    raw: str


TwilioEvent = (
    Connected
    | StreamStarted
    | MediaReceived
    | MarkPlayed
    | DtmfReceived
    | StreamStopped
    | ProtocolError
)


class _MalformedError(Exception):
    """Carries a ProtocolError reason out of the field helpers; never escapes this module."""


class TwilioMediaStream:
    """Server side of one media stream: parses what Twilio sends, builds what we send.

    One instance per WebSocket. ``stream_sid`` is ``None`` until a valid ``start`` arrives; from
    then on every stream event must carry that streamSid, and the builders address it.
    """

    __slots__ = ("_call_sid", "_handlers", "_stopped", "stream_sid")

    def __init__(self) -> None:
        self.stream_sid: str | None = None
        self._call_sid: str | None = None
        self._stopped = False
        self._handlers: dict[str, Callable[[dict[str, Any]], TwilioEvent]] = {
            "connected": self._on_connected,
            "start": self._on_start,
            "mark": self._on_mark,
            "dtmf": self._on_dtmf,
            "stop": self._on_stop,
        }

    # -- Twilio -> us ------------------------------------------------------------------------------

    def receive_text(self, text: str) -> TwilioEvent:
        """Parse one TEXT frame from Twilio into an event; never raises, whatever it holds."""
        try:
            msg = wire.loads(text)
        except ValueError:  # whatever orjson refuses: bad syntax, deep nesting, NaN, huge numbers
            return _error("invalid JSON", text)
        if type(msg) is not dict:
            return _error("message is not a JSON object", text)
        event = msg.get("event")
        try:
            # Media first and inline: it is nearly all the traffic.
            if event == "media":
                return self._on_media(msg)
            handler = self._handlers.get(event) if type(event) is str else None
            if handler is None:
                return _error(f"unknown event {_short(repr(event))}", text)
            return handler(msg)
        except _MalformedError as exc:
            return _error(f"{event}: {exc}", text)

    def receive_bytes(self, data: bytes) -> ProtocolError:
        """Report a BINARY frame, which Twilio never sends (it rejects ours: warning 31950)."""
        return ProtocolError(reason="unexpected binary frame", raw=_short(repr(data[:RAW_LIMIT])))

    def _on_media(self, msg: dict[str, Any]) -> MediaReceived:
        self._check_stream(msg)
        media = msg.get("media")
        if type(media) is not dict:
            raise _MalformedError("'media' is missing or not an object")
        payload = media.get("payload")
        if type(payload) is not str:
            raise _MalformedError("'media.payload' is missing or not a string")
        try:
            # strict_mode rejects stray characters and bad padding instead of skipping them.
            audio = wire.b64decode(payload)
        except ValueError:  # binascii.Error, and non-ASCII text
            raise _MalformedError("'media.payload' is not valid base64") from None
        track = _str(media, "track", "media")
        if track not in _MEDIA_TRACKS:
            raise _MalformedError(f"'media.track' is not inbound or outbound: {_short(track)!r}")
        return MediaReceived(
            payload=audio,
            track=track,
            chunk=_int(media, "chunk", "media"),
            timestamp_ms=_int(media, "timestamp", "media"),
        )

    def _on_connected(self, msg: dict[str, Any]) -> Connected:
        return Connected(protocol=_str(msg, "protocol"), version=_str(msg, "version"))

    def _on_start(self, msg: dict[str, Any]) -> StreamStarted:
        if self.stream_sid is not None:
            raise _MalformedError("stream already started")
        start = _obj(msg, "start")
        # The SID is at the top level and inside "start"; either will do, but they must agree.
        outer, inner = msg.get("streamSid"), start.get("streamSid")
        stream_sid = inner if outer is None else outer
        if inner is not None and inner != stream_sid:
            raise _MalformedError("'streamSid' and 'start.streamSid' differ")
        # The builders splice the SID into JSON unescaped: accept only what Twilio issues.
        if not (type(stream_sid) is str and stream_sid.isascii() and stream_sid.isalnum()):
            raise _MalformedError("'streamSid' is missing or not alphanumeric")
        tracks = start.get("tracks")
        if type(tracks) is not list or not all(type(t) is str for t in tracks):
            raise _MalformedError("'start.tracks' is missing or not a list of strings")
        media_format = _obj(start, "mediaFormat", "start")
        params = start.get("customParameters", {})
        # Twilio sends {} when the TwiML has no <Parameter>; tolerate a missing key as well.
        if type(params) is not dict or not all(type(v) is str for v in params.values()):
            raise _MalformedError("'start.customParameters' is not an object of strings")
        media = (
            _str(media_format, "encoding", "start.mediaFormat"),
            _int(media_format, "sampleRate", "start.mediaFormat"),
            _int(media_format, "channels", "start.mediaFormat"),
        )
        if media != _MEDIA_FORMAT:
            # What <Connect><Stream> always sends; anything else would be decoded as noise.
            raise _MalformedError(f"'start.mediaFormat' is not 8 kHz mono mu-law: {media!r}")
        started = StreamStarted(
            stream_sid=stream_sid,
            call_sid=_str(start, "callSid", "start"),
            account_sid=_str(start, "accountSid", "start"),
            tracks=tuple(tracks),
            encoding=_str(media_format, "encoding", "start.mediaFormat"),
            sample_rate=_int(media_format, "sampleRate", "start.mediaFormat"),
            channels=_int(media_format, "channels", "start.mediaFormat"),
            custom_parameters=MappingProxyType(dict(params)),
        )
        # Commit state only once the whole message has been accepted.
        self.stream_sid = stream_sid
        self._call_sid = started.call_sid
        return started

    def _on_mark(self, msg: dict[str, Any]) -> MarkPlayed:
        self._check_stream(msg)
        return MarkPlayed(name=_str(_obj(msg, "mark"), "name", "mark"))

    def _on_dtmf(self, msg: dict[str, Any]) -> DtmfReceived:
        self._check_stream(msg)
        dtmf = _obj(msg, "dtmf")
        digit = _str(dtmf, "digit", "dtmf")
        if len(digit) != 1 or digit not in _DTMF_DIGITS:
            raise _MalformedError(f"'dtmf.digit' is not a keypad digit: {_short(digit)!r}")
        return DtmfReceived(digit=digit, track=_str(dtmf, "track", "dtmf"))

    def _on_stop(self, msg: dict[str, Any]) -> StreamStopped:
        self._check_stream(msg)
        call_sid = _str(_obj(msg, "stop"), "callSid", "stop")
        if call_sid != self._call_sid:
            raise _MalformedError("'stop.callSid' is not the started call's")
        self._stopped = True
        return StreamStopped(call_sid=call_sid)

    def _check_stream(self, msg: dict[str, Any]) -> None:
        """Stream events need a started, not yet stopped stream, and must name it.

        A missing streamSid counts as a different one: Twilio always sends it.
        """
        if self.stream_sid is None:
            raise _MalformedError("stream not started")
        if self._stopped:
            raise _MalformedError("stream already stopped")
        if msg.get("streamSid") != self.stream_sid:
            raise _MalformedError("'streamSid' is not the started stream's")

    # -- us -> Twilio ------------------------------------------------------------------------------

    def media(self, ulaw: bytes) -> str:
        """Build a ``media`` frame of raw mu-law 8 kHz audio (any length; Twilio buffers it)."""
        sid = self._started_sid()
        payload = wire.b64encode(ulaw)
        # The SID is [A-Za-z0-9]+ (checked at start) and base64 needs no escaping: no json.dumps.
        return '{"event":"media","streamSid":"' + sid + '","media":{"payload":"' + payload + '"}}'

    def mark(self, name: str) -> str:
        """Build a ``mark`` frame; Twilio echoes ``name`` once the audio sent before it played."""
        sid = self._started_sid()
        # The name is ours but arbitrary text: json.dumps escapes quotes, backslashes and non-ASCII.
        return f'{{"event":"mark","streamSid":"{sid}","mark":{{"name":{json.dumps(name)}}}}}'

    def clear(self) -> str:
        """Build a ``clear`` frame: Twilio drops buffered audio and echoes all pending marks."""
        return f'{{"event":"clear","streamSid":"{self._started_sid()}"}}'

    def _started_sid(self) -> str:
        if self.stream_sid is None:
            raise TelephonyError("cannot send on a Twilio media stream before its 'start' arrived")
        return self.stream_sid


# -- field helpers: each raises _MalformedError with a reason a log reader can act on --------------


def _field(key: str, where: str) -> str:
    return f"'{where}.{key}'" if where else f"'{key}'"


def _obj(container: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    value = container.get(key)
    if type(value) is not dict:
        raise _MalformedError(f"{_field(key, where)} is missing or not an object")
    return value


def _str(container: dict[str, Any], key: str, where: str = "") -> str:
    value = container.get(key)
    if type(value) is not str:
        raise _MalformedError(f"{_field(key, where)} is missing or not a string")
    return value


def _int(container: dict[str, Any], key: str, where: str) -> int:
    """A non-negative integer sent as a JSON number or a decimal string (Twilio uses both)."""
    value = container.get(key)
    if type(value) is int:
        number = value
    elif type(value) is str and value.isascii() and value.isdigit() and len(value) <= _MAX_DIGITS:
        # isascii() first: isdigit() alone admits superscripts and other scripts' digits.
        number = int(value)
    elif type(value) is float and value.is_integer():
        number = int(value)
    else:
        raise _MalformedError(f"{_field(key, where)} is missing or not an integer")
    if number < 0:
        raise _MalformedError(f"{_field(key, where)} is negative")
    return number


def _short(text: str) -> str:
    return text[:RAW_LIMIT]


def _error(reason: str, raw: str) -> ProtocolError:
    return ProtocolError(reason=reason, raw=_short(raw))
