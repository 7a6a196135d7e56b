"""Plivo: the sans-I/O server side of a bidirectional Audio Stream, the XML that starts it, and
Plivo's V3 webhook signatures.

The socket (https://www.plivo.com/docs/voice-agents/audio-streaming/concepts/audio-streaming-reference)
carries JSON TEXT frames keyed by ``streamId``:

Plivo -> us
    ``start`` (``start.callId``, ``start.streamId``, ``start.accountId``, ``start.tracks``,
    ``start.mediaFormat``); ``media`` (``media.track``, ``timestamp``, ``chunk``, ``payload``);
    ``dtmf``; ``playedStream`` (a ``checkpoint`` of ours whose audio has played);
    ``clearedAudio`` (our ``clearAudio`` is done); ``stop`` if the stream is stopped, though a
    call that ends mostly just closes the socket.
us -> Plivo
    ``playAudio`` (``media.contentType``, ``sampleRate``, ``payload``,
    https://docs.plivo.com/docs/voice/xml/audiostream/stream-events-to-plivo/play-audio-event),
    ``checkpoint`` (``name``), ``clearAudio``.

The events are :mod:`agent.telephony.twilio`'s, with Plivo's checkpoint as a mark: a
:class:`~agent.call.session.CallSession` runs a Plivo call as it runs a Twilio one. Plivo's
``extraHeaders`` admit letters and digits only, so the stream ticket travels in the stream URL's
query string instead (``?ticket=…``), read by the server before the socket is accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit
from xml.sax.saxutils import escape

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
from agent.telephony.webhooks import StreamTokens

__all__ = [
    "NONCE_HEADER",
    "SIGNATURE_HEADER",
    "PlivoMediaStream",
    "compute_signature",
    "plivo_tickets",
    "stream_xml",
    "verify_signature",
]

#: Plivo's V3 signature headers: one nonce per request. The signed text is what plivo-python's
#: ``plivo.utils.signature_v3.validate_v3_signature`` builds (the tests check against it).
SIGNATURE_HEADER: Final = "X-Plivo-Signature-V3"
NONCE_HEADER: Final = "X-Plivo-Signature-V3-Nonce"

_DIGITS: Final = frozenset("0123456789*#ABCD")
_TRACKS: Final = frozenset({"inbound", "outbound"})
# Plivo's call and stream IDs are UUIDs; checked before either is used as a SID.
_UUID: Final = re.compile(r"[0-9A-Za-z-]{1,64}")
_MARK_LIMIT: Final = 64
_MAX_DIGITS: Final = 18

TICKET_DOMAIN: Final = b"plivo-stream-token/v1"
TICKET_PREFIX: Final = "pv1."


def plivo_tickets(secret: bytes, ttl_s: float = 60.0) -> StreamTokens:
    """Stream tickets for Plivo calls; neither Twilio's, Telnyx's nor the console's open one."""
    return StreamTokens(secret, ttl_s, domain=TICKET_DOMAIN, prefix=TICKET_PREFIX)


class _MalformedError(Exception):
    """Carries a ProtocolError reason out of the field checks; never escapes this module."""


