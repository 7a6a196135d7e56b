"""Telnyx and Plivo for the carrier simulator: the same simulated caller, another carrier's wire.

:class:`DialectPhone` is a :class:`~agent.sim.carrier.phone.Phone` whose messages are translated
to and from one carrier's protocol, so the caller's script, playback model and report are the
Twilio phone's, and only the wire differs (see :mod:`agent.telephony.telnyx` and
:mod:`agent.telephony.plivo` for the formats and their documentation):

telnyx
    ``POST {url}/telnyx/voice`` (TeXML form fields, Ed25519-signed with ``telnyx_signing_key``);
    ``<Start><Stream url>`` with ``<Parameter>``s; frames in snake case with ``stream_id``;
    ``clear`` returns queued marks, as Telnyx documents.
plivo
    ``POST {url}/plivo/answer`` (V3-signed with ``auth_token``); ``<Stream>`` whose text is the
    URL; ``playAudio`` / ``checkpoint`` / ``clearAudio`` from the bridge, ``playedStream`` and
    ``clearedAudio`` back (a clear answers no checkpoint); the call ends by closing the socket.

:func:`place_carrier_call` is the asyncio adapter, as :func:`~agent.sim.carrier.calls.place_call`
is for Twilio (which calls it for these carriers). No REST simulator here: a bridge hang-up or
transfer through Telnyx's or Plivo's API is not simulated (the bridge's stream close ends the
call).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import urlencode

import aiohttp

from agent.audio.codec import pcm16_to_ulaw
from agent.errors import TelephonyError
from agent.sim.carrier.calls import StreamObserver, connection_failure, run_stream
from agent.sim.carrier.phone import (
    _HTTP_TIMEOUT_S,
    _WS_CLOSE_TIMEOUT_S,
    CallReport,
    CarrierOptions,
    Message,
    Phone,
    _short,
)
from agent.telephony import plivo as plivo_wire

#: The carriers the simulator speaks besides Twilio.
DIALECTS: Final = ("telnyx", "plivo")
WEBHOOK_PATHS: Final = {"telnyx": "/telnyx/voice", "plivo": "/plivo/answer"}


class DialectPhone(Phone):
    """The simulated phone on Telnyx's or Plivo's wire (``carrier``)."""

    def __init__(
        self,
        carrier: str,
        options: CarrierOptions,
        utterances: Sequence[bytes],
        *,
        call_sid: str,
        account_sid: str,
        stream_sid: str,
    ) -> None:
        if carrier not in DIALECTS:
            raise ValueError(f"unknown carrier {carrier!r}: one of {', '.join(DIALECTS)}")
        super().__init__(
            options, utterances, call_sid=call_sid, account_sid=account_sid, stream_sid=stream_sid
        )
        self.carrier = carrier

    def connect(self, custom_parameters: Mapping[str, str]) -> list[Message]:
        return self._out(super().connect(custom_parameters))

    def tick(self) -> list[Message]:
        return self._out(super().tick())

    def hang_up(self) -> list[Message]:
        return self._out(super().hang_up())

    def receive_text(self, text: str) -> list[Message]:
        """One frame from the bridge, in this carrier's protocol."""
        try:
            message = json.loads(text)
        except ValueError:
            return super().receive_text(text)
        if not isinstance(message, dict):
            return super().receive_text(text)
        event = message.get("event")
        if self.carrier == "telnyx":
            # Telnyx's frames from the application name no stream: this socket is the stream.
            if event in ("media", "mark", "clear"):
                message = {**message, "streamSid": self.stream_sid}
            return self._out(super().receive_text(json.dumps(message)))
        # Plivo: frames carry the streamId they address.
        if message.get("streamId") != self.stream_sid and event in (
            "playAudio",
            "checkpoint",
            "clearAudio",
        ):
            self.note_problem(f"{event} with streamId {message.get('streamId')!r}")
            return []
        if event == "playAudio":
            media = message.get("media")
            if not isinstance(media, dict) or media.get("contentType") != "audio/x-mulaw":
                self.note_problem(f"playAudio that is not mu-law: {_short(text)}")
                return []
            twilio = {"event": "media", "streamSid": self.stream_sid, "media": media}
            return self._out(super().receive_text(json.dumps(twilio)))
        if event == "checkpoint":
            name = {"name": message.get("name")}
            twilio = {"event": "mark", "streamSid": self.stream_sid, "mark": name}
            return self._out(super().receive_text(json.dumps(twilio)))
        if event == "clearAudio":
            super().receive_text(json.dumps({"event": "clear", "streamSid": self.stream_sid}))
            # Plivo acknowledges the clear and answers none of the checkpoints it dropped.
            return [{"event": "clearedAudio", "sequenceNumber": 0, "streamId": self.stream_sid}]
        return super().receive_text(text)  # unknown: reported as a protocol error

    def undelivered(self, message: Message) -> None:
        if message.get("event") == "playedStream":
            message = {"event": "mark", "mark": {"name": message.get("name")}}
        super().undelivered(message)

    def _out(self, messages: list[Message]) -> list[Message]:
        translate = _to_telnyx if self.carrier == "telnyx" else _to_plivo
        out = []
        for message in messages:
            wire = translate(message, self)
            if wire is not None:
                out.append(wire)
        return out


