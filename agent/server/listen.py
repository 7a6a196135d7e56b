"""Where the server meets the network: read timeouts and a cap on open connections.

aiohttp's defaults suit a server behind a proxy, not one facing the internet (the ``Procfile``
and the image listen directly): a connection that never finishes its request headers is held
for ``keepalive_timeout`` (3,630 s), and nothing caps how many are open, so a few hundred
stuck clients exhaust the process's file descriptors and every webhook times out.

* ``HTTP_READ_TIMEOUT_S`` is aiohttp's ``keepalive_timeout``: in aiohttp 3.14 its timer
  starts when a connection is made (``RequestHandler.connection_made``), and a connection still
  waiting for a complete request (headers) when it fires is closed. So it bounds both a new
  connection's headers and an idle keep-alive connection. aiohttp has no timeout on a request's
  body: the webhooks bound their own read of the form with the same setting
  (``agent.server.webhooks``).
* ``MAX_CONNECTIONS`` caps this process's open connections (WebSocket streams included).
  Beyond it a new connection gets ``503`` and is closed at once, and ``server.connections_full``
  is logged once per episode (``server.connections_available`` when it is over).

aiohttp's server options (``web.AppRunner(app, **kwargs)`` passes them to ``web.Server`` and
its ``RequestHandler``: ``keepalive_timeout``, ``max_line_size``, ``max_field_size``,
``max_headers``, ``handler_cancellation``):
https://docs.aiohttp.org/en/stable/web_reference.html#aiohttp.web.AppRunner,
https://docs.aiohttp.org/en/stable/web_reference.html#aiohttp.web.Server and, for
``handler_cancellation`` (left off: a disconnect must not cancel a webhook halfway through
opening its Live session), https://docs.aiohttp.org/en/stable/web_advanced.html#web-handler-cancellation
"""

from __future__ import annotations

import asyncio
import errno
import resource
import socket
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from agent.errors import ConfigError
from agent.server.state import METRICS, SETTINGS
from agent.settings import Settings

log = structlog.get_logger("agent.app")


#: What a connection beyond ``MAX_CONNECTIONS`` is told before it is closed. Twilio treats a
#: 5xx (or a failed connection) on the voice webhook as a reason to use the fallback URL.
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 27\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"too many open connections\r\n"
)


def connection_limit(configured: int) -> int:
    """``MAX_CONNECTIONS``, lowered to half the process's file-descriptor limit if that is less:
    the other half is for what the calls open themselves (Live sessions, tools, databases)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or configured <= soft // 2:
        return configured
    limit = max(1, soft // 2)
    log.warning(
        "server.connection_limit_lowered",
        max_connections=configured,
        limit=limit,
        open_files_limit=soft,
    )
    return limit


class ConnectionGate:
    """Counts the process's open connections and refuses new ones at ``limit``.

    It wraps aiohttp's protocol factory: each accepted connection either gets aiohttp's
    ``RequestHandler`` behind a thin counting wrapper, or (at the limit) a protocol that
    answers 503 and closes. A slot is taken when the connection is accepted, so a burst of
    accepts in one loop iteration cannot overshoot the limit."""

    def __init__(self, limit: int, on_refused: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.open = 0
        # The episode ends once enough connections have closed (hysteresis: no line per
        # connection at the boundary).
        self._resume_at = max(0, limit - max(1, limit // 10))
        self._on_refused = on_refused
        self._refused_this_episode = 0
        self._full = False
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for ``loop.create_server``, in front of aiohttp's ``make``."""

        def protocol() -> asyncio.Protocol:
            if self.open >= self.limit:
                self._refuse()
                return _Refusing()
            self.open += 1
            return _Counted(self, make())

        return protocol

    @property
    def full(self) -> bool:
        return self._full

    async def wait_open_at_most(self, count: int) -> None:
        """Until at most ``count`` connections are open (tests, and anyone watching a drain)."""
        if self.open <= count:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((count, future))
        await future

    def _refuse(self) -> None:
        self._refused_this_episode += 1
        if self._on_refused is not None:
            self._on_refused()
        if not self._full:
            self._full = True
            log.warning(
                "server.connections_full",
                open_connections=self.open,
                max_connections=self.limit,
                message="new connections are answered 503 and closed until some close",
            )

    def closed(self) -> None:
        self.open -= 1
        if self._full and self.open <= self._resume_at:
            self._full = False
            log.info(
                "server.connections_available",
                open_connections=self.open,
                max_connections=self.limit,
                refused=self._refused_this_episode,
            )
            self._refused_this_episode = 0
        for entry in list(self._waiters):
            count, future = entry
            if self.open <= count:
                self._waiters.remove(entry)
                if not future.done():
                    future.set_result(None)


