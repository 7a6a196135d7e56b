"""The asyncio adapter around :mod:`agent.live.protocol`: one WebSocket to the Live API.

It opens the socket to a :class:`~agent.live.targets.LiveEndpoint` (Developer API or Vertex AI),
sends ``setup``, waits for ``setupComplete`` and then moves frames: text out,
typed events in. websockets' exceptions are mapped to :class:`~agent.errors.LiveError` here, so the
call above never sees a library exception.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator
from types import TracebackType

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State

try:  # websockets' C masking, as its own frame writer uses; the pure-Python one otherwise
    from websockets.speedups import apply_mask as apply_mask
except ImportError:  # pragma: no cover (a websockets build without its C extension)
    from websockets.utils import apply_mask as apply_mask

from agent.config.models import AgentConfig
from agent.errors import LiveClosedError, LiveConnectError, LiveRefusedError
from agent.live import protocol
from agent.live.failures import FIXES, classify_close, classify_status, is_permanent
from agent.live.models import wire_profile
from agent.live.protocol import LiveEvent, SetupComplete
from agent.live.targets import LiveEndpoint

# Gemini's pongs can take 8-30 s (python-genai#2935): websockets' default 20 s ping timeout kills
# healthy calls. Ping for liveness, but give the pong a minute.
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 60.0
# How long a close waits for the service's closing handshake (websockets' close_timeout, 10 s by
# default): a service that never answers must not hold a call's end, or a shutdown, that long.
CLOSE_TIMEOUT_S = 2.0
# The SDK refuses server frames over 1 MiB; leave headroom rather than close a call over one frame.
MAX_FRAME_BYTES = 4 * 2**20
# Masking keys fetched from the OS in one read per this many frames (see MaskKeys).
MASK_KEYS_PER_READ = 512
OP_TEXT = 0x1
_FIN = 0x80
_MASKED = 0x80
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


class MaskKeys:
    """RFC 6455 masking keys for a client's frames, read from ``os.urandom`` in batches.

    The RFC asks for each key to come from a strong source of entropy and be unpredictable; it
    does not ask for one system call per key, which is what websockets' writer makes (a
    ``getrandom`` per frame, 50 a second per call). A batch of keys from the same source is as
    unpredictable, and each key is used once, in order.
    """

    __slots__ = ("_keys", "_next")

    def __init__(self) -> None:
        self._keys = b""
        self._next = 0

    def take(self) -> bytes:
        at = self._next
        if at >= len(self._keys):
            self._keys, at = os.urandom(4 * MASK_KEYS_PER_READ), 0
        self._next = at + 4
        return self._keys[at : at + 4]


def frame_head(opcode: int, size: int, *, masked: bool) -> bytes:
    """The header of one final frame (RFC 6455 5.2) of ``size`` payload bytes, without the key."""
    first, mask = _FIN | opcode, _MASKED if masked else 0
    if size < 126:
        return bytes((first, mask | size))
    if size < 65536:
        return _HEAD_16.pack(first, mask | 126, size)
    return _HEAD_64.pack(first, mask | 127, size)


def client_frame(payload: bytes, key: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, masked frame (a client's; no extension in use) carrying ``payload``."""
    return frame_head(opcode, len(payload), masked=True) + key + apply_mask(payload, key)


