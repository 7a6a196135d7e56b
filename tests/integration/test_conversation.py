"""The conversation on the phone: greeting first, what the caller heard, DTMF, how calls end.

Carrier simulator -> bridge -> Live API emulator, in-process, on the suite's simulated clock.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest
import structlog

from agent.call.session import CallSession
from agent.config.models import AgentConfig, CallPolicy, FallbackConfig, VadConfig
from agent.live.link import ReconnectPolicy
from agent.live.targets import DeveloperApiTarget
from agent.server.state import CALLS, METRICS, RECORDS, SHARED
from agent.sim.carrier import (
    ENDED_BY_REST_HANG_UP,
    ENDED_BY_REST_TRANSFER,
    CarrierOptions,
    TwilioApiSimulator,
    place_call,
)
from agent.sim.live.server import RunningEmulator

from .conftest import BridgeFactory, caller_clip

GREETER = AgentConfig(greeting="Greet the caller warmly and offer help.")
ACCOUNT_SID = "AC" + "5" * 32
AUTH_TOKEN = "fallback-test-auth-token-93c2"
CALL_TASKS = {"caller->model", "model->caller", "timers"}


def voiced_ms(pcm: bytes) -> int:
    """Milliseconds of 20 ms windows that carry speech-level audio."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    windows = samples[: samples.size // 160 * 160].reshape(-1, 160)
    return int(np.count_nonzero(np.sqrt((windows**2).mean(axis=1)) > 200)) * 20


def assert_nothing_left_running(call: CallSession) -> None:
    leftovers = [
        t
        for t in asyncio.all_tasks()
        if t.get_name() in CALL_TASKS or t.get_name().startswith("preconnect")
    ]
    assert leftovers == []
    assert call.live_closed


