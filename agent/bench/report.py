"""``agent bench`` results: figures with their targets, a readable table and JSON.

Each section of the bench returns a :class:`Section`: the :class:`Figure` rows the table shows
(with the target next to the value and a pass/fail mark where there is a target) and a ``details``
mapping with the raw measurements, which only the JSON output carries.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

__all__ = [
    "AUDIO_DELAY_TARGET_MS",
    "CPU_RATIO_STRETCH",
    "CPU_RATIO_TARGET",
    "GREETING_TARGET_MS",
    "TEAM_THIN_BRIDGE_MS",
    "Figure",
    "Section",
    "machine_info",
    "render_json",
    "render_table",
]

AUDIO_DELAY_TARGET_MS: Final = 5.0
"""Audio delay the bridge may add, per direction."""
CPU_RATIO_TARGET: Final = 0.5
"""CPU per call-second with every feature on, as a fraction of the thinnest bridge's (issue 12's
goal; :data:`CPU_RATIO_STRETCH` is its stretch)."""
CPU_RATIO_STRETCH: Final = 1 / 3
TEAM_THIN_BRIDGE_MS: Final = 11.0
"""The team's own measurement of the thinnest bridge on this machine class (ms per call-second)."""
GREETING_TARGET_MS: Final = 10.0
"""Greeting audio after the stream's ``start``, when pre-connected."""

PASS = "PASS"
FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure: what, how much, and against which target."""

    name: str
    value: float | int | str | None
    """``None`` when it could not be measured (the note says why)."""
    unit: str = ""
    target: str = ""
    """Human-readable target (``"<= 5"``), empty when the figure is reported, not judged."""
    passed: bool | None = None
    """``None`` when there is no target, or no value to judge."""
    note: str = ""

    @property
    def mark(self) -> str:
        return "" if self.passed is None else (PASS if self.passed else FAIL)


@dataclass(slots=True)
class Section:
    """One part of the bench (audio, cpu, latency, reconnect)."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    """How long the section took (wall clock)."""
    error: str | None = None
    """Set when the section could not run to the end; its figures are then partial."""


def judged(
    name: str, value: float | None, unit: str, limit: float, note: str = "", digits: int = 2
) -> Figure:
    """A figure with an upper-bound target: passes when ``value <= limit``."""
    if value is None:
        return Figure(name, None, unit, f"<= {limit:g}", None, note or "not measured")
    return Figure(name, round(value, digits), unit, f"<= {limit:g}", value <= limit, note)


def reported(
    name: str, value: float | int | str | None, unit: str = "", note: str = "", digits: int = 2
) -> Figure:
    """A figure without a target (measured and reported)."""
    if isinstance(value, float):
        value = round(value, digits)
    return Figure(name, value, unit, "", None, note)


def machine_info() -> dict[str, Any]:
    """What the figures depend on: cores, load, Python, and when they were taken."""
    load = os.getloadavg()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "executable": sys.executable,
    }


def _format_value(value: float | int | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def render_table(
    sections: Sequence[Section],
    machine_before: Mapping[str, Any],
    machine_after: Mapping[str, Any],
    options: Mapping[str, Any],
) -> str:
    """The whole run as aligned text: a header about the machine, then one block per section."""
    lines = [
        f"agent bench  {machine_before['date']}  cores={machine_before['cores']}  "
        f"load average {_load(machine_before)} (start) -> {_load(machine_after)} (end)",
        "options: " + ", ".join(f"{k}={v}" for k, v in options.items()),
    ]
    headers = ("figure", "value", "unit", "target", "", "note")
    for section in sections:
        rows = [
            (f.name, _format_value(f.value), f.unit, f.target, f.mark, f.note)
            for f in section.figures
        ]
        widths = [
            max(len(headers[i]), *(len(row[i]) for row in rows)) if rows else len(headers[i])
            for i in range(len(headers))
        ]
        lines.append("")
        lines.append(f"== {section.name} ({section.seconds:.0f} s)")
        if section.error:
            lines.append(f"   section stopped early: {section.error}")
        if not rows:
            continue
        header = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
        lines.append(("   " + header).rstrip())
        for row in rows:
            cells = [
                row[0].ljust(widths[0]),
                row[1].rjust(widths[1]),
                row[2].ljust(widths[2]),
                row[3].ljust(widths[3]),
                row[4].ljust(widths[4]),
                row[5],
            ]
            lines.append(("   " + "  ".join(cells)).rstrip())
    judged_figures = [f for s in sections for f in s.figures if f.passed is not None]
    failed = [f for f in judged_figures if not f.passed]
    lines.append("")
    if judged_figures:
        lines.append(
            f"targets: {len(judged_figures) - len(failed)} of {len(judged_figures)} met"
            + (f"; not met: {', '.join(f.name for f in failed)}" if failed else "")
        )
    else:
        lines.append("targets: none in the sections run (figures measured and reported)")
    return "\n".join(lines)


def _load(machine: Mapping[str, Any]) -> str:
    return " ".join(f"{x:.2f}" for x in machine["load_average"])


def render_json(
    sections: Sequence[Section],
    machine_before: Mapping[str, Any],
    machine_after: Mapping[str, Any],
    options: Mapping[str, Any],
) -> str:
    """The whole run as one JSON document (figures and raw details)."""
    document = {
        "machine": {"start": dict(machine_before), "end": dict(machine_after)},
        "options": dict(options),
        "sections": [
            {
                "name": s.name,
                "seconds": round(s.seconds, 1),
                "error": s.error,
                "figures": [asdict(f) | {"mark": f.mark} for f in s.figures],
                "details": s.details,
            }
            for s in sections
        ],
    }
    return json.dumps(document, indent=2, default=str)