def _to_telnyx(message: Message, phone: Phone) -> Message | None:
    """A Twilio-shaped phone message as Telnyx sends it."""
    event = message.get("event")
    sid = phone.stream_sid
    seq = message.get("sequenceNumber", "0")
    if event == "connected":
        return {"event": "connected", "version": "1.0.0"}
    if event == "start":
        start = message["start"]
        return {
            "event": "start",
            "sequence_number": seq,
            "start": {
                "user_id": phone.account_sid,
                "call_control_id": phone.call_sid,
                "client_state": None,
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
                "custom_parameters": start.get("customParameters", {}),
            },
            "stream_id": sid,
        }
    if event == "media":
        return {
            "event": "media",
            "sequence_number": seq,
            "media": message["media"],
            "stream_id": sid,
        }
    if event == "dtmf":
        digit = {"digit": message["dtmf"]["digit"]}
        return {"event": "dtmf", "sequence_number": seq, "stream_id": sid, "dtmf": digit}
    if event == "mark":
        return {"event": "mark", "sequence_number": seq, "stream_id": sid, "mark": message["mark"]}
    if event == "stop":
        stop = {"user_id": phone.account_sid, "call_control_id": phone.call_sid}
        return {"event": "stop", "sequence_number": seq, "stop": stop, "stream_id": sid}
    return message


def _to_plivo(message: Message, phone: Phone) -> Message | None:
    """A Twilio-shaped phone message as Plivo sends it (None: Plivo sends nothing for it)."""
    event = message.get("event")
    sid = phone.stream_sid
    seq = int(message.get("sequenceNumber", "0"))
    if event == "connected":
        return None  # Plivo's first frame is start
    if event == "start":
        return {
            "event": "start",
            "sequenceNumber": seq,
            "start": {
                "callId": phone.call_sid,
                "streamId": sid,
                "accountId": phone.account_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
            },
            "extra_headers": "",
        }
    if event == "media":
        media = message["media"]
        return {
            "event": "media",
            "sequenceNumber": seq,
            "streamId": sid,
            "media": {
                "track": "inbound",
                "timestamp": media["timestamp"],
                "chunk": int(media["chunk"]),
                "payload": media["payload"],
            },
            "extra_headers": "",
        }
    if event == "dtmf":
        digit = {"digit": message["dtmf"]["digit"]}
        return {"event": "dtmf", "sequenceNumber": seq, "streamId": sid, "dtmf": digit}
    if event == "mark":
        name = message["mark"]["name"]
        return {"event": "playedStream", "sequenceNumber": seq, "streamId": sid, "name": name}
    if event == "stop":
        return None  # Plivo ends a call's stream by closing the socket
    return message


# -- the webhook and its XML (pure) ----------------------------------------------------------------


def webhook_form(carrier: str, phone: Phone, options: CarrierOptions) -> dict[str, str]:
    """The form fields each carrier POSTs when an inbound call rings."""
    if carrier == "telnyx":
        # TeXML's Twilio-compatible request parameters.
        return {
            "AccountSid": phone.account_sid,
            "CallSid": phone.call_sid,
            "CallStatus": "ringing",
            "Direction": "inbound",
            "From": options.from_number,
            "To": options.to_number,
        }
    return {
        "CallUUID": phone.call_sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "Event": "StartApp",
        "From": options.from_number,
        "To": options.to_number,
    }


