"""In-process calls with timestamps, for ``agent bench``'s latency and reconnection sections.

The bridge (``create_app``), the Live API emulator (``start_emulator``) and the caller run in this
process on one event loop, at real time (speed 1), on loopback ports the OS picks. Three probes see
what the bridge does without touching it:

* :func:`timed_call` drives the carrier simulator's sans-I/O :class:`~agent.sim.carrier.Phone`
  itself (as ``place_call`` does) and stamps every message it sends and receives with
  ``time.perf_counter()``. It can also open a media stream whose webhook was never called: that is
  exactly the bridge's no-pre-connect path.
* :class:`ArrivalProbe` stamps each caller audio chunk the emulator counts (polled every
  millisecond: the emulator keeps counts, not timestamps).
* :class:`LogCapture` keeps the bridge's structlog events (``live.reconnected``,
  ``caller.barge_in``, ``call.first_audio``) with the time they were logged.

:func:`vad_detection_chunks` replays a caller clip through the emulator's own VAD, offline, to find
which 20 ms frame makes it decide that speech started or ended; subtracting that moment leaves the
time spent in transit (bridge, loopback, emulator), which is what the bridge is accountable for.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import structlog
from aiohttp import web
from structlog.types import EventDict, Processor, WrappedLogger

from agent.audio.codec import ULAW_SILENCE, pcm16_to_ulaw, ulaw_to_pcm16
from agent.audio.transcoder import InboundTranscoder
from agent.clock import Clock
from agent.config.models import DEFAULT_AGENT, AgentConfig
from agent.live.targets import DeveloperApiTarget
from agent.server.app import create_app
from agent.server.state import CALLS
from agent.settings import Settings
from agent.sim.carrier import (
    CallReport,
    CarrierOptions,
    Phone,
    new_sid,
    parse_stream_twiml,
)
from agent.sim.carrier.calls import open_stream, ring, run_stream
from agent.sim.live.server import EmulatorOptions, RunningEmulator, start_emulator
from agent.sim.live.vad import EmulatorVad, SpeechEnded, SpeechStarted, VadSettings

__all__ = [
    "ArrivalProbe",
    "Harness",
    "LogCapture",
    "LoggedEvent",
    "TimedCall",
    "in_process_bridge",
    "percentile",
    "timed_call",
    "vad_detection_chunks",
    "wait_call_ended",
]

FRAME_S = 0.020
_FRAME_BYTES = 160
_HTTP_TIMEOUT_S = 30.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation) of ``values``; None when empty."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def median(values: Sequence[float]) -> float | None:
    """The median of ``values``; None when empty."""
    return percentile(values, 50)


# -- log capture -------------------------------------------------------------------------------


@dataclass(slots=True)
class LoggedEvent:
    """One structlog event and the ``perf_counter`` time it was logged at."""

    at: float
    fields: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.fields.get("event", ""))


class LogCapture:
    """Routes structlog through itself while active: every event is kept, nothing is printed.

    Unlike ``structlog.testing.capture_logs`` it stamps each event with ``perf_counter`` (to line
    events up with the caller's timeline) and merges context variables (the call's ids).
    """

    def __init__(self) -> None:
        self.events: list[LoggedEvent] = []
        self._saved: list[Processor] | None = None

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        self.events.append(LoggedEvent(time.perf_counter(), dict(event_dict)))
        raise structlog.DropEvent

    def named(self, name: str) -> list[LoggedEvent]:
        return [event for event in self.events if event.name == name]

    def __enter__(self) -> LogCapture:
        processors = structlog.get_config()["processors"]
        self._saved = list(processors)
        processors.clear()
        processors.extend([structlog.contextvars.merge_contextvars, self])
        structlog.configure(processors=processors)
        return self

    def __exit__(self, *exc_info: object) -> None:
        processors = structlog.get_config()["processors"]
        processors.clear()
        processors.extend(self._saved or [])
        structlog.configure(processors=processors)


# -- the emulator's view of caller audio --------------------------------------------------------


class ArrivalProbe:
    """When caller audio reached the emulator: ``(perf_counter, chunks so far)`` at each change.

    The emulator counts audio chunks per connection; this polls the sum over its connections every
    ``interval_s`` and notes each increase, so times are good to about a millisecond. Counts are
    relative to when the probe started.
    """

    def __init__(self, emulator: RunningEmulator, interval_s: float = 0.001) -> None:
        self._emulator = emulator
        self._interval_s = interval_s
        self._base = self._total()
        self.samples: list[tuple[float, int]] = [(time.perf_counter(), 0)]
        self._task: asyncio.Task[None] | None = None

    def _total(self) -> int:
        return sum(session.audio_chunks_received for session in self._emulator.sessions)

    async def _run(self) -> None:
        last = 0
        while True:
            count = self._total() - self._base
            if count != last:
                self.samples.append((time.perf_counter(), count))
                last = count
            await asyncio.sleep(self._interval_s)

    @property
    def received(self) -> int:
        return self.samples[-1][1]

    def first_seen(self, chunk: int) -> float | None:
        """When the count first exceeded ``chunk`` (0-based), i.e. that chunk had arrived."""
        for at, count in self.samples:
            if count > chunk:
                return at
        return None

    def longest_gap_ms(self, start: float, end: float) -> float | None:
        """The longest time between two arrivals, for arrivals in ``[start, end]`` (and the last one
        before ``start``): how long caller audio stopped reaching the Live API."""
        times = [at for at, count in self.samples if count > 0]
        before = [at for at in times if at < start]
        inside = [at for at in times if start <= at <= end]
        points = ([before[-1]] if before else []) + inside
        if len(points) < 2:
            return None
        return max(b - a for a, b in itertools.pairwise(points)) * 1000

    async def __aenter__(self) -> ArrivalProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # One last look, so chunks that arrived since the last poll are counted.
        count = self._total() - self._base
        if count != self.samples[-1][1]:
            self.samples.append((time.perf_counter(), count))


# -- the emulator's VAD, offline ------------------------------------------------------------------


def vad_detection_chunks(pcm8k: bytes) -> tuple[int | None, int | None]:
    """Which 20 ms frame of an utterance makes the emulator's VAD say speech started, and ended.

    The clip is sent as the carrier sends it (mu-law frames, after a second of line silence, then
    silence again), transcoded as the bridge does, and fed to the emulator's ``EmulatorVad`` with
    settings the bridge's default agent asks for. Frames count from the utterance's first frame;
    the end is usually after the clip (the VAD waits for silence). None when it never fires.
    """
    ulaw = pcm16_to_ulaw(pcm8k)
    frames = [
        ulaw[i : i + _FRAME_BYTES].ljust(_FRAME_BYTES, bytes([ULAW_SILENCE]))
        for i in range(0, len(ulaw), _FRAME_BYTES)
    ]
    silence = bytes([ULAW_SILENCE]) * _FRAME_BYTES
    lead, tail = 50, 150
    inbound = InboundTranscoder()
    rate = DEFAULT_AGENT.input_sample_rate  # what the bridge sends: 8 kHz as is, or upsampled
    vad = EmulatorVad(VadSettings())
    started = ended = None
    for index, frame in enumerate([silence] * lead + frames + [silence] * tail):
        pcm = ulaw_to_pcm16(frame) if rate == 8000 else inbound.process(frame)
        samples = np.frombuffer(pcm, dtype="<i2")
        for event in vad.feed(samples, rate):
            if isinstance(event, SpeechStarted) and started is None:
                started = index - lead
            elif isinstance(event, SpeechEnded) and started is not None and ended is None:
                ended = index - lead
    return started, ended


# -- the bridge and emulator in this process ----------------------------------------------------


@dataclass(slots=True)
class Harness:
    """A bridge and its emulator, running on loopback in this process."""

    url: str
    app: web.Application
    emulator: RunningEmulator


@contextlib.asynccontextmanager
async def in_process_bridge(
    agent: AgentConfig = DEFAULT_AGENT, *, speed: float = 1.0
) -> AsyncIterator[Harness]:
    """Start the emulator (``think_ms=0``) and the real app (records in a temporary SQLite file);
    stop both after. ``speed`` above 1 runs call time faster, for tests of the bench itself: the
    figures only mean something at real time."""
    options = EmulatorOptions(speed=speed, think_ms=0)
    with tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp:
        emulator = await start_emulator(options)
        try:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
                url = f"http://127.0.0.1:{port}"
                settings = Settings(
                    host="127.0.0.1",
                    port=port,
                    public_url=url,
                    database_url=f"sqlite:///{Path(tmp) / 'calls.db'}",
                    crm_database_url=f"sqlite:///{Path(tmp) / 'crm.db'}",
                    # No Live preflight: its connections would be counted with the calls'.
                    live_preflight_interval_s=0,
                )
                app = create_app(
                    settings,
                    live_target=DeveloperApiTarget(base_url=emulator.url),
                    agent=agent,
                    call_clock=Clock(speed),
                )
                runner = web.AppRunner(app, handle_signals=False, access_log=None)
                await runner.setup()
            except BaseException:
                sock.close()
                raise
            try:
                await web.SockSite(runner, sock).start()
                yield Harness(url, app, emulator)
            finally:
                await runner.cleanup()
                sock.close()
        finally:
            await emulator.close()


async def wait_call_ended(harness: Harness, call_sid: str, timeout_s: float = 10.0) -> None:
    """Wait until the bridge has finished with ``call_sid`` (its summary logged, Live closed)."""
    with contextlib.suppress(TimeoutError):
        await harness.app[CALLS].wait_ended(call_sid, timeout_s)


# -- a call with timestamps ---------------------------------------------------------------------


@dataclass(slots=True)
class TimedCall:
    """A call as the caller's phone saw it, with ``perf_counter`` times for every message."""

    call_sid: str
    report: CallReport | None = None
    start_sent_at: float | None = None
    """When ``start`` went out on the WebSocket."""
    media_sent_at: list[float] = field(default_factory=list)
    """When each caller frame went out; index = tick (one frame per tick)."""
    received: list[tuple[float, str]] = field(default_factory=list)
    """``(time, event)`` of every message from the bridge: ``media``, ``mark``, ``clear``."""
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def first_received(self, kind: str, after: float = float("-inf")) -> float | None:
        """When the first ``kind`` message arrived after ``after``; None if none did."""
        for at, event in self.received:
            if event == kind and at > after:
                return at
        return None

    def tick_sent_at(self, tick: int) -> float | None:
        return self.media_sent_at[tick] if 0 <= tick < len(self.media_sent_at) else None

    @property
    def ticks_sent(self) -> int:
        return len(self.media_sent_at)


