"""The per-model capability table: what each Live model accepts, and the problems it finds."""

from __future__ import annotations

import dataclasses

import pytest

from agent.config.models import AgentConfig, ProactivityConfig, ThinkingConfig
from agent.config.tools import EndCallTool, ToolSpec
from agent.errors import ConfigError, GroupedConfigError
from agent.live.models import (
    LIVE_MODELS,
    capabilities,
    check_model,
    model_problems,
    model_warnings,
    served_models,
    wire_profile,
)
from agent.live.protocol import DEFAULT_WIRE


def _messages(agent: AgentConfig, backend: str = "gemini") -> list[tuple[str | None, str]]:
    return [(p.key, str(p)) for p in model_problems(agent, backend)]  # type: ignore[arg-type]


def test_every_row_names_the_page_it_came_from() -> None:
    for (backend, name), row in LIVE_MODELS.items():
        assert row.source.startswith("https://"), (backend, name)
    assert "gemini-3.8-live" in served_models("gemini")
    assert "gemini-live-2.5-flash-native-audio" in served_models("vertex")


def test_the_default_model_accepts_the_bundled_settings() -> None:
    agent = AgentConfig(
        enable_affective_dialog=True,
        proactivity=ProactivityConfig(proactive_audio=True),
        thinking_config=ThinkingConfig(thinking_budget=0),
    )
    assert model_problems(agent, "gemini") == []


def test_a_model_name_is_looked_up_without_its_path() -> None:
    assert capabilities("models/gemini-3.8-live", "gemini") is capabilities(
        "gemini-3.8-live", "gemini"
    )
    assert capabilities("projects/p/locations/l/publishers/google/models/x", "vertex") is None


def test_a_model_the_table_does_not_list_is_left_to_the_service() -> None:
    agent = AgentConfig(model="gemini-9-live", enable_affective_dialog=True)
    assert model_problems(agent, "gemini") == []


@pytest.mark.parametrize(
    ("changes", "key", "says"),
    [
        ({"enable_affective_dialog": True}, "enable_affective_dialog", "has no affective dialog"),
        (
            {"proactivity": ProactivityConfig(proactive_audio=False)},
            "proactivity.proactive_audio",
            "always has proactive audio on (false is refused)",
        ),
        (
            {"thinking_config": ThinkingConfig(thinking_level="LOW")},
            "thinking_config",
            "takes no thinking settings",
        ),
        ({"response_modality": "TEXT"}, "response_modality", "answers in audio only"),
    ],
)
def test_gemini_38_live_refuses_what_its_page_says_it_lost(
    changes: dict[str, object], key: str, says: str
) -> None:
    agent = dataclasses.replace(AgentConfig(model="gemini-3.8-live"), **changes)  # type: ignore[arg-type]
    ((found_key, message),) = _messages(agent)
    assert found_key == key
    assert says in message
    assert "https://ai.google.dev/gemini-api/docs/models/gemini-3.8-live" in message


def test_gemini_38_live_takes_non_blocking_functions_and_proactive_audio_on() -> None:
    agent = AgentConfig(
        model="gemini-3.8-live",
        proactivity=ProactivityConfig(proactive_audio=True),
        tool_specs=(
            ToolSpec(
                name="bye", description="Hang up.", kind=EndCallTool(), behavior="NON_BLOCKING"
            ),
        ),
    )
    assert model_problems(agent, "gemini") == []


def test_check_model_raises_every_problem_at_once() -> None:
    agent = AgentConfig(
        model="gemini-3.1-flash-live-preview",
        enable_affective_dialog=False,
        proactivity=ProactivityConfig(proactive_audio=True),
    )
    with pytest.raises(GroupedConfigError) as caught:
        check_model(agent, "gemini")
    assert [e.key for e in caught.value.errors] == [
        "enable_affective_dialog",
        "proactivity.proactive_audio",
    ]
    with pytest.raises(ConfigError, match=r"thinking\.budget, not thinking\.level"):
        check_model(AgentConfig(thinking_config=ThinkingConfig(thinking_level="LOW")), "gemini")
    check_model(AgentConfig(), "gemini")  # nothing to say: no exception


def test_the_extended_thinking_variant_calls_functions_asynchronously_only() -> None:
    def tool(behavior: str | None) -> ToolSpec:
        return ToolSpec(
            name="bye",
            description="Hang up.",
            kind=EndCallTool(),
            behavior=behavior,  # type: ignore[arg-type]
        )

    blocking = AgentConfig(
        model="gemini-3.8-live-extended-thinking", tool_specs=(tool("BLOCKING"),)
    )
    assert _messages(blocking) == [
        (
            "tools[0].behavior",
            "model 'gemini-3.8-live-extended-thinking' on the Developer API (see "
            "https://ai.google.dev/gemini-api/docs/models/gemini-3.8-live-extended-thinking) "
            "calls functions asynchronously only: remove behavior: BLOCKING from tool 'bye' "
            "(key 'tools[0].behavior')",
        )
    ]
    for behavior in (None, "NON_BLOCKING"):  # the model's default is asynchronous
        agent = dataclasses.replace(blocking, tool_specs=(tool(behavior),))
        assert model_problems(agent, "gemini") == []
    thinking = AgentConfig(
        model="gemini-3.8-live-extended-thinking",
        thinking_config=ThinkingConfig(thinking_level="HIGH"),
    )
    assert model_problems(thinking, "gemini") == []


# -- what the builders send per model (the wire profile) --------------------------------------


def test_the_wire_profile_follows_the_table() -> None:
    flash = wire_profile("gemini-3.1-flash-live-preview", "gemini")
    assert flash.behaviors == frozenset({"BLOCKING"})
    assert flash.behavior_field("BLOCKING") is None  # one mode only: never sent
    live38 = wire_profile("models/gemini-3.8-live", "gemini")
    assert live38.behavior(None) == "NON_BLOCKING"
    assert live38.behavior_field(None) is None  # the model's default applies
    assert live38.behavior_field("BLOCKING") == "BLOCKING"
    assert live38.context_update
    assert not wire_profile("gemini-2.5-flash-native-audio-latest", "gemini").context_update
    vertex = wire_profile("gemini-live-2.5-flash-native-audio", "vertex")
    assert not vertex.scheduling
    assert not vertex.will_continue
    assert wire_profile("gemini-9-live", "gemini") == DEFAULT_WIRE
    assert not wire_profile("gemini-9-live", "vertex").will_continue


def test_vertex_scheduling_other_than_the_default_is_warned_about() -> None:
    spec = ToolSpec("lookup", "Look it up.", EndCallTool(), behavior="NON_BLOCKING")
    agent = dataclasses.replace(
        AgentConfig(model="gemini-live-2.5-flash-native-audio"),
        tool_specs=(dataclasses.replace(spec, scheduling="SILENT"), spec),
    )
    (warning,) = model_warnings(agent, "vertex")
    assert warning.key == "tools[0].scheduling"
    assert "ignores a result's scheduling: tool 'lookup' has scheduling: SILENT" in warning.message
    assert model_warnings(agent, "gemini") == []
