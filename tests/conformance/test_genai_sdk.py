"""The official ``google-genai`` SDK (3.4) against the local Live API emulator.

Each test runs a flow from the Live API docs as written, but for the base URL (see ``conftest.py``):
if the SDK can hold these conversations with the emulator, the emulator speaks the protocol the way
the SDK expects Gemini to. The emulator runs at speed 20; the tests wait for messages, never for
time to pass.
"""

from __future__ import annotations

import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
from google.genai import errors, types
from google.genai.live import AsyncSession

from agent.sim.live.scenario import Clip, Scenario, ScriptedCall, Speech, Step
from agent.sim.live.server import load_bundled_clips

from .conftest import EmulatedLive

MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
Live = Callable[..., Awaitable[EmulatedLive]]
CLIPS = load_bundled_clips()


def caller_pcm16k(name: str = "caller-order-status.wav", trailing_silence_ms: int = 800) -> bytes:
    """A telephone fixture (8 kHz) upsampled to 16 kHz by repetition, then silence."""
    with wave.open(str(FIXTURES / name), "rb") as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    silence = np.zeros(16 * trailing_silence_ms, dtype=np.int16)
    return np.concatenate([np.repeat(samples, 2), silence]).astype("<i2").tobytes()


async def send_audio(session: AsyncSession, pcm: bytes, chunk_ms: int = 40) -> None:
    """Stream 16 kHz PCM16 the way the docs do: ``send_realtime_input(audio=Blob(...))``."""
    step = 32 * chunk_ms
    for start in range(0, len(pcm), step):
        await session.send_realtime_input(
            audio=types.Blob(data=pcm[start : start + step], mime_type="audio/pcm;rate=16000")
        )


def transcript(messages: list[types.LiveServerMessage]) -> str:
    return "".join(
        m.server_content.output_transcription.text or ""
        for m in messages
        if m.server_content and m.server_content.output_transcription
    )


async def test_text_in_text_out(live: Live) -> None:
    env = await live()
    config = types.LiveConnectConfig(response_modalities=[types.Modality.TEXT])
    async with env.client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="Hello, who are you?")]),
            turn_complete=True,
        )
        received = [message async for message in session.receive()]
    text = "".join(m.text for m in received if m.text)
    assert text == CLIPS.greeting.transcript
    assert any(m.server_content and m.server_content.generation_complete for m in received)
    final = received[-1]
    assert final.server_content is not None
    assert final.server_content.turn_complete
    usage = final.usage_metadata
    assert usage is not None
    assert usage.prompt_token_count == 5  # "Hello, who are you?"
    assert usage.response_token_count is not None
    assert usage.response_token_count > 0
    assert usage.total_token_count == usage.prompt_token_count + usage.response_token_count
    assert usage.response_tokens_details is not None
    assert usage.response_tokens_details[0].modality == types.MediaModality.TEXT
    assert env.emulator.sessions[0].setup["generationConfig"]["responseModalities"] == ["TEXT"]


async def test_audio_in_audio_out_with_transcriptions_and_vad_config(live: Live) -> None:
    env = await live()
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        speech_config=types.SpeechConfig(
            voice_config=types.VoiceConfig(
                prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name="Kore")
            )
        ),
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(
                start_of_speech_sensitivity=types.StartSensitivity.START_SENSITIVITY_LOW,
                end_of_speech_sensitivity=types.EndSensitivity.END_SENSITIVITY_LOW,
                prefix_padding_ms=20,
                silence_duration_ms=500,
            )
        ),
    )
    async with env.client.aio.live.connect(model=MODEL, config=config) as session:
        await send_audio(session, caller_pcm16k())
        received = [message async for message in session.receive()]
    heard = [
        m.server_content.input_transcription.text
        for m in received
        if m.server_content and m.server_content.input_transcription
    ]
    assert len(heard) == 1
    assert heard[0] is not None
    assert heard[0].startswith("[caller speech ")
    audio = b"".join(m.data for m in received if m.data)
    assert audio == CLIPS.reply.pcm
    assert transcript(received) == CLIPS.reply.transcript
    usage = received[-1].usage_metadata
    assert usage is not None
    assert usage.response_tokens_details is not None
    assert usage.response_tokens_details[0].modality == types.MediaModality.AUDIO
    assert usage.prompt_tokens_details is not None
    assert {d.modality for d in usage.prompt_tokens_details} == {types.MediaModality.AUDIO}
    vad = env.emulator.sessions[0].setup["realtimeInputConfig"]["automaticActivityDetection"]
    assert vad["startOfSpeechSensitivity"] == "START_SENSITIVITY_LOW"