async def timed_call(
    options: CarrierOptions,
    utterances: Sequence[bytes],
    *,
    webhook: bool = True,
    hang_up_after_audio_s: float | None = None,
    call: TimedCall | None = None,
) -> TimedCall:
    """Place one call like ``place_call`` does, keeping the time of every message.

    ``webhook=False`` skips the voice webhook and opens the stream with a CallSid the bridge has
    never seen, so it connects to the Live API only when ``start`` arrives (no pre-connect).
    ``hang_up_after_audio_s`` ends the call that long after the first agent audio arrives.
    ``call`` lets the caller watch the call while it runs (pass a fresh :class:`TimedCall`).
    """
    call_sid = call.call_sid if call is not None else new_sid("CA")
    timed = call if call is not None else TimedCall(call_sid)
    account_sid, stream_sid = new_sid("AC"), new_sid("MZ")
    phone = Phone(
        options,
        [pcm16_to_ulaw(pcm) for pcm in utterances],
        call_sid=call_sid,
        account_sid=account_sid,
        stream_sid=stream_sid,
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_HTTP_TIMEOUT_S)) as http:
        if webhook:  # the carrier's own steps: signed, as Twilio would
            twiml = await ring(http, options, call_sid=call_sid, account_sid=account_sid)
            instruction = parse_stream_twiml(twiml)
            stream_url, parameters = instruction.url, instruction.parameters
        else:
            stream_url = "ws" + options.url.rstrip("/").removeprefix("http") + "/twilio/stream"
            parameters = {}
        ws = await open_stream(http, stream_url, options.auth_token)
        try:
            observer = _Timestamps(timed, hang_up_after_audio_s)
            await run_stream(ws, phone, parameters, options.speed, observer=observer)
        finally:
            await ws.close()
    timed.report = phone.report()
    return timed


class _Timestamps:
    """A :class:`~agent.sim.carrier.StreamObserver` keeping the time of every message."""

    def __init__(self, timed: TimedCall, hang_up_after_audio_s: float | None) -> None:
        self._timed = timed
        self._hang_up_after = hang_up_after_audio_s

    def sent(self, message: Mapping[str, Any]) -> None:
        event = message.get("event")
        if event == "media":
            self._timed.media_sent_at.append(time.perf_counter())
        elif event == "start":
            self._timed.start_sent_at = time.perf_counter()
            self._timed.started.set()

    def received(self, text: str) -> None:
        at = time.perf_counter()
        with contextlib.suppress(ValueError, AttributeError):
            self._timed.received.append((at, str(json.loads(text).get("event"))))

    def hang_up_now(self) -> bool:
        if self._hang_up_after is None:
            return False
        first = self._timed.first_received("media")
        return first is not None and time.perf_counter() - first >= self._hang_up_after
