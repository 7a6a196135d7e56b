"""The emulator calling declared functions from the caller's words (``agent.sim.live.functions``),
and its core doing so on unscripted turns; literal words, literal frames, no event loop."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from agent.sim.live.core import Clip, LiveEmulatorCore
from agent.sim.live.functions import (
    FILLER,
    DeclaredFunction,
    calls_for,
    declared_functions,
    fill_arguments,
    result_told,
    step_for_calls,
)
from agent.sim.live.options import (
    AnswerClips,
    CallerWords,
    CloseConnection,
    EmulatorOptions,
    SendMessage,
    Transcribe,
)
from agent.sim.live.scenario import Scenario, ScriptedCall, Speech, Step

LIGHTS = (DeclaredFunction("turn_on_the_lights"), DeclaredFunction("turn_off_the_lights"))
ORDER_STATUS = DeclaredFunction(
    "order_status",
    "Status, expected or actual delivery date, total and contents of one of the caller's orders.",
    {
        "type": "object",
        "properties": {
            "order_id": {
                "type": "string",
                "description": "The order number, a letter and four digits, for example A1017.",
            }
        },
        "required": ["order_id"],
    },
)
TRANSFER = DeclaredFunction(
    "transfer_call",
    "Put the caller through to a member of the team. Use it when they ask for a person, are "
    "upset, or need something you cannot do; tell them first.",
)
END_CALL = DeclaredFunction(
    "end_call", "End the call after the caller has said goodbye and you have said yours."
)
TICKET = DeclaredFunction(
    "open_ticket",
    "Record a problem for the support team to follow up: a faulty item, a return or refund.",
    {
        "type": "object",
        "properties": {"subject": {"type": "string"}, "body": {"type": "string"}},
        "required": ["subject"],
    },
    non_blocking=True,
)
SHOP = (ORDER_STATUS, TRANSFER, END_CALL, TICKET)


def test_the_guides_example_calls_the_function_its_words_name_and_not_its_sibling() -> None:
    assert calls_for("Turn on the lights please", LIGHTS) == (
        ScriptedCall("turn_on_the_lights", {}),
    )
    assert calls_for("Lights off! Turn them off.", LIGHTS) == (
        ScriptedCall("turn_off_the_lights", {}),
    )


def test_an_order_number_is_filled_from_the_words_typed_or_spoken() -> None:
    typed = calls_for("I would like to check the status of my order A1017", SHOP)
    spoken = calls_for("where is my order a one zero one seven", SHOP)
    assert typed == spoken == (ScriptedCall("order_status", {"order_id": "A1017"}),)


def test_without_a_required_argument_the_model_does_not_call() -> None:
    assert calls_for("I would like to check the status of my order", SHOP) == ()


def test_a_description_word_few_functions_use_is_enough() -> None:
    assert calls_for("Can I speak to a person please?", SHOP) == (ScriptedCall("transfer_call"),)
    assert calls_for("That's all, thank you, goodbye.", SHOP) == (ScriptedCall("end_call"),)


def test_non_blocking_functions_are_called_without_waiting_and_free_text_takes_the_words() -> None:
    (call,) = calls_for("The kettle arrived faulty, I want a refund", SHOP)
    assert call.name == "open_ticket"
    assert not call.wait
    assert call.args == {
        "subject": "The kettle arrived faulty, I want a refund",
        "body": "The kettle arrived faulty, I want a refund",
    }


def test_instructions_about_the_caller_match_by_name_only() -> None:
    greeting = (
        "The call has just connected. Greet the caller as Acme support and ask how you can help. "
        "Offer a person if they sound upset."
    )
    assert calls_for(greeting, SHOP) == ()
    assert calls_for("Hello, who are you?", SHOP) == ()


def test_several_functions_in_one_turn_are_all_called() -> None:
    calls = calls_for("Check the order status of A1017, then turn on the lights", (*LIGHTS, *SHOP))
    assert [call.name for call in calls] == ["turn_on_the_lights", "order_status"]


def test_arguments_from_patterns_enums_and_numbers() -> None:
    schema = {
        "type": "OBJECT",
        "properties": {
            "room": {"type": "STRING", "enum": ["kitchen", "living room"]},
            "brightness": {"type": "INTEGER"},
            "code": {"type": "string", "pattern": "^[0-9]{4}$"},
        },
        "required": ["room", "brightness"],
    }
    assert fill_arguments(schema, "Living room lights at 70, code 4172") == {
        "room": "living room",
        "brightness": 70,
        "code": "4172",
    }
    assert fill_arguments(schema, "Kitchen please") is None


def test_declarations_are_read_from_the_setup_tools_whatever_else_is_there() -> None:
    tools = [
        {"googleSearch": {}},
        {
            "functionDeclarations": [
                {"name": "a", "description": "x", "behavior": "NON_BLOCKING"},
                {"name": "b", "parametersJsonSchema": {"type": "object"}},
                {"description": "no name"},
            ]
        },
    ]
    assert declared_functions(tools) == (
        DeclaredFunction("a", "x", None, non_blocking=True),
        DeclaredFunction("b", "", {"type": "object"}),
    )
    assert declared_functions(None) == ()


def test_results_are_told_in_words_and_nothing_found_is_said_so() -> None:
    assert (
        result_told([{"id": "A1017", "status": "shipped"}]) == "I found id A1017, status shipped."
    )
    assert result_told([]) == "I could not find anything."
    assert result_told("ending the call") == "Done: ending the call."
    assert result_told({"error": "timed out"}) == "Sorry, that did not work: timed out."


def test_the_step_says_blocking_results_after_them_and_a_filler_for_non_blocking_ones() -> None:
    blocking = step_for_calls([ScriptedCall("order_status", {"order_id": "A1017"})])
    assert blocking.say == Speech("reply", "{told.order_status}")
    background = step_for_calls([ScriptedCall("open_ticket", {}, wait=False)])
    assert background.say == Speech("reply", FILLER)
    assert background.calls[0].say == Speech("reply", "{told.open_ticket}")


# -- the core ---------------------------------------------------------------------------------

CLIPS = AnswerClips(
    greeting=Clip(b"\x01\x00" * 4800, 24000, "Hello there friend"),
    reply=Clip(b"\x02\x00" * 4800, 24000, "Your order shipped"),
)


def core_with(tools: list[dict[str, Any]], **options: Any) -> LiveEmulatorCore:
    core = LiveEmulatorCore(
        EmulatorOptions(connection_lifetime_s=math.inf, session_limit_s=math.inf, **options), CLIPS
    )
    setup = {
        "model": "models/m",
        "tools": tools,
        "outputAudioTranscription": {},
        "inputAudioTranscription": {},
        "generationConfig": {"responseModalities": ["TEXT"]},
    }
    core.receive(json.dumps({"setup": setup}), 0.0)
    core.data_to_send()
    return core


def sent(core: LiveEmulatorCore, until_ms: float = 60_000) -> list[dict[str, Any]]:
    core.poll(until_ms)
    return [item.message for item in core.data_to_send() if isinstance(item, SendMessage)]


def text_of(messages: list[dict[str, Any]]) -> str:
    return "".join(
        part.get("text", "")
        for message in messages
        for part in message.get("serverContent", {}).get("modelTurn", {}).get("parts", [])
    )


LIGHT_TOOLS = [{"functionDeclarations": [{"name": "turn_on_the_lights"}]}]


def test_the_core_calls_a_function_its_client_content_names_then_tells_the_result() -> None:
    core = core_with(LIGHT_TOOLS)
    core.receive(
        '{"clientContent":{"turns":[{"role":"user","parts":[{"text":"Turn on the lights"}]}],'
        '"turnComplete":true}}',
        0.0,
    )
    (message,) = sent(core)
    (call,) = message["toolCall"]["functionCalls"]
    assert call["name"] == "turn_on_the_lights"
    assert call["args"] == {}
    response = {"id": call["id"], "name": call["name"], "response": {"result": "ok"}}
    core.receive(json.dumps({"toolResponse": {"functionResponses": [response]}}), 100.0)
    assert text_of(sent(core)) == "Done: ok."


def test_a_scenario_step_takes_precedence_over_matching() -> None:
    scenario = Scenario(steps=(Step(say=Speech("reply", "Scripted.")),))
    core = core_with(LIGHT_TOOLS, scenario=scenario)
    core.receive('{"realtimeInput":{"text":"Turn on the lights"}}', 0.0)
    out = sent(core)
    assert not any("toolCall" in message for message in out)
    assert text_of(out) == "Scripted."


def test_non_blocking_functions_get_a_filler_and_their_result_when_idle() -> None:
    tools = [{"functionDeclarations": [{"name": "turn_on_the_lights", "behavior": "NON_BLOCKING"}]}]
    core = core_with(tools)
    core.receive('{"realtimeInput":{"text":"Turn on the lights"}}', 0.0)
    out = sent(core)
    (call,) = next(m for m in out if "toolCall" in m)["toolCall"]["functionCalls"]
    assert text_of(out) == FILLER
    response = {
        "id": call["id"],
        "name": call["name"],
        "response": {"result": "on"},
        "scheduling": "WHEN_IDLE",
    }
    core.receive(json.dumps({"toolResponse": {"functionResponses": [response]}}), 5_000.0)
    assert text_of(sent(core)) == "Done: on."


def test_words_a_test_knows_are_heard_for_caller_speech_and_acted_on() -> None:
    words = CallerWords()
    words.say("Turn on the lights")
    core = LiveEmulatorCore(
        EmulatorOptions(
            connection_lifetime_s=math.inf, session_limit_s=math.inf, caller_words=words
        ),
        CLIPS,
    )
    setup = {
        "model": "models/m",
        "tools": LIGHT_TOOLS,
        "inputAudioTranscription": {},
        "realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}},
    }
    core.receive(json.dumps({"setup": setup}), 0.0)
    core.data_to_send()
    audio = base64.b64encode(b"\x00\x10" * 1600).decode()
    frames: list[dict[str, Any]] = [
        {"activityStart": {}},
        {"audio": {"data": audio, "mimeType": "audio/pcm;rate=16000"}},
        {"activityEnd": {}},
    ]
    for frame in frames:
        core.receive(json.dumps({"realtimeInput": frame}), 0.0)
    out = sent(core)
    assert out[0] == {"serverContent": {"inputTranscription": {"text": "Turn on the lights"}}}
    assert out[1]["toolCall"]["functionCalls"][0]["name"] == "turn_on_the_lights"
    assert not words.coming


def test_with_a_recogniser_known_words_are_used_and_unknown_turns_are_recognised() -> None:
    words = CallerWords()
    words.say("Turn on the lights")
    words.say(None)  # a recording: the recogniser hears it
    core = LiveEmulatorCore(
        EmulatorOptions(
            connection_lifetime_s=math.inf, session_limit_s=math.inf, caller_words=words
        ),
        CLIPS,
        hears=True,
    )
    setup = {
        "model": "models/m",
        "tools": LIGHT_TOOLS,
        "inputAudioTranscription": {},
        "realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}},
    }
    core.receive(json.dumps({"setup": setup}), 0.0)
    core.data_to_send()
    audio = base64.b64encode(b"\x00\x10" * 1600).decode()

    frames: list[dict[str, Any]] = [
        {"activityStart": {}},
        {"audio": {"data": audio, "mimeType": "audio/pcm;rate=16000"}},
        {"activityEnd": {}},
    ]

    def caller_turn(at_ms: float) -> list[Any]:
        for frame in frames:
            core.receive(json.dumps({"realtimeInput": frame}), at_ms)
        core.poll(at_ms)
        return core.data_to_send()

    first = caller_turn(0.0)
    assert not any(isinstance(item, Transcribe) for item in first)
    messages = [item.message for item in first if isinstance(item, SendMessage)]
    assert messages[0] == {"serverContent": {"inputTranscription": {"text": "Turn on the lights"}}}
    (call,) = messages[1]["toolCall"]["functionCalls"]
    response = {"id": call["id"], "name": call["name"], "response": {"result": "ok"}}
    core.receive(json.dumps({"toolResponse": {"functionResponses": [response]}}), 100.0)
    core.poll(60_000.0)
    core.data_to_send()
    second = caller_turn(60_000.0)
    (request,) = [item for item in second if isinstance(item, Transcribe)]
    assert request.pcm


# -- what each model does with the declarations (the capability table) ------------------------


def model_core(model: str, tools: list[dict[str, Any]]) -> LiveEmulatorCore:
    """A core for ``model`` speaking audio (3.8 Live has no TEXT), with transcripts."""
    core = LiveEmulatorCore(
        EmulatorOptions(connection_lifetime_s=math.inf, session_limit_s=math.inf), CLIPS
    )
    setup = {
        "model": f"models/{model}",
        "tools": tools,
        "outputAudioTranscription": {},
        "generationConfig": {"responseModalities": ["AUDIO"]},
    }
    core.receive(json.dumps({"setup": setup}), 0.0)
    assert any(
        isinstance(item, SendMessage) and "setupComplete" in item.message
        for item in core.data_to_send()
    )
    return core


def transcript_of(messages: list[dict[str, Any]]) -> str:
    return "".join(
        message.get("serverContent", {}).get("outputTranscription", {}).get("text", "")
        for message in messages
    )


def test_on_3_8_live_a_function_without_behavior_runs_non_blocking() -> None:
    # "Asynchronous execution (behavior: NON_BLOCKING) is now the default function calling mode"
    # (https://ai.google.dev/gemini-api/docs/models/gemini-3.8-live): a filler, no waiting.
    for model, filler in (
        ("gemini-3.8-live", True),
        ("gemini-2.5-flash-native-audio-latest", False),
    ):
        core = model_core(model, LIGHT_TOOLS)
        core.receive('{"realtimeInput":{"text":"Turn on the lights"}}', 0.0)
        out = sent(core)
        assert any("toolCall" in message for message in out), model
        assert (transcript_of(out) == FILLER) is filler, model


def test_a_context_update_replaces_the_functions_on_a_model_that_takes_one() -> None:
    core = model_core("gemini-3.8-live", LIGHT_TOOLS)
    fan = [{"functionDeclarations": [{"name": "turn_on_the_fan", "behavior": "BLOCKING"}]}]
    update = {
        "contextUpdate": {
            "systemInstruction": {"parts": [{"text": "You are billing."}], "role": "user"},
            "tools": {"tools": fan},
        }
    }
    core.receive(json.dumps(update), 0.0)
    assert sent(core) == []
    assert core.record.context_updates == [update["contextUpdate"]]
    core.receive('{"realtimeInput":{"text":"Turn on the lights"}}', 1_000.0)
    assert not any("toolCall" in message for message in sent(core))
    core.receive('{"realtimeInput":{"text":"Turn on the fan"}}', 20_000.0)
    (call,) = next(m for m in sent(core) if "toolCall" in m)["toolCall"]["functionCalls"]
    assert call["name"] == "turn_on_the_fan"


def test_a_context_update_is_refused_by_a_model_that_cannot_take_one() -> None:
    core = model_core("gemini-2.5-flash-native-audio-latest", LIGHT_TOOLS)
    core.receive('{"contextUpdate":{"tools":{"tools":[]}}}', 0.0)
    (close,) = core.data_to_send()
    assert isinstance(close, CloseConnection)
    assert close.code == 1007
    assert "contextUpdate is not supported by gemini-2.5-flash-native-audio-latest" in close.reason
