"""A load balancer stand-in: one public URL in front of several bridge replicas.

Twilio's voice webhook and its media stream are separate requests, so any load balancer may send
them to different replicas; this one does so on purpose, by a rule the caller chooses (by default
round-robin, one request after another). It forwards HTTP requests with their headers and body
(Twilio's signature covers the public URL, which is unchanged) and relays WebSocket messages both
ways, closing each side when the other closes. Used by the tests and the benchmark of many
replicas; not for production.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSMsgType, web

__all__ = [
    "Balancer",
    "CallRoute",
    "RunningBalancer",
    "first_stream_then",
    "round_robin",
    "start_balancer",
]

#: Chooses a replica's base URL for a request.
Route = Callable[[web.Request], str]

# Hop-by-hop headers (RFC 9110 §7.6.1) and those aiohttp sets itself.
_DROP: frozenset[str] = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length"}
)


def round_robin(replicas: Sequence[str]) -> Route:
    """Each request to the next replica in turn."""
    turn = itertools.cycle(replicas)
    return lambda request: next(turn)


@dataclass
class CallRoute:
    """One call's requests, routed: the voice webhook to ``voice``, the first media stream to
    ``first_stream``, everything after it (the ``<Connect action>`` of a stream that ended, the
    streams it starts) to ``after``. :meth:`next_call` sets the plan for the next call."""

    voice: str = ""
    first_stream: str = ""
    after: str = ""
    streams: int = 0  # media streams routed since the plan was set

    def next_call(self, voice: str, first_stream: str, after: str) -> None:
        self.voice, self.first_stream, self.after, self.streams = voice, first_stream, after, 0

    def __call__(self, request: web.Request) -> str:
        if request.path == "/twilio/voice":
            return self.voice
        if request.path == "/twilio/stream":
            self.streams += 1
            return self.first_stream if self.streams == 1 else self.after
        return self.after


def first_stream_then(replicas: Sequence[str]) -> Route:
    """The voice webhook and the first media stream to ``replicas[0]``; everything after to
    ``replicas[1]``: how a call moves when its first replica goes. ``replicas`` may be filled
    in later."""
    plan = CallRoute()

    def route(request: web.Request) -> str:
        plan.voice = plan.first_stream = replicas[0]
        plan.after = replicas[1]
        return plan(request)

    return route


@dataclass
class Balancer:
    """Forwards every request to the replica ``route`` picks; counts where each path went."""

    route: Route
    sent: list[tuple[str, str]] = field(default_factory=list)  # (path, replica) in order
    _http: aiohttp.ClientSession | None = None
    _relays: set[web.WebSocketResponse] = field(default_factory=set)

    async def drop_streams(self) -> int:
        """Cut every WebSocket being relayed, as a replica dying or a network fault would (the
        caller's side sees an abnormal close, 1011). Returns how many were cut."""
        relays = list(self._relays)
        for downstream in relays:
            await downstream.close(code=aiohttp.WSCloseCode.INTERNAL_ERROR, message=b"dropped")
        return len(relays)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, app: web.Application) -> None:
        self._http = aiohttp.ClientSession(auto_decompress=False)

    async def _close(self, app: web.Application) -> None:
        if self._http is not None:
            await self._http.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        replica = self.route(request)
        self.sent.append((request.path, replica))
        url = replica.rstrip("/") + request.path_qs
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._relay(request, url.replace("http", "ws", 1), headers)
        async with self._http.request(
            request.method, url, headers=headers, data=await request.read()
        ) as upstream:
            body = await upstream.read()
            reply = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP}
            return web.Response(status=upstream.status, body=body, headers=reply)

    async def _relay(
        self, request: web.Request, url: str, headers: dict[str, str]
    ) -> web.WebSocketResponse:
        assert self._http is not None
        headers = {k: v for k, v in headers.items() if not k.lower().startswith("sec-websocket")}
        downstream = web.WebSocketResponse(max_msg_size=1 << 20)
        await downstream.prepare(request)
        self._relays.add(downstream)
        try:
            async with self._http.ws_connect(
                url, headers=headers, max_msg_size=1 << 20
            ) as upstream:
                await asyncio.gather(_pipe(downstream, upstream), _pipe(upstream, downstream))
        finally:
            self._relays.discard(downstream)
        return downstream


async def _pipe(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    """Copy messages from ``source`` to ``sink``; when ``source`` closes, close ``sink`` with the
    same code, so a replica's close (1008 for a refused stream, say) reaches the caller as is."""
    async for message in source:
        if message.type is WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type is WSMsgType.BINARY:
            await sink.send_bytes(message.data)
    code = source.close_code or aiohttp.WSCloseCode.OK
    if not sink.closed:
        await sink.close(code=code)


@dataclass
class RunningBalancer:
    url: str
    balancer: Balancer
    runner: web.AppRunner

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_balancer(route: Route, host: str = "127.0.0.1", port: int = 0) -> RunningBalancer:
    """Serve a :class:`Balancer` on ``host:port`` (0: any free port)."""
    balancer = Balancer(route)
    sock = socket.socket()
    sock.bind((host, port))
    runner = web.AppRunner(balancer.app())
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return RunningBalancer(f"http://{host}:{sock.getsockname()[1]}", balancer, runner)
