"""The Live API emulator on a real port, driven by a ``websockets`` client as the bridge would be.

Runs on the suite's simulated clock (see ``conftest.py``), so a 7 s answer streams in a moment of
wall time. Tests wait for messages (with timeouts), never for time to pass: injected faults are
awaited through the emulator's own methods.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import trustme
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agent.sim.live.options import Fault
from agent.sim.live.scenario import Scenario, ScriptedCall, Speech, Step
from agent.sim.live.server import (
    LIVE_PATH,
    EmulatorOptions,
    RunningEmulator,
    load_bundled_clips,
    start_emulator,
    tls_server_context,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PATH = LIVE_PATH.format(version="v1beta")
# Simulated seconds (see conftest.py): a generous bound costs nothing; pytest-timeout guards hangs.
TIMEOUT = 60.0
MODEL = "models/gemini-2.5-flash-native-audio-preview-12-2025"
SETUP = {
    "setup": {
        "model": MODEL,
        "generationConfig": {"responseModalities": ["AUDIO"]},
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
    }
}
Message = dict[str, Any]


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    running = await start_emulator(EmulatorOptions())
    try:
        yield running
    finally:
        await running.close()


def caller_pcm16k(name: str = "caller-order-status.wav", trailing_silence_ms: int = 800) -> bytes:
    """A telephone fixture (8 kHz) upsampled to 16 kHz by repetition, then silence."""
    with wave.open(str(FIXTURES / name), "rb") as wav:
        assert wav.getframerate() == 8000
        samples: npt.NDArray[np.int16] = np.frombuffer(
            wav.readframes(wav.getnframes()), dtype=np.int16
        )
    silence = np.zeros(16 * trailing_silence_ms, dtype=np.int16)
    return np.concatenate([np.repeat(samples, 2), silence]).astype("<i2").tobytes()


async def send_audio(ws: ClientConnection, pcm: bytes, chunk_ms: int = 20) -> None:
    """Stream 16 kHz PCM16 as the Python SDK does: snake_case and URL-safe base64."""
    step = 32 * chunk_ms
    for start in range(0, len(pcm), step):
        data = base64.urlsafe_b64encode(pcm[start : start + step]).decode()
        audio = {"data": data, "mime_type": "audio/pcm;rate=16000"}
        await ws.send(json.dumps({"realtime_input": {"audio": audio}}))


async def receive(ws: ClientConnection) -> Message:
    """The next server message; Google sends JSON in binary frames."""
    frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(frame, bytes)
    message: Message = json.loads(frame)
    return message


async def receive_until_turn_complete(ws: ClientConnection) -> list[Message]:
    received: list[Message] = []
    while True:
        received.append(await receive(ws))
        if received[-1].get("serverContent", {}).get("turnComplete"):
            return received


async def open_session(emulator: RunningEmulator, setup: Message = SETUP) -> ClientConnection:
    ws = await connect(emulator.url + PATH)
    await ws.send(json.dumps(setup))
    assert await receive(ws) == {"setupComplete": {}}
    return ws


def with_setup(**fields: Any) -> Message:
    """``SETUP`` with ``fields`` added (or replaced)."""
    setup: Message = json.loads(json.dumps(SETUP))
    setup["setup"].update(fields)
    return setup


async def receive_handle(ws: ClientConnection) -> str:
    """Read up to the next resumable ``sessionResumptionUpdate``; its handle."""
    while True:
        update = (await receive(ws)).get("sessionResumptionUpdate")
        if update and update.get("resumable"):
            handle: str = update["newHandle"]
            return handle


async def close_of(ws: ClientConnection) -> tuple[int, str]:
    """Wait for the server to close the connection; its close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        await read_until_closed(ws)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def read_until_closed(ws: ClientConnection) -> None:
    while True:
        await asyncio.wait_for(ws.recv(), TIMEOUT)


def is_audio(message: Message) -> bool:
    return "modelTurn" in message.get("serverContent", {})


