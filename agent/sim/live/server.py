"""A local Gemini Live API: the aiohttp adapter around the emulator's sans-I/O core.

It serves ``GET /ws/google.ai.generativelanguage.{v1|v1beta|v1alpha}.GenerativeService.
BidiGenerateContent`` (also with the ``//`` the SDKs' trailing-slash base URL produces) as a
WebSocket, so the bridge, the official SDK and tests can hold a real conversation offline. With
``EmulatorOptions(backend="vertex")`` it speaks Vertex AI's Live API instead, on ``GET
/ws/google.cloud.aiplatform.{v1|v1beta1}.LlmBidiService/BidiGenerateContent`` with a bearer
token (the path of the other backend is 404)::

    emulator = await start_emulator(EmulatorOptions(speed=10))
    ...connect to emulator.url + "/ws/google.ai.generativelanguage.v1beta.GenerativeService..."
    await emulator.close()

Each connection gets one core and one writer task. The reader feeds client frames to the core; the
writer sends what the core has to say and sleeps until the core's next deadline, which is how
answers are paced: the core schedules every chunk against the answer's start, so the stream does
not drift however late the loop wakes. Emulated time is wall time since the emulator started,
multiplied by :attr:`EmulatorOptions.speed`; one clock serves every connection, so resumption
handles expire and sessions add up across connections.

Speech (``speech=EmulatorSpeech.installed()``): the core asks to hear each caller turn and to
voice the agent's own words; this adapter runs the recogniser and the TTS in worker threads (the
installed recogniser passes its work on to a worker process, see :mod:`agent.sim.speech.worker`),
so the loop keeps pacing every connection's audio meanwhile, and hands the results back to the
core.
Without engines (the default, or when the ``speech`` extra is not installed) the core answers with
the ``[caller speech 3.4 s]`` placeholder and the bundled clips.

Tests drive failures without sleeping: :attr:`EmulatorOptions.faults` schedules them, and
:meth:`RunningEmulator.close_session`, :meth:`~RunningEmulator.abort_session` and
:meth:`~RunningEmulator.go_away` inject them at once and return when they have happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import importlib.resources
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import structlog
from aiohttp import WSMsgType, web

from agent.audio.codec import read_wav
from agent.clock import REAL_TIME, Clock
from agent.errors import AudioError, ConfigError
from agent.live.protocol import LIVE_PATH
from agent.sim.live.core import Clip, LiveEmulatorCore
from agent.sim.live.options import (
    AbortConnection,
    AnswerClips,
    CloseConnection,
    EmulatedSessionRecord,
    EmulatorOptions,
    Fault,
    Stall,
    Synthesise,
    Transcribe,
)
from agent.sim.live.resumption import ResumptionStore
from agent.sim.live.scenario import Scenario, load_scenario
from agent.sim.live.wire import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_INVALID,
    INTERNAL_ERROR,
    INVALID_API_KEY,
)
from agent.sim.speech import Recogniser, Synthesiser

__all__ = [
    "LIVE_PATH",
    "EmulatedSessionRecord",
    "EmulatorOptions",
    "EmulatorSpeech",
    "Fault",
    "RunningEmulator",
    "Scenario",
    "create_emulator_app",
    "load_bundled_clips",
    "load_scenario",
    "start_emulator",
    "tls_server_context",
]

# "/{slash}" swallows the extra "/" of "//ws/..." (SDK base URLs end in "/").
_ROUTE: Final = (
    "/{slash:/?}ws/google.ai.generativelanguage.{version:v1|v1beta|v1alpha}"
    ".GenerativeService.BidiGenerateContent"
)
# Vertex AI's path (agent.live.targets.VERTEX_PATH), in both of its API versions.
_VERTEX_ROUTE: Final = (
    "/{slash:/?}ws/google.cloud.aiplatform.{version:v1|v1beta1}.LlmBidiService/BidiGenerateContent"
)
# Google APIs answer a missing or invalid OAuth credential with HTTP 401 UNAUTHENTICATED and these
# messages (https://cloud.google.com/apis/design/errors: UNAUTHENTICATED is 401);
# Vertex's Live guide does not word a refused handshake, so the bodies follow the general ones.
_MISSING_CREDENTIAL: Final = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential."
)
_INVALID_CREDENTIAL: Final = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential."
)
_GREETING_TRANSCRIPT: Final = "Hello! Thanks for calling Acme support. How can I help you today?"
_REPLY_TRANSCRIPT: Final = (
    "Thanks for calling Acme. Your order shipped yesterday and should arrive on Friday. "
    "Is there anything else I can help you with?"
)
_SHUTDOWN_REASON: Final = "The service is shutting down."
_CLOSE_ABNORMAL: Final = 1006
# Larger than Google's own limits in practice; the bridge never comes near it.
_MAX_CLIENT_FRAME: Final = 16 * 1024 * 1024


log = structlog.get_logger("agent.sim")


@dataclass(frozen=True, slots=True)
class EmulatorSpeech:
    """The speech engines an emulator hears and speaks with; ``None``: that engine is absent.

    Each is a blocking callable (see :mod:`agent.sim.speech`), run in a worker thread; the
    installed recogniser hands its work on to a worker process. Tests inject their own, or
    ``EmulatorSpeech()`` for none (the placeholder and the bundled clips).
    """

    speak: Synthesiser | None = None
    transcribe: Recogniser | None = None

    @classmethod
    def installed(cls) -> EmulatorSpeech:
        """The offline engines of the ``speech`` extra, those of them installed here (loading
        them takes about half a second), and a log line saying which are missing and what the
        emulator does instead."""
        from agent.sim import speech

        available = speech.speech_available()
        if not all(available.values()):
            log.warning(
                "emulator.speech_missing",
                tts=available["tts"],
                stt=available["stt"],
                fallback="bundled clips for the agent's words; "
                "'[caller speech N s]' for what the caller said",
                install="pip install 'gemini-phone-agent[speech]'",
            )
        from agent.sim.speech.worker import transcribe_in_worker

        return cls(
            speak=speech.speak if available["tts"] else None,
            # In a worker process: PocketSphinx holds the GIL while it decodes, which in a thread
            # would stall every session's audio (see agent.sim.speech.worker).
            transcribe=transcribe_in_worker if available["stt"] else None,
        )


def load_bundled_clips() -> AnswerClips:
    """The greeting and reply the emulated model speaks, from ``agent/sim/assets``."""
    assets = importlib.resources.files("agent.sim") / "assets"
    return AnswerClips(
        greeting=_read_clip(assets / "model-greeting-24k.wav", _GREETING_TRANSCRIPT),
        reply=_read_clip(assets / "model-reply-24k.wav", _REPLY_TRANSCRIPT),
    )


def _read_clip(resource: Traversable, transcript: str) -> Clip:
    with importlib.resources.as_file(resource) as path:
        pcm, rate = read_wav(path)
    if rate != 24000:
        raise AudioError(f"{resource.name}: expected mono PCM16 at 24 kHz")
    return Clip(pcm, rate, transcript)


def tls_server_context(cert_file: str | Path, key_file: str | Path | None = None) -> ssl.SSLContext:
    """A server-side TLS context from PEM files, for serving ``wss://`` (the Python SDK's scheme).

    ``key_file`` may be omitted when the certificate file holds the key too. A missing or
    mismatched file raises :class:`~agent.errors.ConfigError`.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
    except (OSError, ssl.SSLError) as exc:
        message = f"cannot load the TLS certificate and key: {exc}"
        raise ConfigError(message, file=str(cert_file)) from exc
    return context


