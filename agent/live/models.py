"""What each Live model accepts, on the Developer API and on Vertex AI: the one table.

A setting a model does not have is not ignored by the service: it refuses the ``setup`` (a 1007
close, which a call sees as a Live connection that never comes up) or, worse, accepts it and the
model never answers a blocking function. So :func:`model_problems` compares an agent with the
table, and ``agent check``, start-up and reload refuse the agent with the key to change, instead
of a caller hearing silence.

Only the models listed here are checked; any other name passes (a model newer than this table
is the operator's call, and the service still has the last word). Each row names the page it
was taken from. Sources, read 2026-12-03:

* Developer API model pages: https://ai.google.dev/gemini-api/docs/models/gemini-3.8-live,
  https://ai.google.dev/gemini-api/docs/models/gemini-3.1-flash-live-preview (both with a
  "Migrating from ..." list that says what the previous model had and this one does not), and
  the Live API capabilities guide's model comparison,
  https://ai.google.dev/gemini-api/docs/live-api/capabilities.
* Vertex AI: https://docs.cloud.google.com/vertex-ai/generative-ai/docs/live-api (supported
  models), https://docs.cloud.google.com/vertex-ai/generative-ai/docs/models/gemini/2-5-flash-live-api
  (native audio: proactive audio, affective dialog, text and audio out) and the Gemini 3.8 Live
  developer guide, https://docs.cloud.google.com/gemini-enterprise-agent-platform/models/guides/gemini-3-8-live.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from agent.config.models import AgentConfig
from agent.config.tools import Behavior
from agent.errors import ConfigError, GroupedConfigError
from agent.live.protocol import DEFAULT_WIRE, Backend, WireProfile

Support = Literal["yes", "no", "always_on"]
"""``always_on``: the model has the feature and it cannot be turned off (setting it false is
refused)."""


@dataclass(frozen=True, slots=True)
class ModelCapabilities:
    """What one Live model accepts on one backend."""

    affective_dialog: Support
    """``enableAffectiveDialog``."""
    proactive_audio: Support
    """``proactivity.proactiveAudio``."""
    non_blocking_functions: bool
    """``behavior: NON_BLOCKING`` (asynchronous function calling)."""
    response_scheduling: bool
    """``FunctionResponse.scheduling`` (INTERRUPT, WHEN_IDLE, SILENT) for NON_BLOCKING results."""
    thinking_budget: bool
    """``thinkingConfig.thinkingBudget``."""
    thinking_level: bool
    """``thinkingConfig.thinkingLevel``."""
    text_output: bool
    """``responseModalities: [TEXT]``."""
    source: str
    """The page this row was read from."""
    blocking_functions: bool = True
    """``behavior: BLOCKING`` (the model waits for the result); async-only models refuse it."""
    default_behavior: Behavior = "BLOCKING"
    """How a function with no ``behavior`` runs: 3.8 Live made NON_BLOCKING the default."""
    context_update: bool = False
    """``contextUpdate``: system instruction and tools replaced mid-session."""
    will_continue: bool = True
    """``FunctionResponse.willContinue`` (Vertex AI refuses it)."""


_DEV_25: Final = "https://ai.google.dev/gemini-api/docs/live-api/capabilities"
_DEV_31: Final = "https://ai.google.dev/gemini-api/docs/models/gemini-3.1-flash-live-preview"
_DEV_38: Final = "https://ai.google.dev/gemini-api/docs/models/gemini-3.8-live"
_VERTEX_25: Final = (
    "https://docs.cloud.google.com/vertex-ai/generative-ai/docs/models/gemini/2-5-flash-live-api"
)
_VERTEX_38: Final = (
    "https://docs.cloud.google.com/gemini-enterprise-agent-platform/models/guides/gemini-3-8-live"
)

# Gemini 2.5 Flash native audio: what the 3.1 page's migration list says 3.1 lost (affective
# dialog, proactive audio, asynchronous functions, thinkingBudget), all present here.
_NATIVE_AUDIO_25: Final = ModelCapabilities(
    affective_dialog="yes",
    proactive_audio="yes",
    non_blocking_functions=True,
    response_scheduling=True,
    thinking_budget=True,
    thinking_level=False,
    text_output=True,
    source=_DEV_25,
)
# Gemini 3.1 Flash Live preview: "Asynchronous function calling: Not yet supported. Function
# calling is synchronous only"; "Proactive audio and affective dialog: not yet supported";
# "uses thinkingLevel ... instead of thinkingBudget"; outputs text and audio.
_FLASH_LIVE_31: Final = ModelCapabilities(
    affective_dialog="no",
    proactive_audio="no",
    non_blocking_functions=False,
    response_scheduling=False,
    thinking_budget=False,
    thinking_level=True,
    text_output=True,
    source=_DEV_31,
)
# Gemini 3.8 Live (Developer API): "thinking_level is not supported ... omit thinking_level (or
# thinking_config)"; NON_BLOCKING is the default and scheduling is supported; "Proactive audio
# is now permanently enabled. Setting proactive_audio: false returns an error"; "Affective
# dialog has been removed from the API"; "the supported response modality is audio".
_LIVE_38: Final = ModelCapabilities(
    affective_dialog="no",
    proactive_audio="always_on",
    non_blocking_functions=True,
    response_scheduling=True,
    thinking_budget=False,
    thinking_level=False,
    text_output=False,
    source=_DEV_38,
    # "Asynchronous execution (behavior: NON_BLOCKING) is now the default function calling
    # mode"; "send_client_content is supported throughout the session lifecycle"; and the page
    # leads with "full session client content updates" (system instruction and tools: the
    # SDK's send_context_update).
    default_behavior="NON_BLOCKING",
    context_update=True,
)
# Gemini 3.8 Live Extended Thinking (Developer API): "Function calling: Supported (Async only)",
# "Thinking: Supported", "Output: Text and audio"; background reasoning with spoken fillers and
# interaction_status IN_PROGRESS / IDLE (https://ai.google.dev/gemini-api/docs/live-api/thinking).
# As for 3.8 Live, proactive audio is on and affective dialog is gone.
_DEV_38_THINKING: Final = (
    "https://ai.google.dev/gemini-api/docs/models/gemini-3.8-live-extended-thinking"
)
_LIVE_38_EXTENDED_THINKING: Final = ModelCapabilities(
    affective_dialog="no",
    proactive_audio="always_on",
    non_blocking_functions=True,
    response_scheduling=True,
    thinking_budget=False,
    thinking_level=True,
    text_output=True,
    source=_DEV_38_THINKING,
    blocking_functions=False,
    default_behavior="NON_BLOCKING",
)
# Vertex AI and function responses: google-genai refuses ``will_continue`` there ("only
# supported in Gemini Developer API mode", _live_converters._FunctionResponse_to_vertex), and
# Vertex does not honour ``scheduling`` (reported by other bridges, e.g. Pipecat's Gemini Live
# Vertex notes, docs PR pipecat-ai/docs#808): a result is taken as it comes. So neither is sent.
_VERTEX_NATIVE_AUDIO_25: Final = ModelCapabilities(
    affective_dialog="yes",
    proactive_audio="yes",
    non_blocking_functions=True,
    response_scheduling=False,
    will_continue=False,
    thinking_budget=True,
    thinking_level=False,
    text_output=True,
    source=_VERTEX_25,
)
# Vertex AI's 3.8 Live guide: affective dialog and proactive audio "enabled by default";
# asynchronous non-blocking functions; audio and text out.
# "With Gemini Live API, all function calls are non-blocking by default"
# (https://docs.cloud.google.com/gemini-enterprise-agent-platform/models/live-api/asynchronous-function-calling).
_VERTEX_LIVE_38: Final = ModelCapabilities(
    affective_dialog="always_on",
    proactive_audio="always_on",
    non_blocking_functions=True,
    response_scheduling=False,
    will_continue=False,
    default_behavior="NON_BLOCKING",
    thinking_budget=False,
    thinking_level=False,
    text_output=True,
    source=_VERTEX_38,
)

#: (backend, model name without ``models/`` or a Vertex path) -> what it accepts.
LIVE_MODELS: Final[Mapping[tuple[Backend, str], ModelCapabilities]] = {
    ("gemini", "gemini-2.5-flash-native-audio-preview-12-2025"): _NATIVE_AUDIO_25,
    ("gemini", "gemini-2.5-flash-native-audio-preview-09-2025"): _NATIVE_AUDIO_25,
    ("gemini", "gemini-2.5-flash-native-audio-latest"): _NATIVE_AUDIO_25,
    ("gemini", "gemini-3.1-flash-live-preview"): _FLASH_LIVE_31,
    ("gemini", "gemini-3.8-live"): _LIVE_38,
    ("gemini", "gemini-3.8-live-extended-thinking"): _LIVE_38_EXTENDED_THINKING,
    ("vertex", "gemini-live-2.5-flash-native-audio"): _VERTEX_NATIVE_AUDIO_25,
    ("vertex", "gemini-live-2.5-flash-preview-native-audio-09-2025"): _VERTEX_NATIVE_AUDIO_25,
    ("vertex", "gemini-3.8-live"): _VERTEX_LIVE_38,
}

_BACKEND_NAMES: Final = {"gemini": "the Developer API", "vertex": "Vertex AI"}
_BACKEND_SETTING: Final = {"gemini": "LIVE_BACKEND=gemini", "vertex": "LIVE_BACKEND=vertex"}


def model_id(model: str) -> str:
    """The bare model name: ``models/x`` and ``projects/.../models/x`` are ``x``."""
    return model.rsplit("/", 1)[-1]


def capabilities(model: str, backend: Backend) -> ModelCapabilities | None:
    """The table's row for ``model`` on ``backend``; None for a model it does not list."""
    return LIVE_MODELS.get((backend, model_id(model)))