def audio_of(message: Message) -> bytes:
    blob = message["serverContent"]["modelTurn"]["parts"][0]["inlineData"]
    assert blob["mimeType"] == "audio/pcm;rate=24000"
    return base64.b64decode(blob["data"])


@pytest.mark.parametrize(
    "path",
    [
        "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent",
        "//ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent",
        "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent",
    ],
)
async def test_setup_is_completed_on_every_api_version(
    emulator: RunningEmulator, path: str
) -> None:
    async with connect(emulator.url + path) as ws:
        await ws.send(json.dumps(SETUP).encode())  # a binary client frame is fine too
        assert await receive(ws) == {"setupComplete": {}}
    assert emulator.sessions[0].setup["model"] == MODEL


async def test_caller_turn_gets_a_spoken_transcribed_answer(emulator: RunningEmulator) -> None:
    async with await open_session(emulator) as ws:
        await send_audio(ws, caller_pcm16k())
        received = await receive_until_turn_complete(ws)

    contents = [m["serverContent"] for m in received]
    assert contents[0]["inputTranscription"]["text"].startswith("[caller speech ")
    audio = b"".join(audio_of(m) for m in received if is_audio(m))
    assert audio == load_bundled_clips().reply.pcm
    words = "".join(
        c["outputTranscription"]["text"] for c in contents if "outputTranscription" in c
    )
    assert words == load_bundled_clips().reply.transcript
    # The last transcription, generationComplete, then one frame with turnComplete AND usage.
    assert "outputTranscription" in contents[-3]
    assert contents[-2] == {"generationComplete": True}
    final = received[-1]
    assert final["serverContent"] == {"turnComplete": True}
    usage = final["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["responseTokenCount"]
    assert usage["responseTokensDetails"] == [
        {"modality": "AUDIO", "tokenCount": usage["responseTokenCount"]}
    ]

    record = emulator.sessions[0]
    assert record.caller_turns == 1
    assert record.answers_started == record.answers_completed == 1
    assert record.audio_bytes_received == len(caller_pcm16k())
    assert record.client_messages[0] == "setup"
    assert set(record.client_messages[1:]) == {"realtimeInput.audio"}
    assert record.closed_code == 1000


async def test_client_content_turn_gets_the_greeting(emulator: RunningEmulator) -> None:
    async with await open_session(emulator) as ws:
        await ws.send(
            json.dumps(
                {
                    "client_content": {
                        "turns": [{"role": "user", "parts": [{"text": "Greet the caller."}]}],
                        "turn_complete": True,
                    }
                }
            )
        )
        received = await receive_until_turn_complete(ws)
    audio = b"".join(audio_of(m) for m in received if is_audio(m))
    assert audio == load_bundled_clips().greeting.pcm
    assert received[-1]["usageMetadata"]["promptTokensDetails"][0]["modality"] == "TEXT"


async def test_caller_barging_in_interrupts_the_answer(emulator: RunningEmulator) -> None:
    async with await open_session(emulator) as ws:
        await ws.send(json.dumps({"clientContent": {"turnComplete": True}}))
        while not is_audio(await receive(ws)):
            pass
        # The caller talks over the greeting.
        await send_audio(ws, caller_pcm16k("caller-interrupt.wav"))
        after_barge_in: list[Message] = []
        while "interrupted" not in (message := await receive(ws)).get("serverContent", {}):
            assert "turnComplete" not in message.get("serverContent", {})
            after_barge_in.append(message)
        assert await receive(ws) == {"serverContent": {"turnComplete": True}}
        # Next comes the interrupting turn's transcription: no stale audio of the greeting.
        next_message = await receive(ws)
        assert "inputTranscription" in next_message["serverContent"]
        reply = await receive_until_turn_complete(ws)
    assert b"".join(audio_of(m) for m in reply if is_audio(m)) == load_bundled_clips().reply.pcm
    assert not any("generationComplete" in m.get("serverContent", {}) for m in after_barge_in)
    record = emulator.sessions[0]
    assert record.interruptions == 1
    assert record.answers_started == 2
    assert record.answers_completed == 1


async def test_no_interruption_lets_the_greeting_finish(emulator: RunningEmulator) -> None:
    setup = json.loads(json.dumps(SETUP))
    setup["setup"]["realtimeInputConfig"] = {"activityHandling": "NO_INTERRUPTION"}
    async with await open_session(emulator, setup) as ws:
        await ws.send(json.dumps({"clientContent": {"turnComplete": True}}))
        while not is_audio(await receive(ws)):
            pass
        await send_audio(ws, caller_pcm16k("caller-interrupt.wav"))
        greeting = await receive_until_turn_complete(ws)
        reply = await receive_until_turn_complete(ws)
    assert not any("interrupted" in m["serverContent"] for m in greeting + reply)
    assert any("generationComplete" in m["serverContent"] for m in greeting)
    assert b"".join(audio_of(m) for m in reply if is_audio(m)) == load_bundled_clips().reply.pcm


async def test_manual_activity_signals_delimit_the_turn(emulator: RunningEmulator) -> None:
    setup = json.loads(json.dumps(SETUP))
    setup["setup"]["realtimeInputConfig"] = {"automaticActivityDetection": {"disabled": True}}
    async with await open_session(emulator, setup) as ws:
        await ws.send(json.dumps({"realtimeInput": {"activityStart": {}}}))
        await send_audio(ws, caller_pcm16k("caller-transfer.wav", trailing_silence_ms=0))
        await ws.send(json.dumps({"realtimeInput": {"activityEnd": {}}}))
        received = await receive_until_turn_complete(ws)
    assert received[0]["serverContent"]["inputTranscription"]["text"] == "[caller speech 2.3 s]"
    assert emulator.sessions[0].caller_turns == 1


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        (
            '{"realtimeInput":{"audioStreamEnd":true}}',
            1007,
            "Request contains an invalid argument.",
        ),
        ("{not json", 1007, "Request contains an invalid argument."),
        (
            '{"setup":{"model":"' + MODEL + '","x":{}}}',
            1007,
            "Invalid JSON payload received. Unknown name \"x\" at 'setup': Cannot find field.",
        ),
        (
            '{"setup":{"model":"gemini-live"}}',
            1008,
            "models/gemini-live is not found for API version v1beta, "
            "or is not supported for bidiGenerateContent.",
        ),
    ],
)
async def test_bad_first_messages_close_with_googles_codes(
    emulator: RunningEmulator, first: str, code: int, reason: str
) -> None:
    async with connect(emulator.url + PATH) as ws:
        await ws.send(first)
        assert await close_of(ws) == (code, reason)
    assert emulator.sessions[0].closed_code == code