@dataclass(slots=True)
class _EmulatorState:
    """Everything the app's sessions share."""

    options: EmulatorOptions
    clips: AnswerClips
    sessions: list[EmulatedSessionRecord] = field(default_factory=list)
    live: dict[int, _LiveSession] = field(default_factory=dict)
    """Open connections by index."""
    store: ResumptionStore = field(default_factory=ResumptionStore)
    clock: Clock = REAL_TIME
    speech: EmulatorSpeech = field(default_factory=EmulatorSpeech)
    origin: float = 0.0
    _accepted: asyncio.Event | None = None

    def now_ms(self) -> float:
        """Emulated time: milliseconds on the emulator's clock since it started."""
        return (self.clock.now() - self.origin) * 1000

    def connection_accepted(self) -> asyncio.Event:
        """An event set when the next connection is accepted."""
        if self._accepted is None:
            self._accepted = asyncio.Event()
        return self._accepted

    def announce_connection(self) -> None:
        if self._accepted is not None:
            self._accepted.set()
            self._accepted = None


_STATE: Final = web.AppKey("live_emulator_state", _EmulatorState)


async def _start_the_clock(app: web.Application) -> None:
    """Emulated time starts when the server does: the clock reads the running loop's time, and
    ``agent emulate`` builds the app before any loop runs."""
    state = app[_STATE]
    state.origin = state.clock.now()