class LiveConnection:
    """One open, set-up Live API WebSocket. Use :meth:`open`; close with :meth:`close`."""

    def __init__(self, socket: ClientConnection, setup: SetupComplete) -> None:
        self._socket = socket
        self.setup = setup
        self._closing = False
        self._keys = MaskKeys()

    @classmethod
    async def open(
        cls,
        target: LiveEndpoint,
        agent: AgentConfig,
        *,
        resumption_handle: str | None = None,
        timeout_s: float = 10.0,
    ) -> LiveConnection:
        """Connect, send ``setup`` and wait for ``setupComplete`` (all within ``timeout_s``).

        ``target`` gives the URL, the handshake headers (fetching a token if it must) and the
        model's resource name. Raises :class:`~agent.errors.ConfigError` if the agent uses a field
        the target's backend lacks (check it at start-up with ``protocol.check_backend``),
        :class:`~agent.errors.LiveRefusedError` when the service refuses for good (a bad key, an
        unknown model, no permission: see :mod:`agent.live.failures`), else
        :class:`~agent.errors.LiveConnectError` with its ``kind``.
        """
        url = target.url(agent.api_version)
        # Built before connecting: a configuration error must not cost a handshake.
        setup = protocol.setup_message(
            agent,
            resumption_handle=resumption_handle,
            model_path=target.model_path(agent.model),
            backend=target.backend,
            wire=wire_profile(agent.model, target.backend),
        )
        try:
            async with asyncio.timeout(timeout_s):
                socket = await connect(
                    url,
                    additional_headers=await target.headers(),
                    # Audio is base64 noise to deflate: compressing it costs CPU and saves little.
                    compression=None,
                    ping_interval=PING_INTERVAL_S,
                    ping_timeout=PING_TIMEOUT_S,
                    close_timeout=CLOSE_TIMEOUT_S,
                    max_size=MAX_FRAME_BYTES,
                    open_timeout=None,
                    proxy=None,
                )
                try:
                    await socket.send(setup)
                    complete = await cls._await_setup_complete(socket)
                except BaseException:
                    await socket.close()
                    raise
        except TimeoutError as exc:
            raise LiveConnectError(
                f"no setupComplete from {url} within {timeout_s} s", kind="timeout"
            ) from exc
        except ConnectionClosed as exc:
            code, reason = _code(exc), _reason(exc)
            message = (
                f"Live API closed the connection during setup (code={code}, reason={reason!r})"
            )
            raise _failure(message, code, classify_close(code, reason)) from exc
        except InvalidStatus as exc:
            status = exc.response.status_code
            message = f"Live API answered the handshake with HTTP {status} ({url})"
            raise _failure(message, None, classify_status(status)) from exc
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            raise LiveConnectError(f"cannot connect to {url}: {exc}", kind="refused") from exc
        return cls(socket, complete)

    @staticmethod
    async def _await_setup_complete(socket: ClientConnection) -> SetupComplete:
        while True:
            for event in protocol.parse_server_message(await socket.recv()):
                if isinstance(event, SetupComplete):
                    return event
                raise LiveConnectError(f"expected setupComplete, got {event!r}", kind="protocol")

    def send_now(self, message: str) -> bool:
        """Write one client frame at once, without awaiting, when nothing stands in the way:
        True if it went to the socket. False when the socket is not open, a fragmented send is
        under way, websockets has frames of its own not yet written, an extension is in use, or
        flow control has paused writing: then await :meth:`send`, which waits (drain) and
        raises as websockets does.

        Why: websockets' ``send`` wraps every frame in an async context manager that checks the
        state, writes and drains, then builds the frame in Python and reads a masking key from
        the OS; per 20 ms caller frame that cost more than the frame itself (callgrind: ~54,000
        instructions a message through ``send``). The checks below are the ones its
        ``send_context`` and ``send_text`` make; the frame is the same bytes its writer makes
        (RFC 6455 5.2: FIN, text opcode, masked, length, key, masked payload), masked by its
        C ``apply_mask``, with the key from :class:`MaskKeys`.
        """
        socket = self._socket
        sans_io = socket.protocol
        if (
            sans_io.state is not State.OPEN
            or sans_io.expect_continuation_frame
            or sans_io.writes
            or sans_io.extensions
            or socket.paused
        ):
            return False
        transport = socket.transport
        if transport.is_closing():
            return False
        transport.write(client_frame(message.encode(), self._keys.take()))
        return True

    async def send(self, message: str) -> None:
        """Send one client frame; a closed socket raises :class:`LiveClosedError`."""
        try:
            await self._socket.send(message)
        except ConnectionClosed as exc:
            raise LiveClosedError(_code(exc), _reason(exc)) from exc

    async def send_audio(self, pcm16k: bytes) -> None:
        """Send 16 kHz PCM16 caller audio as ``realtimeInput``."""
        await self.send(protocol.audio_message(pcm16k))

    async def events(self) -> AsyncIterator[LiveEvent]:
        """Every event from the server until the socket closes.

        Ends quietly when *we* closed it; raises :class:`LiveClosedError` when the server did or
        the connection dropped, so the caller can decide to resume.
        """
        while True:
            try:
                frame = await self._socket.recv()
            except ConnectionClosed as exc:
                if self._closing:
                    return
                raise LiveClosedError(_code(exc), _reason(exc)) from exc
            for event in protocol.parse_server_message(frame):
                yield event

    async def close(self) -> None:
        """Close the socket (normal closure) and wait for the closing handshake."""
        self._closing = True
        await self._socket.close()

    @property
    def close_code(self) -> int | None:
        return self._socket.close_code

    async def __aenter__(self) -> LiveConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _failure(message: str, code: int | None, kind: str) -> LiveConnectError:
    if is_permanent(kind):
        return LiveRefusedError(message, code=code, kind=kind, fix=FIXES[kind])
    return LiveConnectError(message, code=code, kind=kind)


def _code(exc: ConnectionClosed) -> int | None:
    frame = exc.rcvd or exc.sent
    return frame.code if frame else None


def _reason(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    return frame.reason if frame else "connection lost"
