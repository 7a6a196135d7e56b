"""A local Gemini Live API: the aiohttp adapter around the emulator's sans-I/O core.

It serves ``GET /ws/google.ai.generativelanguage.{v1|v1beta|v1alpha}.GenerativeService.
BidiGenerateContent`` (also with the ``//`` the SDKs' trailing-slash base URL produces) as a
WebSocket, so the bridge, the official SDK and tests can hold a real conversation offline::

    emulator = await start_emulator(EmulatorOptions(speed=10))
    ...connect to emulator.url + "/ws/google.ai.generativelanguage.v1beta.GenerativeService..."
    await emulator.close()

Each connection gets one core and one writer task. The reader feeds client frames to the core; the
writer sends what the core has to say and sleeps until the core's next deadline, which is how
answers are paced: the core schedules every chunk against the answer's start, so the stream does
not drift however late the loop wakes. Emulated time is wall time multiplied by
:attr:`EmulatorOptions.speed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.resources
import ssl
import wave
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from typing import Final

from aiohttp import WSMsgType, web

from agent.errors import AudioError
from agent.sim.emulator_core import (
    CLOSE_GOING_AWAY,
    CLOSE_INVALID,
    INVALID_API_KEY,
    AnswerClips,
    Clip,
    CloseConnection,
    EmulatedSessionRecord,
    EmulatorOptions,
    LiveEmulatorCore,
)

__all__ = [
    "LIVE_PATH",
    "EmulatedSessionRecord",
    "EmulatorOptions",
    "RunningEmulator",
    "create_emulator_app",
    "load_bundled_clips",
    "start_emulator",
]

LIVE_PATH: Final = (
    "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
)
# "/{slash}" swallows the extra "/" of "//ws/..." (SDK base URLs end in "/").
_ROUTE: Final = (
    "/{slash:/?}ws/google.ai.generativelanguage.{version:v1|v1beta|v1alpha}"
    ".GenerativeService.BidiGenerateContent"
)
_GREETING_TRANSCRIPT: Final = "Hello! Thanks for calling Acme support. How can I help you today?"
_REPLY_TRANSCRIPT: Final = (
    "Thanks for calling Acme. Your order shipped yesterday and should arrive on Friday. "
    "Is there anything else I can help you with?"
)
_SHUTDOWN_REASON: Final = "The service is shutting down."
_CLOSE_INTERNAL: Final = 1011
# Larger than Google's own limits in practice; the bridge never comes near it.
_MAX_CLIENT_FRAME: Final = 16 * 1024 * 1024


def load_bundled_clips() -> AnswerClips:
    """The greeting and reply the emulated model speaks, from ``agent/sim/assets``."""
    assets = importlib.resources.files("agent.sim") / "assets"
    return AnswerClips(
        greeting=_read_clip(assets / "model-greeting-24k.wav", _GREETING_TRANSCRIPT),
        reply=_read_clip(assets / "model-reply-24k.wav", _REPLY_TRANSCRIPT),
    )


def _read_clip(resource: Traversable, transcript: str) -> Clip:
    with resource.open("rb") as file, wave.open(file, "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2 or wav.getframerate() != 24000:
            raise AudioError(f"{resource.name}: expected mono PCM16 at 24 kHz")
        return Clip(wav.readframes(wav.getnframes()), wav.getframerate(), transcript)


@dataclass(slots=True)
class _EmulatorState:
    """Everything the app's sessions share."""

    options: EmulatorOptions
    clips: AnswerClips
    sessions: list[EmulatedSessionRecord] = field(default_factory=list)
    open_sessions: set[_LiveSession] = field(default_factory=set)


_STATE: Final = web.AppKey("live_emulator_state", _EmulatorState)


def create_emulator_app(options: EmulatorOptions) -> web.Application:
    """An aiohttp application serving the Live API path; run it with any aiohttp runner.

    On shutdown every open session is closed with 1001 before the server stops.
    """
    app = web.Application()
    app[_STATE] = _EmulatorState(options, load_bundled_clips())
    app.router.add_get(_ROUTE, _handle_live)
    app.on_shutdown.append(_close_open_sessions)
    return app


