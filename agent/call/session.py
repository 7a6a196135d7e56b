"""One phone call: Twilio's media stream joined to a Live API session.

A :class:`CallSession` owns everything the call starts: the two pumps (caller -> model and
model -> caller), run in one task group, the per-direction transcoders, the playback tracker and the
Live connection. When either side ends, the task group cancels the other pump and the session closes
the Live socket, so nothing outlives the call.

The pumps are the per-frame path (100 times a second per call): no logging, no JSON parsing beyond
the protocol cores, one await per message sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import structlog
from aiohttp import WSMsgType, web

from agent.audio.codec import pcm16_to_ulaw, read_wav
from agent.audio.transcoder import InboundTranscoder, OutboundTranscoder
from agent.config import AgentConfig
from agent.errors import LiveError
from agent.live import protocol
from agent.live.connection import LiveConnection
from agent.live.link import LiveLink, LiveReconnected, LiveUnavailableError, ReconnectPolicy
from agent.live.protocol import (
    GenerationComplete,
    GoAway,
    GroundingMetadata,
    InputTranscription,
    Interrupted,
    LiveProtocolError,
    ModelAudio,
    ModelText,
    OutputTranscription,
    ResumptionHandle,
    TurnComplete,
    UsageReported,
)
from agent.telephony.twilio import (
    DtmfReceived,
    MarkPlayed,
    MediaReceived,
    ProtocolError,
    StreamStarted,
    StreamStopped,
    TwilioMediaStream,
)

from .playback import Playback

log = structlog.get_logger("agent.call")

LiveConnector = Callable[[AgentConfig, str | None], Awaitable[LiveConnection]]
"""Opens a Live connection for an agent, resuming the given session handle if not None."""

FALLBACK_AUDIO = resources.files("agent") / "assets" / "fallback-apology-8k.wav"


class _CallEnded(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Raised by a pump to end the call; the task group then cancels the other pump."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class CallStats:
    """Counters for the call's one summary line (``call.ended``)."""

    frames_in: int = 0
    frames_out: int = 0
    model_turns: int = 0
    barge_ins: int = 0
    reconnects: int = 0
    protocol_errors: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    said: list[str] = field(default_factory=list)
    heard_from_caller: list[str] = field(default_factory=list)


