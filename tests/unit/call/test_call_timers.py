"""CallTimers: keypad groups, idle callers, wrap-up and the time limit, with literal times."""

from __future__ import annotations

from agent.call.timers import (
    CallTimers,
    HoldOn,
    IdleCheck,
    IdleTimeout,
    KeypadGroup,
    MaxDuration,
    Stall,
    WrapUp,
)
from agent.config.models import CallPolicy

IDLE_ONLY = CallPolicy(idle_timeout_s=10.0, max_duration_s=None)


def test_a_silent_call_is_checked_on_then_ended() -> None:
    timers = CallTimers(IDLE_ONLY, began=100.0)
    assert timers.next_deadline() == 110.0
    assert timers.expired(109.9) == []
    assert timers.expired(110.0) == [IdleCheck(silent_s=10.0)]
    assert timers.next_deadline() == 120.0  # a whole timeout after the check-in
    assert timers.expired(119.0) == []
    assert timers.expired(120.0) == [IdleTimeout(silent_s=20.0)]


def test_the_caller_speaking_restarts_the_idle_timer() -> None:
    timers = CallTimers(IDLE_ONLY, began=0.0)
    timers.caller_spoke(6.0)
    assert timers.next_deadline() == 16.0
    assert timers.expired(10.0) == []  # the old deadline: nothing fires
    assert timers.expired(16.0) == [IdleCheck(silent_s=10.0)]


def test_the_caller_speaking_again_after_a_check_in_restarts_the_idle_timer() -> None:
    timers = CallTimers(IDLE_ONLY, began=0.0)
    assert timers.expired(10.0) == [IdleCheck(silent_s=10.0)]
    timers.caller_spoke(14.0)  # "yes, I'm still here"
    assert timers.next_deadline() == 24.0
    assert timers.expired(20.0) == []  # when the call would have ended without the reply
    # A new silence gets a new check-in, not the end of the call.
    assert timers.expired(24.0) == [IdleCheck(silent_s=10.0)]
    assert timers.expired(34.0) == [IdleTimeout(silent_s=20.0)]


def test_the_models_check_in_keeps_the_line_busy_but_does_not_undo_it() -> None:
    timers = CallTimers(IDLE_ONLY, began=0.0)
    assert timers.expired(10.0) == [IdleCheck(silent_s=10.0)]
    timers.agent_heard_until(13.0)  # the model asks "are you still there?", heard until 13 s
    assert timers.next_deadline() == 23.0
    assert timers.expired(20.0) == []
    assert timers.expired(23.0) == [IdleTimeout(silent_s=10.0)]


def test_the_model_speaking_delays_the_idle_check() -> None:
    timers = CallTimers(IDLE_ONLY, began=0.0)
    timers.agent_heard_until(8.0)
    timers.agent_heard_until(5.0)  # a later report of an earlier end moves nothing back
    assert timers.next_deadline() == 18.0
    assert timers.last_caller_activity == 0.0  # the model is not the caller


def test_keys_are_caller_activity_and_pause_into_groups() -> None:
    policy = CallPolicy(dtmf_group_timeout_s=2.0, idle_timeout_s=10.0, max_duration_s=None)
    timers = CallTimers(policy, began=0.0)
    assert timers.key_pressed("4", 5.0) is None
    assert timers.key_pressed("2", 5.5) is None
    assert timers.last_caller_activity == 5.5
    assert timers.next_deadline() == 7.5  # the keypad group, before the idle check at 15.5
    assert timers.expired(7.5) == [KeypadGroup("42")]
    assert timers.next_deadline() == 15.5
    assert timers.key_pressed("9", 8.0) is None
    assert timers.key_pressed("#", 8.5) == "9"  # a terminator completes the group at once
    assert timers.next_deadline() == 18.5


def test_the_wrap_up_comes_once_before_the_time_limit() -> None:
    policy = CallPolicy(max_duration_s=60.0, wrap_up_before_s=15.0, idle_timeout_s=None)
    timers = CallTimers(policy, began=1000.0)
    assert timers.next_deadline() == 1045.0
    assert timers.expired(1044.0) == []
    assert timers.expired(1045.0) == [WrapUp()]
    assert timers.next_deadline() == 1060.0
    assert timers.expired(1050.0) == []  # no second wrap-up
    assert timers.expired(1060.0) == [MaxDuration(seconds=60.0)]


def test_the_time_limit_ends_the_call_before_anything_else_is_acted_on() -> None:
    policy = CallPolicy(max_duration_s=30.0, wrap_up_before_s=5.0, idle_timeout_s=10.0)
    timers = CallTimers(policy, began=0.0)
    timers.key_pressed("1", 29.0)
    # Late (a busy loop): the keypad group is sent, the time limit ends the call, and neither
    # the wrap-up nor an idle check is asked of a model about to be hung up on.
    assert timers.expired(31.5) == [KeypadGroup("1"), MaxDuration(seconds=30.0)]


def test_without_limits_nothing_is_ever_due() -> None:
    timers = CallTimers(CallPolicy(max_duration_s=None, idle_timeout_s=None), began=0.0)
    assert timers.next_deadline() is None
    assert timers.expired(1e9) == []


