"""What the bridge sent the caller and, from Twilio's marks, what the caller actually heard.

Twilio plays media in order and echoes a ``mark`` once everything sent before it has played. But a
``clear`` echoes every pending mark at once, unplayed, so an echo alone proves nothing: this tracker
remembers which marks were still pending when it cleared, and only other echoes count as playback.
Pure and synchronous: the session calls it as it sends frames and receives marks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

FRAME_MS = 20


@dataclass(slots=True)
class ClearOutcome:
    """What a barge-in threw away: frames sent to Twilio but not proven played."""

    frames_unconfirmed: int
    marks_cancelled: int


class Playback:
    """Counts frames sent and frames proven played, turn by turn, from marks."""

    def __init__(self) -> None:
        # (mark name, frames sent when it was sent), oldest first: Twilio echoes in order.
        self._pending: deque[tuple[str, int]] = deque()
        self._cancelled: set[str] = set()
        self._next = 0
        # Frames on the caller's timeline: sent, minus those a clear threw away.
        self._queued = 0
        self.frames_sent = 0
        self.frames_played = 0
        self.frames_discarded = 0
        self.marks_played = 0

    def sent(self, frames: int) -> None:
        """``frames`` more 20 ms frames went to Twilio."""
        self.frames_sent += frames
        self._queued += frames

    def mark(self) -> str:
        """A new mark name to send right after the frames sent so far."""
        self._next += 1
        name = f"m{self._next}"
        self._pending.append((name, self._queued))
        return name

    def mark_played(self, name: str) -> bool:
        """Twilio echoed ``name``. True when that proves playback (not a clear's echo)."""
        if name in self._cancelled:
            self._cancelled.discard(name)
            return False
        if not any(pending == name for pending, _ in self._pending):
            return False  # not ours, or already accounted for
        # Twilio plays in order: marks older than this one have played too.
        while True:
            pending, frames = self._pending.popleft()
            self.frames_played = max(self.frames_played, frames)
            self.marks_played += 1
            if pending == name:
                return True

    def clear(self) -> ClearOutcome:
        """We sent ``clear``: Twilio drops its buffer and echoes pending marks unplayed."""
        outcome = ClearOutcome(
            frames_unconfirmed=self._queued - self.frames_played,
            marks_cancelled=len(self._pending),
        )
        self._cancelled.update(name for name, _ in self._pending)
        self._pending.clear()
        self.frames_discarded += outcome.frames_unconfirmed
        # The caller's timeline continues from the last frame proven played.
        self._queued = self.frames_played
        return outcome

    @property
    def played_ms(self) -> int:
        return self.frames_played * FRAME_MS

    @property
    def marks_sent(self) -> int:
        return self._next

    @property
    def pending_marks(self) -> int:
        return len(self._pending)