class PlivoMediaStream:
    """Server side of one Plivo audio stream: parses what Plivo sends, builds what we send.

    ``ticket`` is the stream URL's ``ticket`` query value, which the server read at the upgrade:
    it becomes the started stream's ``custom_parameters["token"]``, as Twilio's ``<Parameter>``.
    """

    __slots__ = ("_call_id", "_stopped", "stream_id", "ticket")

    def __init__(self, ticket: str = "") -> None:
        self.ticket = ticket
        self.stream_id: str | None = None
        self._call_id: str | None = None
        self._stopped = False

    # -- Plivo -> us -----------------------------------------------------------------------------

    def receive_text(self, text: str) -> TwilioEvent:
        """Parse one TEXT frame from Plivo into an event; never raises."""
        try:
            msg = wire.loads(text)
        except ValueError:  # whatever orjson refuses: bad syntax, deep nesting, NaN, huge numbers
            return _error("invalid JSON", text)
        if type(msg) is not dict:
            return _error("message is not a JSON object", text)
        event = msg.get("event")
        try:
            if event == "media":
                return self._on_media(msg)
            if event == "start":
                return self._on_start(msg)
            if event == "playedStream":
                self._check_stream(msg)
                name = _str(msg, "name")
                if len(name) > _MARK_LIMIT:
                    raise _MalformedError("'name' is too long")
                return MarkPlayed(name=name)
            if event == "clearedAudio":
                self._check_stream(msg)
                # Only an acknowledgement: the session dropped its pending marks when it sent
                # clearAudio. Connected is the event a session ignores once started.
                return Connected(protocol="plivo", version="clearedAudio")
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
        except _MalformedError as exc:
            return _error(f"{event}: {exc}", text)
        return _error(f"unknown event {repr(event)[:RAW_LIMIT]}", text)

    def receive_bytes(self, data: bytes) -> ProtocolError:
        """A BINARY frame, which Plivo does not send."""
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
        # Plivo's media timestamp is wall-clock Unix milliseconds, not the stream's offset: the
        # session does not read it, so it is carried as sent.
        return MediaReceived(
            payload=audio,
            track=track,
            chunk=_int(media, "chunk"),
            timestamp_ms=_int(media, "timestamp"),
        )

    def _on_start(self, msg: dict[str, Any]) -> StreamStarted:
        if self.stream_id is not None:
            raise _MalformedError("stream already started")
        start = _obj(msg, "start")
        call_id, stream_id = _str(start, "callId", "start"), _str(start, "streamId", "start")
        if not (_UUID.fullmatch(call_id) and _UUID.fullmatch(stream_id)):
            raise _MalformedError("'start.callId' or 'start.streamId' is not a UUID")
        media_format = _obj(start, "mediaFormat", "start")
        found = (media_format.get("encoding"), media_format.get("sampleRate"))
        if found != ("audio/x-mulaw", 8000):
            raise _MalformedError(f"'start.mediaFormat' is not 8 kHz mu-law: {found!r}")
        tracks = start.get("tracks", ["inbound"])
        if type(tracks) is not list or not all(type(t) is str for t in tracks):
            raise _MalformedError("'start.tracks' is not a list of strings")
        account = start.get("accountId")
        self.stream_id, self._call_id = stream_id, call_id
        return StreamStarted(
            stream_sid=stream_id,
            call_sid=call_id,
            account_sid=account if type(account) is str else "",
            tracks=tuple(tracks),
            encoding="audio/x-mulaw",
            sample_rate=8000,
            channels=1,
            custom_parameters=MappingProxyType({"token": self.ticket}),
        )

    def _check_stream(self, msg: dict[str, Any]) -> None:
        if self.stream_id is None:
            raise _MalformedError("stream not started")
        if self._stopped:
            raise _MalformedError("stream already stopped")
        if msg.get("streamId", self.stream_id) != self.stream_id:
            raise _MalformedError("'streamId' is not the started stream's")

    # -- us -> Plivo -----------------------------------------------------------------------------

    def media(self, ulaw: bytes) -> str:
        """A ``playAudio`` frame of 8 kHz mu-law."""
        sid = self._started()
        payload = wire.b64encode(ulaw)
        return (
            '{"event":"playAudio","streamId":"' + sid + '","media":{"contentType":"audio/x-mulaw",'
            '"sampleRate":8000,"payload":"' + payload + '"}}'
        )

    def mark(self, name: str) -> str:
        """A ``checkpoint``; Plivo answers ``playedStream`` once the audio before it has played."""
        sid = self._started()
        return '{"event":"checkpoint","streamId":"' + sid + '","name":' + json.dumps(name) + "}"

    def clear(self) -> str:
        """A ``clearAudio``: Plivo drops the audio it has queued (and answers ``clearedAudio``)."""
        return '{"event":"clearAudio","streamId":"' + self._started() + '"}'

    def _started(self) -> str:
        if self.stream_id is None:
            raise TelephonyError("cannot send on a Plivo audio stream before its 'start' arrived")
        return self.stream_id


