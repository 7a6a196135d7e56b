"""``agent bench`` latency and reconnection sections: real calls in this process, at real time.

Latency
    *Greeting*: from the carrier sending ``start`` to the first agent ``media`` arriving, with
    pre-connect (voice webhook, then the stream: the Live session and the greeting are under way
    before ``start``) and without (a stream whose webhook never came: the bridge connects on
    ``start``). *Barge-in*: the bridge's own ``caller.barge_in.clear_latency_ms`` (``interrupted``
    received -> ``clear`` sent), and at the carrier the time from the caller starting to speak to
    ``clear`` arriving, with and without the emulator's VAD detection time. *Reply*: the caller's
    wait from the end of an utterance to the reply's first audio (``think_ms=0``), and the part of
    it spent in transit after the emulator's VAD decided the turn was over. *Caller audio transit*:
    each caller frame from the carrier's socket to the emulator's count.

Reconnection
    One call per fault (goAway, a 1011 close, a dropped socket), each injected twice with the
    emulator's runtime fault API: while the caller is speaking and while the model is speaking.
    For each: the bridge's ``live.reconnected.switch_ms``, the longest gap in caller audio reaching
    the emulator, the longest gap in agent audio reaching the caller, caller frames sent against
    frames the emulator received, and the reply latency after the switch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from agent.audio.transcoder import InboundTranscoder, OutboundTranscoder
from agent.bench.calls import (
    ArrivalProbe,
    Harness,
    LogCapture,
    TimedCall,
    in_process_bridge,
    median,
    percentile,
    timed_call,
    vad_detection_chunks,
    wait_call_ended,
)
from agent.bench.report import (
    AUDIO_DELAY_TARGET_MS,
    GREETING_TARGET_MS,
    Section,
    judged,
    reported,
)
from agent.config.models import DEFAULT_AGENT, AgentConfig, CallPolicy
from agent.sim.carrier import CarrierOptions, load_caller_audio, new_sid

__all__ = ["run_latency_bench", "run_reconnect_bench"]

_GREETING_AGENT: Final = dataclasses.replace(
    DEFAULT_AGENT, greeting="Greet the caller and ask how you can help."
)
#: The same agent, its pre-connected session asking for the greeting only at ``start``.
_GREETING_AT_START_AGENT: Final = dataclasses.replace(
    _GREETING_AGENT, call=CallPolicy(greeting_at="stream_start")
)
FAULT_KINDS: Final = ("go_away", "close_1011", "abort")


def _summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "median": median(values),
        "p90": percentile(values, 90),
        "max": max(values) if values else None,
        "values": [round(v, 3) for v in values],
    }


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _plus(a: float, b: float | None) -> float | None:
    return None if b is None else a + b


# -- latency ------------------------------------------------------------------------------------


async def _greeting(
    reps: int,
    speed: float,
    agent: AgentConfig = _GREETING_AGENT,
    *,
    kinds: tuple[bool, ...] = (True, False),
) -> tuple[list[float], list[float], list[float], int]:
    """First agent audio after ``start``: (pre-connected ms, cold ms, bridge-logged ms, misses).

    Pre-connected and cold calls alternate, so a burst of load elsewhere hits both alike; one call
    of each kind runs first, unmeasured, so one-time costs (the first connection) are not counted.
    """
    warm: list[float] = []
    cold: list[float] = []
    measured_warm: set[str] = set()
    misses = 0
    with LogCapture() as logs:
        async with in_process_bridge(agent, speed=speed) as harness:
            options = CarrierOptions(url=harness.url, lead_ms=3000, max_duration_s=4.0, speed=speed)
            for rep in range(reps + 1):
                for preconnect in kinds:
                    call = await timed_call(
                        options, [], webhook=preconnect, hang_up_after_audio_s=0.05
                    )
                    await wait_call_ended(harness, call.call_sid)
                    first = call.first_received("media")
                    if rep == 0:
                        continue
                    if first is None or call.start_sent_at is None:
                        misses += 1
                    elif preconnect:
                        warm.append(_ms(first - call.start_sent_at))
                        measured_warm.add(call.call_sid)
                    else:
                        cold.append(_ms(first - call.start_sent_at))
    logged = [
        float(event.fields["ms_since_start"])
        for event in logs.named("call.first_audio")
        if event.fields.get("call_sid") in measured_warm
    ]
    return warm, cold, logged, misses


async def _conversation(
    barge_ins: int, speed: float
) -> tuple[TimedCall, ArrivalProbe, LogCapture, list[tuple[int | None, int | None]]]:
    """One call where the caller cuts in on every reply but the last; think_ms=0."""
    names = ["transfer", "goodbye"]
    clips = [load_caller_audio(names[i % 2]) for i in range(barge_ins + 1)]
    detection = [vad_detection_chunks(clip) for clip in clips]
    barge_in_ms = 500
    lead_ms = 300
    # Long enough for every exchange plus the last reply's start, with a margin.
    exchange_s = sum(
        (end or len(c) // 320) * 0.02 for (_, end), c in zip(detection, clips, strict=True)
    )
    max_s = lead_ms / 1000 + exchange_s + barge_ins * (barge_in_ms / 1000 + 0.2) + 1.5
    with LogCapture() as logs:
        async with in_process_bridge(speed=speed) as harness:
            options = CarrierOptions(
                url=harness.url,
                speed=speed,
                lead_ms=lead_ms,
                barge_in_ms=barge_in_ms,
                reply_timeout_ms=4000,
                max_duration_s=max_s,
            )
            async with ArrivalProbe(harness.emulator) as probe:
                call = await timed_call(options, clips)
            await wait_call_ended(harness, call.call_sid)
    return call, probe, logs, detection


@dataclasses.dataclass(slots=True)
class _ConversationTimings:
    """What the conversation call measured, each a list of milliseconds."""

    onset_ms: list[float] = dataclasses.field(default_factory=list)
    """Caller starts a barge-in utterance -> ``clear`` arrives."""
    onset_transit_ms: list[float] = dataclasses.field(default_factory=list)
    """The frame that made the VAD decide speech started -> ``clear`` arrives."""
    reply_ms: list[float] = dataclasses.field(default_factory=list)
    """End of an utterance -> its reply heard (the carrier's ticks)."""
    reply_transit_ms: list[float] = dataclasses.field(default_factory=list)
    """The frame that made the VAD end the turn -> the reply's first ``media`` arrives."""
    transit_ms: list[float] = dataclasses.field(default_factory=list)
    """Each caller frame: sent by the carrier -> counted by the emulator."""


def _conversation_timings(
    call: TimedCall, probe: ArrivalProbe, detection: Sequence[tuple[int | None, int | None]]
) -> _ConversationTimings:
    """Line the carrier's timeline up with the VAD's decisions and the emulator's arrivals."""
    report = call.report
    assert report is not None
    timings = _ConversationTimings()
    latencies = report.reply_latencies_ms()
    for index, utterance in enumerate(report.utterances):
        start_tick = utterance.start_ms // 20
        started, ended = detection[index]
        speaking_from = call.tick_sent_at(start_tick)
        if index > 0 and speaking_from is not None:  # the first utterance interrupts nothing
            cleared = call.first_received("clear", after=speaking_from)
            detected = call.tick_sent_at(start_tick + (started or 0))
            if cleared is not None and detected is not None:
                timings.onset_ms.append(_ms(cleared - speaking_from))
                timings.onset_transit_ms.append(_ms(cleared - detected))
        latency = latencies[index]
        if latency is not None:
            timings.reply_ms.append(float(latency))
        turn_over = call.tick_sent_at(start_tick + ended) if ended is not None else None
        if turn_over is not None:
            reply_at = call.first_received("media", after=turn_over)
            if reply_at is not None:
                timings.reply_transit_ms.append(_ms(reply_at - turn_over))
    timings.transit_ms = [
        _ms(seen - sent)
        for chunk, sent in enumerate(call.media_sent_at)
        if (seen := probe.first_seen(chunk)) is not None
    ]
    return timings


async def run_latency_bench(greeting_reps: int, barge_ins: int, speed: float = 1.0) -> Section:
    """Greeting, barge-in, reply and caller-audio transit latencies (see the module docstring).

    ``speed`` above 1 is for testing the bench itself: latencies only mean something at 1.
    """
    section = Section("latency")
    warm, cold, logged, misses = await _greeting(greeting_reps, speed)
    at_start, _, _, late_misses = await _greeting(
        greeting_reps, speed, _GREETING_AT_START_AGENT, kinds=(True,)
    )
    misses += late_misses
    section.details["greeting"] = {
        "preconnected_ms": _summary(warm),
        "preconnected_greeting_at_start_ms": _summary(at_start),
        "cold_ms": _summary(cold),
        "bridge_logged_first_audio_ms": _summary(logged),
        "calls_without_audio": misses,
    }
    note = f"{len(warm)} calls" + (f", {misses} without audio" if misses else "")
    section.figures += [
        judged(
            "greeting after start, pre-connected, median",
            median(warm),
            "ms",
            GREETING_TARGET_MS,
            note,
        ),
        judged(
            "greeting after start, pre-connected, p90",
            percentile(warm, 90),
            "ms",
            GREETING_TARGET_MS,
        ),
        reported(
            "greeting after start, bridge's own log, median",
            median(logged),
            "ms",
            "call.first_audio.ms_since_start",
        ),
        reported(
            "greeting after start, no pre-connect, median",
            median(cold),
            "ms",
            "connects to the Live API on start",
        ),
        reported("greeting after start, no pre-connect, p90", percentile(cold, 90), "ms"),
        reported(
            "greeting after start, pre-connected, greeting_at: stream_start, median",
            median(at_start),
            "ms",
            "asked for at start; against Google add the model's time to first audio",
        ),
        reported(
            "greeting after start, pre-connected, greeting_at: stream_start, p90",
            percentile(at_start, 90),
            "ms",
        ),
    ]

    call, probe, logs, detection = await _conversation(barge_ins, speed)
    timings = _conversation_timings(call, probe, detection)
    clear_ms = [float(e.fields["clear_latency_ms"]) for e in logs.named("caller.barge_in")]
    onset_ms, onset_transit_ms = timings.onset_ms, timings.onset_transit_ms
    reply_ms, reply_transit_ms, transit_ms = (
        timings.reply_ms,
        timings.reply_transit_ms,
        timings.transit_ms,
    )
    assert call.report is not None
    report = call.report
    section.details["barge_in"] = {
        "bridge_clear_latency_ms": _summary(clear_ms),
        "carrier_speech_onset_to_clear_ms": _summary(onset_ms),
        "carrier_vad_decision_to_clear_ms": _summary(onset_transit_ms),
        "barge_ins_counted_by_carrier": report.barge_ins,
    }
    section.details["reply"] = {
        "caller_wait_ms": _summary(reply_ms),
        "vad_decision_to_first_audio_ms": _summary(reply_transit_ms),
    }
    section.details["caller_audio_transit_ms"] = _summary(transit_ms)
    # The reply's round trip less the caller's transit bounds the model -> caller transit from above
    # (it still holds the emulator's own time).
    round_trip, inbound = median(reply_transit_ms), median(transit_ms)
    outbound_ms = None if round_trip is None or inbound is None else max(0.0, round_trip - inbound)
    section.details["model_to_caller_transit_bound_ms"] = outbound_ms
    section.details["caller_frames"] = {"sent": call.ticks_sent, "received": probe.received}
    section.figures += [
        reported(
            "barge-in: interrupted -> clear sent (bridge log), median",
            median(clear_ms),
            "ms",
            f"{len(clear_ms)} barge-ins",
            digits=3,
        ),
        reported(
            "barge-in: interrupted -> clear sent (bridge log), max",
            max(clear_ms) if clear_ms else None,
            "ms",
            digits=3,
        ),
        reported(
            "barge-in: caller starts speaking -> clear at carrier, median",
            median(onset_ms),
            "ms",
            "includes the emulator VAD's onset detection",
        ),
        reported(
            "barge-in: VAD decision -> clear at carrier, median",
            median(onset_transit_ms),
            "ms",
            "caller frame -> bridge -> Live -> interrupted -> bridge -> clear",
        ),
        reported(
            "reply: end of utterance -> first audio heard, median",
            median(reply_ms),
            "ms",
            "think_ms=0; includes the VAD's end-of-speech wait",
        ),
        reported(
            "reply: VAD decision -> first audio at carrier, median",
            median(reply_transit_ms),
            "ms",
            "bridge both ways + emulator + loopback",
        ),
        reported(
            "caller audio transit, carrier -> Live API, median",
            median(transit_ms),
            "ms",
            "per frame, in-process, polled at 1 ms",
        ),
        reported(
            "caller audio transit, carrier -> Live API, p90", percentile(transit_ms, 90), "ms"
        ),
        judged(
            "caller -> model added delay: filter + transit median",
            _plus(InboundTranscoder.delay_ms, median(transit_ms)),
            "ms",
            AUDIO_DELAY_TARGET_MS,
        ),
        judged(
            "model -> caller added delay: filter + transit, at most",
            _plus(OutboundTranscoder.delay_ms, outbound_ms),
            "ms",
            AUDIO_DELAY_TARGET_MS,
            "transit bounded by (VAD decision -> audio) - caller transit",
        ),
    ]
    return section


# -- reconnection -------------------------------------------------------------------------------


async def _inject(harness: Harness, kind: str) -> None:
    """Hit the Live connection now in use (the newest one) with ``kind``."""
    emulator = harness.emulator
    index = len(emulator.sessions) - 1
    if kind == "go_away":
        await emulator.go_away(index, time_left_s=30.0)
    elif kind == "close_1011":
        await emulator.close_session(index)
    elif kind == "abort":
        await emulator.abort_session(index)
    else:
        raise ValueError(f"unknown fault {kind!r}")


async def _wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def _media_gap_ms(call: TimedCall, start: float, end: float) -> float | None:
    """The longest stretch without agent audio arriving at the caller within ``[start, end]``
    (counting from the last arrival before ``start``, and up to ``end`` if the audio stopped)."""
    times = [at for at, kind in call.received if kind == "media"]
    before = [at for at in times if at < start]
    if not before:
        return None
    points = [before[-1], *(at for at in times if start <= at <= end), end]
    return max(b - a for a, b in itertools.pairwise(points)) * 1000


async def _reconnect_call(
    harness: Harness, logs: LogCapture, kind: str, speed: float
) -> dict[str, Any]:
    """One call, the fault injected while the caller speaks and again while the model speaks."""
    first, second = load_caller_audio("order-status"), load_caller_audio("transfer")
    first_end = vad_detection_chunks(first)[1] or len(first) // 320
    second_end = vad_detection_chunks(second)[1] or len(second) // 320
    barge_in_ms = 1500
    options = CarrierOptions(
        url=harness.url,
        speed=speed,
        lead_ms=300,
        barge_in_ms=barge_in_ms,
        reply_timeout_ms=4000,
        max_duration_s=0.3 + (first_end + second_end) * 0.02 + barge_in_ms / 1000 + 1.5,
    )
    call = TimedCall(new_sid("CA"))
    result: dict[str, Any] = {"fault": kind}
    async with ArrivalProbe(harness.emulator) as probe:
        running = asyncio.get_running_loop().create_task(
            timed_call(options, [first, second], call=call)
        )
        try:
            await call.started.wait()
            assert call.start_sent_at is not None
            began = call.start_sent_at
            # (1) Mid-utterance: the caller has been speaking for about a second.
            await asyncio.sleep(max(0.0, began + 1.5 / speed - time.perf_counter()))
            result["caller_speaking"] = await _strike(harness, logs, probe, kind, began, speed)
            # (2) Mid-reply: the answer to the first utterance has been playing for 0.6 s.
            hit = began + result["caller_speaking"]["injected_at"]
            await _wait_for(lambda: call.first_received("media", after=hit) is not None, 10.0)
            await asyncio.sleep(0.6 / speed)
            result["model_speaking"] = await _strike(harness, logs, probe, kind, began, speed)
            await running
        finally:
            if not running.done():
                running.cancel()
    await wait_call_ended(harness, call.call_sid)
    report = call.report
    assert report is not None
    # How long the model's audio stopped after the mid-reply fault, until the caller spoke again.
    model = result["model_speaking"]
    second_start = (
        call.tick_sent_at(report.utterances[1].start_ms // 20)
        if len(report.utterances) > 1
        else None
    )
    if second_start is not None:
        model["agent_audio_gap_ms"] = _media_gap_ms(
            call, began + model["injected_at"], second_start
        )
    result["caller_frames_sent"] = call.ticks_sent
    result["caller_frames_received"] = probe.received
    result["reply_latencies_ms"] = report.reply_latencies_ms()
    result["normal_caller_audio_gap_ms"] = probe.longest_gap_ms(
        began + 0.5 / speed, began + 1.4 / speed
    )
    return result


async def _strike(
    harness: Harness,
    logs: LogCapture,
    probe: ArrivalProbe,
    kind: str,
    began: float,
    speed: float,
) -> dict[str, Any]:
    """Inject ``kind`` now and wait for the bridge's ``live.reconnected``; what happened."""
    seen = len(logs.named("live.reconnected"))
    injected = time.perf_counter()
    await _inject(harness, kind)
    reconnected = await _wait_for(lambda: len(logs.named("live.reconnected")) > seen, 10.0)
    outcome: dict[str, Any] = {"injected_at": injected - began}
    if not reconnected:
        outcome["error"] = "no live.reconnected within 10 s"
        return outcome
    event = logs.named("live.reconnected")[seen]
    outcome["switch_ms"] = float(event.fields["switch_ms"])
    outcome["injection_to_switch_done_ms"] = _ms(event.at - injected)
    outcome["reconnected"] = {
        k: v for k, v in event.fields.items() if k not in ("event", "call_sid", "stream_sid")
    }
    # Let a few frames through the new connection before looking at the gap.
    await asyncio.sleep(0.3 / speed)
    outcome["caller_audio_gap_ms"] = probe.longest_gap_ms(
        injected - 0.05 / speed, event.at + 0.25 / speed
    )
    return outcome


async def run_reconnect_bench(kinds: Sequence[str] = FAULT_KINDS, speed: float = 1.0) -> Section:
    """One call per fault kind; see the module docstring for what is measured.

    ``speed`` above 1 is for testing the bench itself: gaps only mean something at 1.
    """
    section = Section("reconnect")
    calls: list[dict[str, Any]] = []
    with LogCapture() as logs:
        async with in_process_bridge(speed=speed) as harness:
            for kind in kinds:
                calls.append(await _reconnect_call(harness, logs, kind, speed))
    section.details["calls"] = calls
    labels = {"go_away": "goAway", "close_1011": "1011 close", "abort": "dropped socket"}
    for result in calls:
        label = labels.get(result["fault"], result["fault"])
        caller, model = result["caller_speaking"], result["model_speaking"]
        sent, received = result["caller_frames_sent"], result["caller_frames_received"]
        latencies = result["reply_latencies_ms"]
        section.figures += [
            reported(
                f"{label}: switch_ms, caller speaking",
                caller.get("switch_ms"),
                "ms",
                caller.get("error", ""),
            ),
            reported(
                f"{label}: caller audio gap at Live API, caller speaking",
                caller.get("caller_audio_gap_ms"),
                "ms",
                f"normally {_fmt(result['normal_caller_audio_gap_ms'])} ms",
            ),
            reported(
                f"{label}: reply wait after that utterance",
                latencies[0] if latencies else None,
                "ms",
                "end of utterance -> reply heard",
            ),
            reported(
                f"{label}: switch_ms, model speaking",
                model.get("switch_ms"),
                "ms",
                _deferred_note(model),
            ),
            reported(
                f"{label}: caller audio gap at Live API, model speaking",
                model.get("caller_audio_gap_ms"),
                "ms",
            ),
            reported(
                f"{label}: agent audio gap heard, model speaking",
                model.get("agent_audio_gap_ms"),
                "ms",
                "from the last frame before the fault; capped at the caller's next turn",
            ),
            reported(
                f"{label}: caller frames sent / received",
                f"{sent} / {received}",
                "",
                _frames_note(sent, received),
            ),
        ]
    return section


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _deferred_note(outcome: dict[str, Any]) -> str:
    if "error" in outcome:
        return str(outcome["error"])
    waited = outcome.get("injection_to_switch_done_ms")
    return f"switch done {_fmt(waited)} ms after the fault"


def _frames_note(sent: int, received: int) -> str:
    if received == sent:
        return "none lost"
    if received < sent:
        return f"{sent - received} lost"
    return f"{received - sent} extra: frames the bridge sent again on the new connection"
