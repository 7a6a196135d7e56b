"""Calling hours (``agent.config.hours``): parsed once, asked with a literal ``now``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.config.hours import CallingHours

NEW_YORK = "America/New_York"


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_a_window_is_open_from_its_start_until_just_before_its_end_in_the_callees_zone() -> None:
    hours = CallingHours.parse("09:00-20:00")
    # New York is UTC-5 in January.
    assert not hours.open_at(utc(2026, 1, 5, 13, 59), NEW_YORK)  # 08:59
    assert hours.open_at(utc(2026, 1, 5, 14, 0), NEW_YORK)  # 09:00
    assert hours.open_at(utc(2026, 1, 6, 0, 59), NEW_YORK)  # 19:59
    assert not hours.open_at(utc(2026, 1, 6, 1, 0), NEW_YORK)  # 20:00


def test_daylight_saving_time_moves_the_window_in_utc() -> None:
    hours = CallingHours.parse("09:00-20:00")
    assert hours.open_at(utc(2026, 7, 6, 13, 0), NEW_YORK)  # 09:00 EDT (UTC-4)
    assert not hours.open_at(utc(2026, 1, 5, 13, 0), NEW_YORK)  # 08:00 EST


def test_the_next_opening_is_today_before_the_window_and_tomorrow_after_it() -> None:
    hours = CallingHours.parse("09:00-17:00")
    before = hours.next_opening(utc(2026, 1, 5, 12, 0), NEW_YORK)  # 07:00 local
    assert before.isoformat() == "2026-01-05T09:00:00-05:00"
    after = hours.next_opening(utc(2026, 1, 5, 23, 30), NEW_YORK)  # 18:30 local
    assert after.isoformat() == "2026-01-06T09:00:00-05:00"
    inside = hours.next_opening(utc(2026, 1, 5, 15, 0), NEW_YORK)
    assert inside.isoformat() == "2026-01-05T10:00:00-05:00"  # open now: now


def test_a_window_may_end_at_midnight_and_naive_times_are_utc() -> None:
    hours = CallingHours.parse("18:00-24:00")
    assert hours.open_at(datetime(2026, 1, 5, 23, 59), "UTC")
    assert str(hours) == "18:00-24:00"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("9-5", "HH:MM-HH:MM"),
        ("09:00-25:00", "HH:MM-HH:MM"),
        ("17:00-09:00", "end after they start"),
        ("09:00-09:00", "end after they start"),
        ("24:00-24:30", "HH:MM-HH:MM"),
    ],
)
def test_malformed_hours_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        CallingHours.parse(text)
