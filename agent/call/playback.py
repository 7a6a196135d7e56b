"""What the bridge sent the caller and what the caller actually heard, frame by frame.

Twilio plays media in order, in real time, starting as soon as it has some; it echoes a ``mark``
once everything sent before it has played. A ``clear`` empties its buffer and echoes every pending
mark at once, unplayed, so an echo alone proves nothing: this tracker remembers which marks were
pending when it cleared, and only other echoes count as playback.

Between marks it keeps a model of Twilio's player: each frame starts playing when it arrives or
when the one before it ends, whichever is later; every genuine mark echo re-anchors the model
("frame N finished now"). So at a barge-in the bridge knows, to within a frame, how much of the
model's turn the caller heard. Pure and synchronous: the caller passes the time in.

It also owns the call's "everything played" state (:attr:`Playback.drained`): no model turn is
open and Twilio has confirmed every mark. A goodbye must be heard before the line is cut, so the
session waits for it; ``on_drained`` tells it each time the state changes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

FRAME_MS = 20
FRAME_S = FRAME_MS / 1000
#: While the model speaks, a mark goes after the media message that brings the audio sent since
#: the last mark to this many frames (200 ms), and after a turn's last frame; not after every
#: chunk. Marks only re-anchor the player model (and prove the end was played): between them it
#: counts time, which Twilio's real-time player follows, so the heard position stays exact to a
#: frame while the player keeps time, and a drift is corrected within 200 ms of audio. Each mark
#: is a message out and an echo in, as many as the media messages themselves with per-chunk marks.
MARK_EVERY_FRAMES = 10


@dataclass(slots=True)
class ClearOutcome:
    """What a barge-in threw away."""

    heard_frames: int  # of the current turn, as estimated at the clear
    discarded_frames: int  # sent to Twilio but never played
    marks_cancelled: int


class Playback:
    """Frames sent, frames proven played, and an estimate of the caller's playback position."""

    def __init__(self, on_drained: Callable[[bool], None] | None = None) -> None:
        """``on_drained(drained)`` is called whenever :attr:`drained` changes."""
        self._on_drained = on_drained
        self._turn_open = False
        self._was_drained = True
        # (mark name, timeline position when it was sent), oldest first: Twilio echoes in order.
        self._pending: deque[tuple[str, int]] = deque()
        self._next = 0
        # The caller's timeline, in frames: sent, minus those a clear threw away.
        self._queued = 0
        # The player model: frame ``_anchor_pos`` starts playing at ``_anchor_time``, and frames
        # play back to back from there up to ``_queued``.
        self._anchor_pos = 0
        self._anchor_time = 0.0
        self._turn_start = 0
        self._marked = 0  # the timeline position the newest mark follows
        self.frames_sent = 0
        self.frames_played = 0  # proven by marks
        self.frames_discarded = 0
        self.marks_played = 0

    # -- what we send -------------------------------------------------------------------------

    def start_turn(self) -> None:
        """The model's next audio begins a new turn (for :meth:`heard_in_turn`); the turn is open
        until :meth:`end_turn` or :meth:`clear`."""
        self._turn_start = self._queued
        self._turn_open = True
        self._changed()

    def end_turn(self) -> None:
        """The model's turn is over (complete, or cut by a lost connection): once Twilio has
        played what was sent, everything has been played."""
        self._turn_open = False
        self._changed()

    def sent(self, frames: int, now: float) -> None:
        """``frames`` more 20 ms frames went to Twilio at time ``now``."""
        if self._position(now) >= self._queued:
            # Twilio's buffer had run dry: these start playing on arrival.
            self._anchor_pos, self._anchor_time = self._queued, now
        self._queued += frames
        self.frames_sent += frames

    def mark(self) -> str:
        """A new mark name to send right after the frames sent so far."""
        self._next += 1
        name = f"m{self._next}"
        self._pending.append((name, self._queued))
        self._marked = self._queued
        # Audio sent outside a model turn (a bundled prompt) is unplayed until its mark echoes.
        self._changed()
        return name

    # -- what Twilio tells us -----------------------------------------------------------------

    def mark_played(self, name: str, now: float) -> bool:
        """Twilio echoed ``name`` at ``now``: True when that proves playback (not a clear's)."""
        if not any(pending == name for pending, _ in self._pending):
            # Not ours, already accounted for, or echoed by a clear (which dropped it from pending:
            # mark names are never reused, so a cleared one can never match again).
            return False
        # Twilio plays in order: marks older than this one have played too.
        while True:
            pending, position = self._pending.popleft()
            self.frames_played = max(self.frames_played, position)
            self.marks_played += 1
            if pending == name:
                break
        # Re-anchor the player model: frame ``position`` starts now.
        self._anchor_pos, self._anchor_time = self.frames_played, now
        self._changed()
        return True

    def clear(self, now: float) -> ClearOutcome:
        """We sent ``clear`` at ``now``: Twilio drops its buffer, echoes pending marks unplayed.
        The model's turn is over too (a barge-in): nothing is left to play."""
        heard_until = self._position(now)
        outcome = ClearOutcome(
            heard_frames=max(0, heard_until - self._turn_start),
            discarded_frames=self._queued - heard_until,
            marks_cancelled=len(self._pending),
        )
        self._pending.clear()
        self.frames_discarded += outcome.discarded_frames
        self._queued = heard_until
        self._marked = heard_until  # nothing after it is left to mark
        self._anchor_pos, self._anchor_time = heard_until, now
        self._turn_start = heard_until
        self._turn_open = False
        self._changed()
        return outcome

    def _changed(self) -> None:
        drained = self.drained
        if drained != self._was_drained:
            self._was_drained = drained
            if self._on_drained is not None:
                self._on_drained(drained)

    # -- estimates ----------------------------------------------------------------------------

    def _position(self, now: float) -> int:
        """Frames on the timeline that have finished playing (or started, rounding down) by now."""
        elapsed = max(0.0, now - self._anchor_time)
        # A small epsilon keeps float error from losing a frame that ended exactly now.
        played = self._anchor_pos + int(elapsed / FRAME_S + 1e-6)
        return max(self.frames_played, min(self._queued, played))

    def heard_in_turn(self, now: float) -> int:
        """Frames of the current model turn the caller has heard by ``now`` (estimate)."""
        return max(0, self._position(now) - self._turn_start)

    def unplayed_ms(self, now: float) -> int:
        """How much sent audio is still waiting in Twilio's buffer."""
        return (self._queued - self._position(now)) * FRAME_MS

    @property
    def sent_in_turn(self) -> int:
        """Frames of the current model turn sent so far (where its transcription has reached)."""
        return self._queued - self._turn_start

    @property
    def played_ms(self) -> int:
        """Audio proven played by marks."""
        return self.frames_played * FRAME_MS

    @property
    def unmarked_frames(self) -> int:
        """Frames sent since the newest mark (a clear leaves none): what a mark now would cover."""
        return self._queued - self._marked

    @property
    def marks_sent(self) -> int:
        return self._next

    @property
    def pending_marks(self) -> int:
        return len(self._pending)

    @property
    def turn_open(self) -> bool:
        """A model turn has started and is not over (its audio may still be coming)."""
        return self._turn_open

    @property
    def drained(self) -> bool:
        """Everything sent has been played: no model turn open, no mark pending."""
        return not self._turn_open and not self._pending
