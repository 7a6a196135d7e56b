"""``agent bench``: the bridge's timing and CPU targets, measured on this machine.

Timing targets live here, never in unit tests: a loaded CI runner must not fail a build, and a
figure is only meaningful next to the load it was taken under, which every run prints.

Sections (all by default; ``--only`` picks some):

``audio``      algorithmic delay per direction (the transcoders' ``delay_ms``, checked by sending a
               click through each and finding the output peak) and CPU per 20 ms frame.
``cpu``        CPU per call-second of ``agent serve`` (every feature on) and of the thinnest
               possible bridge (:mod:`agent.bench.thin`), and of the floor (the least a Python
               bridge can spend, :mod:`agent.bench.floor`), side by side as separate processes,
               each with ``--calls`` concurrent real-time calls of ``--seconds``, ``--rounds``
               times (:mod:`agent.bench.cpu`).
``latency``    greeting after ``start`` with and without pre-connect, barge-in, reply latency and
               caller-audio transit, in-process at real time (:mod:`agent.bench.live`).
``reconnect``  goAway, a 1011 close and a dropped socket mid-call: switch time, gaps in caller and
               agent audio, frames lost (:mod:`agent.bench.live`).
``workers``    ``agent serve --workers 1`` and ``--workers 2`` under the same concurrent calls: CPU
               per call-second, cores busy, and the calls per machine that CPU cost allows
               (:mod:`agent.bench.cpu`).
``tools``      a sync ``python`` tool in its worker process against a thread: per-call round trip,
               the worker's start, how soon a cancelled call is free (:mod:`agent.bench.tools`).
``capacity``   concurrent calls ramped (10, 25, 50, 100, 200 ...) against the thin bridge,
               ``agent serve`` and ``agent serve --workers 2``, interleaved, until p99 queueing
               passes 20 ms or audio is lost: calls per core and per machine at the knee, CPU and
               memory per call, PNG plots (:mod:`agent.bench.capacity`).
``replicas``   two replicas behind one URL: the silence a caller hears when their stream's replica
               is lost (target: at most 2 s), and the greeting when the stream reaches the webhook's
               replica or another one (:mod:`agent.bench.replicas`).

Targets: at most 5 ms of added audio delay per direction; CPU per call-second with every feature on
at most half the thinnest bridge's (stretch: a third); greeting audio within 10 ms of ``start`` when
pre-connected. Reconnection gaps and barge-in latency are measured and reported.

Run ``agent bench`` (or ``python -m agent.bench``); ``--json`` prints the figures and the raw
measurements as JSON instead of a table. A default run takes about two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from agent.bench.report import (
    AUDIO_DELAY_TARGET_MS,
    CPU_RATIO_STRETCH,
    CPU_RATIO_TARGET,
    TEAM_THIN_BRIDGE_MS,
    Section,
    judged,
    machine_info,
    render_json,
    render_table,
    reported,
)

__all__ = [
    "DESCRIPTION",
    "SECTIONS",
    "add_bench_arguments",
    "audio_section",
    "main",
    "run_bench",
    "run_sections",
]

SECTIONS: Final = (
    "audio",
    "cpu",
    "latency",
    "reconnect",
    "replicas",
    "workers",
    "tools",
    "soak",
    "capacity",
)
#: Sections a bare ``agent bench`` runs: the soak and the capacity ramp take many minutes, so
#: they are asked for by name.
DEFAULT_SECTIONS: Final = ("audio", "cpu", "latency", "reconnect", "replicas", "workers", "tools")
DESCRIPTION: Final = "measure latency, CPU and reconnection gaps against the bridge's targets"


# -- audio ----------------------------------------------------------------------------------------


def _impulse_delay_inbound() -> float:
    """Send a click through :class:`InboundTranscoder` in 20 ms frames; its delay in ms."""
    import numpy as np

    from agent.audio.codec import pcm16_to_ulaw
    from agent.audio.transcoder import InboundTranscoder

    samples = np.zeros(8000, dtype="<i2")  # 1 s at 8 kHz
    at = 4000
    samples[at] = 16000
    ulaw = pcm16_to_ulaw(samples.tobytes())
    transcoder = InboundTranscoder()
    out = b"".join(transcoder.process(ulaw[i : i + 160]) for i in range(0, len(ulaw), 160))
    peak = int(np.argmax(np.abs(np.frombuffer(out, dtype="<i2").astype(np.int32))))
    return (peak - 2 * at) / 16.0  # output samples at 16 kHz -> ms


def _impulse_delay_outbound() -> float:
    """Send a click through :class:`OutboundTranscoder` in 20 ms chunks; its delay in ms."""
    import numpy as np

    from agent.audio.codec import ulaw_to_pcm16
    from agent.audio.transcoder import OutboundTranscoder

    samples = np.zeros(24000, dtype="<i2")  # 1 s at 24 kHz
    at = 12000  # a multiple of 3: lands exactly on an 8 kHz sample
    samples[at] = 24000
    pcm = samples.tobytes()
    transcoder = OutboundTranscoder()
    frames = [f for i in range(0, len(pcm), 960) for f in transcoder.process(pcm[i : i + 960])]
    out = np.frombuffer(ulaw_to_pcm16(b"".join(frames)), dtype="<i2").astype(np.int32)
    peak = int(np.argmax(np.abs(out)))
    return (peak - at // 3) / 8.0  # output samples at 8 kHz -> ms


def audio_section(seconds: float = 2.0) -> Section:
    """Algorithmic delay per direction (declared and measured) and µs per 20 ms frame."""
    from agent.audio.transcoder import InboundTranscoder, OutboundTranscoder
    from agent.bench.audio import bench_transcoders

    section = Section("audio")
    inbound_ms, outbound_ms = _impulse_delay_inbound(), _impulse_delay_outbound()
    cost = bench_transcoders(seconds)
    section.details = {
        "declared_delay_ms": {
            "inbound": InboundTranscoder.delay_ms,
            "outbound": OutboundTranscoder.delay_ms,
        },
        "measured_delay_ms": {"inbound": inbound_ms, "outbound": outbound_ms},
        "us_per_frame": cost,
        "timed_audio_s": seconds,
    }
    section.figures = [
        judged(
            "caller -> model delay (click through InboundTranscoder)",
            inbound_ms,
            "ms",
            AUDIO_DELAY_TARGET_MS,
            f"declared {InboundTranscoder.delay_ms:g} ms",
            digits=4,
        ),
        judged(
            "model -> caller delay (click through OutboundTranscoder)",
            outbound_ms,
            "ms",
            AUDIO_DELAY_TARGET_MS,
            f"declared {OutboundTranscoder.delay_ms:g} ms; whole 20 ms frames in and out",
            digits=4,
        ),
        reported("caller -> model CPU per 20 ms frame", cost["inbound"], "us", "best of 5"),
        reported("model -> caller CPU per 20 ms frame", cost["outbound"], "us", "best of 5"),
    ]
    return section


# -- cpu ------------------------------------------------------------------------------------------


async def cpu_section(calls: int, seconds: float, rounds: int) -> Section:
    """CPU per call-second of ``agent serve`` and the floor against the thin bridge
    (:mod:`agent.bench.cpu`)."""
    from dataclasses import asdict

    from agent.bench.calls import median
    from agent.bench.cpu import run_cpu_bench

    section = Section("cpu")
    runs = await run_cpu_bench(calls, seconds, rounds)
    section.details["runs"] = [asdict(run) for run in runs]
    thin = [r for r in runs if r.bridge == "thin"]
    agent = [r for r in runs if r.bridge == "agent"]
    floor = [r for r in runs if r.bridge == "floor"]

    def med(rs: Sequence[Any], attr: str) -> float | None:
        return median([getattr(r, attr) for r in rs if getattr(r, attr) is not None])

    thin_ms = med(thin, "cpu_ms_per_call_second")
    agent_ms = med(agent, "cpu_ms_per_call_second")

    def against_thin(bridge: Sequence[Any]) -> list[float]:
        # The bridges ran side by side in each round: compare them round by round.
        return [
            b.cpu_ms_per_call_second / t.cpu_ms_per_call_second
            for t, b in zip(thin, bridge, strict=True)
            if t.cpu_ms_per_call_second > 0
        ]

    ratios = against_thin(agent)
    ratio = median(ratios)
    section.details["round_ratios"] = ratios
    floor_ratios = against_thin(floor)
    section.details["floor_round_ratios"] = floor_ratios
    thin_steady = median([w for r in thin for w in r.window_ms_per_call_second])
    agent_steady = median([w for r in agent for w in r.window_ms_per_call_second])
    steady_ratio = agent_steady / thin_steady if agent_steady is not None and thin_steady else None
    section.details["ratio"] = ratio
    section.details["steady_state_ratio"] = steady_ratio
    load = f"{calls} calls x {seconds:g} s, median of {rounds}"
    failed = sum(r.failed_calls for r in runs)
    section.figures = [
        reported(
            "thin bridge CPU per call-second",
            thin_ms,
            "ms",
            f"{load}: {_nums(r.cpu_ms_per_call_second for r in thin)}; "
            f"the team measured ~{TEAM_THIN_BRIDGE_MS:g} ms",
        ),
        reported(
            "agent serve CPU per call-second (every feature on)",
            agent_ms,
            "ms",
            f"{load}: {_nums(r.cpu_ms_per_call_second for r in agent)}",
        ),
        judged(
            "agent serve / thin bridge CPU",
            ratio,
            "x",
            round(CPU_RATIO_TARGET, 3),
            f"target: half the thin bridge's (stretch {CPU_RATIO_STRETCH:.2f}); "
            f"rounds {_nums(ratios, 2)}",
            digits=2,
        ),
        reported(
            "floor / thin bridge CPU",
            median(floor_ratios),
            "x",
            f"no features, no framework (agent.bench.floor): "
            f"{_num(med(floor, 'cpu_ms_per_call_second'))} ms; rounds {_nums(floor_ratios, 2)}",
        ),
        reported(
            "agent serve / thin bridge CPU, steady state",
            steady_ratio,
            "x",
            f"median of 1 s windows: {_num(agent_steady)} / {_num(thin_steady)} ms",
        ),
        judged(
            "agent serve CPU vs the team's thin-bridge figure",
            agent_ms / TEAM_THIN_BRIDGE_MS if agent_ms is not None else None,
            "x",
            round(CPU_RATIO_TARGET, 3),
            f"agent serve / {TEAM_THIN_BRIDGE_MS:g} ms",
            digits=2,
        ),
        reported(
            "frames in / out per call-second, thin (carrier)",
            _pair(med(thin, "frames_in_per_call_second"), med(thin, "frames_out_per_call_second")),
            "",
            "caller frames sent / agent frames received",
        ),
        reported(
            "frames in / out per call-second, agent (carrier)",
            _pair(
                med(agent, "frames_in_per_call_second"), med(agent, "frames_out_per_call_second")
            ),
        ),
        reported(
            "frames in / out per call-second, floor (carrier)",
            _pair(
                med(floor, "frames_in_per_call_second"), med(floor, "frames_out_per_call_second")
            ),
        ),
        reported(
            "frames in / out per call-second, agent (/metrics)",
            _pair(
                med(agent, "metrics_frames_in_per_call_second"),
                med(agent, "metrics_frames_out_per_call_second"),
            ),
            "",
            "agent_frames_total",
        ),
        reported(
            "replies / caller utterances",
            f"{sum(r.replies for r in runs)} / {sum(r.utterances for r in runs)}",
            "",
            f"{failed} calls failed" if failed else "all calls completed",
        ),
    ]
    return section


async def soak_section(calls: int, minutes: float, rounds: int = 2) -> Section:
    """Many calls for many minutes: frames lost, memory, descriptors, loop lag."""
    from agent.bench.calls import percentile
    from agent.bench.soak import run_soak_bench

    section = Section("soak")
    run = await run_soak_bench(calls, minutes, rounds)
    section.figures.append(
        reported(
            "memory before the soak",
            run.rss_start_mb,
            "MiB",
            f"fds {run.fds_start}; Python blocks {run.python_blocks_start:,.0f}",
        )
    )
    for n, r in enumerate(run.rounds, start=1):
        lost = r.frames_sent - r.frames_counted
        section.figures += [
            reported(
                f"round {n}: calls completed / failed",
                f"{r.calls_completed} / {r.calls_failed}",
                "",
                f"{calls} at once for {minutes:g} min",
            ),
            reported(
                f"round {n}: caller frames lost",
                int(lost),
                "frames",
                f"of {r.frames_sent} sent (carrier) vs agent_frames_total",
            ),
            reported(
                f"round {n}: memory peak / after",
                f"{r.rss_peak_mb:.0f} / {r.rss_end_mb:.0f}",
                "MiB",
                f"fds peak {r.fds_peak}; Python blocks after {r.python_blocks_end:,.0f}",
            ),
            reported(
                f"round {n}: loop lag (/healthz) median / p99 / max",
                f"{percentile(r.lag_ms, 50) or 0:.1f} / {percentile(r.lag_ms, 99) or 0:.1f}"
                f" / {max(r.lag_ms, default=0):.1f}",
                "ms",
                ", ".join(f"{n} probes failed: {why}" for why, n in r.probes_failed.items()),
            ),
        ]
        for why, count in sorted(r.failures.items(), key=lambda item: -item[1]):
            section.figures.append(reported(f"round {n}: failed: {why}", count, "calls"))
    section.figures.append(
        reported(
            "memory after 10 s idle",
            run.rss_idle_mb,
            "MiB",
            f"fds {run.fds_idle}; Python blocks {run.python_blocks_idle:,.0f}",
        )
    )
    section.details = {"run": dataclasses.asdict(run)}
    return section


async def workers_section(calls: int, seconds: float) -> Section:
    """``--workers 1`` against ``--workers 2``: what one machine can carry."""
    from agent.bench.cpu import run_workers_bench

    section = Section("workers")
    runs = await run_workers_bench(calls, seconds, (1, 2))
    cores = os.cpu_count() or 1
    for run in runs:
        usable = min(run.workers, cores)  # one event loop, one core: a worker never uses more
        capacity = (
            usable * 1000 / run.cpu_ms_per_call_second if run.cpu_ms_per_call_second else None
        )
        section.figures += [
            reported(
                f"--workers {run.workers}: CPU per call-second",
                run.cpu_ms_per_call_second,
                "ms",
                f"{run.calls} calls x {seconds:g} s; {run.replies} / {run.utterances} replies",
            ),
            reported(
                f"--workers {run.workers}: cores busy under those calls",
                run.cores_busy,
                "",
                "CPU seconds / wall seconds, all its processes",
            ),
            reported(
                f"--workers {run.workers}: calls per machine, CPU-bound",
                None if capacity is None else round(capacity),
                "calls",
                f"{usable} core(s) / CPU per call-second; an estimate, see the README",
            ),
        ]
    section.details = {"runs": [dataclasses.asdict(run) for run in runs]}
    return section


async def capacity_section(max_calls: int, seconds: float, plot_dir: str, command: str) -> Section:
    """The capacity ramp (:mod:`agent.bench.capacity`), its knees and its plots."""
    from agent.bench.capacity import (
        QUEUEING_LIMIT_MS,
        find_knee,
        run_capacity_bench,
        step_plan,
        write_plots,
    )

    section = Section("capacity")
    load_before = os.getloadavg()
    steps = await run_capacity_bench(step_plan(max_calls), seconds)
    load_after = os.getloadavg()
    section.details["steps"] = [dataclasses.asdict(step) for step in steps]
    cores = os.cpu_count() or 1
    for bridge, usable in (("thin", 1), ("agent", 1), ("agent --workers 2", min(2, cores))):
        ramp = [s for s in steps if s.bridge == bridge]
        if not ramp:
            continue
        knee = find_knee(ramp, QUEUEING_LIMIT_MS)
        last = max(ramp, key=lambda s: s.calls)
        how = (
            f"last step within p99 <= {QUEUEING_LIMIT_MS:g} ms and no audio lost"
            if knee.reached
            else f"not reached: the ramp ended at {last.calls} calls within the limits"
        )
        if knee.calls is None:
            how = f"the first step was already past: {last.lost or 'queueing'}"
        section.figures.append(reported(f"{bridge}: calls at the knee", knee.calls, "calls", how))
        if knee.calls is not None:
            section.figures.append(
                reported(
                    f"{bridge}: calls per core / per machine ({cores} cores)",
                    f"{knee.calls / usable:.0f} / {knee.calls / usable * cores:.0f}",
                    "calls",
                    f"{usable} core(s) used; per machine = per core x cores, an estimate"
                    if usable < cores
                    else "per machine measured",
                )
            )
        at_knee = knee.step
        if at_knee is not None:
            section.figures.append(
                reported(
                    f"{bridge}: CPU per call-second / memory per call at the knee",
                    f"{_num(at_knee.cpu_ms_per_call_second)} ms / "
                    f"{_num(at_knee.rss_kib_per_call)} KiB",
                )
            )
    for s in steps:
        section.figures.append(
            reported(
                f"step: {s.bridge}, {s.calls} calls",
                f"{_num(s.cpu_ms_per_call_second)} ms/call-s, p99 {_num(s.queueing_p99_ms)} ms, "
                f"{_num(s.rss_kib_per_call)} KiB/call",
                "",
                f"bridge {s.cores_busy} + load generator {s.generator_cores} + emulator "
                f"{s.emulator_cores} cores; load {s.load_average}"
                + ("" if s.lost is None else f"; lost: {s.lost}"),
            )
        )
    one_worker_100 = next((s for s in steps if s.bridge == "agent" and s.calls == 100), None)
    if one_worker_100 is not None:
        section.figures.append(
            judged(
                "agent serve, 100 calls on one worker: p99 queueing",
                one_worker_100.queueing_p99_ms,
                "ms",
                5.0,
                one_worker_100.lost or "no audio lost",
                digits=2,
            )
        )
    note = (
        f"{cores} cores, load {load_before[0]:.2f} -> {load_after[0]:.2f}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {command}"
    )
    section.details["plot_note"] = note
    try:
        paths = write_plots(steps, Path(plot_dir), note)
    except ImportError:
        section.figures.append(
            reported(
                "plots",
                "not written",
                "",
                "matplotlib is missing: pip install 'gemini-phone-agent[bench]'",
            )
        )
    else:
        section.figures.append(reported("plots", len(paths), "PNG", " ".join(map(str, paths))))
    return section


def _nums(values: Iterable[float], digits: int = 1) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pair(a: float | None, b: float | None) -> str:
    def one(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    return f"{one(a)} / {one(b)}"


# -- running --------------------------------------------------------------------------------------


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` options, for ``agent bench`` and ``python -m agent.bench``."""
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_SECTIONS),
        metavar="SECTIONS",
        help=f"comma-separated sections to run (default: {','.join(DEFAULT_SECTIONS)}; also: soak)",
    )
    parser.add_argument(
        "--calls", type=int, default=4, metavar="N", help="cpu: concurrent calls per bridge (4)"
    )
    parser.add_argument(
        "--seconds", type=float, default=15.0, metavar="S", help="cpu: length of each call (15)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        metavar="R",
        help="cpu: measure both bridges R times, report the median (3)",
    )
    parser.add_argument(
        "--greetings",
        type=int,
        default=8,
        metavar="N",
        help="latency: greeting calls with and without pre-connect, each (8)",
    )
    parser.add_argument(
        "--barge-ins",
        type=int,
        default=5,
        metavar="N",
        help="latency: barge-ins in the conversation call (5)",
    )
    parser.add_argument(
        "--audio-seconds",
        type=float,
        default=2.0,
        metavar="S",
        help="audio: seconds of audio timed per direction (2)",
    )
    parser.add_argument(
        "--soak-calls", type=int, default=100, metavar="N", help="soak: concurrent calls (100)"
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=10.0,
        metavar="M",
        help="soak: minutes per round (10)",
    )
    parser.add_argument(
        "--soak-rounds",
        type=int,
        default=2,
        metavar="N",
        help="soak: rounds, each followed by 10 s idle (2; more tell a working set from a leak)",
    )
    parser.add_argument(
        "--capacity-max-calls",
        type=int,
        default=400,
        metavar="N",
        help="capacity: ramp 10, 25, 50, 100, 200, then doubling, up to N calls (400)",
    )
    parser.add_argument(
        "--capacity-seconds",
        type=float,
        default=12.0,
        metavar="S",
        help="capacity: length of each step's calls (12)",
    )
    parser.add_argument(
        "--plot-dir",
        default="capacity-plots",
        metavar="DIR",
        help="capacity: where the PNG plots go (capacity-plots)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _sections(only: str) -> list[str]:
    chosen = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown or not chosen:
        raise SystemExit(
            f"agent bench: unknown section(s) {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(SECTIONS)}"
        )
    return [name for name in SECTIONS if name in chosen]


async def run_sections(args: argparse.Namespace) -> list[Section]:
    """Run the chosen sections in order; a section that fails is reported, the others still run."""
    from agent.bench.live import run_latency_bench, run_reconnect_bench
    from agent.bench.replicas import run_replicas_bench
    from agent.bench.tools import run_tools_bench

    async def audio() -> Section:
        return audio_section(args.audio_seconds)

    runners: dict[str, Callable[[], Awaitable[Section]]] = {
        "audio": audio,
        "cpu": lambda: cpu_section(args.calls, args.seconds, args.rounds),
        "latency": lambda: run_latency_bench(args.greetings, args.barge_ins),
        "reconnect": run_reconnect_bench,
        "replicas": run_replicas_bench,
        "workers": lambda: workers_section(args.calls * 2, args.seconds),
        "tools": run_tools_bench,
        "soak": lambda: soak_section(args.soak_calls, args.soak_minutes, args.soak_rounds),
        "capacity": lambda: capacity_section(
            args.capacity_max_calls, args.capacity_seconds, args.plot_dir, _command(args)
        ),
    }
    sections = []
    for name in _sections(args.only):
        began = time.perf_counter()
        try:
            section = await runners[name]()
        except Exception as exc:  # one broken section must not hide the others' figures
            # Where it broke, for whoever reruns it: the table keeps only the one line.
            traceback.print_exc(file=sys.stderr)
            section = Section(name, error=f"{type(exc).__name__}: {exc}")
        section.seconds = time.perf_counter() - began
        sections.append(section)
    return sections


def _command(args: argparse.Namespace) -> str:
    """The capacity run's command line, for its plots."""
    return (
        f"agent bench --only {args.only} --capacity-max-calls {args.capacity_max_calls} "
        f"--capacity-seconds {args.capacity_seconds:g}"
    )


def run_bench(args: argparse.Namespace) -> int:
    """``agent bench``: run, print the table (or JSON). Exit status 0 even when a target is
    missed (the figures are the output); 1 when a section could not run."""
    _sections(args.only)  # fail fast on a typo, before minutes of measuring
    options = {
        "only": args.only,
        "calls": args.calls,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "greetings": args.greetings,
        "barge_ins": args.barge_ins,
    }
    before = machine_info()
    sections = asyncio.run(run_sections(args))
    after = machine_info()
    render = render_json if args.json else render_table
    print(render(sections, before, after, options))
    return 1 if any(section.error for section in sections) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agent.bench [options]``: the same as ``agent bench``."""
    parser = argparse.ArgumentParser(prog="agent bench", description=DESCRIPTION)
    add_bench_arguments(parser)
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
