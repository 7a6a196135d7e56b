"""Calling hours: when an agent may place a call, in the callee's time zone.

An agent file writes them as ``"09:00-20:00"`` (every day) and the callee's IANA time zone
beside them. This module is pure: it parses the text once (at load) and answers, for a given
``now``, whether a dial is allowed and, if not, when the window next opens. The dialler refuses
a dial outside the window with that time in its error, rather than queueing it silently: an
operator who scheduled the dial sees why it did not ring.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Final

_HOURS_RE: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)")


@dataclass(frozen=True, slots=True)
class CallingHours:
    """A daily window ``[start, end)`` of local wall-clock time; ``end`` may be ``24:00``."""

    start_minute: int
    end_minute: int

    @classmethod
    def parse(cls, text: str) -> CallingHours:
        """``"09:00-20:00"`` as a window; ``ValueError`` (saying what is wrong) otherwise."""
        match = _HOURS_RE.fullmatch(text.strip())
        if match is None:
            raise ValueError(
                f"calling hours are written HH:MM-HH:MM, such as '09:00-20:00', got {text!r}"
            )
        start = int(match[1]) * 60 + int(match[2])
        end = int(match[3]) * 60 + int(match[4])
        if end > 24 * 60:
            raise ValueError(f"calling hours end at 24:00 at the latest, got {text!r}")
        if end <= start:
            raise ValueError(
                f"calling hours must end after they start on the same day, got {text!r}"
            )
        return cls(start, end)

    def open_at(self, now: datetime, time_zone: str) -> bool:
        """Whether ``now`` (aware, or naive UTC) falls inside the window in ``time_zone``."""
        local = _aware(now).astimezone(zoneinfo.ZoneInfo(time_zone))
        minute = local.hour * 60 + local.minute
        return self.start_minute <= minute < self.end_minute

    def next_opening(self, now: datetime, time_zone: str) -> datetime:
        """When the window next opens after ``now`` (``now`` itself if it is open), in
        ``time_zone``: a dial refused at 21:00 may be placed from this time on."""
        zone = zoneinfo.ZoneInfo(time_zone)
        local = _aware(now).astimezone(zone)
        if self.open_at(now, time_zone):
            return local
        opening = time(self.start_minute // 60, self.start_minute % 60)
        day = local.date()
        if local.hour * 60 + local.minute >= self.end_minute:
            day += timedelta(days=1)
        return datetime.combine(day, opening, tzinfo=zone)

    def __str__(self) -> str:
        return (
            f"{self.start_minute // 60:02d}:{self.start_minute % 60:02d}-"
            f"{self.end_minute // 60:02d}:{self.end_minute % 60:02d}"
        )


def _aware(now: datetime) -> datetime:
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)