async def test_manual_activity_signals_with_automatic_vad_disabled(live: Live) -> None:
    env = await live()
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        input_audio_transcription=types.AudioTranscriptionConfig(),
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(disabled=True)
        ),
    )
    async with env.client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_realtime_input(activity_start=types.ActivityStart())
        await send_audio(session, caller_pcm16k("caller-transfer.wav", trailing_silence_ms=0))
        await session.send_realtime_input(activity_end=types.ActivityEnd())
        received = [message async for message in session.receive()]
    first = received[0].server_content
    assert first is not None
    assert first.input_transcription is not None
    assert first.input_transcription.text == "[caller speech 2.3 s]"
    assert b"".join(m.data for m in received if m.data) == CLIPS.reply.pcm
    assert env.emulator.sessions[0].client_messages[1] == "realtimeInput.activityStart"


LOOKUP_ORDER = types.FunctionDeclaration(
    name="lookup_order",
    description="Find an order by its id.",
    parameters=types.Schema(
        type=types.Type.OBJECT,
        properties={"order_id": types.Schema(type=types.Type.STRING)},
        required=["order_id"],
    ),
)


async def test_blocking_function_call(live: Live) -> None:
    step = Step(
        say=Speech("reply", "Your order {result.status}."),
        calls=(ScriptedCall("lookup_order", {"order_id": "A17"}),),
    )
    env = await live(scenario=Scenario(steps=(step,)))
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        output_audio_transcription=types.AudioTranscriptionConfig(),
        tools=[types.Tool(function_declarations=[LOOKUP_ORDER])],
    )
    async with env.client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_client_content(
            turns={"role": "user", "parts": [{"text": "Where is order A17?"}]}
        )
        received = []
        async for message in session.receive():
            received.append(message)
            if message.tool_call and message.tool_call.function_calls:
                call = message.tool_call.function_calls[0]
                assert (call.name, call.args) == ("lookup_order", {"order_id": "A17"})
                await session.send_tool_response(
                    function_responses=types.FunctionResponse(
                        id=call.id, name=call.name, response={"result": {"status": "shipped"}}
                    )
                )
    assert transcript(received) == "Your order shipped."
    (response,) = env.emulator.sessions[0].tool_responses
    assert response.response == {"result": {"status": "shipped"}}


SEND_SMS = types.FunctionDeclaration(
    name="send_sms",
    description="Text the caller.",
    behavior=types.Behavior.NON_BLOCKING,
)


