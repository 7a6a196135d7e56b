"""Session resumption: handles that name snapshots of a conversation, shared by every connection
of one emulator, valid for two hours.

Part of the emulator's sans-I/O core (see :mod:`agent.sim.live.core`)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.sim.live.options import (
    HistoryEntry,
)
from agent.sim.live.scenario import Speech
from agent.sim.live.wire import (
    HANDLE_VALIDITY_S,
)


@dataclass(frozen=True, slots=True)
class PendingSpeech:
    """Something the model will say when it is next idle: a ``WHEN_IDLE`` function result."""

    speech: Speech
    context: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ConversationSnapshot:
    """The state a resumption handle names: what a resumed session continues from."""

    history: tuple[HistoryEntry, ...] = ()
    text_tokens: int = 0
    audio_tokens: int = 0
    turns: int = 0
    """Turns answered so far (the next scenario step's index)."""
    calls_issued: int = 0
    """Function call ids handed out so far (ids stay unique across the session)."""
    when_idle: tuple[PendingSpeech, ...] = ()
    results: Mapping[str, Any] = field(default_factory=dict)
    """The latest result of each function, by name (for scenario templates)."""
    consumed_index: int = 0
    """The index, on the connection that took the snapshot, of the last client message the state
    includes (``setup`` is 0): ``lastConsumedClientMessageIndex`` with transparent resumption."""
    audio_bytes: int = 0
    """Caller audio (PCM16 bytes) the state includes, over the whole session."""


@dataclass(slots=True)
class SessionLine:
    """One session as it moves from connection to connection through resumption."""

    serial: int
    attached: bool = False
    """A connection holds the session now; another may not resume it meanwhile."""
    connected_ms: float = 0.0
    """Connected time of the connections that held it and have ended (for the session limit)."""


@dataclass(frozen=True, slots=True)
class _IssuedHandle:
    line: SessionLine
    snapshot: ConversationSnapshot
    issued_ms: float


class ResumptionStore:
    """Resumption handles of one emulator, shared by all its connections (no I/O, no clock).

    A handle names a :class:`ConversationSnapshot` of a :class:`SessionLine` and is valid for
    ``validity_s`` of emulated time after it was issued. Handles are opaque and deterministic.
    """

    def __init__(self, validity_s: float = HANDLE_VALIDITY_S) -> None:
        self.validity_ms = validity_s * 1000
        self._handles: dict[str, _IssuedHandle] = {}
        self._lines = 0
        self._issued = 0

    def __len__(self) -> int:
        return len(self._handles)

    def open_line(self) -> SessionLine:
        """A new session."""
        self._lines += 1
        return SessionLine(self._lines)

    def issue(self, line: SessionLine, snapshot: ConversationSnapshot, now_ms: float) -> str:
        """A new handle for ``snapshot`` of ``line``; expired handles are forgotten meanwhile."""
        self._issued += 1
        self._handles = {
            handle: issued
            for handle, issued in self._handles.items()
            if now_ms - issued.issued_ms < self.validity_ms
        }
        digest = hashlib.sha256(f"live-emulator:{line.serial}:{self._issued}".encode()).digest()
        handle = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        self._handles[handle] = _IssuedHandle(line, snapshot, now_ms)
        return handle

    def find(self, handle: str, now_ms: float) -> tuple[SessionLine, ConversationSnapshot] | None:
        """The session and snapshot ``handle`` names, or ``None`` if unknown or expired."""
        issued = self._handles.get(handle)
        if issued is None or now_ms - issued.issued_ms >= self.validity_ms:
            return None
        return issued.line, issued.snapshot
