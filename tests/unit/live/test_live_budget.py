"""The retry budget of a Live session and the per-process circuit breaker, on literal times."""

from __future__ import annotations

from agent.live.budget import CircuitBreaker, ReconnectBudget


def budget(*, deadline_s: float = 15.0, per_minute: int = 20) -> ReconnectBudget:
    return ReconnectBudget(
        deadline_s=deadline_s,
        first_delay_s=0.1,
        max_delay_s=2.0,
        working_after_s=5.0,
        max_attempts_per_minute=per_minute,
    )


def test_attempts_that_fail_to_open_back_off_exponentially_up_to_the_bound() -> None:
    b = budget()
    delays = []
    now = 0.0
    for _ in range(7):
        b.attempt(now)
        delay = b.failed(now, "connect_failed")
        assert delay is not None
        delays.append(delay)
        now += delay
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]


def test_a_connection_that_ends_right_after_setup_counts_as_a_failure() -> None:
    # goAway timeLeft 0s (or a 1011) right after setupComplete: it opened, but never worked.
    b = budget()
    delays = []
    now = 0.0
    for _ in range(4):
        b.attempt(now)
        b.connected(now)
        delay = b.failed(now, "go_away")
        assert delay is not None
        delays.append(delay)
        now += delay
    assert delays == [0.1, 0.2, 0.4, 0.8]
    assert b.failures == 4


def test_the_deadline_counts_from_the_last_working_connection_whatever_the_failure() -> None:
    b = budget()
    b.attempt(0.0)
    b.connected(0.0)
    b.turn_completed(1.0)  # it worked
    assert b.failed(100.0, "closed_1011") == 0.0  # lost: reconnect at once
    now = 100.0
    while True:
        b.attempt(now)
        b.connected(now)
        delay = b.failed(now, "closed_1011")
        if delay is None:
            break
        now += delay
    assert b.spent_because == "deadline"
    assert 100.0 + 13.0 <= now <= 100.0 + 15.0
    storm = b.finish(now)
    assert storm is not None
    assert storm.reasons == {"closed_1011": storm.failures}
    assert storm.attempts == storm.failures


def test_a_connection_that_stays_open_long_enough_worked() -> None:
    b = budget()
    b.attempt(0.0)
    b.connected(0.0)
    assert b.failed(4.9, "dropped") == 0.1  # too short: a failure
    b.attempt(5.0)
    b.connected(5.0)
    assert b.failed(10.0, "dropped") == 0.0  # 5 s: it worked, the backoff starts over
    assert b.failures == 0
    assert b.finish(10.0) is None  # the storm ended when it worked


def test_a_completed_turn_ends_a_storm_and_returns_its_summary() -> None:
    b = budget()
    b.attempt(0.0)
    assert b.failed(0.0, "connect_failed", "refused") == 0.1
    b.attempt(0.1)
    b.connected(0.1)
    storm = b.turn_completed(0.5)
    assert storm is not None
    assert storm.fields(0.5) == {
        "attempts": 2,
        "failures": 1,
        "reasons": {"connect_failed": 1},
        "duration_s": 0.5,
        "last_error": "refused",
    }
    assert b.storm is None
    assert b.failures == 0


def test_too_many_attempts_in_a_minute_spend_the_budget_even_if_each_connection_worked() -> None:
    b = budget(per_minute=5)
    now = 0.0
    for _ in range(4):
        b.attempt(now)
        b.connected(now)
        b.turn_completed(now)
        assert b.failed(now + 0.5, "dropped") == 0.0
        now += 1.0
    b.attempt(now)
    b.connected(now)
    b.turn_completed(now)
    assert b.failed(now + 0.5, "dropped") is None
    assert b.spent_because == "rate"
    storm = b.finish(now)
    assert storm is not None
    assert storm.attempts == 5


def test_attempts_older_than_a_minute_no_longer_count() -> None:
    b = budget(per_minute=2)
    b.attempt(0.0)
    b.connected(0.0)
    assert b.failed(30.0, "go_away") == 0.0
    b.attempt(30.0)
    b.connected(30.0)
    assert b.failed(61.0, "go_away") == 0.0  # the attempt at 0 s has left the window
    assert b.remaining(61.0) == 15.0 - 0.0


def test_the_remaining_time_of_an_attempt_is_what_is_left_of_the_deadline() -> None:
    b = budget()
    assert b.remaining(0.0) == 15.0
    b.attempt(2.0)
    assert b.failed(2.0, "connect_failed") == 0.1
    assert b.remaining(12.0) == 5.0


def test_the_breaker_opens_after_enough_storms_in_its_window_for_its_cool_down() -> None:
    breaker = CircuitBreaker(storms=3, window_s=60.0, cool_down_s=30.0)
    assert not breaker.gave_up(0.0)
    assert not breaker.gave_up(10.0)
    assert not breaker.is_open(10.0)
    assert breaker.gave_up(20.0)  # the third: open
    assert breaker.is_open(20.0)
    assert breaker.is_open(49.9)
    assert breaker.retry_in(40.0) == 10.0
    assert not breaker.is_open(50.0)
    assert breaker.retry_in(50.0) == 0.0
    # The count starts over after it opened.
    assert not breaker.gave_up(51.0)


def test_storms_outside_the_window_do_not_open_the_breaker() -> None:
    breaker = CircuitBreaker(storms=2, window_s=60.0, cool_down_s=30.0)
    assert not breaker.gave_up(0.0)
    assert not breaker.gave_up(61.0)
    assert not breaker.is_open(61.0)


def test_a_storm_ended_by_a_connection_that_stayed_open_is_handed_over_at_its_end() -> None:
    b = budget()
    b.attempt(0.0)
    b.connected(0.0)
    assert b.failed(1.0, "closed_1011") == 0.1
    assert b.ended_storm is None
    assert b.in_storm(1.0)
    b.attempt(1.1)
    b.connected(1.1)
    assert b.in_storm(2.0)
    assert not b.in_storm(6.1)  # open 5 s: it works
    assert b.failed(30.0, "dropped") == 0.0
    storm = b.ended_storm
    assert storm is not None
    assert storm.reasons == {"closed_1011": 1}
    assert not b.in_storm(30.0)
