"""How hard one call may try to keep a Live connection, and when a whole process should stop trying:
pure and synchronous, :class:`~agent.live.link.LiveLink` passes times in and does the waiting.

A Live API that accepts connections and then fails them at once (a ``goAway`` with ``timeLeft: 0s``
right after ``setupComplete``, a 1011 close, an oversized frame) must not be retried without
bound. :class:`ReconnectBudget` counts every way a connection can end without having *worked*:

* a connection **worked** if the model completed a turn on it, or it stayed open at least
  ``working_after_s`` (the caller may be silent: a quiet connection is not a broken one);
* the first reconnection after a working connection is immediate (a ``goAway`` switch, an
  ordinary 1011); each consecutive failure after it (an attempt that fails to open, a connection
  that ends before it worked) waits ``first_delay_s``, doubling, at most ``max_delay_s``;
* the call gives up (the link raises ``LiveUnavailableError`` and the call plays its fallback)
  once ``deadline_s`` has passed without a working connection, or once ``max_attempts_per_minute``
  connection attempts were made in any rolling 60 s, whatever the failure.

A run of reconnections with at least one failure in it is a *storm*: :class:`Storm` sums it up for
one log line (``live.reconnect_storm``) instead of one line per attempt.

:class:`CircuitBreaker` is shared by every link of a process: after ``storms`` calls gave up
within ``window_s``, new connection attempts (a call's first, or a retry after a failure) fail
fast for ``cool_down_s``; an ordinary switch of a working call still goes ahead.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 60.0  # the rolling window of ``max_attempts_per_minute``


@dataclass(slots=True)
class Storm:
    """Reconnections without a working connection in between, summed up for one log line."""

    started_at: float
    attempts: int = 0  # connection attempts made during it
    failures: int = 0  # attempts that failed to open, connections that ended before they worked
    reasons: dict[str, int] = field(default_factory=dict)  # failures by reason
    last_error: str = ""

    def fields(self, now: float) -> dict[str, object]:
        """The log line's fields."""
        return {
            "attempts": self.attempts,
            "failures": self.failures,
            "reasons": dict(self.reasons),
            "duration_s": round(now - self.started_at, 3),
            "last_error": self.last_error,
        }