def sign_webhook(
    carrier: str, options: CarrierOptions, url: str, form: Mapping[str, str], body: bytes
) -> dict[str, str]:
    """The signature headers a carrier adds (none when the options carry no key)."""
    if carrier == "telnyx":
        if options.telnyx_signing_key is None:
            return {}
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(options.telnyx_signing_key))
        timestamp = str(int(time.time()))
        signature = key.sign(timestamp.encode() + b"|" + body)
        return {
            "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
            "telnyx-timestamp": timestamp,
        }
    if options.auth_token is None:
        return {}
    nonce = secrets.token_hex(10)
    return {
        plivo_wire.NONCE_HEADER: nonce,
        plivo_wire.SIGNATURE_HEADER: plivo_wire.compute_signature(
            options.auth_token, "POST", url, form, nonce
        ),
    }


def parse_answer(carrier: str, xml: str) -> tuple[str, dict[str, str]]:
    """The stream URL and its parameters from a carrier's answer XML (``TelephonyError`` if
    it starts no stream)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise TelephonyError(f"the webhook answered invalid XML ({exc}): {_short(xml)}") from exc
    if carrier == "telnyx":
        stream = root.find("./Start/Stream")
        if stream is None or not stream.get("url"):
            raise TelephonyError(f"the TeXML has no <Start><Stream url>: {_short(xml)}")
        if stream.get("bidirectionalMode") != "rtp":
            raise TelephonyError('the TeXML <Stream> is not bidirectionalMode="rtp"')
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        return stream.get("url", ""), params
    stream = root.find("./Stream")
    if stream is None or not (stream.text or "").strip():
        raise TelephonyError(f"the Plivo XML has no <Stream>: {_short(xml)}")
    if stream.get("bidirectional") != "true" or stream.get("keepCallAlive") != "true":
        raise TelephonyError("the Plivo <Stream> is not bidirectional with keepCallAlive")
    return (stream.text or "").strip(), {}


# -- the asyncio adapter ---------------------------------------------------------------------------


async def place_carrier_call(
    options: CarrierOptions, utterances: Sequence[bytes], *, observer: StreamObserver | None = None
) -> CallReport:
    """Call the bridge as Telnyx or Plivo (``options.carrier``) would, saying ``utterances``."""
    carrier = options.carrier
    if carrier == "telnyx":
        call_sid = "v3:" + secrets.token_urlsafe(24)
        account_sid = str(uuid.uuid4())
    else:
        call_sid, account_sid = str(uuid.uuid4()), "MA" + secrets.token_hex(9).upper()
    phone = DialectPhone(
        carrier,
        options,
        [pcm16_to_ulaw(pcm) for pcm in utterances],
        call_sid=call_sid,
        account_sid=account_sid,
        stream_sid=str(uuid.uuid4()),
    )
    url = options.url.rstrip("/") + WEBHOOK_PATHS[carrier]
    form = webhook_form(carrier, phone, options)
    body = urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    headers |= sign_webhook(carrier, options, url, form, body)
    timeout = aiohttp.ClientTimeout(total=_HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            async with http.post(url, data=body, headers=headers) as response:
                xml, status = await response.text(), response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TelephonyError(
                f"could not reach the {carrier} webhook {url}: {connection_failure(exc)}"
            ) from exc
        if not 200 <= status < 300:
            raise TelephonyError(f"the {carrier} webhook {url} answered {status}: {_short(xml)}")
        stream_url, params = parse_answer(carrier, xml)
        try:
            ws = await http.ws_connect(
                stream_url, timeout=aiohttp.ClientWSTimeout(ws_close=_WS_CLOSE_TIMEOUT_S)
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TelephonyError(
                f"could not open the {carrier} stream {stream_url}: {connection_failure(exc)}"
            ) from exc
        try:
            await run_stream(ws, phone, params, options.speed, observer=observer)
        finally:
            await ws.close()
    return phone.report()