async def test_the_greeting_plays_first_from_the_session_opened_at_the_webhook(
    start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    bridge = await start_bridge(agent=GREETER)
    report = await place_call(CarrierOptions(url=bridge.url), [caller_clip("order-status")])
    call = await bridge.app[CALLS].wait_ended(report.call_sid)

    assert call.preconnected
    assert call.stats.first_audio_ms is not None
    # The caller listened to a greeting before speaking.
    first = report.utterances[0]
    assert voiced_ms(report.heard[: first.start_ms * 16]) > 2000
    # The model was asked to greet before it got any caller audio.
    assert emulator.sessions[0].client_messages[:2] == ["setup", "clientContent"]
    assert call.transcript.turns[0].role == "agent"
    assert first.first_reply_ms is not None


async def test_without_a_greeting_the_caller_speaks_first(
    start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    bridge = await start_bridge()
    report = await place_call(CarrierOptions(url=bridge.url), [caller_clip("goodbye")])
    first = report.utterances[0]
    assert voiced_ms(report.heard[: first.start_ms * 16]) == 0
    assert "clientContent" not in emulator.sessions[0].client_messages


async def test_after_a_barge_in_the_heard_transcript_stops_where_the_caller_stopped_hearing(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge()
    report = await place_call(
        CarrierOptions(url=bridge.url, barge_in_ms=2500),
        [caller_clip("order-status"), caller_clip("interrupt")],
    )
    call = await bridge.app[CALLS].wait_ended(report.call_sid)

    (cut,) = [turn for turn in call.transcript.turns if turn.interrupted]
    reply_started = report.utterances[0].first_reply_ms
    assert reply_started is not None
    played_by_carrier_ms = report.clears[0] * 20 - reply_started
    # Bridge, carrier and emulator share the loop's simulated clock, and a message crosses
    # loopback in no simulated time: the bridge's estimate at the clear is exactly what the
    # carrier played. (Against a real network the estimate is off by the network delay.)
    assert cut.heard_ms == played_by_carrier_ms
    # What the model said is kept whole; what the caller heard is the part played before the cut.
    assert cut.said.startswith(cut.heard)
    assert cut.heard
    assert len(cut.heard) < len("Thanks for calling Acme. Your order shipped yesterday")
    # Marks that the clear sent back unplayed were not counted as heard: the bridge counts exactly
    # the echoes that followed real playback. (With a mark every 200 ms, whether one was pending
    # at the clear depends on where in those 200 ms the caller cut in; the unit tests of
    # Playback cover the echo of a pending one.)
    assert call.playback.marks_played == sum(played for _, played in report.marks_echoed)


async def test_a_keypad_sequence_reaches_the_model_as_one_message(
    start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    bridge = await start_bridge(agent=AgentConfig(call=CallPolicy(dtmf_group_timeout_s=1.0)))
    keys = ((600, "4"), (800, "1"), (1000, "7"), (1150, "2"))
    with structlog.testing.capture_logs() as logs:
        report = await place_call(
            CarrierOptions(url=bridge.url, keypad=keys), [caller_clip("goodbye")]
        )
        await bridge.app[CALLS].wait_ended(report.call_sid)
    assert [e["digit"] for e in logs if e["event"] == "caller.dtmf"] == ["4", "1", "7", "2"]
    assert [e["digits"] for e in logs if e["event"] == "caller.dtmf_group"] == [4]
    assert emulator.sessions[0].client_messages.count("clientContent") == 1
    typed = [h.text for h in emulator.sessions[0].history if h.role == "user" and h.kind == "text"]
    assert typed == ["The caller typed on their keypad: 4172"]


async def test_the_caller_hanging_up_ends_everything(
    start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    bridge = await start_bridge()
    report = await place_call(CarrierOptions(url=bridge.url), [caller_clip("goodbye")])
    call = await bridge.app[CALLS].wait_ended(report.call_sid)
    assert call.ended_reason == "caller hung up"
    assert_nothing_left_running(call)


async def test_a_dropped_media_socket_ends_this_stream_but_not_the_call(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge()
    call_sid = "CA" + "7" * 32
    async with aiohttp.ClientSession() as http:
        await http.post(f"{bridge.url}/twilio/voice", data={"CallSid": call_sid})
        ws = await http.ws_connect(bridge.url.replace("http", "ws") + "/twilio/stream")
        start = {
            "streamSid": "MZ" + "7" * 32,
            "accountSid": "AC" + "7" * 32,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {},
        }
        await ws.send_json({"event": "start", "streamSid": "MZ" + "7" * 32, "start": start})
        await ws.close()  # gone without a stop
    call = await bridge.app[CALLS].wait_ended(call_sid)
    # Not the caller hanging up (Twilio would have sent stop): Twilio asks <Connect action> next,
    # and the call's snapshot does not say it ended, so the call goes on.
    assert call.ended_reason == "stream lost"
    snapshot = await bridge.app[SHARED].load_call(call_sid)
    assert snapshot is not None
    assert not snapshot.ended
    assert_nothing_left_running(call)


async def test_an_unreachable_live_api_leads_to_the_fallback_not_dead_air(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge(
        live_target=dead_live_api(),
        reconnect_policy=ReconnectPolicy(deadline_s=2.0, first_delay_s=0.1),
    )
    # A patient caller: stays on the line 5 s after the apology, so the server hangs up first.
    report = await place_call(CarrierOptions(url=bridge.url, gap_ms=5000), [caller_clip("goodbye")])
    call = await bridge.app[CALLS].wait_ended(report.call_sid)
    assert call.ended_reason == "error"
    assert report.ended_by == "server hung up"
    assert voiced_ms(report.heard) > 5000  # the apology, heard to its end
    assert_nothing_left_running(call)


def dead_live_api() -> DeveloperApiTarget:
    """A Live API endpoint where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    return DeveloperApiTarget(base_url=f"ws://127.0.0.1:{dead}")


@pytest.fixture
async def twilio_api() -> AsyncIterator[TwilioApiSimulator]:
    async with TwilioApiSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        yield rest


SORRY = "Sorry, our assistant is not available. Let me put you through."


@pytest.mark.parametrize(
    ("fallback", "said", "ended_by", "transferred_to"),
    [
        (
            FallbackConfig(message=SORRY, transfer_to="+15555550142"),
            (SORRY,),
            ENDED_BY_REST_TRANSFER,
            "+15555550142",
        ),
        (FallbackConfig(transfer_to="+15555550142"), (), ENDED_BY_REST_TRANSFER, "+15555550142"),
        (
            FallbackConfig(message="Sorry, please call back later."),
            None,
            ENDED_BY_REST_HANG_UP,
            None,
        ),
    ],
    ids=["message-then-transfer", "transfer", "message-then-hang-up"],
)
async def test_an_unreachable_live_api_leads_to_the_configured_fallback(
    start_bridge: BridgeFactory,
    twilio_api: TwilioApiSimulator,
    fallback: FallbackConfig,
    said: tuple[str, ...] | None,
    ended_by: str,
    transferred_to: str | None,
) -> None:
    bridge = await start_bridge(
        agent=AgentConfig(fallback=fallback),
        live_target=dead_live_api(),
        reconnect_policy=ReconnectPolicy(deadline_s=2.0, first_delay_s=0.1),
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_url=twilio_api.url,
    )
    report = await place_call(
        CarrierOptions(url=bridge.url, auth_token=AUTH_TOKEN, gap_ms=5000),
        [caller_clip("goodbye")],
        rest=twilio_api,
    )
    call = await bridge.app[CALLS].wait_ended(report.call_sid)
    assert call.ended_reason == "error"
    assert report.ended_by == ended_by
    assert report.transferred_to == transferred_to
    # Twilio said the configured message; the bundled recording never played over the stream.
    assert report.twilio_said == (said if said is not None else (fallback.message,))
    assert voiced_ms(report.heard) == 0
    assert [update.status for update in twilio_api.updates] == [200]
    assert_nothing_left_running(call)


async def test_without_twilios_rest_api_a_configured_fallback_plays_the_bundled_apology(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge(
        agent=AgentConfig(fallback=FallbackConfig(message=SORRY, transfer_to="+15555550142")),
        live_target=dead_live_api(),
        reconnect_policy=ReconnectPolicy(deadline_s=2.0, first_delay_s=0.1),
    )
    report = await place_call(CarrierOptions(url=bridge.url, gap_ms=5000), [caller_clip("goodbye")])
    call = await bridge.app[CALLS].wait_ended(report.call_sid)
    assert call.ended_reason == "error"
    assert report.ended_by == "server hung up"
    assert report.transferred_to is None
    assert voiced_ms(report.heard) > 5000  # the apology, rather than dead air
    assert_nothing_left_running(call)


async def test_the_max_duration_wraps_up_then_ends_the_call(
    start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    bridge = await start_bridge(
        agent=AgentConfig(call=CallPolicy(max_duration_s=8.0, wrap_up_before_s=3.0))
    )
    report = await place_call(
        CarrierOptions(url=bridge.url, linger_ms=30_000), [caller_clip("goodbye")]
    )
    call = await bridge.app[CALLS].wait_ended(report.call_sid)
    assert call.ended_reason == "timed out"
    assert report.ended_by == "server hung up"
    assert emulator.sessions[0].client_messages.count("clientContent") == 1  # the wrap-up prompt
    assert len(report.heard) < 10 * 16000  # ended near 8 s, long before the caller would have
    assert_nothing_left_running(call)


async def test_the_cost_limit_has_the_agent_say_goodbye_then_ends_the_call(
    start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    """The first reply's usage (its audio, about 25 tokens a second, at the default prices)
    passes a limit of a hundredth of a cent: the model is told to say goodbye, says it, and the
    call ends once it has played, with the reason ``cost limit``, counted and recorded."""
    policy = CallPolicy(max_cost_usd=0.0001)
    bridge = await start_bridge(agent=AgentConfig(call=policy))
    with structlog.testing.capture_logs() as logs:
        report = await place_call(
            CarrierOptions(url=bridge.url, linger_ms=30_000), [caller_clip("goodbye")]
        )
        call = await bridge.app[CALLS].wait_ended(report.call_sid)
    assert call.ended_reason == "cost limit"
    assert report.ended_by == "server hung up"  # long before the caller would have
    session = emulator.sessions[0]
    prompts = [h.text for h in session.history if h.role == "user" and h.kind == "text"]
    assert prompts == [policy.cost_limit_message]
    assert session.answers_completed == 2  # the reply, then the goodbye
    [reached] = [e for e in logs if e["event"] == "call.cost_limit"]
    assert reached["limit"] == "cost"
    assert reached["cost_usd"] >= 0.0001
    [hang_up] = [e for e in logs if e["event"] == "call.hang_up"]
    assert hang_up["reason"] == "cost limit"
    # The whole goodbye played before the hang-up: the bridge waited for Twilio's last mark.
    assert call.playback.marks_played == call.playback.marks_sent
    assert voiced_ms(report.heard[report.utterances[-1].end_ms * 16 :]) > 3000
    calls_total = bridge.app[METRICS].registry.get_sample_value(
        "agent_calls_total", {"agent": call.agent.name, "reason": "cost_limit"}
    )
    assert calls_total == 1
    store = bridge.app[RECORDS]
    await store.flush()
    record = store.get_call(report.call_sid)
    assert record is not None
    assert record.end_reason == "cost limit"
    assert record.summary["cost_limit"] == "cost"
    assert_nothing_left_running(call)


async def test_a_goodbye_that_runs_past_its_deadline_is_cut_off(
    start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    """The emulator's goodbye (its greeting clip, a few seconds) outlasts a 0.5 s allowance: the
    call ends then, cost limit all the same, rather than when the model is done."""
    policy = CallPolicy(max_tokens=1, cost_limit_goodbye_s=0.5)
    bridge = await start_bridge(agent=AgentConfig(call=policy))
    with structlog.testing.capture_logs() as logs:
        report = await place_call(
            CarrierOptions(url=bridge.url, linger_ms=30_000), [caller_clip("goodbye")]
        )
        call = await bridge.app[CALLS].wait_ended(report.call_sid)
    assert call.ended_reason == "cost limit"
    assert report.ended_by == "server hung up"
    [reached] = [e for e in logs if e["event"] == "call.cost_limit"]
    assert reached["limit"] == "tokens"
    [overdue] = [e for e in logs if e["event"] == "call.cost_limit_goodbye_overdue"]
    assert overdue["waited_s"] == 0.5
    assert emulator.sessions[0].answers_completed == 1  # the goodbye was never finished
    assert_nothing_left_running(call)


async def test_an_idle_caller_is_checked_on_then_the_call_ends(
    start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    bridge = await start_bridge(agent=AgentConfig(call=CallPolicy(idle_timeout_s=3.0)))
    report = await place_call(
        CarrierOptions(url=bridge.url, linger_ms=60_000), [caller_clip("goodbye")]
    )
    call = await bridge.app[CALLS].wait_ended(report.call_sid)
    assert call.ended_reason == "timed out"
    assert report.ended_by == "server hung up"
    assert emulator.sessions[0].client_messages.count("clientContent") == 1  # the check-in
    assert emulator.sessions[0].answers_completed == 2  # the reply, then the check-in
    assert_nothing_left_running(call)


async def test_with_automatic_vad_disabled_the_bridge_marks_the_callers_turns(
    start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    manual = AgentConfig(vad=VadConfig(disabled=True))
    bridge = await start_bridge(agent=manual)
    report = await place_call(
        CarrierOptions(url=bridge.url),
        [caller_clip("order-status"), caller_clip("goodbye")],
    )
    session = emulator.sessions[0]
    assert session.setup["realtimeInputConfig"]["automaticActivityDetection"]["disabled"] is True
    signals = [
        kind for kind in session.client_messages if kind.endswith(("activityStart", "activityEnd"))
    ]
    assert signals == ["realtimeInput.activityStart", "realtimeInput.activityEnd"] * 2
    # The emulator, told to rely on them, answered both turns.
    assert all(u.first_reply_ms is not None for u in report.utterances)


async def test_at_input_sample_rate_8000_caller_audio_goes_as_the_phone_sent_it(
    start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    bridge = await start_bridge(agent=AgentConfig(input_sample_rate=8000))
    report = await place_call(CarrierOptions(url=bridge.url), [caller_clip("order-status")])
    call = await bridge.app[CALLS].wait_ended(report.call_sid)
    (session,) = emulator.sessions
    # 320 bytes (8 kHz PCM16) per 20 ms frame, not 640: no upsampling, half the bytes.
    assert session.audio_bytes_received == call.stats.frames_in * 320
    # The emulator resampled it as the Live API does: it heard the caller and answered.
    first = report.utterances[0]
    assert first.first_reply_ms is not None
