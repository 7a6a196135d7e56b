"""Telnyx: the sans-I/O server side of a bidirectional Media Streaming socket, the TeXML that
starts it, and Telnyx's webhook signatures.

The socket (https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket)
carries JSON TEXT frames, close to Twilio's but in snake case and keyed by ``stream_id``:

Telnyx -> us
    ``connected``; ``start`` (``stream_id``, ``start.call_control_id``, ``start.media_format``,
    ``start.custom_parameters``: the TeXML ``<Parameter>`` values); ``media`` (``media.track``,
    ``chunk``, ``timestamp``, ``payload``: base64 RTP payload without headers); ``dtmf``
    (``dtmf.digit``); ``mark`` (the echo of ours: "sent back when the immediately preceding media
    finishes playing, or immediately if no audio is queued"; a ``clear`` also returns queued
    marks); ``error``; ``stop``.
us -> Telnyx (bidirectional mode ``rtp``)
    ``{"event":"media","media":{"payload":…}}``, ``{"event":"mark","mark":{"name":…}}``,
    ``{"event":"clear"}`` (stops playback, drops queued media).

The events are the ones :mod:`agent.telephony.twilio` defines, so a
:class:`~agent.call.session.CallSession` runs a Telnyx call exactly as a Twilio one. The call's
SID is Telnyx's ``call_control_id``: the TeXML webhook's ``CallSid`` is the same value, which is
what binds the stream to its signed webhook (the stream ticket). Like the Twilio core, wire input
never raises: anything malformed is a :class:`ProtocolError` to log and drop.

Audio: the TeXML asks for PCMU both ways (``codec`` and ``bidirectionalCodec``); Telnyx transcodes
a PCMA call leg to it ("transcoding is only supported between PCMU and PCMA codecs",
https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/stream), so the bridge's
audio path stays mu-law, with no per-frame conversion here.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from agent import wire
from agent.errors import TelephonyError
from agent.telephony.twilio import (
    RAW_LIMIT,
    Connected,
    DtmfReceived,
    MarkPlayed,
    MediaReceived,
    ProtocolError,
    StreamStarted,
    StreamStopped,
    TwilioEvent,
)
from agent.telephony.webhooks import StreamTokens, _attr, _check_stream_url

__all__ = [
    "SIGNATURE_HEADER",
    "SIGNATURE_TOLERANCE_S",
    "TIMESTAMP_HEADER",
    "TelnyxMediaStream",
    "stream_texml",
    "telnyx_tickets",
    "verify_signature",
]

#: https://developers.telnyx.com/docs/development/api-fundamentals/webhooks and
#: https://developers.telnyx.com/docs/development/sdk/python/webhooks: Telnyx signs
#: ``{timestamp}|{raw body}`` with Ed25519; the portal shows the account's public key; "reject
#: signatures outside the application's replay window".
SIGNATURE_HEADER: Final = "telnyx-signature-ed25519"
TIMESTAMP_HEADER: Final = "telnyx-timestamp"
#: A webhook signed longer ago (or further ahead) than this is refused: a replay, or a bad clock.
SIGNATURE_TOLERANCE_S: Final = 300.0

#: Telnyx's media format for a stream the TeXML below starts.
MEDIA_FORMAT: Final = ("PCMU", 8000, 1)
_TRACKS: Final = frozenset({"inbound", "outbound"})
_DIGITS: Final = frozenset("0123456789*#ABCD")
# Stream IDs are UUIDs ("32DE0DEA-53CB-4B21-89A4-9E1819C043BC" in Telnyx's example); control IDs
# "v3:" and base64url. Checked before either is used as a SID (records, logs, REST paths).
_STREAM_ID: Final = re.compile(r"[0-9A-Za-z-]{1,64}")
_CALL_CONTROL_ID: Final = re.compile(r"[0-9A-Za-z:_-]{1,200}")
_MAX_DIGITS: Final = 18

#: The stream tickets' MAC domain and prefix: neither Twilio's nor the console's open a Telnyx
#: stream, nor a Telnyx one theirs, whatever the shared secret.
TICKET_DOMAIN: Final = b"telnyx-stream-token/v1"
TICKET_PREFIX: Final = "tx1."


def telnyx_tickets(secret: bytes, ttl_s: float = 60.0) -> StreamTokens:
    """Stream tickets for Telnyx calls: issued by the signed TeXML webhook, used by its stream."""
    return StreamTokens(secret, ttl_s, domain=TICKET_DOMAIN, prefix=TICKET_PREFIX)


class _MalformedError(Exception):
    """Carries a ProtocolError reason out of the field checks; never escapes this module."""


class TelnyxMediaStream:
    """Server side of one Telnyx media stream: parses what Telnyx sends, builds what we send.

    ``stream_id`` is None until a valid ``start``; from then on every stream event must name it.
    """

    __slots__ = ("_call_id", "_stopped", "stream_id")

    def __init__(self) -> None:
        self.stream_id: str | None = None
        self._call_id: str | None = None
        self._stopped = False

    # -- Telnyx -> us ----------------------------------------------------------------------------

    def receive_text(self, text: str) -> TwilioEvent:
        """Parse one TEXT frame from Telnyx into an event; never raises."""
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
            if event == "connected":
                version = msg.get("version")
                return Connected(protocol="telnyx", version=version if type(version) is str else "")
            if event == "start":
                return self._on_start(msg)
            if event == "mark":
                self._check_stream(msg)
                return MarkPlayed(name=_str(_obj(msg, "mark"), "name", "mark"))
            if event == "dtmf":
                self._check_stream(msg)
                digit = _str(_obj(msg, "dtmf"), "digit", "dtmf")
                if len(digit) != 1 or digit not in _DIGITS:
                    raise _MalformedError(f"'dtmf.digit' is not a keypad digit: {digit[:8]!r}")
                return DtmfReceived(digit=digit, track="inbound")
            if event == "stop":
                self._check_stream(msg)
                self._stopped = True
                assert self._call_id is not None
                return StreamStopped(call_sid=self._call_id)
            if event == "error":
                # Telnyx reports a problem with what we sent (a bad frame, a rate limit): the
                # stream goes on, the line is logged.
                payload = msg.get("payload")
                detail = json.dumps(payload)[:RAW_LIMIT] if payload is not None else ""
                return _error(f"telnyx reported an error: {detail}", text)
        except _MalformedError as exc:
            # A start carries its ticket: a log line must not (it may still be good for a minute).
            return _error(f"{event}: {exc}", "" if event == "start" else text)
        return _error(f"unknown event {repr(event)[:RAW_LIMIT]}", text)

    def receive_bytes(self, data: bytes) -> ProtocolError:
        """A BINARY frame, which Telnyx does not send."""
        return ProtocolError(reason="unexpected binary frame", raw=repr(data[:RAW_LIMIT]))

    def _on_media(self, msg: dict[str, Any]) -> MediaReceived:
        self._check_stream(msg)
        media = _obj(msg, "media")
        payload = media.get("payload")
        if type(payload) is not str:
            raise _MalformedError("'media.payload' is missing or not a string")
        try:
            audio = wire.b64decode(payload)
        except ValueError:
            raise _MalformedError("'media.payload' is not valid base64") from None
        track = media.get("track", "inbound")
        if track not in _TRACKS:
            raise _MalformedError(f"'media.track' is not inbound or outbound: {str(track)[:20]!r}")
        return MediaReceived(
            payload=audio,
            track=track,
            chunk=_int(media, "chunk"),
            timestamp_ms=_int(media, "timestamp"),
        )

    def _on_start(self, msg: dict[str, Any]) -> StreamStarted:
        if self.stream_id is not None:
            raise _MalformedError("stream already started")
        stream_id = msg.get("stream_id")
        if type(stream_id) is not str or not _STREAM_ID.fullmatch(stream_id):
            raise _MalformedError("'stream_id' is missing or not a stream ID")
        start = _obj(msg, "start")
        call_id = _str(start, "call_control_id", "start")
        if not _CALL_CONTROL_ID.fullmatch(call_id):
            raise _MalformedError("'start.call_control_id' is not a call control ID")
        media_format = _obj(start, "media_format", "start")
        found = (
            media_format.get("encoding"),
            media_format.get("sample_rate"),
            media_format.get("channels", 1),
        )
        if found != MEDIA_FORMAT:
            raise _MalformedError(f"'start.media_format' is not 8 kHz mono PCMU: {found!r}")
        params = start.get("custom_parameters", {})
        if type(params) is not dict or not all(type(v) is str for v in params.values()):
            raise _MalformedError("'start.custom_parameters' is not an object of strings")
        user = start.get("user_id")
        self.stream_id, self._call_id = stream_id, call_id
        return StreamStarted(
            stream_sid=stream_id,
            call_sid=call_id,
            account_sid=user if type(user) is str else "",
            tracks=("inbound",),
            encoding="audio/x-mulaw",
            sample_rate=8000,
            channels=1,
            custom_parameters=MappingProxyType(dict(params)),
        )

    def _check_stream(self, msg: dict[str, Any]) -> None:
        if self.stream_id is None:
            raise _MalformedError("stream not started")
        if self._stopped:
            raise _MalformedError("stream already stopped")
        if msg.get("stream_id", self.stream_id) != self.stream_id:
            raise _MalformedError("'stream_id' is not the started stream's")

    # -- us -> Telnyx ----------------------------------------------------------------------------

    def media(self, ulaw: bytes) -> str:
        """A ``media`` frame of 8 kHz mu-law (Telnyx takes 20 ms to 30 s a frame)."""
        self._started()
        payload = wire.b64encode(ulaw)
        return '{"event":"media","media":{"payload":"' + payload + '"}}'

    def mark(self, name: str) -> str:
        """A ``mark`` frame; Telnyx echoes it once the media before it has played."""
        self._started()
        return '{"event":"mark","mark":{"name":' + json.dumps(name) + "}}"

    def clear(self) -> str:
        """A ``clear`` frame: Telnyx stops playback, drops queued media and returns queued marks."""
        self._started()
        return '{"event":"clear"}'

    def _started(self) -> None:
        if self.stream_id is None:
            raise TelephonyError("cannot send on a Telnyx media stream before its 'start' arrived")


# -- TeXML -----------------------------------------------------------------------------------------

#: How long the TeXML keeps the call up after starting the stream (``<Pause>``): the call ends
#: when the bridge hangs up (Call Control ``hangup``) or the caller does, long before this.
HOLD_S: Final = 4 * 3600


def stream_texml(stream_url: str, parameters: Mapping[str, str]) -> str:
    """TeXML for the voice webhook: start a bidirectional RTP stream (PCMU both ways) to
    ``stream_url`` with ``parameters`` (they reach ``start.custom_parameters``), then hold the
    call while the stream runs.

    https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/stream: ``<Stream>``
    under ``<Start>``, ``bidirectionalMode`` ``rtp`` (default ``mp3``), ``bidirectionalCodec``
    (default PCMU), ``codec`` for what Telnyx streams to us. ``ValueError`` for a stream URL that
    is not ws(s):// or has a query, as for Twilio.
    """
    _check_stream_url(stream_url)
    params = "".join(
        f"<Parameter name={_attr(name)} value={_attr(value)}/>"
        for name, value in parameters.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Start>'
        f'<Stream url={_attr(stream_url)} track="inbound_track" codec="PCMU" '
        f'bidirectionalMode="rtp" bidirectionalCodec="PCMU">{params}</Stream>'
        f'</Start><Pause length="{HOLD_S}"/></Response>'
    )


# -- webhook signatures ----------------------------------------------------------------------------


def verify_signature(
    public_key: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now: float,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> bool:
    """Whether ``signature`` (base64, the ``telnyx-signature-ed25519`` header) is Telnyx's
    Ed25519 signature of ``{timestamp}|{body}`` under ``public_key`` (base64, from the portal),
    with ``timestamp`` (Unix seconds, ``telnyx-timestamp``) within ``tolerance_s`` of ``now``.

    Any malformed input is False, never an exception.
    """
    # cryptography (PyCA): Ed25519 is not in the standard library; imported here so that a
    # bridge that takes no Telnyx calls never loads it.
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not signature or not timestamp:
        return False
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= _MAX_DIGITS):
        return False
    if abs(now - int(timestamp)) > tolerance_s:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        raw = base64.b64decode(signature.encode("ascii", "replace"), validate=True)
        key.verify(raw, timestamp.encode("ascii") + b"|" + body)
    except (ValueError, InvalidSignature):  # binascii.Error is a ValueError
        return False
    return True


# -- field helpers ---------------------------------------------------------------------------------


def _obj(container: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    value = container.get(key)
    if type(value) is not dict:
        raise _MalformedError(f"'{where + '.' if where else ''}{key}' is missing or not an object")
    return value


def _str(container: dict[str, Any], key: str, where: str = "") -> str:
    value = container.get(key)
    if type(value) is not str:
        raise _MalformedError(f"'{where + '.' if where else ''}{key}' is missing or not a string")
    return value


def _int(container: dict[str, Any], key: str) -> int:
    """A counter Telnyx sends as a decimal string (or a number); 0 when absent."""
    value = container.get(key, 0)
    if type(value) is int and value >= 0:
        return value
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= _MAX_DIGITS:
        return int(value)
    raise _MalformedError(f"'media.{key}' is not a non-negative integer")


def _error(reason: str, raw: str) -> ProtocolError:
    return ProtocolError(reason=reason, raw=raw[:RAW_LIMIT])
