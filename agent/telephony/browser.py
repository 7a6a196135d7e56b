"""Sans-I/O server side of the browser softphone's media stream (``/console/phone``).

The console page is one more carrier: its WebSocket carries JSON TEXT frames in a small protocol
of our own (docs/console.md), close to Twilio's so that a call from the page runs through the
same :class:`~agent.call.session.CallSession` as a phone call, with the same events:

page -> bridge
    ``{"event":"start","callSid":"CO…","ticket":"ct1.…","mediaFormat":{…}}`` once, first;
    ``{"event":"media","payload":"<base64 mu-law>"}`` the microphone, 8 kHz mu-law, 20 ms a frame;
    ``{"event":"mark","name":"m3"}`` a mark echoed once the audio before it has played;
    ``{"event":"dtmf","digit":"5"}`` a key of the page's keypad;
    ``{"event":"stop"}`` hang up.
bridge -> page
    ``{"event":"media","payload":…}``, ``{"event":"mark","name":…}``, ``{"event":"clear"}``.

One socket is one call, so frames carry no stream SID. The audio is what a phone call carries
(8 kHz mu-law): the agent is heard, and hears, as on the phone, and the session's audio path is
the one Twilio calls use. Like :mod:`agent.telephony.twilio`, wire input never raises: anything
malformed comes back as a :class:`ProtocolError` to log and drop.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from agent import wire
from agent.errors import TelephonyError
from agent.telephony.twilio import (
    RAW_LIMIT,
    DtmfReceived,
    MarkPlayed,
    MediaReceived,
    ProtocolError,
    StreamStarted,
    StreamStopped,
    TwilioEvent,
)

__all__ = ["ACCOUNT_SID", "CONSOLE_CALL_SID", "MEDIA_FORMAT", "BrowserMediaStream"]

#: What console calls' records and tools see as the account: no carrier account is involved.
ACCOUNT_SID: Final = "console"
#: A console call's SID: "CO" and 32 hex digits (Twilio's are "CA…"), issued with its ticket.
CONSOLE_CALL_SID: Final = re.compile(r"CO[0-9a-f]{32}")
#: The one audio format: what a phone call carries.
MEDIA_FORMAT: Final = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
_DIGITS: Final = frozenset("0123456789*#ABCD")
#: The longest mark name the page may echo (ours are "m" and a counter).
_MARK_LIMIT: Final = 64


class _MalformedError(Exception):
    """Carries a ProtocolError reason out of the field checks; never escapes this module."""


class BrowserMediaStream:
    """Server side of one softphone socket: parses what the page sends, builds what we send.

    ``call_sid`` is None until a valid ``start``; every other page event needs a started,
    not yet stopped stream.
    """

    __slots__ = ("_bytes_in", "_chunks", "_stopped", "call_sid")

    def __init__(self) -> None:
        self.call_sid: str | None = None
        self._stopped = False
        self._chunks = 0
        self._bytes_in = 0

    # -- page -> us ------------------------------------------------------------------------------

    def receive_text(self, text: str) -> TwilioEvent:
        """Parse one TEXT frame from the page into an event; never raises."""
        try:
            msg = wire.loads(text)
        except ValueError:  # whatever orjson refuses: bad syntax, deep nesting, NaN, huge numbers
            return _error("invalid JSON", text)
        if type(msg) is not dict:
            return _error("message is not a JSON object", text)
        event = msg.get("event")
        try:
            if event == "media":  # nearly all the traffic: first
                return self._on_media(msg)
            if event == "start":
                return self._on_start(msg)
            if event == "mark":
                self._check_started()
                name = _str(msg, "name")
                if len(name) > _MARK_LIMIT:
                    raise _MalformedError("'name' is too long")
                return MarkPlayed(name=name)
            if event == "dtmf":
                self._check_started()
                digit = _str(msg, "digit")
                if len(digit) != 1 or digit not in _DIGITS:
                    raise _MalformedError(f"'digit' is not a keypad digit: {digit[:8]!r}")
                return DtmfReceived(digit=digit, track="inbound")
            if event == "stop":
                self._check_started()
                self._stopped = True
                assert self.call_sid is not None
                return StreamStopped(call_sid=self.call_sid)
        except _MalformedError as exc:
            # A start carries its ticket: a log line must not (it may still be good for a minute).
            return _error(f"{event}: {exc}", "" if event == "start" else text)
        return _error(f"unknown event {repr(event)[:RAW_LIMIT]}", text)

    def receive_bytes(self, data: bytes) -> ProtocolError:
        """Report a BINARY frame: the page sends text only."""
        return ProtocolError(reason="unexpected binary frame", raw=repr(data[:RAW_LIMIT]))

    def _on_media(self, msg: dict[str, Any]) -> MediaReceived:
        self._check_started()
        payload = _str(msg, "payload")
        try:
            audio = wire.b64decode(payload)
        except ValueError:
            raise _MalformedError("'payload' is not valid base64") from None
        timestamp_ms = self._bytes_in // 8  # 8 kHz mu-law: 8 bytes a millisecond
        self._bytes_in += len(audio)
        self._chunks += 1
        return MediaReceived(
            payload=audio, track="inbound", chunk=self._chunks, timestamp_ms=timestamp_ms
        )

    def _on_start(self, msg: dict[str, Any]) -> StreamStarted:
        if self.call_sid is not None:
            raise _MalformedError("stream already started")
        call_sid = _str(msg, "callSid")
        if not CONSOLE_CALL_SID.fullmatch(call_sid):
            raise _MalformedError("'callSid' is not a console call SID")
        ticket = _str(msg, "ticket")
        media_format = msg.get("mediaFormat", MEDIA_FORMAT)
        if media_format != MEDIA_FORMAT:
            raise _MalformedError(f"'mediaFormat' is not 8 kHz mono mu-law: {media_format!r}")
        params: Mapping[str, str] = MappingProxyType({"token": ticket})
        self.call_sid = call_sid
        return StreamStarted(
            stream_sid="BS" + call_sid[2:],
            call_sid=call_sid,
            account_sid=ACCOUNT_SID,
            tracks=("inbound",),
            encoding="audio/x-mulaw",
            sample_rate=8000,
            channels=1,
            custom_parameters=params,
        )

    def _check_started(self) -> None:
        if self.call_sid is None:
            raise _MalformedError("stream not started")
        if self._stopped:
            raise _MalformedError("stream already stopped")

    # -- us -> page ------------------------------------------------------------------------------

    def media(self, ulaw: bytes) -> str:
        """A ``media`` frame of raw 8 kHz mu-law audio (any length: the page buffers it)."""
        self._started()
        payload = wire.b64encode(ulaw)
        return '{"event":"media","payload":"' + payload + '"}'

    def mark(self, name: str) -> str:
        """A ``mark`` frame; the page echoes it once the audio sent before it has played."""
        self._started()
        return '{"event":"mark","name":' + json.dumps(name) + "}"

    def clear(self) -> str:
        """A ``clear`` frame: the page drops its buffered audio and echoes its pending marks."""
        self._started()
        return '{"event":"clear"}'

    def _started(self) -> None:
        if self.call_sid is None:
            raise TelephonyError("cannot send on a console stream before its 'start' arrived")


def _str(container: dict[str, Any], key: str) -> str:
    value = container.get(key)
    if type(value) is not str:
        raise _MalformedError(f"'{key}' is missing or not a string")
    return value


def _error(reason: str, raw: str) -> ProtocolError:
    return ProtocolError(reason=reason, raw=raw[:RAW_LIMIT])
