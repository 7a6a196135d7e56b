"""A call survives the Live API replacing its connection: goAway, a 1011 close, a dropped socket.

The emulator injects the faults on its own clock (emulated seconds after each connection opens),
so the sequence is the same on any machine; the caller never stops talking or listening.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest
from structlog.testing import capture_logs

from agent.config.models import AgentConfig, CallPolicy
from agent.live.budget import CircuitBreaker
from agent.live.link import ReconnectPolicy
from agent.live.targets import DeveloperApiTarget
from agent.server.state import CALLS
from agent.sim.carrier import CarrierOptions, place_call
from agent.sim.live.scenario import scenario_from_data
from agent.sim.live.server import EmulatorOptions, Fault, RunningEmulator, start_emulator

from .conftest import BridgeFactory, caller_clip
from .test_conversation import voiced_ms

# 20 ms of caller audio as the Live API receives it, at the agent's input rate (8 kHz by default).
PCM16_BYTES_PER_FRAME_IN = AgentConfig().input_sample_rate // 50 * 2
PCM16_BYTES_PER_TICK_8K = 320  # what the carrier's timeline holds per 20 ms


@pytest.fixture
async def faulty_emulator() -> AsyncIterator[RunningEmulator]:
    faults = (
        Fault.go_away(after_s=6.0, time_left_s=20.0, connection=0),
        Fault.close(after_s=6.0, code=1011, reason="Internal error occurred.", connection=1),
        Fault.abort(after_s=6.0, connection=2),
    )
    running = await start_emulator(EmulatorOptions(faults=faults))
    yield running
    await running.close()


async def test_a_call_survives_go_away_a_1011_and_a_dropped_socket_without_losing_caller_audio(
    faulty_emulator: RunningEmulator, start_bridge: BridgeFactory
) -> None:
    bridge = await start_bridge(live_target=DeveloperApiTarget(base_url=faulty_emulator.url))
    utterances = [
        caller_clip(name)
        for name in ("order-status", "librivox-0880", "cards-005", "goforward", "goodbye")
    ]
    report = await place_call(CarrierOptions(url=bridge.url), utterances)
    call = await bridge.app[CALLS].wait_ended(report.call_sid)

    sessions = faulty_emulator.sessions
    assert len(sessions) == 4, [s.faults for s in sessions]
    assert call.stats.reconnects == 3
    # Each new connection resumed the same conversation with the newest handle issued before it.
    for i, session in enumerate(sessions[1:], start=1):
        issued_before = [h for earlier in sessions[:i] for h in earlier.resumption_handles]
        assert session.resumed_from == issued_before[-1], i
    # Every caller frame reached the Live API, across all four connections. After the two abnormal
    # closes the bridge resent its last 200 ms (frames the server may not have read), so those
    # arrive twice; nothing is missing and nothing else is repeated.
    frames_sent = len(report.heard) // PCM16_BYTES_PER_TICK_8K
    frames_received = sum(s.audio_bytes_received for s in sessions) // PCM16_BYTES_PER_FRAME_IN
    replayed = call.live_replayed_frames
    assert 0 < replayed <= 2 * 11  # two 200 ms windows; each end of one can cut into a frame
    assert frames_received == frames_sent + replayed
    # The conversation went on: every utterance was answered, and the call ended normally.
    assert all(u.first_reply_ms is not None for u in report.utterances)
    assert call.ended_reason == "caller hung up"
    assert report.ended_by == "caller hung up"


async def test_an_answer_cut_by_a_lost_connection_is_continued_not_left_silent(
    start_bridge: BridgeFactory,
) -> None:
    # The caller's question ends at ~4.3 s and the 7.4 s answer starts at ~4.8 s: a 1011 at
    # 7 s cuts it halfway.
    fault = Fault.close(after_s=7.0, code=1011, reason="Internal error occurred.", connection=0)
    emulator = await start_emulator(EmulatorOptions(faults=(fault,)))
    try:
        bridge = await start_bridge(live_target=DeveloperApiTarget(base_url=emulator.url))
        report = await place_call(
            CarrierOptions(url=bridge.url, linger_ms=8000),
            [caller_clip("order-status")],
        )
        call = await bridge.app[CALLS].wait_ended(report.call_sid)
    finally:
        await emulator.close()

    first, second = emulator.sessions
    assert first.answers_started == 1
    assert first.answers_completed == 0  # the fault cut the answer
    # The new connection was told what the caller heard, and the model went on speaking...
    (told,) = [h.text for h in second.history if h.role == "user" and h.kind == "text"]
    heard = call.transcript.turns[1].heard.strip()
    assert len(heard) >= 20, heard  # half the answer was played before the fault
    assert told == CallPolicy().resume_message.format(heard=heard)
    assert second.answers_completed == 1
    # ...without the caller having to say anything.
    assert len(report.utterances) == 1
    assert call.stats.reconnects == 1


STORMS = [
    pytest.param(Fault.go_away(after_s=0, time_left_s=0, after_setup=True), id="go_away_0s"),
    pytest.param(Fault.close(after_s=0, code=1011, after_setup=True), id="close_1011"),
    pytest.param(Fault.abort(after_s=0.5, after_setup=True), id="dropped"),
    # Frames over the client's 4 MiB bound, as the probe sent (4.6 MB and 50 MB).
    pytest.param(Fault.oversized(after_s=0.5, size=4_600_000, after_setup=True), id="frame_4_6MB"),
    pytest.param(Fault.oversized(after_s=0.5, size=50_000_000, after_setup=True), id="frame_50MB"),
]


@pytest.mark.parametrize("fault", STORMS)
async def test_a_live_api_that_fails_every_connection_after_setup_gets_the_fallback_in_time(
    fault: Fault, start_bridge: BridgeFactory
) -> None:
    # The Live API accepts every connection, then fails it before the model said anything.
    emulator = await start_emulator(EmulatorOptions(faults=(fault,)))
    loop = asyncio.get_running_loop()
    try:
        bridge = await start_bridge(live_target=DeveloperApiTarget(base_url=emulator.url))
        started = loop.time()
        with capture_logs() as logs:
            # A patient caller: stays on the line after the apology, so the server hangs up first.
            report = await place_call(
                CarrierOptions(url=bridge.url, gap_ms=5000, reply_timeout_ms=30_000),
                [caller_clip("goodbye")],
            )
            call = await bridge.app[CALLS].wait_ended(report.call_sid)
        ended = loop.time()
    finally:
        await emulator.close()

    policy = ReconnectPolicy()
    # Backoff from 0.1 s doubling to 2 s fits about a dozen attempts in the 15 s deadline.
    assert 5 <= len(emulator.sessions) <= 16, len(emulator.sessions)
    # Each failed right after setup: none counted as a reconnection the call could use.
    assert call.stats.reconnects < len(emulator.sessions)
    # The caller heard the apology and the call ended on its own, within the deadline plus the
    # apology (~6 s) and the mark that confirms it was played.
    assert call.ended_reason == "error"
    assert report.ended_by == "server hung up"
    assert voiced_ms(report.heard) > 5000
    assert ended - started < policy.deadline_s + 10.0, ended - started
    # One line for the storm, none per attempt.
    events = [entry["event"] for entry in logs if entry["log_level"] != "debug"]
    assert events.count("live.reconnect_storm") == 1
    (storm,) = [entry for entry in logs if entry["event"] == "live.reconnect_storm"]
    assert storm["outcome"] == "gave_up"
    assert storm["attempts"] == len(emulator.sessions)  # the first connection never worked either
    assert events.count("live.reconnected") <= 1
    assert events.count("live.connection_lost") <= 1
    assert events.count("live.go_away") <= 1
    assert events.count("live.unavailable") == 1


async def test_storms_in_several_calls_open_the_breaker_and_later_calls_fail_fast(
    start_bridge: BridgeFactory,
) -> None:
    fault = Fault.close(after_s=0, code=1011, after_setup=True)
    emulator = await start_emulator(EmulatorOptions(faults=(fault,)))
    breaker = CircuitBreaker(storms=2, window_s=120.0, cool_down_s=60.0)
    loop = asyncio.get_running_loop()
    try:
        bridge = await start_bridge(
            live_target=DeveloperApiTarget(base_url=emulator.url), live_breaker=breaker
        )
        options = CarrierOptions(url=bridge.url, gap_ms=5000, reply_timeout_ms=30_000)
        calls = []
        for _ in range(2):
            report = await place_call(options, [caller_clip("goodbye")])
            calls.append(await bridge.app[CALLS].wait_ended(report.call_sid))
        assert breaker.is_open(loop.time())
        stormed = len(emulator.sessions)
        async with aiohttp.ClientSession() as http, http.get(f"{bridge.url}/readyz") as resp:
            assert resp.status == 200  # every replica shares the backend: still ready
            assert (await resp.json())["live_circuit"] == "open"
        started = loop.time()
        report = await place_call(options, [caller_clip("goodbye")])
        third = await bridge.app[CALLS].wait_ended(report.call_sid)
        ended = loop.time()
    finally:
        await emulator.close()

    assert [c.ended_reason for c in calls] == ["error", "error"]
    # The third call tried no connection at all: the fallback at once.
    assert len(emulator.sessions) == stormed
    assert third.ended_reason == "error"
    assert voiced_ms(report.heard) > 5000
    assert ended - started < 10.0 + 5.0  # the apology and the patient caller's 5 s, no storm


def _voiced_ticks(pcm: bytes) -> list[bool]:
    """Per 20 ms of what the caller heard: speech-level audio or not."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    windows = samples[: samples.size // 160 * 160].reshape(-1, 160)
    return [bool(level > 200) for level in np.sqrt((windows**2).mean(axis=1))]