async def test_second_setup_closes_1007(emulator: RunningEmulator) -> None:
    async with await open_session(emulator) as ws:
        await ws.send(json.dumps(SETUP))
        assert await close_of(ws) == (1007, "Request contains an invalid argument.")


async def test_api_key_is_required_when_configured() -> None:
    running = await start_emulator(EmulatorOptions(api_key="secret"))
    try:
        invalid = (1007, "API key not valid. Please pass a valid API key.")
        async with connect(
            running.url + PATH, additional_headers={"x-goog-api-key": "wrong"}
        ) as ws:
            # Refused right after the handshake, before any setup.
            assert await close_of(ws) == invalid
        async with connect(running.url + PATH) as ws:
            assert await close_of(ws) == invalid
        headers = {"x-goog-api-key": "secret"}
        async with connect(running.url + PATH, additional_headers=headers) as ws:
            await ws.send(json.dumps(SETUP))
            assert await receive(ws) == {"setupComplete": {}}
        async with connect(running.url + PATH + "?key=secret") as ws:  # as the JS SDK does
            await ws.send(json.dumps(SETUP))
            assert await receive(ws) == {"setupComplete": {}}
        assert [s.closed_code for s in running.sessions] == [1007, 1007, 1000, 1000]
    finally:
        await running.close()