@pytest.mark.parametrize(
    "scheduling",
    [
        types.FunctionResponseScheduling.SILENT,
        types.FunctionResponseScheduling.WHEN_IDLE,
        types.FunctionResponseScheduling.INTERRUPT,
    ],
)
async def test_non_blocking_function_call_scheduling(
    live: Live, scheduling: types.FunctionResponseScheduling
) -> None:
    sms = ScriptedCall(
        "send_sms", {"to": "+15555550100"}, wait=False, say=Speech("reply", "Sent: {result.status}")
    )
    # A 10 s filler (half a second of wall time) is still playing when the result comes back.
    filler_audio = Clip(b"\x10\x00" * 24000 * 10, 24000, "")
    step = Step(say=Speech("greeting", "Sending it now, one moment.", filler_audio), calls=(sms,))
    env = await live(scenario=Scenario(steps=(step,)))
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        output_audio_transcription=types.AudioTranscriptionConfig(),
        tools=[types.Tool(function_declarations=[SEND_SMS])],
        session_resumption=types.SessionResumptionConfig(),
    )
    async with env.client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_client_content(turns={"role": "user", "parts": [{"text": "Text me"}]})
        filler = []
        async for message in session.receive():
            filler.append(message)
            if message.tool_call and message.tool_call.function_calls:
                call = message.tool_call.function_calls[0]
                await session.send_tool_response(
                    function_responses=types.FunctionResponse(
                        id=call.id,
                        name=call.name,
                        response={"result": {"status": "delivered"}},
                        scheduling=scheduling,
                    )
                )
        later = []
        # The session becomes resumable once nothing is pending and nothing is being said.
        async for message in session.receive():
            later.append(message)
            update = message.session_resumption_update
            if update and update.resumable:
                break
    contents = [m.server_content for m in filler + later if m.server_content]
    assert not any(content.interrupted for content in contents)
    said_later = transcript(later)
    generation_completes = sum(
        bool(m.server_content and m.server_content.generation_complete) for m in filler
    )
    if scheduling is types.FunctionResponseScheduling.SILENT:
        assert said_later == ""
        assert generation_completes == 1
    elif scheduling is types.FunctionResponseScheduling.WHEN_IDLE:
        assert transcript(filler) == "Sending it now, one moment."
        assert generation_completes == 1
        assert said_later == "Sent: delivered"
    else:
        # INTERRUPT: the filler stops short (turnComplete, no generationComplete) for the result.
        assert transcript(filler) != "Sending it now, one moment."
        assert generation_completes == 0
        assert said_later == "Sent: delivered"
    (response,) = env.emulator.sessions[0].tool_responses
    assert response.scheduling == scheduling.value


async def test_session_resumption_continues_the_conversation(live: Live) -> None:
    steps = (
        Step(say=Speech("reply", "First answer.")),
        Step(say=Speech("reply", "Second answer.")),
    )
    env = await live(scenario=Scenario(steps=steps))

    def config(handle: str | None) -> types.LiveConnectConfig:
        return types.LiveConnectConfig(
            response_modalities=[types.Modality.TEXT],
            session_resumption=types.SessionResumptionConfig(handle=handle),
        )

    handle = None
    async with env.client.aio.live.connect(model=MODEL, config=config(None)) as session:
        await session.send_client_content(turns={"role": "user", "parts": [{"text": "One"}]})
        first = [message async for message in session.receive()]
        # The handle for the finished turn comes after its turnComplete: keep reading.
        async for message in session.receive():
            update = message.session_resumption_update
            if update and update.resumable and update.new_handle:
                handle = update.new_handle
                break
    assert handle is not None
    async with env.client.aio.live.connect(model=MODEL, config=config(handle)) as session:
        await session.send_client_content(turns={"role": "user", "parts": [{"text": "Two"}]})
        second = [message async for message in session.receive()]
    assert "".join(m.text for m in first if m.text) == "First answer."
    assert "".join(m.text for m in second if m.text) == "Second answer."
    before, after = first[-1].usage_metadata, second[-1].usage_metadata
    assert before is not None
    assert after is not None
    assert before.prompt_token_count is not None
    assert after.prompt_token_count is not None
    assert after.prompt_token_count > before.prompt_token_count
    assert env.emulator.sessions[1].resumed_from == handle


async def test_go_away_reaches_the_sdk_then_the_connection_ends(live: Live) -> None:
    env = await live()
    config = types.LiveConnectConfig(response_modalities=[types.Modality.AUDIO])
    async with env.client.aio.live.connect(model=MODEL, config=config) as session:
        await env.emulator.go_away(0, time_left_s=2)
        received = session.receive()
        message = await anext(received)
        assert message.go_away is not None
        assert message.go_away.time_left == "2s"
        with pytest.raises(errors.APIError) as closed:
            await anext(received)
    assert closed.value.code == 1011
    assert "Deadline expired" in str(closed.value)