HOLD_ONLY = CallPolicy(idle_timeout_s=None, max_duration_s=None, tool_hold_after_s=3.0)


def test_a_caller_kept_waiting_by_a_blocking_tool_is_told_to_hold_on_once() -> None:
    timers = CallTimers(HOLD_ONLY, began=0.0)
    assert timers.next_deadline() is None
    timers.tool_wait(True, 10.0)
    assert timers.next_deadline() == 13.0
    assert timers.expired(12.9) == []
    assert timers.expired(13.0) == [HoldOn(waited_s=3.0)]
    assert timers.next_deadline() is None  # once per wait
    assert timers.expired(30.0) == []
    # A second blocking tool while the first runs is the same wait.
    timers.tool_wait(True, 31.0)
    assert timers.next_deadline() is None


def test_a_tool_that_answers_in_time_gets_no_hold_on_and_the_next_wait_starts_afresh() -> None:
    timers = CallTimers(HOLD_ONLY, began=0.0)
    timers.tool_wait(True, 10.0)
    timers.tool_wait(False, 12.0)
    assert timers.next_deadline() is None
    assert timers.expired(20.0) == []
    timers.tool_wait(True, 20.0)
    assert timers.expired(23.0) == [HoldOn(waited_s=3.0)]


def test_without_tool_hold_after_s_a_wait_is_silent() -> None:
    timers = CallTimers(
        CallPolicy(idle_timeout_s=None, max_duration_s=None, tool_hold_after_s=None), 0.0
    )
    timers.tool_wait(True, 1.0)
    assert timers.next_deadline() is None
    assert timers.expired(100.0) == []


STALL_ONLY = CallPolicy(
    idle_timeout_s=None, max_duration_s=None, tool_hold_after_s=None, stall_after_s=8.0
)


def test_a_model_that_owes_an_answer_and_sends_nothing_stalls_once_per_stall_after() -> None:
    timers = CallTimers(STALL_ONLY, began=0.0)
    assert timers.next_deadline() is None  # nothing owed yet
    timers.answer_owed("caller", 10.0)
    assert timers.next_deadline() == 18.0
    assert timers.expired(17.9) == []
    assert timers.expired(18.0) == [Stall("caller", 8.0, 1)]
    assert timers.next_deadline() == 26.0
    assert timers.expired(26.0) == [Stall("caller", 8.0, 2)]


def test_anything_from_the_model_restarts_the_count_and_an_answer_ends_it() -> None:
    timers = CallTimers(STALL_ONLY, began=0.0)
    timers.answer_owed("caller", 10.0)
    assert timers.expired(18.0) == [Stall("caller", 8.0, 1)]
    timers.model_heard(20.0, answered=False)  # it started speaking: not stalled
    assert timers.next_deadline() == 28.0
    assert timers.expired(28.0) == [Stall("caller", 8.0, 1)]  # attempt counts from 1 again
    timers.model_heard(29.0, answered=True)
    assert timers.next_deadline() is None


def test_an_empty_turn_owed_an_answer_stalls_at_once() -> None:
    timers = CallTimers(STALL_ONLY, began=0.0)
    timers.caller_spoke(29.5)
    timers.answer_owed("empty_turn", 30.0)
    assert timers.next_deadline() == 30.0
    assert timers.expired(30.0) == [Stall("empty_turn", 0.0, 1)]
    assert timers.next_deadline() == 38.0  # the nudge gets a whole stall_after_s


def test_audio_still_playing_or_a_blocking_tool_is_not_a_stall() -> None:
    timers = CallTimers(STALL_ONLY, began=0.0)
    timers.answer_owed("audio", 40.0)
    timers.agent_heard_until(50.0)  # what it sent plays until 50
    assert timers.next_deadline() == 58.0
    timers.tool_wait(True, 51.0)
    assert timers.next_deadline() is None  # the hold-on covers a blocking tool
    timers.tool_wait(False, 60.0)
    timers.answer_owed("tool", 60.0)
    assert timers.next_deadline() == 68.0


def test_the_caller_falling_silent_after_a_tool_answered_keeps_the_stall_the_tools() -> None:
    timers = CallTimers(STALL_ONLY, began=0.0)
    timers.answer_owed("tool", 10.0)  # a quick tool answered before the VAD's hangover ended
    timers.answer_owed("caller", 10.5)
    assert timers.next_deadline() == 18.5  # the wait restarts from the caller's silence
    assert timers.expired(18.5) == [Stall("tool", 8.0, 1)]
    timers.answer_owed("caller", 19.0)  # the caller spoke again: still the tool's answer owed
    assert timers.expired(27.0) == [Stall("tool", 8.0, 2)]  # the model is still unheard


def test_without_stall_after_s_the_model_may_take_as_long_as_it_likes() -> None:
    policy = CallPolicy(
        idle_timeout_s=None, max_duration_s=None, tool_hold_after_s=None, stall_after_s=None
    )
    timers = CallTimers(policy, began=0.0)
    timers.answer_owed("empty_turn", 1.0)
    assert timers.next_deadline() is None
    assert timers.expired(1e6) == []
