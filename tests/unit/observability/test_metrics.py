"""Metrics: what ``GET /metrics`` exposes after updates, the FrameTimer's sampling and flushing,
and label values kept to fixed sets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from agent.observability.metrics import (
    MAX_TOOL_LABELS,
    MULTIPROCESS_DIR,
    FrameTimer,
    Metrics,
    normalise_label,
)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``render()``, parsed back: (name, sorted labels) -> value."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, tuple(sorted(labels.items()))), 0.0)


class FakeClock:
    """A perf_counter_ns stand-in that advances only when told to."""

    def __init__(self) -> None:
        self.now = 1_000_000_000
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.now


def test_a_fresh_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    first.count_interruption()
    assert value(first, "agent_interruptions_total") == 1
    assert value(second, "agent_interruptions_total") == 0


def test_the_default_registry_also_exposes_process_metrics() -> None:
    names = {name for name, _ in samples(Metrics())}
    assert "agent_active_calls" in names
    assert "python_info" in names


def test_render_reports_each_update() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.count_call_ended("support", "caller hung up")
    metrics.count_call_ended("support", "caller hung up")
    metrics.count_call_ended("sales", "timed out")
    metrics.count_live_reconnect("go_away")
    metrics.observe_live_connect(0.3)
    metrics.count_interruption()
    metrics.observe_tool("lookup_order", "ok", 0.12)
    metrics.count_tokens({"AUDIO": 100, "TEXT": 5}, {"AUDIO": 40})

    assert value(metrics, "agent_calls_total", agent="support", reason="caller_hung_up") == 2
    assert value(metrics, "agent_calls_total", agent="sales", reason="timed_out") == 1
    assert value(metrics, "agent_live_reconnects_total", reason="go_away") == 1
    assert value(metrics, "agent_live_connect_seconds_count") == 1
    assert value(metrics, "agent_live_connect_seconds_bucket", le="0.5") == 1
    assert value(metrics, "agent_live_connect_seconds_bucket", le="0.25") == 0
    assert value(metrics, "agent_interruptions_total") == 1
    assert (
        value(metrics, "agent_tool_latency_seconds_count", tool="lookup_order", outcome="ok") == 1
    )
    assert value(metrics, "agent_tokens_total", direction="prompt", modality="AUDIO") == 100
    assert value(metrics, "agent_tokens_total", direction="prompt", modality="TEXT") == 5
    assert value(metrics, "agent_tokens_total", direction="response", modality="AUDIO") == 40


def test_active_calls_are_read_from_a_function_at_scrape_time() -> None:
    metrics = Metrics(CollectorRegistry())
    active = {"CA1": object(), "CA2": object()}
    metrics.track_active_calls(lambda: len(active))
    assert value(metrics, "agent_active_calls") == 2
    active.clear()
    assert value(metrics, "agent_active_calls") == 0


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("caller hung up", "caller_hung_up"),
        ("Agent ended", "agent_ended"),
        ("transferred", "transferred"),
        ("error", "error"),
        ("KeyError('x') in handler", "other"),
    ],
)
def test_call_end_reasons_are_normalised_to_a_fixed_set(raw: str, label: str) -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.count_call_ended("support", raw)
    assert value(metrics, "agent_calls_total", agent="support", reason=label) == 1


def test_reconnect_reasons_map_unknown_close_codes_to_closed_other() -> None:
    metrics = Metrics(CollectorRegistry())
    for reason in ("closed_1011", "closed", "closed_4000", "closed_4001", "closed_x", "exploded"):
        metrics.count_live_reconnect(reason)
    assert value(metrics, "agent_live_reconnects_total", reason="closed_1011") == 1
    assert value(metrics, "agent_live_reconnects_total", reason="closed") == 1
    assert value(metrics, "agent_live_reconnects_total", reason="closed_other") == 2
    assert value(metrics, "agent_live_reconnects_total", reason="other") == 2


def test_live_connect_failures_are_counted_by_a_fixed_set_of_reasons() -> None:
    metrics = Metrics(CollectorRegistry())
    for reason in ("auth", "auth", "model", "timeout", "API key not valid"):
        metrics.count_live_connect_failure(reason)
    assert value(metrics, "agent_live_connect_failures_total", reason="auth") == 2
    assert value(metrics, "agent_live_connect_failures_total", reason="model") == 1
    assert value(metrics, "agent_live_connect_failures_total", reason="timeout") == 1
    assert value(metrics, "agent_live_connect_failures_total", reason="other") == 1


def test_tool_outcomes_outside_the_fixed_set_count_as_other() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.observe_tool("crm", "exploded", 1.0)
    metrics.observe_tool("crm", "cancelled", 1.0)
    assert value(metrics, "agent_tool_latency_seconds_count", tool="crm", outcome="other") == 1
    assert value(metrics, "agent_tool_latency_seconds_count", tool="crm", outcome="cancelled") == 1


def test_tool_names_are_labels_up_to_a_bound_then_other() -> None:
    metrics = Metrics(CollectorRegistry())
    for i in range(MAX_TOOL_LABELS + 10):
        metrics.observe_tool(f"tool_{i}", "ok", 0.01)
    metrics.observe_tool("tool_0", "ok", 0.01)  # a name already seen keeps its own label
    metrics.observe_tool("not a name; DROP TABLE", "error", 0.01)

    tools = {
        dict(labels)["tool"]
        for name, labels in samples(metrics)
        if name == "agent_tool_latency_seconds_count"
    }
    assert len(tools) == MAX_TOOL_LABELS + 2  # the names, "other" and "invalid"
    assert value(metrics, "agent_tool_latency_seconds_count", tool="other", outcome="ok") == 10
    assert value(metrics, "agent_tool_latency_seconds_count", tool="tool_0", outcome="ok") == 2
    assert value(metrics, "agent_tool_latency_seconds_count", tool="invalid", outcome="error") == 1


def test_an_unexpected_label_value_is_logged_once() -> None:
    metrics = Metrics(CollectorRegistry())
    with capture_logs() as logs:
        for _ in range(3):
            metrics.count_call_ended("support", "the moon")
        metrics.count_call_ended("support", "other")  # asked for by name: nothing to report
    assert logs == [
        {
            "event": "metrics.label_normalised",
            "label": "reason",
            "value": "the moon",
            "log_level": "warning",
        }
    ]


def test_token_labels_are_normalised() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.add_tokens("prompt", "audio", 3)
    metrics.add_tokens("prompt", "SMELL", 4)
    metrics.add_tokens("cached", "TEXT", 5)
    metrics.add_tokens("response", "TEXT", 0)  # nothing to count: no series created
    assert value(metrics, "agent_tokens_total", direction="prompt", modality="AUDIO") == 3
    assert value(metrics, "agent_tokens_total", direction="prompt", modality="OTHER") == 4
    assert value(metrics, "agent_tokens_total", direction="other", modality="TEXT") == 5
    assert ("agent_tokens_total", (("direction", "response"), ("modality", "TEXT"))) not in (
        samples(metrics)
    )


def test_normalise_label_keeps_known_values_and_folds_the_rest() -> None:
    allowed = frozenset({"go_away", "closed_other", "other"})
    assert normalise_label(" Go-Away ", allowed) == "go_away"
    assert normalise_label("closed-1234", allowed) == "closed_other"
    assert normalise_label("anything", allowed) == "other"


def test_frame_timer_times_the_first_frame_then_one_in_n() -> None:
    metrics = Metrics(CollectorRegistry())
    clock = FakeClock()
    timer = FrameTimer(metrics, sample_every=5, clock_ns=clock)
    reads_at_start = clock.reads
    sampled = []
    for _ in range(11):
        started = timer.start()
        sampled.append(started != 0)
        clock.now += 20_000  # 20 µs of work
        timer.inbound(started)
    assert sampled == [True, False, False, False, False, True, False, False, False, False, True]
    # Two clock reads per sampled frame, none for the others.
    assert clock.reads - reads_at_start == 2 * 3
    assert timer.pending == (11, 0)


def test_frame_timer_holds_counts_until_a_second_has_passed() -> None:
    metrics = Metrics(CollectorRegistry())
    clock = FakeClock()
    timer = FrameTimer(metrics, sample_every=2, clock_ns=clock)
    for _ in range(10):  # all within the first second
        timer.inbound(timer.start())
    assert value(metrics, "agent_frames_total", direction="in") == 0

    clock.now += FrameTimer.FLUSH_INTERVAL_NS
    timer.inbound(timer.start())  # sampled (the 11th): sees the second has passed, flushes
    timer.inbound(timer.start())  # not sampled: no clock read, so no flush either
    assert value(metrics, "agent_frames_total", direction="in") == 11
    assert timer.pending == (1, 0)
    assert value(metrics, "agent_frame_processing_seconds_count", direction="in") == 6


def test_frame_timer_flush_pushes_everything_at_call_end() -> None:
    metrics = Metrics(CollectorRegistry())
    clock = FakeClock()
    timer = FrameTimer(metrics, sample_every=50, clock_ns=clock)
    for _ in range(3):
        started = timer.start()
        clock.now += 10_000
        timer.inbound(started)
    started = timer.start()
    clock.now += 200_000  # one model chunk: 4 frames in 200 µs
    timer.outbound(started, frames=4)
    timer.flush()

    assert value(metrics, "agent_frames_total", direction="in") == 3
    assert value(metrics, "agent_frames_total", direction="out") == 4
    # The first inbound frame was sampled (10 µs); no outbound sample this time.
    assert value(metrics, "agent_frame_processing_seconds_count", direction="in") == 1
    assert value(metrics, "agent_frame_processing_seconds_bucket", direction="in", le="1e-05") == 1
    timer.flush()  # idempotent: nothing more to push
    assert value(metrics, "agent_frames_total", direction="in") == 3


def test_frame_timer_times_outbound_chunks_per_frame() -> None:
    metrics = Metrics(CollectorRegistry())
    clock = FakeClock()
    timer = FrameTimer(metrics, sample_every=1, clock_ns=clock)
    started = timer.start()
    clock.now += 100_000  # 100 µs for 10 frames: 10 µs a frame
    timer.outbound(started, frames=10)
    timer.outbound(timer.start(), frames=0)  # resampler still buffering: counted, not timed
    timer.flush()
    assert value(metrics, "agent_frame_processing_seconds_sum", direction="out") == pytest.approx(
        1e-5
    )
    assert value(metrics, "agent_frame_processing_seconds_count", direction="out") == 1


def test_frame_timer_rejects_a_zero_sampling_rate() -> None:
    with pytest.raises(ValueError, match="sample_every"):
        FrameTimer(Metrics(CollectorRegistry()), sample_every=0)


# -- agent serve --workers: every worker answers for the machine -----------------------------------

_WORKER = """
import os, sys
from agent.observability.metrics import Metrics
metrics = Metrics()
metrics.set_active_calls(int(sys.argv[1]))
metrics.count_call_ended("acme", "caller hung up")
print(os.getpid())
"""
_SCRAPE = """
from agent.observability.metrics import Metrics
print(Metrics().render()[0].decode())
"""


ROOT = Path(__file__).resolve().parents[3]


def _python(code: str, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def _sample(body: str, name: str) -> float:
    (line,) = [line for line in body.splitlines() if line.startswith(name)]
    return float(line.rsplit(" ", 1)[1])


def test_with_a_shared_metrics_folder_any_worker_reports_every_workers_calls(
    tmp_path: Path,
) -> None:
    env = {**os.environ, MULTIPROCESS_DIR: str(tmp_path), "PYTHONPATH": str(ROOT)}
    first = int(_python(_WORKER, "2", env=env))
    _python(_WORKER, "3", env=env)
    body = _python(_SCRAPE, env=env)
    assert _sample(body, "agent_active_calls ") == 5
    assert _sample(body, 'agent_calls_total{agent="acme",reason="caller_hung_up"}') == 2
    # A worker that died no longer counts as having calls (the supervisor marks it dead).
    multiprocess.mark_process_dead(first, str(tmp_path))  # type: ignore[no-untyped-call]
    assert _sample(_python(_SCRAPE, env=env), "agent_active_calls ") == 3


def test_without_it_the_gauge_reads_the_calls_at_each_scrape() -> None:
    metrics = Metrics()
    calls = [1, 2]
    metrics.track_active_calls(lambda: len(calls))
    metrics.set_active_calls(7)  # ignored: only multiprocess mode keeps a share
    assert b"agent_active_calls 2.0" in metrics.render()[0]
