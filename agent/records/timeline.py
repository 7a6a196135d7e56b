"""A call as the console shows it: live timeline events, and the timeline drawn as SVG.

Both read a :class:`~agent.records.store.CallRecord` (the call's turns, tool calls and token use,
already masked and redacted as the store was configured: ``MASK_CALLER_NUMBERS``,
``RECORD_REDACT_FIELDS``), so what the console shows is what the record holds and nothing more.
A call in progress on this replica adds a :class:`LiveSample`, read off the session's existing
counters a few times a second by whoever is watching: nothing is added to the per-frame path.

:class:`CallFeed` is sans-I/O: give it the record and the sample as they are now and it says
what changed since the last time, as JSON-ready events (docs/console.md lists them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from xml.sax.saxutils import escape

from agent.records.store import CallRecord, ToolCallRecord, Turn

__all__ = ["CallFeed", "LiveSample", "dumps", "record_json", "timeline_svg"]


@dataclass(frozen=True, slots=True)
class LiveSample:
    """What a call in progress on this replica is doing now, from counters it keeps anyway.

    ``caller_level_dbfs`` is the level of the caller's last 20 ms frame (the VAD's own RMS),
    ``agent_frames`` how many frames have been sent to the caller so far (the page draws the
    agent's level from its rate); ``cost_usd`` is None when the model has no price.
    """

    caller_level_dbfs: float | None
    caller_speaking: bool
    agent_frames: int
    barge_ins: int
    reconnects: int
    tokens: Mapping[str, int]
    cost_usd: float | None
    #: The turn still being spoken, as transcribed so far (role, text), masked like records.
    open_turn: tuple[str, str] | None = None


@dataclass(slots=True)
class CallFeed:
    """The events for one watcher of one call: each turn, tool call and change once."""

    _turns: dict[int, tuple[str, str | None, bool]] = field(default_factory=dict)
    _tools: int = 0
    _tokens: dict[str, int] = field(default_factory=dict)
    _cost: float | None = None
    _barge_ins: int = 0
    _reconnects: int = 0
    _started: bool = False
    _open_turn: tuple[str, str] | None = None
    ended: bool = False

    def update(
        self,
        record: CallRecord | None,
        sample: LiveSample | None,
        now: float,
        record_cost_usd: float | None = None,
    ) -> list[dict[str, Any]]:
        """The events since the last update; ``now`` (wall clock) stamps levels and counters.
        ``record_cost_usd``: what the record's tokens cost, for a call without a sample (on
        another replica), None when unpriced."""
        events: list[dict[str, Any]] = []
        if record is not None and not self._started:
            self._started = True
            events.append(
                {
                    "type": "started",
                    "call_sid": record.call_sid,
                    "agent": record.agent,
                    "from": record.from_number,
                    "at": record.started_at,
                }
            )
        if record is not None:
            for turn in record.turns:
                seen = (turn.said, turn.heard, turn.interrupted)
                if self._turns.get(turn.index) != seen:
                    self._turns[turn.index] = seen
                    events.append({"type": "turn", **_turn(turn, record.started_at)})
            for tool in record.tool_calls[self._tools :]:
                events.append({"type": "tool", **_tool(tool, record.started_at)})
            self._tools = len(record.tool_calls)
        if sample is not None:
            events.extend(self._sampled(sample, now))
        elif record is not None and dict(record.usage) != self._tokens:
            # Another replica's call: its record's token totals.
            self._tokens, self._cost = dict(record.usage), record_cost_usd
            events.append(
                {"type": "usage", "tokens": self._tokens, "cost_usd": record_cost_usd, "at": now}
            )
        if record is not None and record.ended_at is not None and not self.ended:
            self.ended = True
            events.append(
                {
                    "type": "ended",
                    "reason": record.end_reason,
                    "at": record.ended_at,
                    "duration_s": record.duration_s,
                    "cost_usd": record.summary.get("cost_usd"),
                }
            )
        return events

    def _sampled(self, sample: LiveSample, now: float) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = [
            {
                "type": "level",
                "at": now,
                "caller_dbfs": sample.caller_level_dbfs,
                "caller_speaking": sample.caller_speaking,
                "agent_frames": sample.agent_frames,
            }
        ]
        for _ in range(self._barge_ins, sample.barge_ins):
            events.append({"type": "barge_in", "at": now})
        self._barge_ins = max(self._barge_ins, sample.barge_ins)
        for _ in range(self._reconnects, sample.reconnects):
            events.append({"type": "reconnect", "at": now})
        self._reconnects = max(self._reconnects, sample.reconnects)
        if sample.open_turn != self._open_turn:
            self._open_turn = sample.open_turn
            role, text = sample.open_turn or (None, None)
            events.append({"type": "speaking", "role": role, "text": text, "at": now})
        tokens = dict(sample.tokens)
        if tokens != self._tokens or sample.cost_usd != self._cost:
            self._tokens, self._cost = tokens, sample.cost_usd
            events.append(
                {"type": "usage", "tokens": tokens, "cost_usd": sample.cost_usd, "at": now}
            )
        return events


def _turn(turn: Turn, call_start: float) -> dict[str, Any]:
    return {
        "index": turn.index,
        "role": turn.role,
        "said": turn.said,
        "heard": turn.heard,
        "interrupted": turn.interrupted,
        "start_s": round(turn.started_at - call_start, 3),
        "end_s": round(turn.ended_at - call_start, 3),
    }


def _tool(tool: ToolCallRecord, call_start: float) -> dict[str, Any]:
    return {
        "call_id": tool.call_id,
        "name": tool.name,
        "arguments": tool.arguments,
        "result": tool.result,
        "outcome": tool.outcome,
        "start_s": round(tool.started_at - call_start, 3),
        "latency_ms": round(tool.latency_ms, 1),
    }


def record_json(record: CallRecord) -> dict[str, Any]:
    """An ended (or running) call for the console: the record's own fields, times relative to
    its start for turns and tools."""
    return {
        "call_sid": record.call_sid,
        "agent": record.agent,
        "from": record.from_number,
        "to": record.to_number,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "duration_s": record.duration_s,
        "end_reason": record.end_reason,
        "tokens": dict(record.usage),
        "cost_usd": record.summary.get("cost_usd"),
        "turns": [_turn(t, record.started_at) for t in record.turns],
        "tools": [_tool(t, record.started_at) for t in record.tool_calls],
    }


# -- the picture ------------------------------------------------------------------------------

_WIDTH: Final = 800
_LEFT: Final = 70  # room for the lane labels
_LANES: Final = ("caller", "agent", "tools")
_LANE_Y: Final = {"caller": 20, "agent": 50, "tools": 80}
_BAR: Final = 18
_COLOURS: Final = {"caller": "#3b82f6", "agent": "#10b981", "tools": "#f59e0b"}
_TITLE_LIMIT: Final = 300


def timeline_svg(record: CallRecord) -> str:
    """The call's turns on a time axis, one lane each for the caller, the agent and tool calls;
    an agent turn the caller cut off ends in a red bar (the barge-in). Each shape's ``<title>``
    holds its text (said, and heard where it differs), so a browser shows it on hover."""
    end = record.ended_at
    last = max(
        [t.ended_at for t in record.turns]
        + [t.started_at + t.latency_ms / 1000 for t in record.tool_calls]
        + [end if end is not None else record.started_at]
    )
    span = max(last - record.started_at, 1.0)
    scale = (_WIDTH - _LEFT - 10) / span

    def x(at: float) -> float:
        return round(_LEFT + (at - record.started_at) * scale, 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} 130" '
        f'width="{_WIDTH}" height="130" role="img" '
        f'aria-label="timeline of call {_attr(record.call_sid)}" font-family="sans-serif" '
        'font-size="11">'
    ]
    for lane in _LANES:
        y = _LANE_Y[lane]
        parts.append(f'<text x="4" y="{y + 13}">{lane}</text>')
        parts.append(
            f'<line x1="{_LEFT}" y1="{y + _BAR / 2}" x2="{_WIDTH - 10}" y2="{y + _BAR / 2}" '
            'stroke="#e5e7eb"/>'
        )
    for turn in record.turns:
        lane = "caller" if turn.role == "caller" else "agent"
        x1, x2 = x(turn.started_at), x(turn.ended_at)
        title = turn.said
        if turn.heard is not None and turn.heard != turn.said:
            title = f"{turn.said}\nheard: {turn.heard}"
        parts.append(
            f'<rect class="turn {lane}" x="{x1}" y="{_LANE_Y[lane]}" '
            f'width="{max(x2 - x1, 2.0)}" height="{_BAR}" fill="{_COLOURS[lane]}">'
            f"<title>{_text(title)}</title></rect>"
        )
        if turn.interrupted:
            parts.append(
                f'<rect class="barge-in" x="{max(x2 - 2, x1)}" y="{_LANE_Y[lane] - 3}" '
                f'width="3" height="{_BAR + 6}" fill="#dc2626"><title>barge-in</title></rect>'
            )
    for tool in record.tool_calls:
        x1 = x(tool.started_at)
        x2 = x(tool.started_at + tool.latency_ms / 1000)
        title = f"{tool.name} ({tool.outcome}, {tool.latency_ms:.0f} ms)"
        parts.append(
            f'<rect class="tool" x="{x1}" y="{_LANE_Y["tools"]}" width="{max(x2 - x1, 3.0)}" '
            f'height="{_BAR}" fill="{_COLOURS["tools"]}"><title>{_text(title)}</title></rect>'
        )
    # Seconds along the bottom: about eight ticks whatever the call's length.
    step = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600) if span / s <= 8), 1200)
    tick = 0
    while tick <= span:
        tx = round(_LEFT + tick * scale, 1)
        parts.append(f'<line x1="{tx}" y1="104" x2="{tx}" y2="108" stroke="#6b7280"/>')
        parts.append(f'<text x="{tx}" y="122" text-anchor="middle">{tick}s</text>')
        tick += step
    parts.append("</svg>")
    return "".join(parts)


def _text(value: str) -> str:
    return escape(value[:_TITLE_LIMIT])


def _attr(value: str) -> str:
    return escape(value, {'"': "&quot;"})


def dumps(event: Mapping[str, Any]) -> str:
    """One event as compact JSON (values a record holds are JSON already)."""
    return json.dumps(event, separators=(",", ":"), default=str)