def _longest_silence_s(voiced: list[bool]) -> float:
    """The longest run of silence between two stretches of speech, in seconds."""
    first = voiced.index(True)
    last = len(voiced) - 1 - voiced[::-1].index(True)
    longest = run = 0
    for tick in voiced[first : last + 1]:
        run = 0 if tick else run + 1
        longest = max(longest, run)
    return longest * 0.020


async def test_a_model_gone_silent_mid_answer_is_nudged_then_reconnected_and_heard_again(
    start_bridge: BridgeFactory,
) -> None:
    # The first connection's model goes silent a second in, for two minutes: the greeting is
    # cut off and nothing more comes from it, though the connection stays up and reads.
    emulator = await start_emulator(
        EmulatorOptions(faults=(Fault.mute(after_s=1.0, for_s=120.0, connection=0),))
    )
    try:
        bridge = await start_bridge(live_target=DeveloperApiTarget(base_url=emulator.url))
        with capture_logs() as logs:
            report = await place_call(
                CarrierOptions(url=bridge.url, max_duration_s=45, reply_timeout_ms=40_000),
                [caller_clip("order-status")],
            )
            call = await bridge.app[CALLS].wait_ended(report.call_sid)
    finally:
        await emulator.close()
    actions = [line["action"] for line in logs if line["event"] == "model.stalled"]
    assert actions[:2] == ["nudge", "reconnect"]
    assert [line["reason"] for line in logs if line["event"] == "live.reconnected"] == ["stall"]
    assert call.stats.stalls >= 2
    # The caller heard the agent again, after at most two stall_after_s of silence (8 s each)
    # and the filler between them; without the watchdog, nothing for the rest of the call.
    heard = _voiced_ticks(report.heard)
    assert _longest_silence_s(heard) <= 2 * 8.0 + 2.0, _longest_silence_s(heard)
    assert len(emulator.sessions) == 2


