"""Grouping keypad presses: an account number typed digit by digit reaches the model as one message.

Digits collect until the caller pauses for ``group_timeout_s`` or presses a terminator (``#``);
then the group is complete. Pure: the session passes the time in and asks when the next deadline is.
"""

from __future__ import annotations


class DtmfCollector:
    """Collects DTMF digits into groups."""

    def __init__(self, group_timeout_s: float = 2.0, terminators: str = "#") -> None:
        self.group_timeout_s = group_timeout_s
        self.terminators = terminators
        self._digits: list[str] = []
        self.deadline: float | None = None

    def press(self, digit: str, now: float) -> str | None:
        """A key was pressed; returns the completed group when ``digit`` terminates it."""
        if digit in self.terminators:
            return self._complete() or None
        self._digits.append(digit)
        self.deadline = now + self.group_timeout_s
        return None

    def due(self, now: float) -> str | None:
        """The completed group if the caller has paused long enough, else None."""
        if self.deadline is not None and now >= self.deadline:
            return self._complete()
        return None

    def _complete(self) -> str:
        digits = "".join(self._digits)
        self._digits.clear()
        self.deadline = None
        return digits