class ReconnectBudget:
    """The retry budget of one Live session (one call), across all its connections."""

    def __init__(
        self,
        *,
        deadline_s: float,
        first_delay_s: float,
        max_delay_s: float,
        working_after_s: float,
        max_attempts_per_minute: int,
    ) -> None:
        self._deadline_s = deadline_s
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._working_after_s = working_after_s
        self._max_attempts = max_attempts_per_minute
        self._attempts: deque[float] = deque()  # when each recent attempt started
        self._failing_since: float | None = None  # no working connection since; None: one works
        self._opened_at: float | None = None  # the current connection's, if one is open
        self._working = False  # the current connection has worked
        self.ever_worked = False
        self.failures = 0  # consecutive failures since the last working connection
        self._run_attempts = 0  # attempts since the last working connection
        self.spent_because = ""  # why the budget ran out ("deadline", "rate"), once it has
        self._storm: Storm | None = None
        # The storm the last :meth:`failed` ended (its connection had worked), for its log line.
        self.ended_storm: Storm | None = None

    # -- what happened --------------------------------------------------------------------------

    def attempt(self, now: float) -> None:
        """A connection attempt starts at ``now``."""
        if self._failing_since is None:
            self._failing_since = now
        self._attempts.append(now)
        self._run_attempts += 1
        if self._storm is not None:
            self._storm.attempts += 1

    def connected(self, now: float) -> None:
        """The attempt succeeded: a connection is open (it has not worked yet)."""
        self._opened_at = now
        self._working = False

    def turn_completed(self, now: float) -> Storm | None:
        """The model completed a turn on the current connection: it works. Returns the storm
        this ends, if any."""
        self._working = True
        return self._worked()

    def failed(self, now: float, reason: str, error: str = "") -> float | None:
        """An attempt failed to open, or the current connection ended (lost, or left on a
        ``goAway``), at ``now``. Returns how long to wait before the next attempt (before
        jitter), or ``None``: the budget is spent, give up (see :attr:`spent_because`)."""
        opened_at, self._opened_at = self._opened_at, None
        self.ended_storm = None
        if opened_at is not None and (self._working or now - opened_at >= self._working_after_s):
            self.ended_storm = self._worked()
            self._failing_since = now  # from now on, no working connection
            delay = 0.0
        else:
            if self._failing_since is None:
                self._failing_since = now
            self.failures += 1
            if self._storm is None:
                self._storm = Storm(started_at=self._failing_since, attempts=self._run_attempts)
            self._storm.failures += 1
            self._storm.reasons[reason] = self._storm.reasons.get(reason, 0) + 1
            self._storm.last_error = error or reason
            delay = min(self._first_delay_s * 2 ** (self.failures - 1), self._max_delay_s)
        self._working = False
        recent = self._since(now - WINDOW_S + delay)
        if len(recent) >= self._max_attempts:
            self.spent_because = "rate"
            if self._storm is None:  # working connections, each lost at once: a storm too
                self._storm = Storm(started_at=recent[0], attempts=len(recent))
                self._storm.failures = 1
                self._storm.reasons[reason] = 1
                self._storm.last_error = error or reason
            return None
        if now + delay - self._failing_since > self._deadline_s:
            self.spent_because = "deadline"
            return None
        return delay

    def finish(self, now: float) -> Storm | None:
        """The session ends: the storm in progress, if any (for its log line)."""
        storm, self._storm = self._storm, None
        return storm

    # -- questions ------------------------------------------------------------------------------

    def remaining(self, now: float) -> float:
        """How long an attempt starting ``now`` may run before the deadline."""
        if self._failing_since is None:
            return self._deadline_s
        return self._deadline_s - (now - self._failing_since)

    def in_storm(self, now: float) -> bool:
        """A failure since the last working connection, and the current one (if any) has not
        worked yet."""
        if self.failures == 0:
            return False
        opened_at = self._opened_at
        return opened_at is None or not (self._working or now - opened_at >= self._working_after_s)

    @property
    def storm(self) -> Storm | None:
        """The storm in progress (None: no failure since the last working connection)."""
        return self._storm

    def _worked(self) -> Storm | None:
        self.ever_worked = True
        self.failures = 0
        self._run_attempts = 0
        self._failing_since = None
        storm, self._storm = self._storm, None
        return storm

    def _since(self, start: float) -> deque[float]:
        """The attempts that started after ``start`` (older ones are forgotten)."""
        attempts = self._attempts
        while attempts and attempts[0] <= start:
            attempts.popleft()
        return attempts


class CircuitBreaker:
    """Per process: after ``storms`` calls gave up on the Live API within ``window_s``, new
    connection attempts fail fast for ``cool_down_s``, so a broken backend does not turn every
    new call into a storm of its own."""

    def __init__(
        self, *, storms: int = 5, window_s: float = 60.0, cool_down_s: float = 30.0
    ) -> None:
        self.storms = storms
        self.window_s = window_s
        self.cool_down_s = cool_down_s
        self._recent: deque[float] = deque()
        self._open_until: float | None = None

    def gave_up(self, now: float) -> bool:
        """A call spent its budget at ``now``. True: this opened the breaker."""
        if self.is_open(now):
            return False
        recent = self._recent
        recent.append(now)
        while recent and recent[0] < now - self.window_s:
            recent.popleft()
        if len(recent) < self.storms:
            return False
        recent.clear()
        self._open_until = now + self.cool_down_s
        return True

    def is_open(self, now: float) -> bool:
        """New attempts should fail fast at ``now``."""
        return self._open_until is not None and now < self._open_until

    def retry_in(self, now: float) -> float:
        """Seconds until the breaker closes again (0: it is closed)."""
        return 0.0 if self._open_until is None else max(0.0, self._open_until - now)
