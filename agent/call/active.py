"""The calls a server process is running, and the recently ended ones.

The app keeps one: it counts active calls (for draining and metrics) and lets a waiter
learn when a given call has ended, without polling.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from .session import CallSession


class ActiveCalls:
    """Active calls by CallSid, and a bounded memory of ended ones."""

    KEEP_ENDED = 256

    def __init__(self, on_change: Callable[[int], None] | None = None) -> None:
        """``on_change`` hears the number of active calls whenever it changes."""
        self._on_change = on_change
        self.active: dict[str, CallSession] = {}
        self._some_active = asyncio.Event()
        self._ended: OrderedDict[str, asyncio.Future[CallSession]] = OrderedDict()

    def started(self, session: CallSession) -> None:
        self.active[session.started.call_sid] = session
        self._some_active.set()
        if self._on_change is not None:
            self._on_change(len(self.active))

    def ended(self, session: CallSession) -> None:
        call_sid = session.started.call_sid
        if self.active.get(call_sid) is session:  # not the call's next leg, already started here
            del self.active[call_sid]
        if not self.active:
            self._some_active.clear()
        if self._on_change is not None:
            self._on_change(len(self.active))
        future = self._future(call_sid)
        if not future.done():
            future.set_result(session)
        while len(self._ended) > self.KEEP_ENDED:
            self._ended.popitem(last=False)

    async def wait_active(self, timeout_s: float = 30.0) -> None:
        """Until at least one call is in progress."""
        async with asyncio.timeout(timeout_s):
            await self._some_active.wait()

    async def wait_ended(self, call_sid: str, timeout_s: float = 30.0) -> CallSession:
        """The session of ``call_sid`` once it has ended (at once if it already has)."""
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(self._future(call_sid))

    def _future(self, call_sid: str) -> asyncio.Future[CallSession]:
        future = self._ended.get(call_sid)
        if future is None:
            future = self._ended[call_sid] = asyncio.get_running_loop().create_future()
        return future
