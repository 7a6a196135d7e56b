"""The Live API guide's function-calling examples, through the official ``google-genai`` SDK,
against the emulator with no scenario: the emulated model calls what the words ask for.

The examples are those of https://ai.google.dev/gemini-api/docs/live-tools ("Function calling",
"Asynchronous function calling", "Multiple tools"), as written but for the base URL
(``conftest.py``) and a loop that stops reading once the exchange is over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from google.genai import types
from google.genai.live import AsyncSession

from agent.sim.live.functions import FILLER
from agent.sim.live.server import EmulatorSpeech

from .conftest import EmulatedLive
from .test_genai_sdk import caller_pcm16k, send_audio

MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
Live = Callable[..., Awaitable[EmulatedLive]]

# The guide's declarations, as dicts the way it writes them.
TURN_ON_THE_LIGHTS: dict[str, Any] = {"name": "turn_on_the_lights"}
TURN_OFF_THE_LIGHTS: dict[str, Any] = {"name": "turn_off_the_lights"}


def transcript(messages: list[types.LiveServerMessage]) -> str:
    return "".join(
        m.server_content.output_transcription.text or ""
        for m in messages
        if m.server_content and m.server_content.output_transcription
    )


async def answer_calls(
    session: AsyncSession, scheduling: types.FunctionResponseScheduling | None = None
) -> tuple[list[types.LiveServerMessage], list[types.FunctionCall]]:
    """Read one model turn, answering every tool call with ``{"result": "ok"}`` as the guide
    does; returns the messages and the calls."""
    received: list[types.LiveServerMessage] = []
    calls: list[types.FunctionCall] = []
    async for message in session.receive():
        received.append(message)
        if message.tool_call and message.tool_call.function_calls:
            responses = []
            for call in message.tool_call.function_calls:
                calls.append(call)
                responses.append(
                    types.FunctionResponse(
                        id=call.id,
                        name=call.name,
                        response={"result": "ok"},
                        scheduling=scheduling,
                    )
                )
            await session.send_tool_response(function_responses=responses)
    return received, calls


async def test_turn_on_the_lights_calls_that_function_and_not_its_sibling(live: Live) -> None:
    env = await live()
    tools: list[Any] = [{"function_declarations": [TURN_ON_THE_LIGHTS, TURN_OFF_THE_LIGHTS]}]
    config: Any = {
        "response_modalities": ["AUDIO"],
        "tools": tools,
        "output_audio_transcription": {},
    }
    async with env.client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_client_content(turns={"parts": [{"text": "Turn on the lights please"}]})
        received, calls = await answer_calls(session)
    assert [(call.name, call.args) for call in calls] == [("turn_on_the_lights", {})]
    assert transcript(received) == "Done: ok."
    (response,) = env.emulator.sessions[0].tool_responses
    assert response.response == {"result": "ok"}


@pytest.mark.parametrize(
    "scheduling",
    [
        types.FunctionResponseScheduling.INTERRUPT,
        types.FunctionResponseScheduling.WHEN_IDLE,
        types.FunctionResponseScheduling.SILENT,
    ],
)
async def test_a_non_blocking_function_is_called_and_its_result_scheduled(
    live: Live, scheduling: types.FunctionResponseScheduling
) -> None:
    env = await live()
    non_blocking: dict[str, Any] = {"name": "turn_on_the_lights", "behavior": "NON_BLOCKING"}
    config: Any = {
        "response_modalities": ["AUDIO"],
        "tools": [{"function_declarations": [non_blocking]}],
        "output_audio_transcription": {},
        "session_resumption": {},
    }
    async with env.client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_client_content(turns={"parts": [{"text": "Turn on the lights please"}]})
        first, calls = await answer_calls(session, scheduling)
        later: list[types.LiveServerMessage] = []
        # Resumable again once nothing is pending and nothing is being said.
        async for message in session.receive():
            later.append(message)
            update = message.session_resumption_update
            if update and update.resumable:
                break
    (call,) = calls
    assert call.name == "turn_on_the_lights"
    (declared,) = env.emulator.sessions[0].tool_calls
    assert not declared.wait  # called the NON_BLOCKING way: the model kept talking
    said = transcript(first) + transcript(later)
    if scheduling is types.FunctionResponseScheduling.SILENT:
        assert said == FILLER
    elif scheduling is types.FunctionResponseScheduling.WHEN_IDLE:
        assert said == FILLER + "Done: ok."
    else:
        assert said.endswith("Done: ok.")
    (response,) = env.emulator.sessions[0].tool_responses
    assert response.scheduling == scheduling.value


async def test_multiple_tools_in_one_turn(live: Live) -> None:
    env = await live()
    prompt = (
        "Hey, I need you to do three things for me.\n"
        "1.  Compute the largest prime palindrome under 100000.\n"
        "2.  Then use Google Search to look up information about the largest earthquake in "
        "California the week of Dec 5 2024?\n"
        "3.  Turn on the lights\n"
        "Thanks!\n"
    )
    tools: list[Any] = [
        {"google_search": {}},
        {"code_execution": {}},
        {"function_declarations": [TURN_ON_THE_LIGHTS, TURN_OFF_THE_LIGHTS]},
    ]
    config: Any = {"response_modalities": ["AUDIO"], "tools": tools}
    async with env.client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_client_content(turns={"parts": [{"text": prompt}]})
        _, calls = await answer_calls(session)
    assert [call.name for call in calls] == ["turn_on_the_lights"]


async def test_several_functions_named_in_one_turn_come_in_one_tool_call(live: Live) -> None:
    env = await live()
    dim: dict[str, Any] = {
        "name": "set_light_values",
        "description": "Set the brightness and color temperature of a room light.",
        "parameters": {
            "type": "OBJECT",
            "properties": {
                "brightness": {"type": "NUMBER", "description": "Light level from 0 to 100."},
                "color_temp": {"type": "STRING", "enum": ["daylight", "cool", "warm"]},
            },
            "required": ["brightness", "color_temp"],
        },
    }
    config: Any = {
        "response_modalities": ["AUDIO"],
        "tools": [{"function_declarations": [TURN_ON_THE_LIGHTS, dim]}],
    }
    async with env.client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_realtime_input(
            text="Turn on the lights, then set light values to 40 and warm"
        )
        _, calls = await answer_calls(session)
    assert [(call.name, call.args) for call in calls] == [
        ("turn_on_the_lights", {}),
        ("set_light_values", {"brightness": 40.0, "color_temp": "warm"}),
    ]
    (message,) = [m for m in env.emulator.sessions[0].tool_calls if m.name == "set_light_values"]
    assert message.wait


async def test_spoken_words_the_emulator_hears_call_the_function_they_name(live: Live) -> None:
    """Audio in, as the guide streams it; the emulator's recogniser (a stand-in that hears the
    guide's prompt) gives the words to the function matcher."""
    speech = EmulatorSpeech(transcribe=lambda pcm, rate, language: "turn on the lights please")
    env = await live(speech=speech)
    tools: list[Any] = [{"function_declarations": [TURN_ON_THE_LIGHTS, TURN_OFF_THE_LIGHTS]}]
    config: Any = {
        "response_modalities": ["AUDIO"],
        "tools": tools,
        "input_audio_transcription": {},
        "output_audio_transcription": {},
    }
    async with env.client.aio.live.connect(model=MODEL, config=config) as session:
        await send_audio(session, caller_pcm16k("caller-order-status.wav"))
        received, calls = await answer_calls(session)
    heard = [
        m.server_content.input_transcription.text
        for m in received
        if m.server_content and m.server_content.input_transcription
    ]
    assert heard == ["turn on the lights please"]
    assert [call.name for call in calls] == ["turn_on_the_lights"]
    assert transcript(received) == "Done: ok."