class CallSession:
    """Runs one call from Twilio's ``start`` until the caller hangs up or the Live leg fails."""

    def __init__(
        self,
        *,
        ws: web.WebSocketResponse,
        stream: TwilioMediaStream,
        started: StreamStarted,
        agent: AgentConfig,
        connect_live: LiveConnector,
        reconnect_policy: ReconnectPolicy = ReconnectPolicy(),  # noqa: B008 (frozen)
    ) -> None:
        self._ws = ws
        self._stream = stream
        self.started = started
        self.agent = agent
        self._live = LiveLink(lambda handle: connect_live(agent, handle), reconnect_policy)
        self._inbound = InboundTranscoder()
        self._outbound = OutboundTranscoder()
        self.playback = Playback()
        self.stats = CallStats()
        self.ended_reason: str | None = None

    async def run(self) -> str:
        """Run the call to its end and return the ending reason; logs one ``call.ended`` line."""
        began = time.monotonic()
        try:
            await self._live.start()
            log.info("live.connected", model=self.agent.model)
            if self.agent.greeting:
                await self._live.send(protocol.text_turn_message(self.agent.greeting))
            async with asyncio.TaskGroup() as group:
                group.create_task(self._caller_pump(), name="caller->model")
                group.create_task(self._model_pump(), name="model->caller")
        except* _CallEnded as ended:
            self.ended_reason = _first_reason(ended)
        except* ConnectionResetError:
            # Writing to Twilio's socket after it closed: the caller is gone.
            self.ended_reason = self.ended_reason or "caller hung up"
        except* LiveUnavailableError as unavailable:
            self.ended_reason = "error"
            log.error("live.unavailable", error=str(unavailable.exceptions[0]))
            await self._play_fallback()
        except* LiveError as failed:
            self.ended_reason = "error"
            log.error("live.failed", error=str(failed.exceptions[0]))
        finally:
            await self._live.close()
            await self._ws.close()
            reason = self.ended_reason or "error"
            log.info(
                "call.ended",
                reason=reason,
                duration_s=round(time.monotonic() - began, 3),
                frames_in=self.stats.frames_in,
                frames_out=self.stats.frames_out,
                model_turns=self.stats.model_turns,
                barge_ins=self.stats.barge_ins,
                reconnects=self.stats.reconnects,
                played_ms=self.playback.played_ms,
                discarded_ms=self.playback.frames_discarded * 20,
                protocol_errors=self.stats.protocol_errors,
                tokens=self.stats.usage,
            )
        return reason

    async def _play_fallback(self) -> None:
        """Tell the caller, instead of leaving dead air, and wait until they have heard it."""
        if self._ws.closed:
            return
        self._outbound.reset()
        await self._ws.send_str(self._stream.clear())
        frames = _fallback_frames()
        await self._send_frames(frames)
        last_mark = f"m{self.playback.marks_sent}"
        # The pumps are gone: read Twilio ourselves until that mark is played or the caller leaves.
        try:
            async with asyncio.timeout(len(frames) * 0.02 + 5.0):
                async for message in self._ws:
                    if message.type is not WSMsgType.TEXT:
                        break
                    event = self._stream.receive_text(message.data)
                    if type(event) is StreamStopped:
                        break
                    if type(event) is MarkPlayed and event.name == last_mark:
                        break
        except TimeoutError:
            log.warning("call.fallback_unconfirmed")

    async def _caller_pump(self) -> None:
        """Twilio -> Live: decode each media frame and forward it at once."""
        live, stream, inbound, stats = self._live, self._stream, self._inbound, self.stats
        async for message in self._ws:
            if message.type is WSMsgType.TEXT:
                event = stream.receive_text(message.data)
            elif message.type is WSMsgType.BINARY:
                event = stream.receive_bytes(message.data)
            else:  # ERROR: the socket failed under us
                break
            if type(event) is MediaReceived:
                stats.frames_in += 1
                await live.send_audio(inbound.process(event.payload))
            elif type(event) is MarkPlayed:
                self.playback.mark_played(event.name)
            elif type(event) is StreamStopped:
                raise _CallEnded("caller hung up")
            elif type(event) is DtmfReceived:
                log.info("caller.dtmf", digit=event.digit)
            elif type(event) is ProtocolError:
                stats.protocol_errors += 1
                log.warning("twilio.protocol_error", reason=event.reason, raw=event.raw)
        raise _CallEnded("caller hung up")

    async def _model_pump(self) -> None:
        """Live -> Twilio: transcode the model's speech into 20 ms frames, with a mark per chunk."""
        ws, stream, outbound, playback = self._ws, self._stream, self._outbound, self.playback
        stats = self.stats
        async for event in self._live.events():
            if type(event) is ModelAudio:
                if event.sample_rate != protocol.OUTPUT_SAMPLE_RATE:
                    log.error("live.unexpected_audio_rate", sample_rate=event.sample_rate)
                    continue
                frames = outbound.process(event.pcm)
                if frames:
                    await self._send_frames(frames)
            elif type(event) is Interrupted:
                # Barge-in: flush everything queued for the caller in this same loop turn.
                outbound.reset()
                cleared = playback.clear()
                await ws.send_str(stream.clear())
                stats.barge_ins += 1
                log.info(
                    "caller.barge_in",
                    discarded_ms=cleared.frames_unconfirmed * 20,
                    played_ms=playback.played_ms,
                )
            elif type(event) is GenerationComplete or type(event) is TurnComplete:
                tail = outbound.flush()
                if tail:
                    await self._send_frames(tail)
                if type(event) is TurnComplete:
                    stats.model_turns += 1
                    log.info("model.turn_complete", reason=event.reason)
            elif type(event) is OutputTranscription:
                stats.said.append(event.text)
            elif type(event) is InputTranscription:
                stats.heard_from_caller.append(event.text)
            elif type(event) is UsageReported:
                for modality, count in event.response_by_modality.items():
                    key = f"response_{modality.lower()}"
                    stats.usage[key] = stats.usage.get(key, 0) + count
                for modality, count in event.prompt_by_modality.items():
                    key = f"prompt_{modality.lower()}"
                    stats.usage[key] = stats.usage.get(key, 0) + count
            elif type(event) is ModelText:
                if not event.thought:
                    log.info("model.text", text=event.text)
            elif type(event) is GoAway:
                log.warning("live.go_away", time_left_s=event.time_left_s)
            elif type(event) is ResumptionHandle:
                pass  # Kept for reconnection; the handle itself is a secret-ish token.
            elif type(event) is GroundingMetadata:
                log.info("model.grounding", metadata=dict(event.data))
            elif type(event) is LiveReconnected:
                # Whatever the old connection left half-said is over: play its tail now.
                tail = outbound.flush()
                if tail:
                    await self._send_frames(tail)
                stats.reconnects += 1
            elif type(event) is LiveProtocolError:
                log.warning("live.protocol_error", reason=event.reason, raw=event.raw)
            else:
                log.debug("live.event_ignored", kind=type(event).__name__)
        raise _CallEnded("agent ended")

    async def _send_frames(self, frames: list[bytes]) -> None:
        ws, stream = self._ws, self._stream
        for frame in frames:
            await ws.send_str(stream.media(frame))
        self.playback.sent(len(frames))
        self.stats.frames_out += len(frames)
        await ws.send_str(stream.mark(self.playback.mark()))


def _first_reason(group: BaseExceptionGroup[_CallEnded]) -> str:
    first = group.exceptions[0]
    return first.reason if isinstance(first, _CallEnded) else _first_reason(first)


@cache
def _fallback_frames() -> list[bytes]:
    """The bundled apology as 20 ms mu-law frames (read once per process)."""
    pcm, rate = read_wav(str(FALLBACK_AUDIO))
    if rate != 8000:
        raise LiveError(f"fallback audio must be 8 kHz, got {rate} Hz")
    ulaw = pcm16_to_ulaw(pcm)
    size = OutboundTranscoder.FRAME_BYTES
    return [ulaw[i : i + size].ljust(size, b"\xff") for i in range(0, len(ulaw), size)]
