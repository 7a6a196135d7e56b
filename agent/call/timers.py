"""The call's clocks: keypad groups, the idle caller, the wrap-up prompt, the time limit, and
the caller kept waiting by a blocking tool.

Pure and synchronous, like :class:`~agent.call.dtmf.DtmfCollector` (which it owns): the session
reports what happened and when (the caller spoke, pressed a key, the model's audio will play until
some time), asks for :meth:`CallTimers.next_deadline`, sleeps until then, and asks
:meth:`CallTimers.expired` what fired. A deadline may move later after it was read (the caller
spoke meanwhile): waking early is harmless, since ``expired`` then reports nothing. Only a key press
can bring a deadline closer, so only a key press needs to wake the sleeper.

A stall is the model owing an answer and sending nothing: the caller spoke, a tool answered, its
turn ended empty, or its audio stopped mid-turn, and for ``stall_after_s`` nothing came from it
(nor is a blocking tool running, nor anything playing). Each :class:`Stall` fired counts up its
``attempt``; the session escalates (a nudge, then a reconnection, then the fallback). Anything
from the model starts the count again.

Idle detection follows both parties: the call is idle when neither the caller (speech, keys) nor
the model (until its audio has played out) has been heard for ``idle_timeout_s``. The first time,
the model is asked to check on the caller; if the caller stays silent for another
``idle_timeout_s`` the call ends. Only the caller can undo a check-in: the model's own check-in
audio keeps the line busy but does not count as the caller coming back.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.config.models import CallPolicy

from .dtmf import DtmfCollector


@dataclass(frozen=True, slots=True)
class KeypadGroup:
    """The caller paused after typing digits: send them to the model as one message."""

    digits: str


@dataclass(frozen=True, slots=True)
class WrapUp:
    """The time limit is ``wrap_up_before_s`` away: ask the model to wrap up (once per call)."""


@dataclass(frozen=True, slots=True)
class IdleCheck:
    """Nobody has been heard for the idle timeout: ask the model to check on the caller."""

    silent_s: float


@dataclass(frozen=True, slots=True)
class IdleTimeout:
    """Still silent a whole idle timeout after the check-in: end the call."""

    silent_s: float


@dataclass(frozen=True, slots=True)
class HoldOn:
    """A blocking tool has kept the caller waiting ``tool_hold_after_s``: tell them to hold on
    (once per wait), rather than leave them in silence until it answers."""

    waited_s: float


@dataclass(frozen=True, slots=True)
class Stall:
    """The model owes the caller an answer and has sent nothing for ``silent_s``; ``attempt``
    counts the stalls since the model was last heard (1: the first), ``cause`` says why an
    answer was owed."""

    cause: str
    silent_s: float
    attempt: int


@dataclass(frozen=True, slots=True)
class MaxDuration:
    """The call reached its time limit: end it."""

    seconds: float


TimerEvent = KeypadGroup | WrapUp | IdleCheck | IdleTimeout | HoldOn | Stall | MaxDuration
#: The events after which the call is over (``expired`` reports nothing after one of them).
ENDING = (IdleTimeout, MaxDuration)


class CallTimers:
    """One call's timers, from ``began`` (the call's start on the session's clock)."""

    def __init__(self, policy: CallPolicy, began: float) -> None:
        self._policy = policy
        self._began = began
        self._keypad = DtmfCollector(policy.dtmf_group_timeout_s)
        self._last_activity = began  # either party: caller speech, keys, or model audio playing
        self._last_caller_activity = began
        self._idle_checked_at: float | None = None  # when the model was asked to check in
        self._wrap_up_sent = False
        self._tool_wait_began: float | None = None  # a blocking tool keeps the model silent
        self._held = False  # this wait's hold-on message was given
        self._owed: str | None = None  # why the model owes an answer now (None: it does not)
        self._quiet_since = began  # since when the model has sent nothing (or a stall fired)
        self._stalls = 0  # stalls since the model was last heard
        self._at_once = False  # the next stall is due now, not after stall_after_s

    # -- what happened ----------------------------------------------------------------------------

    def caller_spoke(self, now: float) -> None:
        """The caller is speaking at ``now`` (the bridge's VAD, frame by frame)."""
        self._last_activity = self._last_caller_activity = now

    def key_pressed(self, digit: str, now: float) -> str | None:
        """The caller pressed ``digit``; returns the group it completes (a terminator), if any.
        The keypad group's deadline may now be the next one: wake whoever sleeps on it."""
        self._last_activity = self._last_caller_activity = now
        return self._keypad.press(digit, now)

    def tool_wait(self, waiting: bool, now: float) -> None:
        """A blocking tool started (``waiting``: the model is silent until it answers) or the
        last one finished. A new wait may be told to hold on again."""
        if waiting and self._tool_wait_began is None:
            self._tool_wait_began, self._held = now, False
        elif not waiting:
            self._tool_wait_began = None

    def answer_owed(self, cause: str, now: float) -> None:
        """The model owes an answer from ``now``: the caller stopped speaking (``caller``), a
        tool result went back expecting one (``tool``), its turn ended with nothing in it
        (``empty_turn``: due at once), or its audio stopped mid-turn (``audio``).

        The caller falling silent while a tool's answer is already owed restarts the wait but
        keeps the cause ``tool``: the bridge's VAD ends its hangover after a quick tool has
        answered, and the stall is still the model not acting on that result."""
        if not (cause == "caller" and self._owed == "tool"):
            self._owed = cause
        self._quiet_since = now
        self._at_once = cause == "empty_turn"  # the model said it is done, with nothing said

    def model_heard(self, now: float, *, answered: bool) -> None:
        """Something came from the model at ``now``; ``answered``: its turn is complete with
        content, so nothing is owed any more."""
        self._quiet_since = now
        self._stalls = 0
        if answered:
            self._owed = None

    def agent_heard_until(self, until: float) -> None:
        """The model's audio sent so far plays until ``until``: the line is busy till then."""
        self._last_activity = max(self._last_activity, until)

    @property
    def last_caller_activity(self) -> float:
        """When the caller was last heard (speech or keys); the call's start if never."""
        return self._last_caller_activity

    # -- what is due -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest time something may fire (None: nothing is pending)."""
        deadlines = [
            self._keypad.deadline,
            self._duration_deadline(),
            self._idle_deadline(),
            self._hold_deadline(),
            self._stall_deadline(),
        ]
        return min((d for d in deadlines if d is not None), default=None)

    def expired(self, now: float) -> list[TimerEvent]:
        """What fired by ``now``, in the order to act on it; an ending event comes last."""
        fired: list[TimerEvent] = []
        digits = self._keypad.due(now)
        if digits:
            fired.append(KeypadGroup(digits))
        policy = self._policy
        # Each event fires when ``now`` reaches the very deadline next_deadline() reported,
        # computed the same way: a test written as "elapsed >= limit" can round the other way
        # and leave a deadline that is due yet never fires, and the sleeper spinning on it.
        if policy.max_duration_s is not None:
            end = self._began + policy.max_duration_s
            if now >= end:
                fired.append(MaxDuration(policy.max_duration_s))
                return fired
            if not self._wrap_up_sent and now >= end - policy.wrap_up_before_s:
                self._wrap_up_sent = True
                fired.append(WrapUp())
        hold_at = self._hold_deadline()
        if hold_at is not None and now >= hold_at and self._tool_wait_began is not None:
            self._held = True
            fired.append(HoldOn(round(now - self._tool_wait_began, 3)))
        stall_at = self._stall_deadline()
        if stall_at is not None and now >= stall_at and self._owed is not None:
            self._stalls += 1
            fired.append(Stall(self._owed, round(now - self._quiet_since, 3), self._stalls))
            self._quiet_since = now  # the next attempt gets a whole stall_after_s
            self._at_once = False
        if policy.idle_timeout_s is not None:
            idle = self._idle(now, policy.idle_timeout_s)
            if idle is not None:
                fired.append(idle)
        return fired

    # -- internals --------------------------------------------------------------------------------

    def _stall_deadline(self) -> float | None:
        after = self._policy.stall_after_s
        if after is None or self._owed is None or self._tool_wait_began is not None:
            return None  # a blocking tool has its own hold-on; the model is waiting for it
        if self._at_once:
            return self._quiet_since
        # Not silence while the caller is speaking or the model's audio is still playing.
        return max(self._quiet_since, self._last_activity) + after

    def _hold_deadline(self) -> float | None:
        after = self._policy.tool_hold_after_s
        if after is None or self._tool_wait_began is None or self._held:
            return None
        return self._tool_wait_began + after

    def _duration_deadline(self) -> float | None:
        policy = self._policy
        if policy.max_duration_s is None:
            return None
        end = self._began + policy.max_duration_s
        return end if self._wrap_up_sent else end - policy.wrap_up_before_s

    def _idle_since(self) -> float:
        """Where the current idle period started: the last activity, or the check-in."""
        return max(self._last_activity, self._idle_checked_at or self._began)

    def _idle_deadline(self) -> float | None:
        timeout = self._policy.idle_timeout_s
        return None if timeout is None else self._idle_since() + timeout

    def _idle(self, now: float, timeout_s: float) -> IdleCheck | IdleTimeout | None:
        checked = self._idle_checked_at
        if checked is not None and self._last_caller_activity > checked:
            # The caller came back after the check-in: the next silence gets a check-in again.
            self._idle_checked_at = None
        if now < self._idle_since() + timeout_s:  # as _idle_deadline computes it
            return None
        silent_s = round(now - self._last_activity, 1)
        if self._idle_checked_at is None:
            self._idle_checked_at = now
            return IdleCheck(silent_s)
        return IdleTimeout(silent_s)