# -- XML -------------------------------------------------------------------------------------------

#: How long Plivo may stream (``streamTimeout``, default a day): the bridge's longest call.
STREAM_TIMEOUT_S: Final = 4 * 3600


def stream_xml(stream_url: str) -> str:
    """Plivo XML for the answer URL: a bidirectional mu-law stream to ``stream_url`` (the URL is
    the element's text) that holds the call while it runs (``keepCallAlive``).

    https://docs.plivo.com/docs/voice/xml/audiostream: ``bidirectional``, ``keepCallAlive``,
    ``contentType`` ``audio/x-mulaw;rate=8000`` (default L16), ``streamTimeout``; with
    ``bidirectional`` the track must be ``inbound``.
    """
    parts = urlsplit(stream_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc or parts.fragment:
        raise ValueError(f"stream URL must be an absolute ws:// or wss:// URL, got {stream_url!r}")
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Stream bidirectional="true" keepCallAlive="true" audioTrack="inbound" '
        f'contentType="audio/x-mulaw;rate=8000" streamTimeout="{STREAM_TIMEOUT_S}">'
        f"{escape(stream_url)}</Stream></Response>"
    )


def dial_xml(number: str) -> str:
    """Plivo XML that dials ``number``: where a transfer sends the call."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Dial>'
        f"<Number>{escape(number)}</Number></Dial></Response>"
    )


# -- V3 signatures ---------------------------------------------------------------------------------


def _signed_url(method: str, url: str, params: Mapping[str, str]) -> str:
    """The text Plivo signs before ``.{nonce}``: the URL without its query, then the query's
    parameters sorted (``?k=v&…``) for GET, or for POST the form's, sorted and concatenated
    (``?`` + query + ``.`` + ``k1v1k2v2…``), as plivo-python's ``validate_v3_signature`` does."""
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if method == "GET":
        query.update(params)
        form: Mapping[str, str] = {}
    else:
        form = params
    sorted_query = "&".join(f"{key}={query[key]}" for key in sorted(query))
    if sorted_query or form:
        base += "?" + sorted_query
    if sorted_query and form:
        base += "."
    return base + "".join(key + form[key] for key in sorted(form))


def compute_signature(
    auth_token: str, method: str, url: str, params: Mapping[str, str], nonce: str
) -> str:
    """Plivo's ``X-Plivo-Signature-V3`` for a request: HMAC-SHA256 under the auth token of the
    signed URL text and ``.{nonce}``, in base64."""
    text = f"{_signed_url(method.upper(), url, params)}.{nonce}"
    mac = hmac.new(auth_token.encode(), text.encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode("ascii")


def verify_signature(
    auth_token: str,
    method: str,
    url: str,
    params: Mapping[str, str],
    nonce: str | None,
    signature: str | None,
) -> bool:
    """Whether ``signature`` (the header: one or more, comma-separated, as after a key rotation)
    signs this request; constant-time, never raising on malformed input."""
    if not (signature and nonce):
        return False
    try:
        expected = compute_signature(auth_token, method, url, params, nonce).encode()
    except UnicodeEncodeError:
        return False
    given = [s.strip().encode("utf-8", "replace") for s in signature.split(",")]
    return any(hmac.compare_digest(expected, candidate) for candidate in given)


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
    value = container.get(key, 0)
    if type(value) is int and value >= 0:
        return value
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= _MAX_DIGITS:
        return int(value)
    raise _MalformedError(f"'media.{key}' is not a non-negative integer")


def _error(reason: str, raw: str) -> ProtocolError:
    return ProtocolError(reason=reason, raw=raw[:RAW_LIMIT])
