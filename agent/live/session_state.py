"""What :class:`~agent.live.link.LiveLink` must remember to replace a connection without the caller
noticing, kept apart from the awaits: pure and synchronous, the link passes events and times in.

:class:`ResumptionState` follows the server's side: the newest resumable handle, whether the model
is between turns, whether that handle was issued between turns (*fresh*: it covers the last
exchange), and when a ``goAway`` says the connection must be left. A ``goAway`` switch waits for
the quietest moment (between turns with a fresh handle) and at the latest a margin before the
server's ``timeLeft`` runs out.

:class:`HeldMessages` follows the client's side: messages held while there is no connection
(bounded for caller audio, oldest frame dropped first, never a tool result or text turn), and the
last moments of caller audio sent on the current connection, to be sent again after an abnormal
close since the server may never have read them.

With *transparent* resumption (Vertex AI's ``sessionResumption.transparent``) the server says
which client messages the state behind each handle includes (``lastConsumedClientMessageIndex``),
so the guess above is replaced by an exact account: every message sent on the connection is kept
until an update covers it, and after a switch exactly the ones not covered are sent again, in
order, whatever their kind. The official SDK's ``LiveServerSessionResumptionUpdate`` documents the
field ("Index of last message sent by client that is included in state represented by this
SessionResumptionToken ... buffering messages sent since last SessionResumptionTokenUpdate")
but not where counting starts: here the index counts the client's messages on the connection from
``setup`` as 0, so the first message after it is 1.
"""

from __future__ import annotations

from collections import deque

from agent.live.protocol import (
    GoAway,
    LiveEvent,
    ModelAudio,
    ResumptionHandle,
    ToolCallRequested,
    TurnComplete,
)


class ResumptionState:
    """The newest handle, the model's turn state and the ``goAway`` deadline of one Live session."""

    def __init__(self, go_away_margin_s: float) -> None:
        self._go_away_margin_s = go_away_margin_s
        self.handle: str | None = None
        self._between_turns = True
        # The newest handle was issued since the last turn ended: resuming from it loses nothing.
        self._handle_fresh = False
        self.go_away_at: float | None = None
        # A switch the client asked for (a new setup to take), at the next quiet moment, and at
        # the latest by ``_asked_by``.
        self._asked: str | None = None
        self._asked_by: float | None = None

    def observe(self, event: LiveEvent, now: float) -> None:
        """A server event arrived at ``now``."""
        kind = type(event)
        if kind is ModelAudio or kind is ToolCallRequested:
            # A turn (or a tool call) in progress: the newest handle no longer covers it.
            self._between_turns = False
            self._handle_fresh = False
        elif kind is TurnComplete:
            self._between_turns = True
        elif kind is ResumptionHandle:
            assert isinstance(event, ResumptionHandle)
            if event.resumable and event.handle:
                self.handle = event.handle
                # Issued mid-turn, it resumes into the middle of that turn: not fresh.
                self._handle_fresh = self._between_turns
            else:
                self._handle_fresh = False
        elif kind is GoAway:
            assert isinstance(event, GoAway)
            self.go_away_at = now + max(0.0, event.time_left_s - self._go_away_margin_s)

    def ask_switch(self, reason: str, now: float, within_s: float) -> None:
        """Move to a new connection (for ``reason``) at the next quiet moment, and at the latest
        ``within_s`` from ``now``: as for a ``goAway``, the model's turn over and the handle
        covering it, or, without resumption, just between turns."""
        self._asked, self._asked_by = reason, now + within_s

    @property
    def switch_reason(self) -> str:
        """Why the pending switch is due: ``go_away`` or the reason :meth:`ask_switch` gave."""
        return "go_away" if self.go_away_at is not None else self._asked or "go_away"

    @property
    def switch_by(self) -> float | None:
        """When a pending switch must happen, quiet or not (None: no switch pending)."""
        times = [t for t in (self.go_away_at, self._asked_by) if t is not None]
        return min(times) if times else None

    @property
    def switch_now(self) -> bool:
        """A switch (``goAway``, or asked for) is pending and this is the quietest moment to act
        on it: the model's turn is over and the handle covers it (an asked-for switch on a
        session that has no handle needs only the turn to be over)."""
        if not self._between_turns:
            return False
        if self.go_away_at is not None:
            return self._handle_fresh
        if self._asked is not None:
            return self._handle_fresh or self.handle is None
        return False

    def handle_refused(self) -> None:
        """The service rejected the handle (expired, unknown): the next session starts afresh."""
        self.handle = None

    def connected(self) -> None:
        """A new connection's events begin: no ``goAway`` from it yet, nothing asked of it."""
        self.go_away_at = None
        self._asked = self._asked_by = None

    def switching(self) -> None:
        """The connection is being replaced: the new one starts between turns, with no handle
        issued on it yet (the one resumed from has been used)."""
        self._between_turns, self._handle_fresh = True, False


