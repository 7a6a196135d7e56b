"""The capacity section's pure parts: the step plan, the knee, the plots (from literal data).

No timing is asserted: the figures themselves come from ``agent bench --only capacity``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.bench.capacity import CapacityStep, find_knee, step_plan, write_plots


def step(bridge: str, calls: int, p99: float | None, lost: str | None = None) -> CapacityStep:
    return CapacityStep(
        bridge=bridge,
        calls=calls,
        cpu_ms_per_call_second=10.0 + calls / 10,
        queueing_p50_ms=None if p99 is None else p99 / 4,
        queueing_p99_ms=p99,
        rss_kib_per_call=90.0,
        lost=lost,
    )


def test_the_plan_takes_the_issue_steps_then_doubles_up_to_the_maximum() -> None:
    assert step_plan(1000) == [10, 25, 50, 100, 200, 400, 800]
    assert step_plan(200) == [10, 25, 50, 100, 200]
    assert step_plan(60) == [10, 25, 50]
    assert step_plan(5) == [5]  # fewer than the first step: that many, once
    with pytest.raises(ValueError, match="at least 1"):
        step_plan(0)


def test_the_knee_is_the_last_step_before_queueing_passes_the_limit() -> None:
    ramp = [step("agent", 50, 8.0), step("agent", 10, 1.0), step("agent", 100, 31.0)]
    knee = find_knee(ramp, limit_ms=20.0)
    assert (knee.calls, knee.reached) == (50, True)
    assert knee.step is not None
    assert knee.step.cpu_ms_per_call_second == 15.0


def test_lost_audio_is_past_the_knee_whatever_the_queueing() -> None:
    ramp = [step("thin", 10, 1.0), step("thin", 25, 2.0, lost="3 replies not heard")]
    assert find_knee(ramp).calls == 10


def test_a_ramp_that_never_passes_the_limits_says_the_knee_was_not_reached() -> None:
    knee = find_knee([step("thin", 10, 1.0), step("thin", 25, 19.9)])
    assert (knee.calls, knee.reached) == (25, False)


def test_a_first_step_already_past_the_limits_has_no_knee() -> None:
    knee = find_knee([step("thin", 10, 25.0), step("thin", 25, None)])
    assert (knee.calls, knee.reached) == (None, True)
    assert step("thin", 10, None).past_knee()  # nothing measured counts as past


def test_the_plots_are_two_pngs_one_line_per_bridge(tmp_path: Path) -> None:
    steps = [
        step(bridge, calls, calls / 5)
        for bridge in ("thin", "agent", "agent --workers 2")
        for calls in (10, 25, 50)
    ]
    paths = write_plots(steps, tmp_path / "plots", "2 cores, load 0.5; agent bench --only capacity")
    assert [p.name for p in paths] == ["capacity-cpu.png", "capacity-queueing.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_lone_step_past_the_limits_does_not_end_the_ramp() -> None:
    """A neighbour's burst on a shared machine: the ramp went on and stayed within the limits."""
    ramp = [step("agent", 10, 1.0), step("agent", 25, 24.0), step("agent", 50, 3.0)]
    assert find_knee(ramp) == find_knee([step("agent", 50, 3.0)])
    assert (find_knee(ramp).calls, find_knee(ramp).reached) == (50, False)
    ramp += [step("agent", 100, 40.0), step("agent", 200, 90.0)]
    assert (find_knee(ramp).calls, find_knee(ramp).reached) == (50, True)
