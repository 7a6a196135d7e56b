"""A call's journal: its :class:`~agent.cluster.state.CallSnapshot` kept up to date in the shared
state, so another replica can continue the call if this one goes.

The call reports what changed (a turn closed, a new resumption handle, the call ended) and goes
on at once: writes happen in the background, one at a time and in order, and changes that arrive
while a write is under way are folded into the next one (only the newest snapshot matters). None
of this is on the per-frame path: a few changes a minute, against 100 frames a second.
:meth:`flush` waits for the newest snapshot to be written (a handover does, before it lets the
stream go). A failing store costs a warning, never the call.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from agent.cluster.state import CallSnapshot, SavedTurn, SharedState
from agent.errors import SharedStateError

log = structlog.get_logger("agent.cluster")

__all__ = ["CallJournal"]


class CallJournal:
    """The newest snapshot of one call, written to the shared state in the background."""

    def __init__(
        self, state: SharedState, snapshot: CallSnapshot, *, wall: Callable[[], float]
    ) -> None:
        self._state = state
        self._wall = wall
        self.snapshot = snapshot
        self._dirty = False
        self._writer: asyncio.Task[None] | None = None
        self._failed = False

    def save(self) -> None:
        """Write the snapshot as it is (the call has started: a continuation can find it)."""
        self._update()

    def turns(self, turns: Sequence[SavedTurn]) -> None:
        """The conversation so far changed (a turn closed, or was corrected)."""
        self._update(turns=tuple(turns))

    def handle(self, handle: str) -> None:
        """The Live session issued a new resumable handle."""
        if handle != self.snapshot.handle:
            self._update(handle=handle)

    def agent(self, name: str) -> None:
        """Another agent took the call over: a continuation elsewhere goes on with it."""
        if name != self.snapshot.agent:
            self._update(agent=name)

    def ended(self) -> None:
        """The bridge ended the call: a ``<Connect action>`` request for it must hang up."""
        self._update(ended=True)

    def handed_over(self, *, quiet: bool) -> None:
        """This stream is being let go for another replica to continue the call; ``quiet``: at a
        moment when the model owed nothing."""
        self._update(quiet=quiet)

    async def flush(self) -> None:
        """Wait until the newest snapshot is written (or the store failed)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    def _update(self, **changes: Any) -> None:
        self.snapshot = dataclasses.replace(self.snapshot, updated_at=self._wall(), **changes)
        if self._writer is not None and not self._writer.done():
            self._dirty = True
            return
        self._writer = asyncio.get_running_loop().create_task(
            self._write(), name=f"journal {self.snapshot.call_sid}"
        )

    async def _write(self) -> None:
        while True:
            self._dirty = False
            try:
                await self._state.save_call(self.snapshot)
                if self._failed:
                    self._failed = False
                    log.info("shared_state.recovered", call_sid=self.snapshot.call_sid)
            except SharedStateError as exc:
                if not self._failed:  # once per outage, not once per turn
                    log.warning("shared_state.unavailable", error=str(exc), action="not saved")
                self._failed = True
            if not self._dirty:
                return
