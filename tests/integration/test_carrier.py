"""The carrier simulator against a small fake bridge, over real HTTP and WebSocket on loopback.

The fake bridge is deliberately dumb and independent of the product: it checks signatures with the
official ``twilio`` library, answers fixed TwiML, and treats N voiced inbound frames followed by
silence as an utterance, to which it replies with media and a mark; when a second utterance starts
it sends ``clear``, as a bridge does when the caller barges in. It records everything it receives.

Calls run on the suite's simulated clock (see ``conftest.py``): the assertions are about audio time
and message content, never about wall time.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from agent.audio.codec import pcm16_to_ulaw, ulaw_to_pcm16
from agent.errors import TelephonyError
from agent.sim.carrier import CarrierOptions, TwilioApiSimulator, place_call
from agent.telephony.rest import TwilioRest

TOKEN = "test-auth-token"
SILENCE = b"\xff" * 160
PARAMETERS = {"agent": "acme-support", "token": "t.1&x"}

Message = dict[str, Any]


def tone(hz: float, ms: int, amplitude: int = 8000) -> bytes:
    """PCM16 8 kHz sine; every 20 ms of it is audibly non-silent."""
    t = np.arange(ms * 8) / 8000
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


@dataclass
class FakeBridge:
    """Twilio's counterpart, reduced to what the simulator's contract needs."""

    auth_token: str | None = None
    voiced_frames: int = 5  # voiced inbound frames that make an utterance
    replies: list[list[bytes]] = field(default_factory=list)  # per utterance: media payloads
    twiml: str | None = None  # overrides the <Connect><Stream> answer
    hang_up_after_frames: int | None = None  # server closes the socket after this many frames
    # Called with (inbound media frames so far, CallSid) after each frame: a bridge acting on
    # the call through the REST API.
    on_media: Callable[[int, str], Awaitable[None]] | None = None
    # What it saw:
    forms: list[dict[str, str]] = field(default_factory=list)
    signatures: list[str | None] = field(default_factory=list)
    stream_signatures: list[str | None] = field(default_factory=list)
    stream_urls: list[str] = field(default_factory=list)
    received: list[Message] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/twilio/voice", self.voice)
        app.router.add_get("/twilio/stream", self.stream)
        return app

    async def voice(self, request: web.Request) -> web.Response:
        form = {name: str(value) for name, value in (await request.post()).items()}
        signature = request.headers.get("X-Twilio-Signature")
        self.forms.append(form)
        self.signatures.append(signature)
        if self.auth_token is not None and not RequestValidator(self.auth_token).validate(
            str(request.url), form, signature or ""
        ):
            return web.Response(status=403, text="forged signature")
        url = f"ws://{request.host}/twilio/stream"
        self.stream_urls.append(url)
        params = "".join(
            f'<Parameter name="{name}" value="{value.replace("&", "&amp;")}"/>'
            for name, value in PARAMETERS.items()
        )
        twiml = self.twiml or (
            f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{url}">'
            f"{params}</Stream></Connect></Response>"
        )
        return web.Response(text=twiml, content_type="text/xml")

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        self.stream_signatures.append(request.headers.get("X-Twilio-Signature"))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        stream_sid = call_sid = ""
        utterance = voiced = quiet = frames = 0
        async for frame in ws:
            message = json.loads(frame.data)
            self.received.append(message)
            if message["event"] == "start":
                stream_sid = message["streamSid"]
                call_sid = message["start"]["callSid"]
            if message["event"] != "media":
                continue
            frames += 1
            if self.on_media is not None:
                await self.on_media(frames, call_sid)
            if self.hang_up_after_frames is not None and frames >= self.hang_up_after_frames:
                await ws.close()
                break
            if base64.b64decode(message["media"]["payload"]) != SILENCE:
                if voiced == 0 and utterance >= 1:  # the caller talks again: stop our playback
                    await ws.send_json({"event": "clear", "streamSid": stream_sid})
                voiced, quiet = voiced + 1, 0
                continue
            quiet += 1
            if voiced >= self.voiced_frames and quiet == 3:  # end of an utterance: answer it
                voiced = 0
                utterance += 1
                for payload in (
                    self.replies[utterance - 1] if utterance <= len(self.replies) else []
                ):
                    media = {"payload": base64.b64encode(payload).decode()}
                    await ws.send_json({"event": "media", "streamSid": stream_sid, "media": media})
                await ws.send_json(
                    {
                        "event": "mark",
                        "streamSid": stream_sid,
                        "mark": {"name": f"reply-{utterance}"},
                    }
                )
        return ws

    def sent(self, event: str) -> list[Message]:
        return [m for m in self.received if m["event"] == event]


StartBridge = Callable[[FakeBridge], Awaitable[str]]


@pytest.fixture
def start_bridge(aiohttp_server: Callable[[web.Application], Awaitable[TestServer]]) -> StartBridge:
    async def start(bridge: FakeBridge) -> str:
        server = await aiohttp_server(bridge.app())
        return str(server.make_url("")).rstrip("/")

    return start


async def test_a_call_with_a_barge_in_follows_twilios_protocol(start_bridge: StartBridge) -> None:
    reply_1 = pcm16_to_ulaw(tone(300, 2000))  # long enough to still be playing at the barge-in
    reply_2 = pcm16_to_ulaw(tone(500, 200))
    bridge = FakeBridge(
        auth_token=TOKEN,
        replies=[[reply_1[i : i + 800] for i in range(0, len(reply_1), 800)], [reply_2 + b"\x55"]],
    )
    url = await start_bridge(bridge)
    utterances = [tone(200, 300), tone(250, 300)]
    options = CarrierOptions(url=url, auth_token=TOKEN, lead_ms=100, gap_ms=200, barge_in_ms=100)

    report = await place_call(options, utterances)

    # The voice webhook: Twilio's inbound fields, validly signed over the URL POSTed.
    [form] = bridge.forms
    assert bridge.signatures[0] is not None
    assert form["CallSid"] == report.call_sid
    assert report.call_sid.startswith("CA")
    assert len(report.call_sid) == 34
    assert form["AccountSid"].startswith("AC")
    assert len(form["AccountSid"]) == 34
    assert {k: form[k] for k in ("From", "To", "Direction", "CallStatus", "ApiVersion")} == {
        "From": "+15555550100",
        "To": "+15555550199",
        "Direction": "inbound",
        "CallStatus": "ringing",
        "ApiVersion": "2010-04-01",
    }
    # The WebSocket upgrade is signed too, over the stream URL exactly as the TwiML gave it.
    [stream_signature] = bridge.stream_signatures
    assert RequestValidator(TOKEN).validate(bridge.stream_urls[0], {}, stream_signature or "")

    # connected, then start carrying the <Parameter>s, then media ..., then stop.
    connected, start, *rest = bridge.received
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start == {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": report.stream_sid,
        "start": {
            "accountSid": form["AccountSid"],
            "streamSid": report.stream_sid,
            "callSid": report.call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": PARAMETERS,
        },
    }
    assert rest[-1] == {
        "event": "stop",
        "sequenceNumber": rest[-1]["sequenceNumber"],
        "streamSid": report.stream_sid,
        "stop": {"accountSid": form["AccountSid"], "callSid": report.call_sid},
    }
    assert [int(m["sequenceNumber"]) for m in rest] == list(range(2, len(rest) + 2))
    assert {m["streamSid"] for m in rest} == {report.stream_sid}

    media = bridge.sent("media")
    assert {m["media"]["track"] for m in media} == {"inbound"}
    assert [m["media"]["chunk"] for m in media] == [str(i) for i in range(1, len(media) + 1)]
    assert [m["media"]["timestamp"] for m in media] == [str(20 * i) for i in range(len(media))]
    inbound = [base64.b64decode(m["media"]["payload"]) for m in media]
    assert {len(frame) for frame in inbound} == {160}
    assert len(inbound) * 320 == len(report.heard)  # one frame out and one frame heard per tick

    # The caller's audio is the project's mu-law of the PCM, where the report says it was spoken.
    assert inbound[:5] == [SILENCE] * 5  # lead_ms=100
    for utt, pcm in zip(report.utterances, utterances, strict=True):
        spoken = b"".join(inbound[utt.start_ms // 20 : utt.end_ms // 20])
        assert spoken == pcm16_to_ulaw(pcm)

    # The second utterance cut the first reply short; the bridge's clear flushed it and its mark.
    first, second = report.utterances
    assert first.first_reply_ms is not None
    assert second.start_ms == first.first_reply_ms + 100
    assert report.barge_ins == 1
    assert len(report.clears) == 1
    assert report.marks_echoed == [("reply-1", False), ("reply-2", True)]
    assert [m["mark"]["name"] for m in bridge.sent("mark")] == ["reply-1", "reply-2"]
    assert all(latency is not None and latency >= 0 for latency in report.reply_latencies_ms())

    # What the caller heard: the start of reply 1, then all of reply 2.
    assert ulaw_to_pcm16(reply_1[:400]) in report.heard
    assert ulaw_to_pcm16(reply_1) not in report.heard
    assert ulaw_to_pcm16(reply_2 + b"\x55") in report.heard
    assert [size for _, size in report.media_received] == [800] * 20 + [len(reply_2) + 1]
    assert report.protocol_errors == []
    assert report.ended_by == "caller hung up"
    assert "barge-ins: 1" in report.summary()


async def test_without_an_auth_token_no_signature_is_sent(start_bridge: StartBridge) -> None:
    bridge = FakeBridge(replies=[[b"\x30" * 160]])
    url = await start_bridge(bridge)
    report = await place_call(CarrierOptions(url=url, lead_ms=0, gap_ms=20), [tone(200, 200)])
    assert bridge.signatures == [None]
    assert bridge.stream_signatures == [None]
    assert report.marks_echoed == [("reply-1", True)]
    assert report.ended_by == "caller hung up"


@pytest.mark.parametrize("token", ["not-the-token", None])
async def test_a_forged_or_missing_signature_is_refused(
    start_bridge: StartBridge, token: str | None
) -> None:
    url = await start_bridge(FakeBridge(auth_token=TOKEN))
    with pytest.raises(TelephonyError, match="403: forged signature"):
        await place_call(CarrierOptions(url=url, auth_token=token), [tone(200, 100)])


async def test_twiml_without_a_stream_is_an_error(start_bridge: StartBridge) -> None:
    bridge = FakeBridge(twiml="<Response><Say>Goodbye</Say></Response>")
    url = await start_bridge(bridge)
    with pytest.raises(TelephonyError, match="no <Response><Connect><Stream>"):
        await place_call(CarrierOptions(url=url), [tone(200, 100)])


async def test_the_server_closing_the_socket_ends_the_call(start_bridge: StartBridge) -> None:
    bridge = FakeBridge(hang_up_after_frames=10)
    url = await start_bridge(bridge)
    report = await place_call(CarrierOptions(url=url, lead_ms=0), [tone(200, 2000)])
    assert report.ended_by == "server hung up"
    assert bridge.sent("stop") == []
    assert len(bridge.sent("media")) == 10
    assert "server hung up" in report.summary()


async def test_max_duration_hangs_up_on_a_silent_bridge(start_bridge: StartBridge) -> None:
    bridge = FakeBridge()  # never replies
    url = await start_bridge(bridge)
    options = CarrierOptions(url=url, lead_ms=0, max_duration_s=0.4)
    report = await place_call(options, [tone(200, 100)])
    assert report.ended_by == "max duration"
    assert len(bridge.sent("media")) == 20
    assert len(bridge.sent("stop")) == 1
    assert report.reply_latencies_ms() == [None]


async def test_an_unreachable_bridge_is_a_telephony_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on once this is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = CarrierOptions(url=f"http://127.0.0.1:{port}")
    with pytest.raises(TelephonyError, match="could not reach the voice webhook"):
        await place_call(options, [tone(200, 100)])


# -- the bridge acts on the call through Twilio's REST API -----------------------------------------

REST_TOKEN = "rest-auth-token-for-tests"


@pytest.fixture
async def twilio_api() -> AsyncIterator[TwilioApiSimulator]:
    async with TwilioApiSimulator(auth_token=REST_TOKEN) as simulator:
        yield simulator


async def test_a_rest_hang_up_ends_the_simulated_call(
    start_bridge: StartBridge, twilio_api: TwilioApiSimulator
) -> None:
    results: list[bool] = []

    async with aiohttp.ClientSession() as http:
        client = TwilioRest(
            http, account_sid=twilio_api.account_sid, auth_token=REST_TOKEN, base_url=twilio_api.url
        )

        async def hang_up_at_frame_10(frames: int, call_sid: str) -> None:
            if frames == 10:
                results.append(await client.hang_up(call_sid))

        bridge = FakeBridge(on_media=hang_up_at_frame_10)
        url = await start_bridge(bridge)
        options = CarrierOptions(url=url, lead_ms=0)
        report = await place_call(options, [tone(200, 2000)], rest=twilio_api)
        # Once the call is over, Twilio answers 20404: not an error for a hang-up.
        results.append(await client.hang_up(report.call_sid))

    assert results == [True, False]
    assert report.ended_by == "hung up via REST"
    assert report.transferred_to is None
    assert bridge.forms[0]["AccountSid"] == twilio_api.account_sid
    assert bridge.received[-1]["event"] == "stop"
    assert bridge.received[-1]["stop"]["callSid"] == report.call_sid
    assert len(bridge.sent("media")) >= 10
    assert "hung up via REST" in report.summary()


async def test_a_rest_dial_transfers_the_simulated_call(
    start_bridge: StartBridge, twilio_api: TwilioApiSimulator
) -> None:
    async with aiohttp.ClientSession() as http:
        client = TwilioRest(
            http, account_sid=twilio_api.account_sid, auth_token=REST_TOKEN, base_url=twilio_api.url
        )

        async def transfer_at_frame_5(frames: int, call_sid: str) -> None:
            if frames == 5:
                await client.transfer(call_sid, "+15555550123")

        bridge = FakeBridge(on_media=transfer_at_frame_5)
        url = await start_bridge(bridge)
        report = await place_call(
            CarrierOptions(url=url, lead_ms=0), [tone(200, 2000)], rest=twilio_api
        )

    assert report.ended_by == "transferred via REST"
    assert report.transferred_to == "+15555550123"
    assert "transferred to +15555550123" in report.summary()
    assert bridge.sent("stop")
    [update] = twilio_api.updates
    assert update.params == {"Twiml": "<Response><Dial>+15555550123</Dial></Response>"}


async def test_a_rest_update_with_the_wrong_token_changes_nothing(
    start_bridge: StartBridge, twilio_api: TwilioApiSimulator
) -> None:
    errors: list[int | None] = []
    async with aiohttp.ClientSession() as http:
        client = TwilioRest(
            http,
            account_sid=twilio_api.account_sid,
            auth_token="not-the-token",
            base_url=twilio_api.url,
        )

        async def try_hang_up(frames: int, call_sid: str) -> None:
            if frames == 5:
                try:
                    await client.hang_up(call_sid)
                except TelephonyError as exc:
                    errors.append(getattr(exc, "code", None))

        url = await start_bridge(FakeBridge(on_media=try_hang_up))
        options = CarrierOptions(url=url, lead_ms=0)
        report = await place_call(options, [tone(200, 300)], rest=twilio_api)
    assert errors == [20003]
    assert report.ended_by == "caller hung up"
