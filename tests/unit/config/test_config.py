"""Agent configuration: defaults, and a clear ConfigError for every impossible value."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

from agent.config.models import (
    DEFAULT_AGENT,
    DEFAULT_MODEL,
    AgentConfig,
    ContextWindowCompressionConfig,
    FunctionDeclaration,
    HistoryConfig,
    ProactivityConfig,
    SessionResumptionConfig,
    SlidingWindow,
    ThinkingConfig,
    ToolsConfig,
    VadConfig,
)
from agent.errors import ConfigError


def test_defaults_leave_the_service_alone_except_compression_and_resumption() -> None:
    agent = AgentConfig()
    assert agent.model == DEFAULT_MODEL
    assert agent.response_modality == "AUDIO"
    assert agent.context_window_compression == ContextWindowCompressionConfig(
        trigger_tokens=None, sliding_window=SlidingWindow(target_tokens=None)
    )
    assert agent.session_resumption == SessionResumptionConfig(transparent=None)
    unset = [
        "temperature",
        "top_p",
        "top_k",
        "max_output_tokens",
        "seed",
        "media_resolution",
        "thinking_config",
        "enable_affective_dialog",
        "activity_handling",
        "turn_coverage",
        "explicit_vad_signal",
        "proactivity",
        "history_config",
    ]
    assert {name: getattr(agent, name) for name in unset} == dict.fromkeys(unset)
    assert agent.vad == VadConfig()
    assert not agent.tools
    assert agent == DEFAULT_AGENT


def test_existing_field_names_still_work() -> None:
    agent = AgentConfig(
        name="support",
        model="gemini-3.8-live",
        api_version="v1alpha",
        voice="Kore",
        language="en-US",
        system_instruction="Be brief.",
        greeting="Say hello.",
        vad=VadConfig(disabled=True),
        input_transcription=False,
        output_transcription=False,
    )
    assert (agent.name, agent.model, agent.api_version) == ("support", "gemini-3.8-live", "v1alpha")
    assert agent.vad.disabled is True


def test_configs_are_frozen_values() -> None:
    agent = AgentConfig(
        tools=ToolsConfig(
            function_declarations=(FunctionDeclaration("hang_up"),), google_search=True
        )
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        agent.temperature = 1.0  # type: ignore[misc]
    assert agent.tools
    assert agent == dataclasses.replace(agent)


def test_function_declarations_given_as_a_list_become_a_tuple() -> None:
    tools = ToolsConfig(function_declarations=[FunctionDeclaration("a")])  # type: ignore[arg-type]
    assert tools.function_declarations == (FunctionDeclaration("a"),)


def test_a_schema_is_copied_so_the_caller_cannot_change_the_config() -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"q": {"type": "string"}}}
    declaration = FunctionDeclaration("search", parameters_json_schema=schema)
    schema["properties"]["q"]["type"] = "integer"
    assert declaration.parameters_json_schema == {
        "type": "object",
        "properties": {"q": {"type": "string"}},
    }


# The table below feeds deliberately ill-typed values (as a YAML file might): call the classes
# through Any so the type checker lets them through to the runtime checks under test.
Untyped: Any = SimpleNamespace(
    AgentConfig=AgentConfig,
    VadConfig=VadConfig,
    ThinkingConfig=ThinkingConfig,
    ContextWindowCompressionConfig=ContextWindowCompressionConfig,
    SessionResumptionConfig=SessionResumptionConfig,
    ProactivityConfig=ProactivityConfig,
    HistoryConfig=HistoryConfig,
    FunctionDeclaration=FunctionDeclaration,
    ToolsConfig=ToolsConfig,
)


def _error(build: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        build()
    return caught.value


@pytest.mark.parametrize(
    ("build", "key", "says"),
    [
        (lambda: Untyped.AgentConfig(temperature=-0.1), "temperature", "at least 0, got -0.1"),
        (lambda: Untyped.AgentConfig(temperature=float("nan")), "temperature", "finite number"),
        (lambda: Untyped.AgentConfig(temperature="hot"), "temperature", "a number"),
        (lambda: Untyped.AgentConfig(top_p=1.5), "top_p", "at most 1, got 1.5"),
        (lambda: Untyped.AgentConfig(top_k=0), "top_k", "at least 1"),
        (lambda: Untyped.AgentConfig(top_k=2.5), "top_k", "whole number"),
        (lambda: Untyped.AgentConfig(max_output_tokens=0), "max_output_tokens", "at least 1"),
        (lambda: Untyped.AgentConfig(seed=2**31), "seed", "at most"),
        (lambda: Untyped.AgentConfig(seed=True), "seed", "whole number"),
        (lambda: Untyped.AgentConfig(api_version="v2"), "api_version", "v1, v1beta, v1alpha"),
        (
            lambda: Untyped.AgentConfig(response_modality="AUDIO_TEXT"),
            "response_modality",
            "AUDIO, TEXT",
        ),
        (
            lambda: Untyped.AgentConfig(media_resolution="LOW"),
            "media_resolution",
            "MEDIA_RESOLUTION_LOW",
        ),
        (lambda: Untyped.AgentConfig(model=""), "model", "model name"),
        (lambda: Untyped.AgentConfig(model="gemini 3"), "model", "model name"),
        (lambda: Untyped.AgentConfig(model="../secret"), "model", "model name"),
        (lambda: Untyped.AgentConfig(name=""), "name", "empty string"),
        (lambda: Untyped.AgentConfig(language="english please"), "language", "BCP-47"),
        (
            lambda: Untyped.AgentConfig(activity_handling="BARGE_IN"),
            "activity_handling",
            "NO_INTERRUPTION",
        ),
        (
            lambda: Untyped.AgentConfig(turn_coverage="ALL"),
            "turn_coverage",
            "TURN_INCLUDES_ALL_INPUT",
        ),
        (
            lambda: Untyped.AgentConfig(enable_affective_dialog="yes"),
            "enable_affective_dialog",
            "true",
        ),
        (
            lambda: Untyped.AgentConfig(input_transcription=None),
            "input_transcription",
            "true or false",
        ),
        # A mapping is validated into the section, never kept as it is.
        (lambda: Untyped.AgentConfig(vad={"disabled": "no"}), "vad.disabled", "true or false"),
        (lambda: Untyped.AgentConfig(vad="manual"), "vad", "must be a mapping"),
        (
            lambda: Untyped.VadConfig(silence_duration_ms=-1),
            "vad.silence_duration_ms",
            "at least 0",
        ),
        (lambda: Untyped.VadConfig(prefix_padding_ms=-20), "vad.prefix_padding_ms", "at least 0"),
        (
            lambda: Untyped.VadConfig(start_sensitivity="HIGH"),
            "vad.start_sensitivity",
            "START_SENSITIVITY",
        ),
        (
            lambda: Untyped.VadConfig(end_sensitivity="LOUD"),
            "vad.end_sensitivity",
            "END_SENSITIVITY",
        ),
        (lambda: Untyped.VadConfig(disabled="no"), "vad.disabled", "true or false"),
        (
            lambda: Untyped.ThinkingConfig(thinking_budget=-2),
            "thinking_config.thinking_budget",
            "-1",
        ),
        (
            lambda: Untyped.ThinkingConfig(thinking_level="MAX"),
            "thinking_config.thinking_level",
            "MINIMAL",
        ),
        (
            lambda: Untyped.ThinkingConfig(thinking_budget=128, thinking_level="LOW"),
            "thinking_config",
            "not both",
        ),
        (
            lambda: Untyped.ContextWindowCompressionConfig(
                trigger_tokens=1000, sliding_window=SlidingWindow(target_tokens=1000)
            ),
            "context_window_compression.sliding_window.target_tokens",
            "below trigger_tokens",
        ),
        (
            lambda: Untyped.ContextWindowCompressionConfig(trigger_tokens=0),
            "context_window_compression.trigger_tokens",
            "at least 1",
        ),
        (
            lambda: SlidingWindow(target_tokens=-5),
            "context_window_compression.sliding_window.target_tokens",
            "at least 1",
        ),
        (
            lambda: Untyped.SessionResumptionConfig(transparent="yes"),
            "session_resumption.transparent",
            "true or false",
        ),
        (
            lambda: Untyped.ProactivityConfig(proactive_audio=1),
            "proactivity.proactive_audio",
            "true or false",
        ),
        (
            lambda: Untyped.HistoryConfig(initial_history_in_client_content="y"),
            "history_config.initial_history_in_client_content",
            "true or false",
        ),
        (
            lambda: Untyped.FunctionDeclaration("1st-tool"),
            "tools.function_declarations.name",
            "start with a letter",
        ),
        (
            lambda: Untyped.FunctionDeclaration("x" * 65),
            "tools.function_declarations.name",
            "64 characters",
        ),
        (
            lambda: Untyped.FunctionDeclaration("f", behavior="ASYNC"),
            "tools.function_declarations.behavior",
            "NON_BLOCKING",
        ),
        (
            lambda: Untyped.FunctionDeclaration(
                "f", parameters_json_schema={"type": "object"}, parameters={"type": "OBJECT"}
            ),
            "tools.function_declarations.parameters",
            "not both",
        ),
        (
            lambda: Untyped.FunctionDeclaration("f", parameters_json_schema=["type", "object"]),
            "tools.function_declarations.parameters_json_schema",
            "JSON object",
        ),
        (
            lambda: Untyped.FunctionDeclaration("f", parameters_json_schema={"default": {1, 2}}),
            "tools.function_declarations.parameters_json_schema",
            "not valid JSON",
        ),
        (
            lambda: Untyped.FunctionDeclaration(
                "f",
                parameters={"type": "OBJECT", "properties": {"q": {"type": "string"}}},
            ),
            "tools.function_declarations.parameters",
            "parameters_json_schema",
        ),
        (
            lambda: Untyped.ToolsConfig(
                function_declarations=(FunctionDeclaration("f"), FunctionDeclaration("f"))
            ),
            "tools.function_declarations.name",
            "declared twice",
        ),
        (lambda: Untyped.ToolsConfig(google_search="on"), "tools.google_search", "true or false"),
        (
            lambda: Untyped.ToolsConfig(function_declarations=("f",)),
            "tools.function_declarations[0]",
            "must be a mapping, got 'f'",
        ),
    ],
)
def test_impossible_values_raise_config_errors_naming_the_key(
    build: Any, key: str, says: str
) -> None:
    error = _error(build)
    assert error.key == key
    assert says in str(error)


@pytest.mark.parametrize(
    "agent",
    [
        AgentConfig(temperature=0, top_p=0.0, top_k=1, seed=-(2**31)),
        AgentConfig(temperature=2.0, top_p=1, max_output_tokens=8192, seed=2**31 - 1),
        AgentConfig(language="cmn-Hans-CN", voice=None, system_instruction=None),
        AgentConfig(thinking_config=ThinkingConfig(thinking_budget=-1)),
        AgentConfig(thinking_config=ThinkingConfig(thinking_budget=0, include_thoughts=False)),
        AgentConfig(thinking_config=ThinkingConfig(thinking_level="XHIGH")),
        AgentConfig(vad=VadConfig(prefix_padding_ms=0, silence_duration_ms=0)),
        AgentConfig(
            context_window_compression=ContextWindowCompressionConfig(
                sliding_window=SlidingWindow(target_tokens=50_000)
            )
        ),
        AgentConfig(context_window_compression=None, session_resumption=None),
        AgentConfig(
            tools=ToolsConfig(
                function_declarations=(
                    FunctionDeclaration("ns.lookup:v2-x", parameters_json_schema={}),
                    FunctionDeclaration(
                        "_t",
                        parameters={
                            "type": "OBJECT",
                            "properties": {
                                "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
                                "either": {"anyOf": [{"type": "STRING"}, {"type": "NULL"}]},
                            },
                        },
                    ),
                )
            )
        ),
    ],
)
def test_boundary_values_are_accepted(agent: AgentConfig) -> None:
    assert agent == dataclasses.replace(agent)