class RunningEmulator:
    """An emulator listening on a port, as :func:`start_emulator` returns it."""

    def __init__(self, runner: web.AppRunner, url: str, port: int, state: _EmulatorState) -> None:
        self._runner = runner
        self._closed = False
        self.url = url
        """Base URL: append ``LIVE_PATH.format(version=...)`` to connect."""
        self.port = port
        self.sessions: list[EmulatedSessionRecord] = state.sessions
        """One record per accepted connection, in order of arrival."""

    async def close(self) -> None:
        """Close open sessions with 1001, stop listening and wait until every session has ended.

        Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        await self._runner.cleanup()


async def start_emulator(
    options: EmulatorOptions,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> RunningEmulator:
    """Serve the emulator on ``host:port`` (0 = any free port) and return it running.

    With ``ssl_context`` it serves ``wss://``, which the official Python SDK insists on.
    """
    app = create_emulator_app(options)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    scheme = "wss" if ssl_context is not None else "ws"
    url_host = f"[{host}]" if ":" in host else host
    return RunningEmulator(runner, f"{scheme}://{url_host}:{bound_port}", bound_port, app[_STATE])


async def _handle_live(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    ws = web.WebSocketResponse(compress=False, max_msg_size=_MAX_CLIENT_FRAME)
    await ws.prepare(request)
    record = EmulatedSessionRecord()
    state.sessions.append(record)
    session = _LiveSession(ws, state, request.match_info["version"], record)
    state.open_sessions.add(session)
    try:
        # Like Google, authenticate after the handshake and refuse with a close frame.
        if _api_key_ok(request, state.options.api_key):
            await session.run()
        else:
            record.closed_code = CLOSE_INVALID
            await ws.close(code=CLOSE_INVALID, message=INVALID_API_KEY.encode())
    finally:
        state.open_sessions.discard(session)
        session.finished.set()
    return ws


def _api_key_ok(request: web.Request, expected: str | None) -> bool:
    if expected is None:
        return True
    presented = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
    return hmac.compare_digest(presented.encode(), expected.encode())


async def _close_open_sessions(app: web.Application) -> None:
    sessions = list(app[_STATE].open_sessions)
    for session in sessions:
        session.go_away()
    await asyncio.gather(*(session.finished.wait() for session in sessions))


class _LiveSession:
    """One connection: a reader loop (this task) and a writer task around one core."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        state: _EmulatorState,
        api_version: str,
        record: EmulatedSessionRecord,
    ) -> None:
        self._ws = ws
        self._speed = state.options.speed
        self._core = LiveEmulatorCore(
            state.options, state.clips, api_version=api_version, record=record
        )
        self._record = record
        self._loop = asyncio.get_running_loop()
        self._epoch = self._loop.time()
        self._wake = asyncio.Event()
        self._stopping = False
        self.finished = asyncio.Event()

    def _now_ms(self) -> float:
        """Emulated time: wall time since the session began, sped up."""
        return (self._loop.time() - self._epoch) * 1000 * self._speed

    def go_away(self) -> None:
        """Close this session with 1001 (the emulator is shutting down)."""
        self._core.close(CLOSE_GOING_AWAY, _SHUTDOWN_REASON)
        self._wake.set()

    async def run(self) -> None:
        """Feed client frames to the core until the socket closes, whoever closes it."""
        writer = asyncio.create_task(self._write_loop())
        try:
            async for message in self._ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self._core.receive(message.data, self._now_ms())
                    self._wake.set()
                elif message.type is WSMsgType.ERROR:
                    break
        finally:
            # The writer may be closing the socket itself; let it finish rather than cancel it.
            self._core.connection_lost()
            self._stopping = True
            self._wake.set()
            try:
                await writer
            finally:
                if self._record.closed_code is None:
                    self._record.closed_code = self._ws.close_code

    async def _write_loop(self) -> None:
        try:
            await self._write()
        except Exception:
            # A bug here must not leave the client talking to a session that never answers.
            await self._ws.close(code=_CLOSE_INTERNAL, message=b"Internal error occurred.")
            raise

    async def _write(self) -> None:
        core = self._core
        while True:
            self._wake.clear()
            for item in core.data_to_send():
                if isinstance(item, CloseConnection):
                    self._record.closed_code = item.code
                    await self._ws.close(code=item.code, message=item.reason.encode())
                    return
                try:
                    await self._ws.send_bytes(item.encode())
                except ConnectionError:
                    return  # the client went away; the reader sees it too
            if self._stopping or self._ws.closed:
                return
            deadline = core.next_deadline()
            timeout = None
            if deadline is not None:
                timeout = max(0.0, (deadline - self._now_ms()) / self._speed / 1000)
            # Pacing: sleep until the next scheduled frame, or until the reader has news.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            core.poll(self._now_ms())
