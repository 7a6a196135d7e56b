"""The thinnest possible Twilio <-> Live API bridge: the yardstick for ``agent bench``'s CPU figure.

It does only what every bridge must do: answer the voice webhook with ``<Connect><Stream>``,
accept the media stream, open a Live API WebSocket when ``start`` arrives (no pre-connect), and
move audio both ways through the same transcoders as the product (mu-law 8 kHz -> PCM16 at the
agent's ``input_sample_rate`` in, as is at 8 kHz or upsampled to 16 kHz; PCM16 24 kHz -> 20 ms
mu-law frames out), plus a ``clear`` on ``interrupted`` so barge-in works.
Nothing else (but a ``GET /healthz`` answering ``ok``, for the capacity bench's probe): no
marks, playback tracking, metrics, call records, logs, signature checks,
reconnection, CRM look-ups or tools.

So that both bridges carry the same audio, it sends the Live API what ``agent serve`` would for
the same call: the ``setup`` of the default agent (``AGENTS_PATH``, else the bundled example),
rendered once per call with nothing known about the caller, and the agent's greeting request.

It runs as its own process, so the bench reads its CPU time from ``/proc`` exactly as it reads the
real bridge's::

    python -m agent.bench.thin --port 8099 --live-url ws://127.0.0.1:9090
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import WSMsgType, web
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agent.audio.codec import ulaw_to_pcm16
from agent.audio.transcoder import InboundTranscoder, OutboundTranscoder
from agent.config.loader import load
from agent.config.models import AgentConfig
from agent.config.templates import TemplateContext, render_for_call
from agent.live import protocol
from agent.live.targets import DeveloperApiTarget

__all__ = ["bridge_arguments", "caller_frames", "create_thin_app", "main"]

_LIVE_URL = web.AppKey("thin_live_url", str)
_PUBLIC_URL = web.AppKey("thin_public_url", str)
_AGENT = web.AppKey("thin_agent", AgentConfig)


def create_thin_app(
    live_url: str, public_url: str, agent: AgentConfig | None = None
) -> web.Application:
    """The thin bridge as an aiohttp app: ``POST /twilio/voice`` and ``GET /twilio/stream``.

    ``agent`` is whose setup and greeting it sends (default: the one ``agent serve`` would use).
    """
    app = web.Application()
    app[_AGENT] = agent if agent is not None else load().default
    app[_LIVE_URL] = live_url
    app[_PUBLIC_URL] = public_url.rstrip("/")
    app.router.add_post("/twilio/voice", _voice)
    app.router.add_get("/twilio/stream", _stream)
    app.router.add_get("/healthz", _healthz)  # for the capacity section's queueing probe
    return app


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _voice(request: web.Request) -> web.Response:
    stream_url = "ws" + request.app[_PUBLIC_URL].removeprefix("http") + "/twilio/stream"
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<Response><Connect><Stream url="{stream_url}"/></Connect></Response>'
    )
    return web.Response(text=twiml, content_type="text/xml")


async def _stream(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=1 << 20)
    await ws.prepare(request)
    started = await _await_start(ws)
    if started is None:
        await ws.close()
        return ws
    stream_sid, call_sid = started
    target = DeveloperApiTarget(base_url=request.app[_LIVE_URL])
    agent = render_for_call(request.app[_AGENT], TemplateContext(call_sid=call_sid))
    setup = protocol.setup_message(agent, model_path=target.model_path(agent.model))
    async with connect(
        target.url(agent.api_version),
        compression=None,
        max_size=4 * 2**20,
        open_timeout=10,
        proxy=None,
    ) as live:
        await live.send(setup)
        await live.recv()  # setupComplete
        if agent.greeting:
            await live.send(protocol.text_turn_message(agent.greeting))
        model_to_caller = asyncio.create_task(_model_to_caller(live, ws, stream_sid))
        try:
            await _caller_to_model(ws, live, agent.input_sample_rate)
        finally:
            model_to_caller.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, ConnectionClosed):
                await model_to_caller
    await ws.close()
    return ws


async def _await_start(ws: web.WebSocketResponse) -> tuple[str, str] | None:
    """``(streamSid, callSid)`` from ``start``; None if the socket closes first."""
    async for message in ws:
        if message.type is not WSMsgType.TEXT:
            return None
        data: dict[str, Any] = json.loads(message.data)
        if data.get("event") == "start":
            return str(data["streamSid"]), str(data["start"]["callSid"])
    return None


async def _caller_to_model(ws: web.WebSocketResponse, live: ClientConnection, rate: int) -> None:
    inbound = InboundTranscoder()
    # The same audio agent serve sends: at 8 kHz the decoded frame as is, else upsampled.
    transcode = ulaw_to_pcm16 if rate == 8000 else inbound.process
    async for message in ws:
        if message.type is not WSMsgType.TEXT:
            return
        data = json.loads(message.data)
        event = data.get("event")
        if event == "media":
            pcm = transcode(binascii.a2b_base64(data["media"]["payload"]))
            try:
                await live.send(_audio_message(pcm, rate))
            except ConnectionClosed:
                return
        elif event == "stop":
            return


async def _model_to_caller(
    live: ClientConnection, ws: web.WebSocketResponse, stream_sid: str
) -> None:
    outbound = OutboundTranscoder()
    media_prefix = '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"'
    clear = '{"event":"clear","streamSid":"' + stream_sid + '"}'

    async def send(frames: list[bytes]) -> None:
        for frame in frames:
            payload = binascii.b2a_base64(frame, newline=False).decode("ascii")
            await ws.send_str(media_prefix + payload + '"}}')

    async for raw in live:
        content = json.loads(raw).get("serverContent")
        if content is None:
            continue
        chunks = caller_frames(content, outbound)
        if chunks is None:
            await ws.send_str(clear)
            continue
        for frames in chunks:
            await send(frames)


def _audio_message(pcm: bytes, rate: int) -> str:
    """``protocol.audio_message`` as it was when the yardstick was set: the standard library's
    base64 (``agent serve`` has since moved to pybase64, :mod:`agent.wire`)."""
    data = binascii.b2a_base64(pcm, newline=False).decode("ascii")
    suffix = f'","mimeType":"audio/pcm;rate={rate}"}}}}}}'  # the message's three closing braces
    return '{"realtimeInput":{"audio":{"data":"' + data + suffix


def caller_frames(
    content: dict[str, Any],
    outbound: OutboundTranscoder,
    decode: Callable[[str], bytes] = binascii.a2b_base64,
) -> list[list[bytes]] | None:
    """What one ``serverContent`` gives the caller: each audio part's 20 ms frames through
    ``outbound`` (and the turn's last ones at its end), its base64 read by ``decode``. ``None``
    for ``interrupted``: the transcoder is reset, and the caller's player must be cleared."""
    if content.get("interrupted"):
        outbound.reset()
        return None
    chunks = []
    turn = content.get("modelTurn")
    if turn is not None:
        for part in turn.get("parts") or ():
            inline = part.get("inlineData")
            if inline is not None:
                chunks.append(outbound.process(decode(inline["data"])))
    if content.get("generationComplete") or content.get("turnComplete"):
        chunks.append(outbound.flush())
    return chunks


def bridge_arguments(
    module: str, description: str | None, argv: Sequence[str] | None
) -> argparse.Namespace:
    """A bench bridge's command line: ``--port`` to listen on, ``--live-url`` to answer it."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--live-url", required=True, help="Live API base URL (ws://...)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the thin bridge on loopback until terminated (SIGTERM or Ctrl-C)."""
    args = bridge_arguments("agent.bench.thin", __doc__, argv)
    app = create_thin_app(args.live_url, f"http://127.0.0.1:{args.port}")
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