async def test_close_ends_open_sessions_with_going_away() -> None:
    running = await start_emulator(EmulatorOptions())
    ws = await open_session(running)
    try:
        # Mid-answer, so a paced stream is running when the emulator stops.
        await ws.send(json.dumps({"clientContent": {"turnComplete": True}}))
        while not is_audio(await receive(ws)):
            pass
        await running.close()
        code, _ = await close_of(ws)
        assert code == 1001
        assert running.sessions[0].closed_code == 1001
    finally:
        await ws.close()


async def test_a_client_vanishing_mid_answer_is_cleaned_up() -> None:
    running = await start_emulator(EmulatorOptions())
    try:
        ws = await open_session(running)
        await ws.send(json.dumps({"clientContent": {"turnComplete": True}}))
        while not is_audio(await receive(ws)):
            pass
        ws.transport.abort()  # no close frame: the line just drops
        await ws.wait_closed()
        async with await open_session(running) as second:  # still serving
            await second.close()
    finally:
        await running.close()  # waits for every session to end
    assert running.sessions[0].closed_code is not None
    assert running.sessions[0].answers_completed == 0


# ------------------------------------------------------------------------------------------
# Session resumption, goAway and the connection cap
# ------------------------------------------------------------------------------------------


async def test_a_session_resumes_on_a_new_connection_and_goes_on(
    emulator: RunningEmulator,
) -> None:
    setup = with_setup(sessionResumption={})
    async with await open_session(emulator, setup) as ws:
        await receive_handle(ws)
        await ws.send(json.dumps({"realtimeInput": {"text": "Where is my order?"}}))
        first = await receive_until_turn_complete(ws)
        handle = await receive_handle(ws)  # it comes after turnComplete

    async with await open_session(emulator, with_setup(sessionResumption={"handle": handle})) as ws:
        await receive_handle(ws)
        await ws.send(json.dumps({"realtimeInput": {"text": "Thanks"}}))
        second = await receive_until_turn_complete(ws)
    prompt_before = first[-1]["usageMetadata"]["promptTokenCount"]
    prompt_after = second[-1]["usageMetadata"]["promptTokenCount"]
    reply_tokens = first[-1]["usageMetadata"]["responseTokenCount"]
    assert prompt_after == prompt_before + reply_tokens + 2  # + the answer + "Thanks"
    record = emulator.sessions[1]
    assert record.resumed_from == handle
    assert [entry.text for entry in record.history][:1] == ["Where is my order?"]


async def test_a_resume_is_refused_while_the_old_socket_is_open(emulator: RunningEmulator) -> None:
    async with await open_session(emulator, with_setup(sessionResumption={})) as old:
        handle = await receive_handle(old)
        async with connect(emulator.url + PATH) as new:
            await new.send(json.dumps(with_setup(sessionResumption={"handle": handle})))
            assert await close_of(new) == (1011, "Internal error occurred.")
    async with connect(emulator.url + PATH) as ws:
        await ws.send(json.dumps(with_setup(sessionResumption={"handle": "made-up"})))
        assert await close_of(ws) == (1007, "Request contains an invalid argument.")


async def test_go_away_on_demand_then_the_deadline_close(emulator: RunningEmulator) -> None:
    async with await open_session(emulator) as ws:
        await emulator.go_away(0, time_left_s=1.0)
        assert await receive(ws) == {"goAway": {"timeLeft": "1s"}}
        assert await close_of(ws) == (1011, "Deadline expired before operation could complete.")
    assert emulator.sessions[0].go_aways == ["1s"]


async def test_the_connection_cap_sends_go_away_then_closes() -> None:
    # goAway 8.5 s in: well after setupComplete, which takes no simulated time.
    options = EmulatorOptions(connection_lifetime_s=10, go_away_before_s=1.5)
    running = await start_emulator(options)
    try:
        async with await open_session(running) as ws:
            assert await receive(ws) == {"goAway": {"timeLeft": "1.500s"}}
            assert await close_of(ws) == (1011, "Deadline expired before operation could complete.")
    finally:
        await running.close()


# ------------------------------------------------------------------------------------------
# Injected faults
# ------------------------------------------------------------------------------------------