def create_emulator_app(
    options: EmulatorOptions, clock: Clock | None = None, *, speech: EmulatorSpeech | None = None
) -> web.Application:
    """An aiohttp application serving the Live API path; run it with any aiohttp runner.

    Emulated time is ``clock`` (by default the monotonic clock sped up by ``options.speed``); give
    the bridge's clock to put both on one timeline. ``speech`` is what it hears and speaks with
    (default: nothing, the placeholder and the bundled clips; ``EmulatorSpeech.installed()`` for
    the offline engines). On shutdown every open session is closed with 1001 before the server
    stops.
    """
    clock = Clock(speed=options.speed) if clock is None else clock
    app = web.Application()
    app[_STATE] = _EmulatorState(
        options, load_bundled_clips(), clock=clock, speech=speech or EmulatorSpeech()
    )
    app.on_startup.append(_start_the_clock)
    app.router.add_get(_ROUTE, _handle_live)
    app.router.add_get(_VERTEX_ROUTE, _handle_vertex)
    app.on_shutdown.append(_close_open_sessions)
    return app


class RunningEmulator:
    """An emulator listening on a port, as :func:`start_emulator` returns it."""

    def __init__(self, runner: web.AppRunner, url: str, port: int, state: _EmulatorState) -> None:
        self._runner = runner
        self._state = state
        self._closed = False
        self.url = url
        """Base URL: append ``LIVE_PATH.format(version=...)`` to connect."""
        self.port = port
        self.sessions: list[EmulatedSessionRecord] = state.sessions
        """One record per accepted connection, in order of arrival (the index of a connection)."""
        self.resumption: ResumptionStore = state.store
        """The resumption handles issued so far, shared by all connections."""

    async def close(self) -> None:
        """Close open sessions with 1001, stop listening and wait until every session has ended.

        Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        await self._runner.cleanup()

    def reconfigure(self, **changes: Any) -> None:
        """Change options for the connections accepted from now on (those open keep theirs): a
        test revokes or restores the API key, or the models served, mid-run, as an operator
        would fix a deployment's key while the bridge keeps running."""
        self._state.options = dataclasses.replace(self._state.options, **changes)

    async def close_session(
        self, index: int, code: int = CLOSE_INTERNAL, reason: str = INTERNAL_ERROR
    ) -> None:
        """Close connection ``index`` with ``code`` and ``reason`` (a mid-session 1011 by default)
        and return once it has ended. A connection that already ended is left alone."""
        session = self._open_session(index)
        if session is not None:
            session.act(lambda core, now: core.close(code, reason))
            await session.finished.wait()

    async def abort_session(self, index: int) -> None:
        """Drop connection ``index``'s TCP connection with no close frame (the client sees 1006)
        and return once it has ended."""
        session = self._open_session(index)
        if session is not None:
            session.act(lambda core, now: core.abort())
            await session.finished.wait()

    async def go_away(self, index: int, time_left_s: float = 50.0) -> None:
        """Send ``goAway`` on connection ``index`` now and close it 1011 ``time_left_s`` (emulated)
        later unless the client leaves first; returns once the ``goAway`` frame is sent."""
        session = self._open_session(index)
        if session is not None:
            session.act(lambda core, now: core.go_away(time_left_s, now))
            await session.flushed()

    async def wait_for_connection(self, index: int) -> EmulatedSessionRecord:
        """Wait until connection ``index`` has been accepted; its record."""
        while len(self.sessions) <= index:
            await self._state.connection_accepted().wait()
        return self.sessions[index]

    def _open_session(self, index: int) -> _LiveSession | None:
        if not 0 <= index < len(self.sessions):
            raise IndexError(f"no connection {index}: {len(self.sessions)} so far")
        return self._state.live.get(index)


