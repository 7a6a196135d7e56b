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

import agent.bench.cpu as agent_bench_cpu
from agent.audio.transcoder import InboundTranscoder, OutboundTranscoder
from agent.bench.calls import in_process_bridge, timed_call, vad_detection_chunks
from agent.bench.cpu import (
    ChildProcess,
    CpuRun,
    frames_from_metrics,
    free_port,
    process_cpu_seconds,
)
from agent.bench.floor import parse_frames, server_frame, start_floor_server
from agent.bench.live import run_latency_bench, run_reconnect_bench
from agent.bench.report import Figure, Section, machine_info, render_json, render_table
from agent.bench.run import SECTIONS, add_bench_arguments, audio_section, cpu_section
from agent.bench.thin import _audio_message, create_thin_app
from agent.bench.tools import run_tools_bench
from agent.config.models import DEFAULT_AGENT
from agent.live import protocol
from agent.live.connection import client_frame
from agent.sim.carrier import CallReport, CarrierOptions, load_caller_audio, place_call
from agent.sim.live.server import EmulatorOptions, RunningEmulator, start_emulator

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


async def _call_through(port: int, emulator: RunningEmulator) -> tuple[CallReport, int, int]:
    """One short call into the bridge on ``port``: its report, and the caller audio the
    emulator received (chunks, bytes)."""
    options = CarrierOptions(
        url=f"http://127.0.0.1:{port}", speed=SPEED, lead_ms=200, max_duration_s=2.0
    )
    report = await place_call(options, [load_caller_audio("transfer")])
    caller_chunks = sum(s.audio_chunks_received for s in emulator.sessions)
    caller_bytes = sum(s.audio_bytes_received for s in emulator.sessions)
    return report, caller_chunks, caller_bytes


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
        report, caller_chunks, caller_bytes = await _call_through(port, emulator)
    finally:
        if runner is not None:
            await runner.cleanup()
        await emulator.close()
    assert report.media_received  # the greeting
    assert caller_chunks > 0
    # The same caller audio agent serve sends: 20 ms frames at the default agent's input rate.
    assert caller_bytes == caller_chunks * DEFAULT_AGENT.input_sample_rate // 50 * 2


async def test_the_floor_bridge_moves_audio_both_ways() -> None:
    """The floor is a working bridge too: it greets, hears the caller at 8 kHz, and sends each
    model chunk as one media message of whole 20 ms frames."""
    emulator = await start_emulator(EmulatorOptions(speed=SPEED))
    server = await start_floor_server(emulator.url, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        report, caller_chunks, caller_bytes = await _call_through(port, emulator)
    finally:
        server.close()
        await server.wait_closed()
        await emulator.close()
    assert report.media_received  # the greeting
    assert all(size % 160 == 0 for _, size in report.media_received)
    # A 40 ms model chunk is one message of two frames, not two messages of one.
    assert max(size for _, size in report.media_received) >= 320
    assert caller_chunks > 0
    assert caller_bytes == caller_chunks * 8000 // 50 * 2


def test_the_floor_parses_masked_and_unmasked_frames_whole_and_in_pieces() -> None:
    wire = (
        client_frame(b"x" * 125, b"abcd")
        + server_frame(b"y" * 126)
        + client_frame(b"z" * 70_000, b"\x00\xff\x10\x01")
        + server_frame(b"", 0x8)
    )
    expected = [(1, True, b"x" * 125), (1, True, b"y" * 126), (1, True, b"z" * 70_000)]
    expected.append((8, True, b""))
    assert parse_frames(bytearray(wire)) == expected
    buffer, frames = bytearray(), []
    for at in range(0, len(wire), 7):  # a read can end anywhere, even inside a header
        buffer += wire[at : at + 7]
        frames += parse_frames(buffer)
    assert frames == expected
    assert not buffer


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


async def test_cpu_section_reports_each_bridge_against_the_thin_one_round_by_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ratios are taken within each round (the bridges ran side by side), then the median."""

    def run(bridge: str, cpu_ms: float) -> CpuRun:
        return CpuRun(bridge, 10, 200.0, cpu_ms * 200, cpu_ms, 50.0, 30.6, None, None, 4, 4, 0)

    rounds = [(10.0, 10.5, 6.0), (12.0, 11.4, 7.8), (11.0, 12.1, 6.6)]  # thin, agent, floor

    async def fake_bench(calls: int, seconds: float, count: int) -> list[CpuRun]:
        return [
            run(name, ms)
            for thin, agent, floor in rounds
            for name, ms in (("thin", thin), ("agent", agent), ("floor", floor))
        ]

    monkeypatch.setattr(agent_bench_cpu, "run_cpu_bench", fake_bench)
    section = await cpu_section(10, 20.0, 3)
    _well_formed(section)
    figures = {figure.name: figure for figure in section.figures}
    assert figures["agent serve / thin bridge CPU"].value == pytest.approx(1.05)  # 1.05, .95, 1.1
    assert figures["agent serve / thin bridge CPU"].passed is False
    assert figures["floor / thin bridge CPU"].value == pytest.approx(0.6)  # 0.6, 0.65, 0.6
    assert figures["floor / thin bridge CPU"].passed is None  # reported: what no design beats
    assert section.details["floor_round_ratios"] == pytest.approx([0.6, 0.65, 0.6])


@pytest.mark.parametrize("rate", [8000, 16000])
def test_the_thin_bridge_sends_the_same_audio_message_as_agent_serve(rate: int) -> None:
    """It builds it with the standard library's base64, as when the yardstick was set."""
    pcm = os.urandom(rate // 50 * 2)
    assert _audio_message(pcm, rate) == protocol.audio_message(pcm, rate)
