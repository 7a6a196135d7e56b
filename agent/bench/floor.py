"""The floor: the least CPU a Python bridge can spend on a call, for ``agent bench``'s cpu section.

The thin bridge (:mod:`agent.bench.thin`) is the thinnest bridge built the usual way, on aiohttp
and websockets. This one does the same work with every layer between the socket and the audio
taken away, to show how much of a call's cost no Python design can remove:

* raw asyncio protocols on uvloop, no HTTP framework and no WebSocket library: requests, the
  opening handshakes and frames (RFC 6455 5.2) are parsed and built by hand, masking by
  websockets' C ``apply_mask`` with keys read from ``os.urandom`` in batches;
* everything runs synchronously in ``data_received``: a caller frame is decoded and written to the
  Live API before the callback returns, and a model chunk becomes one Twilio ``media`` message
  (all its 20 ms frames, as ``agent serve`` sends them); no task, future or queue per message;
* the same transcoders, the same ``setup`` and greeting, 8 kHz caller audio, a ``clear`` on
  ``interrupted``; JSON and base64 by the compiled codecs ``agent serve`` uses (:mod:`agent.wire`).

It is a measuring instrument, not a bridge to run: no TLS, no signature checks, no pings of its
own, one request per HTTP connection, no limits on what a peer sends, and nothing else that
:mod:`agent.bench.thin` leaves out either. What it costs per call-second is what is left when a
bridge has no features and no framework: the system calls (a write per message, a read per
message or so) and the per-message work (JSON, base64, the resampler)::

    python -m agent.bench.floor --port 8098 --live-url ws://127.0.0.1:9090
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import uvloop

from agent import wire
from agent.audio.codec import ulaw_to_pcm16
from agent.audio.transcoder import OutboundTranscoder
from agent.bench.thin import bridge_arguments, caller_frames
from agent.config.loader import load
from agent.config.models import AgentConfig
from agent.config.templates import TemplateContext, render_for_call
from agent.live import protocol
from agent.live.connection import MaskKeys, apply_mask, client_frame, frame_head
from agent.live.targets import DeveloperApiTarget

__all__ = ["FloorCaller", "main", "parse_frames", "server_frame", "start_floor_server"]

_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


def server_frame(payload: bytes, opcode: int = _TEXT) -> bytes:
    """One final, unmasked frame (a server's)."""
    return frame_head(opcode, len(payload), masked=False) + payload


def parse_frames(buffer: bytearray) -> list[tuple[int, bool, bytes]]:
    """Every whole frame at the start of ``buffer`` as ``(opcode, fin, payload)``, unmasked;
    consumed from ``buffer`` (a partial frame stays for the next read)."""
    frames: list[tuple[int, bool, bytes]] = []
    at, size = 0, len(buffer)
    while size - at >= 2:
        first, second = buffer[at], buffer[at + 1]
        length, pos = second & 0x7F, at + 2
        if length == 126:
            if size - pos < 2:
                break
            length, pos = int.from_bytes(buffer[pos : pos + 2], "big"), pos + 2
        elif length == 127:
            if size - pos < 8:
                break
            length, pos = int.from_bytes(buffer[pos : pos + 8], "big"), pos + 8
        key = b""
        if second & 0x80:
            if size - pos < 4:
                break
            key, pos = bytes(buffer[pos : pos + 4]), pos + 4
        if size - pos < length:
            break
        payload = bytes(buffer[pos : pos + length])
        frames.append(
            (first & 0x0F, bool(first & 0x80), apply_mask(payload, key) if key else payload)
        )
        at = pos + length
    if at:
        del buffer[:at]
    return frames


class _Messages:
    """Reassembles fragmented messages (continuation frames) from :func:`parse_frames`."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def add(self, fin: bool, payload: bytes) -> bytes | None:
        if fin and not self._parts:
            return payload
        self._parts.append(payload)
        if not fin:
            return None
        whole, self._parts = b"".join(self._parts), []
        return whole


class _Peer(asyncio.Protocol):
    """One end of a WebSocket: frames in, control frames answered, messages to
    :meth:`_on_message`. The two ends differ in how they frame (masked or not) and close."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._messages = _Messages()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def _receive(self) -> None:
        """Act on every whole frame in the buffer."""
        for opcode, fin, payload in parse_frames(self._buffer):
            if opcode == _CLOSE:
                self._closed_by_peer(payload)
                return
            if opcode == _PING:
                self._send_frame(payload, _PONG)
            elif opcode != _PONG:
                message = self._messages.add(fin, payload)
                if message is not None:
                    self._on_message(message)

    def _send_frame(self, payload: bytes, opcode: int) -> None:
        raise NotImplementedError

    def _closed_by_peer(self, payload: bytes) -> None:
        raise NotImplementedError

    def _on_message(self, raw: bytes) -> None:
        raise NotImplementedError


class _LiveLeg(_Peer):
    """The client WebSocket to the Live API for one call."""

    def __init__(self, caller: FloorCaller, setup: str, host: str, path: str) -> None:
        super().__init__()
        self._caller, self._setup, self._host, self._path = caller, setup, host, path
        self._keys = MaskKeys()
        self._upgraded = False
        self.ready = False  # setupComplete received
        self._outbound = OutboundTranscoder()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET {self._path} HTTP/1.1\r\nHost: {self._host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def send(self, text: str) -> None:
        self._send_frame(text.encode(), _TEXT)

    def _send_frame(self, payload: bytes, opcode: int) -> None:
        if self.transport is not None:
            self.transport.write(client_frame(payload, self._keys.take(), opcode))

    def _closed_by_peer(self, payload: bytes) -> None:
        self.close()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.close()
                return
            del buffer[: end + 4]
            self._upgraded = True
            self.send(self._setup)
        self._receive()

    def _on_message(self, raw: bytes) -> None:
        if not self.ready:  # the first message is setupComplete
            self.ready = True
            self._caller.live_ready()
            return
        content: dict[str, Any] | None = wire.loads(raw).get("serverContent")
        if content is None:
            return
        chunks = caller_frames(content, self._outbound, wire.b64decode)
        if chunks is None:
            self._caller.clear()
            return
        for frames in chunks:
            self._caller.media(frames)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._caller.close()


class FloorCaller(_Peer):
    """One connection from the carrier: the voice webhook, or the media stream of a call."""

    def __init__(self, live_url: str, public_url: str, agent: AgentConfig) -> None:
        super().__init__()
        self._live_url, self._public_url, self._agent = live_url, public_url, agent
        self._stream = False
        self._live: _LiveLeg | None = None
        self._waiting: list[str] = []  # caller audio until the Live API is set up
        self._media_prefix = self._clear = ""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._stream or self._on_request():
            self._receive()

    def _send_frame(self, payload: bytes, opcode: int) -> None:
        self._write(server_frame(payload, opcode))

    def _closed_by_peer(self, payload: bytes) -> None:
        self._send_frame(payload[:2], _CLOSE)
        self.close()

    def _on_request(self) -> bool:
        """Answer a whole HTTP request at the start of the buffer; True once it was the media
        stream's upgrade (frames follow)."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1] if lines[0].count(" ") >= 2 else ""
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        length = int(headers.get("content-length", "0") or 0)
        if len(buffer) < end + 4 + length:
            return False
        del buffer[: end + 4 + length]
        key = headers.get("sec-websocket-key")
        if headers.get("upgrade", "").lower() == "websocket" and key:
            accept = base64.b64encode(hashlib.sha1(key.encode() + _ACCEPT_GUID).digest())
            self._write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self._stream = True
            return True
        if target.startswith("/twilio/voice"):
            url = "ws" + self._public_url.removeprefix("http") + "/twilio/stream"
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>'
                f'<Response><Connect><Stream url="{url}"/></Connect></Response>'
            ).encode()
            kind = "text/xml"
        else:
            body, kind = b"ok", "text/plain"  # the bench's readiness probe
        self._write(
            f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        self.close()
        return False

    def _on_message(self, raw: bytes) -> None:
        data: dict[str, Any] = wire.loads(raw)
        event = data.get("event")
        if event == "media":
            pcm = ulaw_to_pcm16(wire.b64decode(data["media"]["payload"]))
            message = protocol.audio_message(pcm, 8000)
            live = self._live
            if live is not None and live.ready:
                live.send(message)
            else:
                self._waiting.append(message)
        elif event == "start":
            self._start(str(data["streamSid"]), str(data["start"]["callSid"]))
        elif event == "stop":
            self.close()

    def _start(self, stream_sid: str, call_sid: str) -> None:
        self._media_prefix = (
            '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"'
        )
        self._clear = '{"event":"clear","streamSid":"' + stream_sid + '"}'
        target = DeveloperApiTarget(base_url=self._live_url)
        agent = render_for_call(self._agent, TemplateContext(call_sid=call_sid))
        setup = protocol.setup_message(agent, model_path=target.model_path(agent.model))
        url = urlsplit(target.url(agent.api_version))
        path = url.path + ("?" + url.query if url.query else "")
        live = _LiveLeg(self, setup, url.netloc, path)
        self._live = live
        loop = asyncio.get_running_loop()
        connecting = loop.create_task(
            loop.create_connection(lambda: live, url.hostname or "127.0.0.1", url.port or 80)
        )
        connecting.add_done_callback(self._connected)

    def _connected(self, connecting: asyncio.Task[Any]) -> None:
        if connecting.cancelled() or connecting.exception() is not None:
            self.close()

    def live_ready(self) -> None:
        """The Live API's setupComplete: ask for the greeting, send what the caller said."""
        live = self._live
        assert live is not None
        if self._agent.greeting:
            live.send(protocol.text_turn_message(self._agent.greeting))
        for message in self._waiting:
            live.send(message)
        self._waiting.clear()

    def media(self, frames: list[bytes]) -> None:
        """One ``media`` message for a chunk's 20 ms frames."""
        if frames:
            payload = wire.b64encode(b"".join(frames))
            self._write(server_frame((self._media_prefix + payload + '"}}').encode()))

    def clear(self) -> None:
        self._write(server_frame(self._clear.encode()))

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self._live is not None:
            self._live.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._live is not None:
            self._live.close()


async def start_floor_server(
    live_url: str, port: int, agent: AgentConfig | None = None, host: str = "127.0.0.1"
) -> asyncio.Server:
    """Listen on ``host:port`` (``port`` 0: any free one); the carrier's webhook and streams
    go to ``/twilio/voice`` and ``/twilio/stream``. ``agent``: whose setup and greeting it
    sends (default: the one ``agent serve`` would use)."""
    chosen = agent if agent is not None else load().default
    loop = asyncio.get_running_loop()

    def caller() -> FloorCaller:
        bound = server.sockets[0].getsockname()[1]
        return FloorCaller(live_url, f"http://{host}:{bound}", chosen)

    server = await loop.create_server(caller, host, port)
    return server


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the floor bridge on loopback until terminated."""
    args = bridge_arguments("agent.bench.floor", __doc__, argv)

    async def serve() -> None:
        server = await start_floor_server(args.live_url, args.port)
        async with server:
            await server.serve_forever()

    uvloop.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