def wire_profile(model: str, backend: Backend) -> WireProfile:
    """What the builders may send for ``model`` on ``backend`` (see
    :class:`~agent.live.protocol.WireProfile`); the protocol's defaults for a model the table
    does not list, except that Vertex AI never gets ``willContinue``, which it refuses."""
    row = capabilities(model, backend)
    if row is None:
        return DEFAULT_WIRE if backend == "gemini" else WireProfile(will_continue=False)
    behaviors: set[Behavior] = set()
    if row.blocking_functions:
        behaviors.add("BLOCKING")
    if row.non_blocking_functions:
        behaviors.add("NON_BLOCKING")
    return WireProfile(
        default_behavior=row.default_behavior,
        behaviors=frozenset(behaviors),
        scheduling=row.response_scheduling,
        will_continue=row.will_continue,
        context_update=row.context_update,
    )


def model_problems(agent: AgentConfig, backend: Backend) -> list[ConfigError]:
    """Every setting of ``agent`` its model does not accept on ``backend``, each a ConfigError
    naming the agent's key (in :class:`AgentConfig` terms; the loader maps it to the file's).

    A model the table lists only for the other backend is a problem at ``model``: the service
    would answer "not found" on every call.
    """
    name = model_id(agent.model)
    row = capabilities(name, backend)
    if row is None:
        other: Backend = "vertex" if backend == "gemini" else "gemini"
        if (other, name) in LIVE_MODELS:
            return [
                ConfigError(
                    f"model {name!r} is served by {_BACKEND_NAMES[other]}, not "
                    f"{_BACKEND_NAMES[backend]}: set {_BACKEND_SETTING[other]} or choose one of "
                    f"{', '.join(served_models(backend))}",
                    key="model",
                )
            ]
        return []
    problems: list[ConfigError] = []
    where = f"model {name!r} on {_BACKEND_NAMES[backend]} (see {row.source})"
    if agent.enable_affective_dialog is not None:
        if row.affective_dialog == "no":
            problems.append(
                ConfigError(
                    f"{where} has no affective dialog: remove affective_dialog",
                    key="enable_affective_dialog",
                )
            )
        elif row.affective_dialog == "always_on" and not agent.enable_affective_dialog:
            problems.append(
                ConfigError(
                    f"{where} always has affective dialog on: remove affective_dialog: false",
                    key="enable_affective_dialog",
                )
            )
    proactive = agent.proactivity.proactive_audio if agent.proactivity is not None else None
    if proactive is not None:
        if row.proactive_audio == "no":
            problems.append(
                ConfigError(
                    f"{where} has no proactive audio: remove proactive_audio",
                    key="proactivity.proactive_audio",
                )
            )
        elif row.proactive_audio == "always_on" and not proactive:
            problems.append(
                ConfigError(
                    f"{where} always has proactive audio on (false is refused): remove "
                    "proactive_audio: false",
                    key="proactivity.proactive_audio",
                )
            )
    thinking = agent.thinking_config
    if thinking is not None:
        if not (row.thinking_budget or row.thinking_level):
            problems.append(
                ConfigError(
                    f"{where} takes no thinking settings: remove thinking", key="thinking_config"
                )
            )
        elif thinking.thinking_budget is not None and not row.thinking_budget:
            problems.append(
                ConfigError(
                    f"{where} takes thinking.level, not thinking.budget", key="thinking_config"
                )
            )
        elif thinking.thinking_level is not None and not row.thinking_level:
            problems.append(
                ConfigError(
                    f"{where} takes thinking.budget, not thinking.level", key="thinking_config"
                )
            )
    if agent.response_modality == "TEXT" and not row.text_output:
        problems.append(
            ConfigError(
                f"{where} answers in audio only: remove response_modality: TEXT (for text, "
                "keep transcription.output on)",
                key="response_modality",
            )
        )
    if not row.non_blocking_functions:
        # tool_specs, not the declarations: its index is the file's tools[index].
        for index, spec in enumerate(agent.tool_specs):
            if spec.behavior == "NON_BLOCKING":
                problems.append(
                    ConfigError(
                        f"{where} calls functions synchronously only: remove behavior: "
                        f"NON_BLOCKING from tool {spec.name!r}",
                        key=f"tools[{index}].behavior",
                    )
                )
    if not row.blocking_functions:
        for index, spec in enumerate(agent.tool_specs):
            if spec.behavior == "BLOCKING":
                problems.append(
                    ConfigError(
                        f"{where} calls functions asynchronously only: remove behavior: "
                        f"BLOCKING from tool {spec.name!r}",
                        key=f"tools[{index}].behavior",
                    )
                )
    return problems


