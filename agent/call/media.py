"""The media stream as a call session sees it: a socket of text frames, in and out.

:class:`CallSession` needs little of aiohttp's ``WebSocketResponse``: read messages, send text,
close, and know whether it is closed. Naming that here lets a test drive a session through a fake
socket (and keeps the session from growing a dependency on the rest of aiohttp's API).
aiohttp's ``WebSocketResponse`` satisfies it as it is: no adapter on the per-frame path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from aiohttp import WSMsgType


class MediaMessage(Protocol):
    """One message from the socket: ``TEXT`` (Twilio's JSON), ``BINARY``, or a close/error."""

    @property
    def type(self) -> WSMsgType: ...

    @property
    def data(self) -> Any: ...


class MediaSocket(Protocol):
    """Twilio's media-stream WebSocket, server side."""

    @property
    def closed(self) -> bool: ...

    def __aiter__(self) -> AsyncIterator[MediaMessage]:
        """Messages until the socket closes."""
        ...

    async def send_str(self, data: str) -> None: ...

    async def close(self) -> bool:
        """Close the socket (normal closure); False if it was already closed."""
        ...