async def start_emulator(
    options: EmulatorOptions,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    clock: Clock | None = None,
    speech: EmulatorSpeech | None = None,
) -> RunningEmulator:
    """Serve the emulator on ``host:port`` (0 = any free port) and return it running.

    With ``ssl_context`` (see :func:`tls_server_context`) it serves ``wss://``, which the official
    Python SDK insists on. ``clock`` and ``speech`` are as for :func:`create_emulator_app`.
    """
    app = create_emulator_app(options, clock, speech=speech)
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


async def _handle_vertex(request: web.Request) -> web.StreamResponse:
    """Vertex AI's path: served in vertex mode only, and only to a bearer token (refused at the
    handshake, before the upgrade, unlike the Developer API's key)."""
    state = request.app[_STATE]
    if state.options.backend != "vertex":
        raise web.HTTPNotFound()
    refusal = _bearer_refusal(request, state.options.access_token)
    if refusal is not None:
        return web.json_response(
            {"error": {"code": 401, "message": refusal, "status": "UNAUTHENTICATED"}},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
        )
    return await _serve(request, state)


def _bearer_refusal(request: web.Request, expected: str | None) -> str | None:
    """Why the handshake's ``Authorization`` is refused, or ``None`` when it is accepted."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _MISSING_CREDENTIAL
    if expected is not None and not hmac.compare_digest(token.encode(), expected.encode()):
        return _INVALID_CREDENTIAL
    return None


async def _handle_live(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    if state.options.backend != "gemini":
        raise web.HTTPNotFound()
    return await _serve(request, state)


async def _serve(request: web.Request, state: _EmulatorState) -> web.StreamResponse:
    vertex = state.options.backend == "vertex"
    ws = web.WebSocketResponse(compress=False, max_msg_size=_MAX_CLIENT_FRAME)
    await ws.prepare(request)
    index = len(state.sessions)
    record = EmulatedSessionRecord(connection=index)
    state.sessions.append(record)
    session = _LiveSession(request, ws, state, request.match_info["version"], record)
    state.live[index] = session
    state.announce_connection()
    try:
        # Like Google, authenticate after the handshake and refuse with a close frame (the
        # Developer API's key; Vertex's token was checked before the upgrade).
        if vertex or _api_key_ok(request, state.options.api_key):
            await session.run()
        else:
            record.closed_code = CLOSE_INVALID
            await ws.close(code=CLOSE_INVALID, message=INVALID_API_KEY.encode())
    finally:
        del state.live[index]
        session.finished.set()
        session.release_waiters()
    return ws


def _api_key_ok(request: web.Request, expected: str | None) -> bool:
    if expected is None:
        return True
    presented = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
    return hmac.compare_digest(presented.encode(), expected.encode())


async def _close_open_sessions(app: web.Application) -> None:
    sessions = list(app[_STATE].live.values())
    for session in sessions:
        session.shut_down()
    await asyncio.gather(*(session.finished.wait() for session in sessions))


class _LiveSession:
    """One connection: a reader loop (this task) and a writer task around one core."""

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        state: _EmulatorState,
        api_version: str,
        record: EmulatedSessionRecord,
    ) -> None:
        self._request = request
        self._ws = ws
        self._state = state
        self._wall = state.clock.wall
        self._core = LiveEmulatorCore(
            state.options,
            state.clips,
            api_version=api_version,
            record=record,
            store=state.store,
            connection=record.connection,
            now_ms=state.now_ms(),
            hears=state.speech.transcribe is not None,
            speaks=state.speech.speak is not None,
        )
        self._record = record
        self._speech_tasks: set[asyncio.Task[None]] = set()
        self._told_unheard = False
        self._wake = asyncio.Event()
        self._reading = asyncio.Event()  # cleared while a stall fault holds the connection
        self._reading.set()
        self._stopping = False
        self._flush_waiters: list[asyncio.Future[None]] = []
        self.finished = asyncio.Event()

    def act(self, action: Callable[[LiveEmulatorCore, float], None]) -> None:
        """Run ``action`` on the core now (for runtime fault injection) and wake the writer."""
        action(self._core, self._state.now_ms())
        self._wake.set()

    async def flushed(self) -> None:
        """Wait until what the core has queued so far has been sent (or the session ended)."""
        if self.finished.is_set():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(waiter)
        self._wake.set()
        await waiter

    def release_waiters(self, waiters: list[asyncio.Future[None]] | None = None) -> None:
        if waiters is None:
            waiters, self._flush_waiters = self._flush_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def shut_down(self) -> None:
        """Close this session with 1001 (the emulator is shutting down)."""
        self._core.close(CLOSE_GOING_AWAY, _SHUTDOWN_REASON)
        self._reading.set()
        self._wake.set()

    async def run(self) -> None:
        """Feed client frames to the core until the socket closes, whoever closes it."""
        writer = asyncio.create_task(self._write_loop())
        try:
            async for message in self._ws:
                # A stalled connection does not read: the frame waits, and so do later ones.
                await self._reading.wait()
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self._core.receive(message.data, self._state.now_ms())
                    self._wake.set()
                elif message.type is WSMsgType.ERROR:
                    break
        finally:
            # The writer may be closing the socket itself; let it finish rather than cancel it.
            self._core.connection_lost()
            for task in self._speech_tasks:
                task.cancel()  # its thread runs to the end; its result is dropped
            self._stopping = True
            self._reading.set()
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
            await self._ws.close(code=CLOSE_INTERNAL, message=INTERNAL_ERROR.encode())
            raise

    async def _write(self) -> None:
        core = self._core
        while True:
            self._wake.clear()
            # Everything queued before these waiters registered is in this batch.
            waiters, self._flush_waiters = self._flush_waiters, []
            for item in core.data_to_send():
                if isinstance(item, CloseConnection):
                    self._record.closed_code = item.code
                    await self._ws.close(code=item.code, message=item.reason.encode())
                    return
                if isinstance(item, AbortConnection):
                    self._record.closed_code = _CLOSE_ABNORMAL
                    transport = self._request.transport
                    if transport is not None:
                        transport.abort()
                    return
                if isinstance(item, Stall):
                    await self._stall(item.until_ms)
                    continue
                if isinstance(item, Transcribe):
                    self._off_loop(self._hear(item))
                    continue
                if isinstance(item, Synthesise):
                    self._off_loop(self._voice(item))
                    continue
                try:
                    await self._ws.send_bytes(item.encode())
                except ConnectionError:
                    return  # the client went away; the reader sees it too
            self.release_waiters(waiters)
            if self._stopping or self._ws.closed:
                return
            deadline = core.next_deadline()
            timeout = None
            if deadline is not None:
                timeout = max(0.0, self._wall((deadline - self._state.now_ms()) / 1000))
            # Pacing: sleep until the next scheduled frame, or until the reader has news.
            now_ms = None
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                # asyncio may fire a timer up to a clock tick early, and float round-off can put
                # "now" a hair before the deadline: having waited for it, treat it as reached, or
                # the loop would spin on a deadline that never quite comes.
                assert deadline is not None
                now_ms = max(self._state.now_ms(), deadline)
            core.poll(self._state.now_ms() if now_ms is None else now_ms)

    def _off_loop(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._speech_tasks.add(task)
        task.add_done_callback(self._speech_tasks.discard)

    async def _hear(self, request: Transcribe) -> None:
        """Run the recogniser on one caller turn in a worker thread; give the core its words."""
        recognise = self._state.speech.transcribe
        assert recognise is not None
        try:
            words = await asyncio.to_thread(recognise, request.pcm, request.rate, request.language)
        except Exception:
            log.exception("emulator.recognition_failed", language=request.language)
            words = None
        if words is None and not self._told_unheard:
            self._told_unheard = True
            log.info(
                "emulator.not_heard",
                language=request.language,
                fallback="'[caller speech N s]'",
                reason="no offline recogniser for this language",
            )
        self._core.heard(request.request, words, self._state.now_ms())
        self._wake.set()

    async def _voice(self, request: Synthesise) -> None:
        """Run the TTS on the agent's words in a worker thread; give the core the audio."""
        speak = self._state.speech.speak
        assert speak is not None
        try:
            pcm = await asyncio.to_thread(speak, request.text, request.rate)
        except Exception:
            log.exception("emulator.synthesis_failed")
            pcm = None
        self._core.voiced(request.request, pcm, self._state.now_ms())
        self._wake.set()

    async def _stall(self, until_ms: float) -> None:
        """Neither read nor send until ``until_ms`` (emulated), unless the session is ending."""
        self._reading.clear()
        try:
            delay = max(0.0, self._wall((until_ms - self._state.now_ms()) / 1000))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    while not (self._stopping or self._core.closed):
                        self._wake.clear()
                        await self._wake.wait()
        finally:
            self._reading.set()