@dataclass(frozen=True, slots=True)
class ModelWarning:
    """A setting the model takes but does not honour: where (the agent's key) and what."""

    key: str
    message: str


def model_warnings(agent: AgentConfig, backend: Backend) -> list[ModelWarning]:
    """Settings ``agent``'s model takes but does not honour, so the call behaves otherwise than
    the file says: a result ``scheduling`` other than the default on a model that ignores it
    (Vertex AI: the result is taken as it comes, so a SILENT result may still be spoken of).
    Warnings, not errors: the call works; the operator should know."""
    row = capabilities(agent.model, backend)
    if row is None or row.response_scheduling:
        return []
    where = f"model {model_id(agent.model)!r} on {_BACKEND_NAMES[backend]}"
    wire = wire_profile(agent.model, backend)
    return [
        ModelWarning(
            f"tools[{index}].scheduling",
            f"{where} ignores a result's scheduling: tool {spec.name!r} has scheduling: "
            f"{spec.scheduling} has no effect there (the model takes the result as it comes)",
        )
        for index, spec in enumerate(agent.tool_specs)
        if wire.behavior(spec.behavior) == "NON_BLOCKING" and spec.scheduling != "WHEN_IDLE"
    ]


def check_model(agent: AgentConfig, backend: Backend) -> None:
    """Raise :class:`ConfigError` (a :class:`~agent.errors.GroupedConfigError` when there are
    several) for the settings ``agent``'s model does not accept; see :func:`model_problems`."""
    problems = model_problems(agent, backend)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise GroupedConfigError(problems)


def served_models(backend: Backend) -> list[str]:
    """The models the table lists for ``backend``, in its order."""
    return [name for (where, name) in LIVE_MODELS if where == backend]