async def test_close_session_closes_with_the_given_code(emulator: RunningEmulator) -> None:
    async with await open_session(emulator) as ws:
        await emulator.close_session(0, 1011, "The service is currently unavailable.")
        assert await close_of(ws) == (1011, "The service is currently unavailable.")
    assert emulator.sessions[0].closed_code == 1011


async def test_abort_session_drops_the_line_without_a_close_frame(
    emulator: RunningEmulator,
) -> None:
    ws = await open_session(emulator)
    await emulator.abort_session(0)
    with pytest.raises(ConnectionClosed) as closed:
        await read_until_closed(ws)
    assert closed.value.rcvd is None  # the client reports 1006
    assert emulator.sessions[0].closed_code == 1006


async def test_faults_from_options_hit_only_their_connection() -> None:
    faults = (Fault.close(after_s=3, code=1011, connection=1), Fault.delay_setup(200))
    running = await start_emulator(EmulatorOptions(faults=faults))
    try:
        async with await open_session(running) as first:
            async with await open_session(running) as second:
                assert (await running.wait_for_connection(1)).connection == 1
                assert await close_of(second) == (1011, "Internal error occurred.")
            await first.send(json.dumps({"realtimeInput": {"text": "Still there?"}}))
            assert (await receive_until_turn_complete(first))[-1]["usageMetadata"]
        assert running.sessions[0].faults == ["delay_setup"]
        assert running.sessions[1].faults == ["delay_setup", "close"]
    finally:
        await running.close()


async def test_a_stalled_connection_catches_up_afterwards() -> None:
    running = await start_emulator(EmulatorOptions(faults=(Fault.stall(after_s=0, for_s=1),)))
    try:
        async with await open_session(running) as ws:
            await ws.send(json.dumps({"clientContent": {"turnComplete": True}}))
            received = await receive_until_turn_complete(ws)
        audio = b"".join(audio_of(m) for m in received if is_audio(m))
        assert audio == load_bundled_clips().greeting.pcm
        assert running.sessions[0].faults == ["stall"]
    finally:
        await running.close()


# ------------------------------------------------------------------------------------------
# Scenarios, TEXT, TLS
# ------------------------------------------------------------------------------------------


async def test_a_scripted_blocking_call_is_answered_with_the_result() -> None:
    step = Step(
        say=Speech("reply", "Your order {result.status}."),
        calls=(ScriptedCall("lookup_order", {"order_id": "A17"}),),
    )
    running = await start_emulator(EmulatorOptions(scenario=Scenario(steps=(step,))))
    try:
        async with await open_session(running) as ws:
            await send_audio(ws, caller_pcm16k())
            assert "inputTranscription" in (await receive(ws))["serverContent"]
            call = (await receive(ws))["toolCall"]["functionCalls"][0]
            assert call["name"] == "lookup_order"
            await ws.send(
                json.dumps(
                    {
                        "toolResponse": {
                            "functionResponses": [
                                {
                                    "id": call["id"],
                                    "name": "lookup_order",
                                    "response": {"result": {"status": "shipped"}},
                                }
                            ]
                        }
                    }
                )
            )
            answer = await receive_until_turn_complete(ws)
        words = "".join(
            m["serverContent"]["outputTranscription"]["text"]
            for m in answer
            if "outputTranscription" in m["serverContent"]
        )
        assert words == "Your order shipped."
        (response,) = running.sessions[0].tool_responses
        assert response.id == call["id"]
        assert response.response == {"result": {"status": "shipped"}}
    finally:
        await running.close()


async def test_tls_serves_wss(tmp_path: Path) -> None:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    pem = tmp_path / "server.pem"
    server.private_key_and_cert_chain_pem.write_to_path(str(pem))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    running = await start_emulator(EmulatorOptions(), ssl_context=tls_server_context(pem))
    try:
        assert running.url.startswith("wss://127.0.0.1:")
        async with connect(running.url + PATH, ssl=client_context) as ws:
            await ws.send(json.dumps(SETUP))
            assert await receive(ws) == {"setupComplete": {}}
    finally:
        await running.close()