async def _greeting_heard_after_s(
    start_bridge: BridgeFactory, steps: list[dict[str, object]]
) -> tuple[float, list[tuple[str, str]]]:
    """When the caller first heard the agent, and the call's stalls, for a scripted model."""
    emulator = await start_emulator(EmulatorOptions(scenario=scenario_from_data({"steps": steps})))
    try:
        bridge = await start_bridge(live_target=DeveloperApiTarget(base_url=emulator.url))
        with capture_logs() as logs:
            report = await place_call(
                CarrierOptions(url=bridge.url, lead_ms=4_000), [caller_clip("goodbye")]
            )
            await bridge.app[CALLS].wait_ended(report.call_sid)
    finally:
        await emulator.close()
    stalled = [(line["cause"], line["action"]) for line in logs if line["event"] == "model.stalled"]
    return _voiced_ticks(report.heard).index(True) * 0.020, stalled


async def test_an_empty_turn_owed_an_answer_is_nudged_at_once_and_the_agent_heard(
    start_bridge: BridgeFactory,
) -> None:
    # The model completes the greeting's turn having said nothing (a scenario step with
    # neither words nor calls), as users of Live bridges report; the next step answers.
    empty_s, stalled = await _greeting_heard_after_s(start_bridge, [{}, {"say": "greeting"}])
    assert stalled == [("empty_turn", "nudge")]
    # An empty turn is a stall at once, not after stall_after_s: the caller hears the greeting
    # as soon as (within a few frames of) a call whose model answered the first time.
    normal_s, stalled = await _greeting_heard_after_s(start_bridge, [{"say": "greeting"}])
    assert stalled == []
    assert empty_s - normal_s < 0.2, (empty_s, normal_s)
