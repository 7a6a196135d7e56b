"""A phone call end to end: carrier simulator -> bridge -> Live API emulator -> back."""

from __future__ import annotations

import asyncio
import base64
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import AbstractContextManager
from io import StringIO

import aiohttp
import numpy as np

from agent.audio.codec import pcm16_to_ulaw
from agent.config.models import DEFAULT_AGENT
from agent.server.app import begin_drain, drain
from agent.server.state import CALLS, STATE
from agent.server.stream import STREAM_MESSAGE_BYTES
from agent.sim.carrier import CarrierOptions, place_call
from agent.sim.live.server import RunningEmulator
from agent.telephony.webhooks import compute_signature

from .conftest import BridgeFactory, caller_clip

AUTH_TOKEN = "test-auth-token-0123456789abcdef"


def _rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


async def test_the_caller_hears_a_spoken_reply(
    start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    bridge = await start_bridge()
    report = await place_call(CarrierOptions(url=bridge.url), [caller_clip("order-status")])

    assert report.ended_by == "caller hung up"
    (utterance,) = report.utterances
    assert utterance.first_reply_ms is not None
    assert utterance.first_reply_ms > utterance.end_ms
    # What the caller heard after speaking is speech, not silence or noise bursts: seconds of it.
    reply = report.heard[utterance.end_ms * 16 :]
    assert _rms(reply) > 300
    voiced = sum(
        1 for i in range(0, len(reply) - 320, 320) if _rms(reply[i : i + 320]) > 200
    )  # 20 ms windows
    assert voiced * 20 > 3000
    assert report.protocol_errors == []
    # Every caller frame the carrier sent reached the Live API as PCM16 at the agent's input rate.
    (session,) = emulator.sessions
    sent_ms = report.utterances[-1].end_ms  # at least the audio up to the end of the utterance
    bytes_per_ms = DEFAULT_AGENT.input_sample_rate * 2 // 1000
    assert session.audio_bytes_received >= sent_ms * bytes_per_ms
    assert session.answers_completed == 1


async def test_barge_in_clears_twilio_and_no_stale_frame_follows(
    start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    bridge = await start_bridge()
    report = await place_call(
        CarrierOptions(url=bridge.url, barge_in_ms=1500),
        [caller_clip("order-status"), caller_clip("interrupt")],
    )

    assert report.barge_ins == 1
    assert len(report.clears) == 1
    clear_tick = report.clears[0]
    interrupting = report.utterances[1]
    assert interrupting.start_ms < clear_tick * 20 < interrupting.end_ms
    # The model cannot answer before the caller stops talking: any media between the clear and
    # the end of the interruption would be a stale frame of the interrupted reply.
    after_clear = report.arrivals[report.arrivals.index((clear_tick, "clear")) + 1 :]
    stale = [t for t, kind in after_clear if kind == "media" and t < interrupting.end_ms // 20]
    assert stale == []
    # Marks pending at the clear came back unplayed, and the bridge did not count them as heard:
    # it counts exactly the echoes that followed real playback (whether one was pending depends
    # on where in its 200 ms between marks the clear fell; tests/unit/call covers that case).
    call = await bridge.app[CALLS].wait_ended(report.call_sid)
    assert call.playback.marks_played == sum(played for _, played in report.marks_echoed)
    assert emulator.sessions[0].interruptions == 1
    # The caller still got an answer to the interruption.
    assert interrupting.first_reply_ms is not None


async def _open_stream(
    bridge_url: str, session: aiohttp.ClientSession, *, signature: str | None = None
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, str]]:
    form = {
        "CallSid": "CA" + "1" * 32,
        "AccountSid": "AC" + "2" * 32,
        "From": "+15555550100",
        "To": "+15555550199",
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    headers = {"X-Twilio-Signature": signature} if signature else {}
    async with session.post(f"{bridge_url}/twilio/voice", data=form, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        twiml = ET.fromstring(await resp.text())
    stream = twiml.find("./Connect/Stream")
    assert stream is not None
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    ws = await session.ws_connect(stream.get("url", ""))
    return ws, params


async def _started_stream(
    bridge_url: str, session: aiohttp.ClientSession
) -> aiohttp.ClientWebSocketResponse:
    """A media stream announced by the webhook, with its ``connected`` and ``start`` sent."""
    ws, params = await _open_stream(bridge_url, session)
    await ws.send_str('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    await ws.send_str(_start(params))
    return ws


def _start(params: dict[str, str]) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": "MZ" + "3" * 32,
            "start": {
                "accountSid": "AC" + "2" * 32,
                "streamSid": "MZ" + "3" * 32,
                "callSid": "CA" + "1" * 32,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": params,
            },
        }
    )


def _media(ulaw: bytes, n: int) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(n + 2),
            "streamSid": "MZ" + "3" * 32,
            "media": {
                "track": "inbound",
                "chunk": str(n + 1),
                "timestamp": str(n * 20),
                "payload": base64.b64encode(ulaw).decode(),
            },
        }
    )


async def test_malformed_twilio_messages_are_dropped_and_the_call_goes_on(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge()
    speech = pcm16_to_ulaw(caller_clip("order-status")) + b"\xff" * 8000  # + 1 s of silence
    async with aiohttp.ClientSession() as session:
        ws, params = await _open_stream(bridge.url, session)
        await ws.send_str('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        await ws.send_str(_start(params))
        for garbage in ("not json", '{"event":"media"}', '{"event":"bogus"}', "[]"):
            await ws.send_str(garbage)
        await ws.send_bytes(b"\x00\x01")
        for n, i in enumerate(range(0, len(speech), 160)):
            await ws.send_str(_media(speech[i : i + 160], n))
        # The bridge answers with speech despite the garbage: wait for the first media frame.
        async with asyncio.timeout(30):
            while True:
                message = await ws.receive()
                assert message.type is aiohttp.WSMsgType.TEXT, message
                if json.loads(message.data)["event"] == "media":
                    break
        stop = {
            "event": "stop",
            "sequenceNumber": "999",
            "streamSid": "MZ" + "3" * 32,
            "stop": {"accountSid": "AC" + "2" * 32, "callSid": "CA" + "1" * 32},
        }
        await ws.send_str(json.dumps(stop))
        await ws.close()
    call = await bridge.app[CALLS].wait_ended("CA" + "1" * 32)
    assert call.ended_reason == "caller hung up"
    assert call.stats.protocol_errors == 5


async def test_a_forged_signature_is_refused_when_a_token_is_set(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge(twilio_auth_token=AUTH_TOKEN)
    async with aiohttp.ClientSession() as session:
        form = {"CallSid": "CA" + "1" * 32, "From": "+15555550100", "To": "+15555550199"}
        forged = compute_signature("not-the-token", f"{bridge.url}/twilio/voice", form)
        for headers in ({"X-Twilio-Signature": forged}, {}):
            async with session.post(
                f"{bridge.url}/twilio/voice", data=form, headers=headers
            ) as resp:
                assert resp.status == 403


async def test_a_signed_call_flows_and_an_unannounced_stream_is_refused(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge(twilio_auth_token=AUTH_TOKEN)
    report = await place_call(
        CarrierOptions(url=bridge.url, auth_token=AUTH_TOKEN),
        [caller_clip("goodbye")],
    )
    assert report.utterances[0].first_reply_ms is not None

    # A stream whose start carries no token from our signed webhook is closed at once.
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(bridge.url.replace("http", "ws") + "/twilio/stream")
        await ws.send_str('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        await ws.send_str(_start({"agent": "default"}))
        message = await ws.receive()
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1008


async def test_healthz(start_bridge: BridgeFactory) -> None:
    bridge = await start_bridge()
    async with aiohttp.ClientSession() as session, session.get(f"{bridge.url}/healthz") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body == {
        "status": "ok",
        "instance": bridge.app[STATE].instance,
        "public_url": bridge.settings.public_url,
    }
    assert len(body["instance"]) == 16


async def test_a_webhook_without_call_sid_is_a_bad_request(start_bridge: BridgeFactory) -> None:
    bridge = await start_bridge()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{bridge.url}/twilio/voice", data={"From": "+1555"}) as resp,
    ):
        assert resp.status == 400


async def test_draining_lets_calls_in_progress_finish_and_takes_no_new_ones(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge()
    call = asyncio.create_task(
        place_call(CarrierOptions(url=bridge.url), [caller_clip("order-status")])
    )
    await bridge.app[CALLS].wait_active()

    begin_drain(bridge.app)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{bridge.url}/readyz") as resp:
            assert resp.status == 503
            assert "draining" in (await resp.json())["problems"][0]
        new_call = {"CallSid": "CA" + "9" * 32, "From": "+15555550100", "To": "+15555550199"}
        async with session.post(f"{bridge.url}/twilio/voice", data=new_call) as resp:
            assert resp.status == 503  # Twilio falls back to another instance
    still_active = await drain(bridge.app, timeout_s=60)

    report = await call
    assert still_active == 0
    assert report.ended_by == "caller hung up"  # the call in progress ended normally
    assert report.utterances[0].first_reply_ms is not None


async def test_a_second_stream_for_a_call_in_progress_is_refused(
    start_bridge: BridgeFactory,
) -> None:
    """Without a token (development) nothing signs a stream, but a call still has one stream at
    a time: a second ``start`` for a call in progress is closed with 1008, the first goes on."""
    bridge = await start_bridge()
    connected = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
    async with aiohttp.ClientSession() as session:
        url = bridge.url.replace("http", "ws") + "/twilio/stream"
        first = await session.ws_connect(url)
        await first.send_str(connected)
        await first.send_str(_start({}))
        await bridge.app[CALLS].wait_active()
        second = await session.ws_connect(url)
        await second.send_str(connected)
        await second.send_str(_start({}))
        message = await second.receive()
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert second.close_code == 1008
        assert "CA" + "1" * 32 in bridge.app[CALLS].active  # the first call is untouched
        await first.close()


async def test_a_flood_of_bad_frames_logs_a_few_lines_not_one_each(
    start_bridge: BridgeFactory, log_capture: Callable[..., AbstractContextManager[StringIO]]
) -> None:
    with log_capture("warning", "json") as buffer:
        bridge = await start_bridge()
        async with aiohttp.ClientSession() as session:
            ws = await _started_stream(bridge.url, session)
            for _ in range(2500):
                await ws.send_str('{"event":"bogus"}')
            await ws.close()
        call = await bridge.app[CALLS].wait_ended("CA" + "1" * 32)
    assert call.stats.protocol_errors == 2500
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    logged = [line["count"] for line in lines if line["event"] == "twilio.protocol_error"]
    assert logged == [*range(1, 11), 1000, 2000]


async def test_a_webhook_whose_form_is_not_utf8_is_a_bad_request(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge(twilio_auth_token=AUTH_TOKEN)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{bridge.url}/twilio/voice",
            data=b"CallSid=CA\xff\xfe&From=\xc3",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ) as resp,
    ):
        assert resp.status == 400


async def test_a_frame_over_the_size_limit_ends_the_leg_with_a_log_line(
    start_bridge: BridgeFactory, log_capture: Callable[..., AbstractContextManager[StringIO]]
) -> None:
    with log_capture("warning", "json") as buffer:
        bridge = await start_bridge()
        async with aiohttp.ClientSession() as session:
            ws = await _started_stream(bridge.url, session)
            await bridge.app[CALLS].wait_active()
            await ws.send_str("x" * (STREAM_MESSAGE_BYTES + 1))
            await ws.receive()  # the bridge closes the socket
        call = await bridge.app[CALLS].wait_ended("CA" + "1" * 32)
    assert call.ended_reason == "stream lost"
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    assert [line for line in lines if line["event"] == "twilio.stream_error"]


async def test_shutdown_ends_calls_in_progress_at_once_with_reason_shutdown(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge()
    call = asyncio.create_task(
        place_call(CarrierOptions(url=bridge.url), [caller_clip("order-status")] * 3)
    )
    await bridge.app[CALLS].wait_active()
    (session,) = bridge.app[CALLS].active.values()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await bridge.app.shutdown()  # what the runner does after the drain, or on a second signal
    report = await call
    ended = await bridge.app[CALLS].wait_ended(report.call_sid)
    assert ended is session
    assert session.ended_reason == "shutdown"
    assert report.ended_by == "server hung up"
    assert loop.time() - began < 5.0  # on the simulated clock: no close waits out a timeout


async def test_the_twiml_streams_to_stream_url_and_continues_on_public_url(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge(stream_url="https://pod-3.example.com")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{bridge.url}/twilio/voice", data={"CallSid": "CA" + "5" * 32}) as resp,
    ):
        connect = ET.fromstring(await resp.text()).find("./Connect")
    assert connect is not None
    assert connect.get("action") == f"{bridge.url}/twilio/continue"
    stream = connect.find("./Stream")
    assert stream is not None
    assert stream.get("url") == "wss://pod-3.example.com/twilio/stream"
