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
    """Accumulates turns as transcription fragments arrive.

    The model's turn and the caller's are tracked separately: the caller's words can arrive
    while the model is speaking (a barge-in, or the service's transcription lagging behind its
    answer), and must not cut the model's turn in two. A turn's place in the list is where it
    started.
    """

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self._agent: Turn | None = None  # the model's turn in progress
        self._caller: Turn | None = None  # the caller's turn in progress

    def restore(self, turns: list[Turn]) -> None:
        """Start from an earlier stream's turns (a call continued on a new media stream)."""
        self.turns[:0] = turns

    def caller_text(self, text: str, now: float) -> None:
        """An input-transcription fragment: what the caller said."""
        if self._caller is None:
            self._caller = Turn("caller", started_at=now)
            self.turns.append(self._caller)
        self._caller.said += text
        self._caller.heard = self._caller.said

    def agent_text(self, text: str, position_frames: int, now: float) -> None:
        """Output transcription, arriving once ``position_frames`` of the turn had been sent."""
        if self._agent is None:
            self._agent = Turn("agent", started_at=now)
            self.turns.append(self._agent)
            self._close_caller(now)  # the model answering means the caller's turn is over
        self._agent.said += text
        self._agent._fragments.append((position_frames, text))

    def agent_turn_ended(self, now: float, *, heard_frames: int | None = None) -> Turn | None:
        """The model's turn is over; ``heard_frames`` is given when it was cut by a barge-in."""
        turn, self._agent = self._agent, None
        if turn is None:
            return None
        turn.ended_at = now
        if heard_frames is None:
            turn.heard = turn.said
        else:
            turn.interrupted = True
            turn.heard_ms = heard_frames * 20
            turn.heard = "".join(text for pos, text in turn._fragments if pos < heard_frames)
        return turn

    def history(self) -> list[tuple[str, str]]:
        """The conversation as ``(role, text)`` for the Live API (``user``/``model``): for the
        model's turns what the caller heard of them, since a cut remainder never happened for
        the caller. Seeds a fresh session when a reconnection cannot resume."""
        turns = []
        for turn in self.turns:
            if turn.role == "caller":
                turns.append(("user", turn.said))
            else:
                turns.append(("model", turn.said if turn.ended_at is None else turn.heard))
        return [(role, text) for role, text in turns if text.strip()]

    def _close_caller(self, now: float) -> None:
        if self._caller is not None:
            self._caller.ended_at = now
            self._caller = None