class _Counted(asyncio.Protocol):
    """aiohttp's handler for one connection, counted until the connection is lost."""

    __slots__ = ("_counted", "_gate", "_inner")

    def __init__(self, gate: ConnectionGate, inner: asyncio.Protocol) -> None:
        self._gate, self._inner, self._counted = gate, inner, True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._inner.connection_lost(exc)
        finally:
            if self._counted:
                self._counted = False
                self._gate.closed()


class _Refusing(asyncio.Protocol):
    """A connection beyond the limit: 503, then closed (its file descriptor freed at once)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(REFUSAL)
        transport.close()


def server_options(settings: Settings) -> dict[str, Any]:
    """aiohttp ``Server``/``RequestHandler`` options from the settings (see the module doc)."""
    return {
        "keepalive_timeout": settings.http_read_timeout_s,
        # aiohttp's defaults, spelled out: a request line or header field over 8 KiB is a 400.
        "max_line_size": 8190,
        "max_field_size": 8190,
        "max_headers": 128,
    }


def make_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """An ``AppRunner`` for the bridge ``app`` with its server options (``kwargs`` add to them:
    the CLI's access-log format, ``handle_signals``)."""
    return web.AppRunner(app, **(server_options(app[SETTINGS]) | kwargs))


class LimitedSite(web.BaseSite):
    """A TCP site (a host and port, or a bound socket) whose connections pass a
    :class:`ConnectionGate`; otherwise aiohttp's ``TCPSite`` / ``SockSite``."""

    __slots__ = ("_host", "_port", "_reuse_port", "_sock", "gate")

    def __init__(
        self,
        runner: web.AppRunner,
        gate: ConnectionGate,
        *,
        host: str | None = None,
        port: int = 8080,
        sock: socket.socket | None = None,
        reuse_port: bool = False,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._sock, self._reuse_port = host, port, sock, reuse_port
        self.gate = gate

    @property
    def name(self) -> str:
        if self._sock is not None:
            host, port = self._sock.getsockname()[:2]
        else:
            host, port = self._host or "0.0.0.0", self._port
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        factory = self.gate.factory(server)
        if self._sock is not None:
            self._server = await loop.create_server(factory, sock=self._sock, backlog=self._backlog)
        else:
            self._server = await loop.create_server(
                factory,
                self._host,
                self._port,
                backlog=self._backlog,
                reuse_port=self._reuse_port or None,
            )


def bind_port(host: str | None, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A socket bound to ``host``:``port``, before anything else starts: a port already in use
    is one ConfigError naming it (the command prints one line and exits 1), not a traceback
    after the server said it had started."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}: {exc.strerror}", key="HOST") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host or '*'} is already in use (another `agent serve`?): stop "
                "it, or set PORT / --port to a free port",
                key="PORT",
            ) from exc
        raise ConfigError(
            f"cannot listen on {host or '*'}:{port}: {exc.strerror or exc}", key="PORT"
        ) from exc
    sock.setblocking(False)
    return sock


async def listen(
    runner: web.AppRunner,
    *,
    host: str | None = None,
    port: int = 8080,
    sock: socket.socket | None = None,
    reuse_port: bool = False,
) -> LimitedSite:
    """Start serving ``runner`` (set up) on ``host``/``port`` or ``sock``, connections capped
    at the app's ``MAX_CONNECTIONS``."""
    app = runner.app
    metrics = app[METRICS]
    gate = ConnectionGate(
        connection_limit(app[SETTINGS].max_connections),
        on_refused=metrics.connections_refused.inc,
    )
    site = LimitedSite(runner, gate, host=host, port=port, sock=sock, reuse_port=reuse_port)
    await site.start()
    return site