class HeldMessages:
    """Client messages waiting for a connection, and recent caller audio kept for a replay."""

    def __init__(
        self, *, max_audio_frames: int, replay_s: float, transparent: bool = False
    ) -> None:
        self._max_audio_frames = max_audio_frames
        self._replay_s = replay_s
        self.transparent = transparent
        # Transparent: (index on the connection, message, is caller audio) not yet covered by a
        # resumption update, bounded like the held audio.
        self._unconsumed: deque[tuple[int, str, bool]] = deque()
        self._index = 0  # of the last message sent on the current connection (setup: 0)
        self.unconsumed_dropped = 0  # over the session: past the bound, never replayed
        self._held: deque[tuple[str, bool]] = deque()  # (message, is caller audio), in order
        self._recent: deque[tuple[float, str]] = deque()  # (sent at, audio message)
        self._held_audio = 0  # caller frames held since the last switch ended
        self._dropped_audio = 0
        self._replaying = 0
        self.replayed_frames = 0  # over the whole session

    # -- the current connection -------------------------------------------------------------------

    def sent(self, message: str, *, audio: bool, now: float) -> None:
        """``message`` went out on the current connection at ``now``."""
        if self.transparent:
            self._keep_unconsumed(message, audio)
            return
        if not audio:
            return
        recent = self._recent
        recent.append((now, message))
        horizon = now - self._replay_s
        while recent[0][0] < horizon:
            recent.popleft()

    def new_connection(self) -> None:
        """A new connection opened (its ``setup`` was message 0)."""
        self._index = 0

    def consumed(self, index: int) -> None:
        """Transparent: the server's state includes the connection's messages up to ``index``."""
        unconsumed = self._unconsumed
        while unconsumed and unconsumed[0][0] <= index:
            unconsumed.popleft()

    def _keep_unconsumed(self, message: str, audio: bool) -> None:
        self._index += 1
        unconsumed = self._unconsumed
        unconsumed.append((self._index, message, audio))
        if len(unconsumed) > self._max_audio_frames:
            # A server that never says what it consumed must not grow this without bound.
            unconsumed.popleft()
            self.unconsumed_dropped += 1

    def _replay_unconsumed(self) -> None:
        replay = [(message, audio) for _, message, audio in self._unconsumed]
        self._unconsumed.clear()
        self._held.extendleft(reversed(replay))
        frames = sum(1 for _, audio in replay if audio)
        self._held_audio += frames
        self._replaying += frames
        self.replayed_frames += frames

    def replay_recent(self) -> None:
        """The connection closed abnormally: what it was last sent goes out again, ahead of what
        is held for the next one (transparent: exactly what the server had not consumed)."""
        if self.transparent:
            self._replay_unconsumed()
            return
        replay = [(message, True) for _, message in self._recent]
        self._recent.clear()
        self._held.extendleft(reversed(replay))
        self._held_audio += len(replay)
        self._replaying += len(replay)
        self.replayed_frames += len(replay)

    def forget_recent(self) -> None:
        """We closed the connection after our last frame: the server read everything (but,
        with transparent resumption, its state may not include all of it: replay the rest)."""
        if self.transparent:
            self._replay_unconsumed()
            return
        self._recent.clear()

    # -- no connection ----------------------------------------------------------------------------

    def hold(self, message: str, *, audio: bool) -> None:
        """Keep ``message`` for the next connection; past the bound, drop the oldest caller
        frame (never a tool result or text turn)."""
        if audio:
            if self._held_audio >= self._max_audio_frames:
                for i, (_, held_audio) in enumerate(self._held):
                    if held_audio:
                        del self._held[i]
                        self._held_audio -= 1
                        self._dropped_audio += 1
                        break
            self._held_audio += 1
        self._held.append((message, audio))

    def __len__(self) -> int:
        return len(self._held)

    def first(self) -> str | None:
        """The oldest held message (None: nothing is held)."""
        return self._held[0][0] if self._held else None

    def first_sent(self) -> None:
        """:meth:`first` went out on the new connection: it leaves the buffer only now, so a
        connection that fails mid-flush loses nothing."""
        message, audio = self._held.popleft()
        if self.transparent:
            self._keep_unconsumed(message, audio)

    # -- switches ---------------------------------------------------------------------------------

    def switch_started(self) -> tuple[int, int]:
        """A switch begins: (messages held for it so far, caller frames among them replayed)."""
        replayed, self._replaying = self._replaying, 0
        return len(self._held), replayed

    def switch_done(self) -> int:
        """Everything held went out on the new connection: caller frames dropped to the bound."""
        self._held_audio = 0
        dropped, self._dropped_audio = self._dropped_audio, 0
        return dropped
