"""The call's transcript, keeping both what the model said and what the caller actually heard.

Gemini Live cannot be told where it was cut off, so when the caller barges in the model's output
transcription runs ahead of what was played. Each transcription fragment is stamped with the
turn's audio position (frames sent) when it arrived; at an interruption the playback tracker says
how many frames were heard, and the heard text keeps only fragments that started before that point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["caller", "agent"]


@dataclass(slots=True)
class Turn:
    """One turn: the caller's words, or the model's words with what the caller heard of them."""

    role: Role
    started_at: float
    said: str = ""
    heard: str = ""
    interrupted: bool = False
    heard_ms: int | None = None  # agent turns: audio the caller heard
    ended_at: float | None = None
    _fragments: list[tuple[int, str]] = field(default_factory=list, repr=False)


class Transcript:
    """Accumulates turns as transcription fragments arrive."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []

    def _open(self, role: Role, now: float) -> Turn:
        if self.turns and self.turns[-1].role == role and self.turns[-1].ended_at is None:
            return self.turns[-1]
        if self.turns and self.turns[-1].ended_at is None:
            self.turns[-1].ended_at = now
        turn = Turn(role, started_at=now)
        self.turns.append(turn)
        return turn

    def caller_text(self, text: str, now: float) -> None:
        """An input-transcription fragment: what the caller said."""
        turn = self._open("caller", now)
        turn.said += text
        turn.heard = turn.said

    def agent_text(self, text: str, position_frames: int, now: float) -> None:
        """Output transcription, arriving once ``position_frames`` of the turn had been sent."""
        turn = self._open("agent", now)
        turn.said += text
        turn._fragments.append((position_frames, text))

    def agent_turn_ended(self, now: float, *, heard_frames: int | None = None) -> Turn | None:
        """The model's turn is over; ``heard_frames`` is given when it was cut by a barge-in."""
        if not self.turns or self.turns[-1].role != "agent" or self.turns[-1].ended_at is not None:
            return None
        turn = self.turns[-1]
        turn.ended_at = now
        if heard_frames is None:
            turn.heard = turn.said
        else:
            turn.interrupted = True
            turn.heard_ms = heard_frames * 20
            turn.heard = "".join(text for pos, text in turn._fragments if pos < heard_frames)
        return turn
