"""``agent bench`` plumbing: each section produces well-formed figures, fast.

Nothing here judges a timing: the bench's targets are for ``agent bench`` on a quiet machine, not
for a test run on a loaded one. The in-process calls run at 10x (their latencies mean nothing
then); the CPU section's subprocess handling is checked with a trivial child, and its thin bridge
in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pytest
from aiohttp import web

from agent.audio.transcoder import InboundTranscoder, OutboundTranscoder
from agent.bench.calls import in_process_bridge, timed_call, vad_detection_chunks
from agent.bench.cpu import ChildProcess, frames_from_metrics, free_port, process_cpu_seconds
from agent.bench.live import run_latency_bench, run_reconnect_bench
from agent.bench.report import Figure, Section, machine_info, render_json, render_table
from agent.bench.run import SECTIONS, add_bench_arguments, audio_section
from agent.bench.thin import create_thin_app
from agent.bench.tools import run_tools_bench
from agent.config.models import DEFAULT_AGENT
from agent.sim.carrier import CarrierOptions, load_caller_audio, place_call
from agent.sim.live.server import EmulatorOptions, start_emulator

SPEED = 10.0


def _well_formed(section: Section) -> None:
    assert section.error is None
    assert section.figures
    for figure in section.figures:
        assert isinstance(figure, Figure)
        assert figure.name
        assert figure.passed is None or figure.target, figure
    json.dumps(section.details)  # everything in the details serialises


def test_audio_section_measures_the_declared_delay_of_each_transcoder() -> None:
    section = audio_section(seconds=0.05)
    _well_formed(section)
    measured = section.details["measured_delay_ms"]
    assert measured["inbound"] == pytest.approx(InboundTranscoder.delay_ms)
    assert measured["outbound"] == pytest.approx(OutboundTranscoder.delay_ms)
    assert section.details["us_per_frame"]["inbound"] > 0


def test_bench_options_default_to_every_section_but_the_soak_and_the_capacity_ramp() -> None:
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    args = parser.parse_args([])
    assert args.only.split(",") == [name for name in SECTIONS if name not in ("soak", "capacity")]
    assert (args.capacity_max_calls, args.capacity_seconds) == (400, 12.0)
    assert not args.json
    assert (args.soak_calls, args.soak_minutes, args.soak_rounds) == (100, 10.0, 2)


def test_table_and_json_carry_every_figure_with_its_mark() -> None:
    section = Section(
        "demo",
        figures=[
            Figure("met", 1.5, "ms", "<= 5", True),
            Figure("missed", 0.9, "x", "<= 0.333", False, "honest"),
            Figure("reported", None, "ms", note="not measured"),
        ],
        details={"raw": [1, 2]},
    )
    machine = machine_info()
    options = {"only": "demo"}
    table = render_table([section], machine, machine, options)
    assert "PASS" in table
    assert "FAIL" in table
    assert f"cores={os.cpu_count()}" in table
    assert "targets: 1 of 2 met; not met: missed" in table
    document = json.loads(render_json([section], machine, machine, options))
    figures = document["sections"][0]["figures"]
    assert [f["mark"] for f in figures] == ["PASS", "FAIL", ""]
    assert len(document["machine"]["start"]["load_average"]) == 3


def test_cpu_time_is_read_from_proc_and_frames_from_metrics() -> None:
    assert process_cpu_seconds(os.getpid()) > 0
    exposition = (
        "# HELP agent_frames_total Media frames.\n"
        "# TYPE agent_frames_total counter\n"
        'agent_frames_total{direction="in"} 500.0\n'
        'agent_frames_total{direction="out"} 300.0\n'
    )
    assert frames_from_metrics(exposition) == {"in": 500.0, "out": 300.0}


def test_a_child_process_is_stopped_and_its_log_closed(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
    with ChildProcess("sleeper", argv, dict(os.environ), tmp_path / "child.log") as child:
        assert child.cpu_seconds() >= 0
    assert child.process.returncode is not None
    assert 0 < free_port() < 65536


def test_the_emulator_vad_decides_inside_and_after_a_clip() -> None:
    clip = load_caller_audio("transfer")
    started, ended = vad_detection_chunks(clip)
    assert started is not None
    assert ended is not None
    assert 0 <= started < ended


async def test_the_thin_bridge_moves_audio_both_ways() -> None:
    """The CPU yardstick is a working bridge: it greets as agent serve does and hears the caller."""
    emulator = await start_emulator(EmulatorOptions(speed=SPEED))
    runner: web.AppRunner | None = None
    try:
        port = free_port()
        runner = web.AppRunner(
            create_thin_app(emulator.url, f"http://127.0.0.1:{port}"), access_log=None
        )
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        options = CarrierOptions(
            url=f"http://127.0.0.1:{port}", speed=SPEED, lead_ms=200, max_duration_s=2.0
        )
        report = await place_call(options, [load_caller_audio("transfer")])
        caller_chunks = sum(s.audio_chunks_received for s in emulator.sessions)
        caller_bytes = sum(s.audio_bytes_received for s in emulator.sessions)
    finally:
        if runner is not None:
            await runner.cleanup()
        await emulator.close()
    assert report.media_received  # the greeting
    assert caller_chunks > 0
    # The same caller audio agent serve sends: 20 ms frames at the default agent's input rate.
    assert caller_bytes == caller_chunks * DEFAULT_AGENT.input_sample_rate // 50 * 2


async def test_a_timed_call_without_webhook_is_answered_on_start() -> None:
    async with in_process_bridge(speed=SPEED) as harness:
        options = CarrierOptions(url=harness.url, speed=SPEED, lead_ms=200)
        call = await timed_call(
            options,
            [load_caller_audio("transfer")],
            webhook=False,
            hang_up_after_audio_s=0.01,
        )
    assert call.start_sent_at is not None
    assert call.ticks_sent == len(call.media_sent_at) > 0
    assert call.first_received("media") is not None


async def test_latency_section_is_well_formed() -> None:
    section = await run_latency_bench(greeting_reps=1, barge_ins=1, speed=SPEED)
    _well_formed(section)
    assert section.details["greeting"]["preconnected_ms"]["n"] == 1
    assert section.details["barge_in"]["bridge_clear_latency_ms"]["n"] >= 1


async def test_reconnect_section_reports_each_fault() -> None:
    section = await run_reconnect_bench(("close_1011",), speed=SPEED)
    _well_formed(section)
    (call,) = section.details["calls"]
    assert call["fault"] == "close_1011"
    assert "switch_ms" in call["caller_speaking"]
    assert call["caller_frames_received"] >= call["caller_frames_sent"] > 0


async def test_tools_section_is_well_formed() -> None:
    section = await run_tools_bench(calls=20)
    _well_formed(section)
    assert len(section.details["worker_round_trip_us"]) == 20
    assert len(section.details["thread_round_trip_us"]) == 20
