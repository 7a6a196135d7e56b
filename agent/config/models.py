"""Agent configuration: frozen, typed objects, validated once.

An agent is what a business configures: which model answers, with what voice, prompt, tools and
turn-taking settings. The Live ``setup`` message is built from one of these
(``agent.live.protocol.build_setup``). Loading agents from YAML files builds on these types, so
field names are the snake_case mirrors of the Live API's own (``top_p`` is ``topP``,
``context_window_compression.sliding_window.target_tokens`` is
``contextWindowCompression.slidingWindow.targetTokens``). A few older names stay as they were
(``vad``, ``voice``, ``language``, ``input_transcription``) because other code reads them, and
``response_modality`` is singular because a Live session produces exactly one modality.

``None`` means "not sent: the service's own default applies". Two features are on by default
because a phone call needs them: context-window compression (an audio session is otherwise cut at
15 minutes) and session resumption (the bridge reconnects every ~10 minutes without the caller
noticing).

Every constructor validates its values and raises :class:`~agent.errors.ConfigError` naming the
key, so a mistake is reported at start-up, never as a rejected ``setup`` mid-call.
"""

from __future__ import annotations

import json
import math
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from agent.config.tools import ToolSpec
from agent.errors import ConfigError
from agent.numbers import E164_RE

ApiVersion = Literal["v1", "v1beta", "v1alpha"]
ResponseModality = Literal["AUDIO", "TEXT"]
TrustCallerId = Literal["any", "verified"]
StartSensitivity = Literal["START_SENSITIVITY_HIGH", "START_SENSITIVITY_LOW"]
EndSensitivity = Literal["END_SENSITIVITY_HIGH", "END_SENSITIVITY_LOW"]
ActivityHandling = Literal["START_OF_ACTIVITY_INTERRUPTS", "NO_INTERRUPTION"]
TurnCoverage = Literal["TURN_INCLUDES_ONLY_ACTIVITY", "TURN_INCLUDES_ALL_INPUT"]
MediaResolution = Literal[
    "MEDIA_RESOLUTION_LOW", "MEDIA_RESOLUTION_MEDIUM", "MEDIA_RESOLUTION_HIGH"
]
# google-genai 3.4 also knows XHIGH (newer than the wire reference's list); the service decides
# which levels a model accepts.
ThinkingLevel = Literal["MINIMAL", "LOW", "MEDIUM", "HIGH", "XHIGH"]
Behavior = Literal["BLOCKING", "NON_BLOCKING"]

DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"

# FunctionDeclaration.name as the API documents it: a letter or underscore, then letters, digits,
# underscores, dots, colons or dashes, 64 characters at most.
_FUNCTION_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
# A BCP-47 language tag, loosely: "en", "en-US", "cmn-Hans-CN".
_LANGUAGE_RE: Final = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
# The OpenAPI Schema types the API's ``parameters`` field accepts (its ``Type`` enum).
_SCHEMA_TYPES: Final = frozenset(
    {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
)
#: A telephone number in E.164 form: "+", a country code, at most 15 digits in all.
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1


@dataclass(frozen=True, slots=True)
class VadConfig:
    """The Live API's automatic activity detection (its server-side VAD):
    ``realtimeInputConfig.automaticActivityDetection``.

    ``disabled=True`` hands turn-taking to the client (``activityStart``/``activityEnd``).
    ``None`` for a field means "leave it to the service's default" and is not sent.
    """

    disabled: bool = False
    start_sensitivity: StartSensitivity | None = None
    end_sensitivity: EndSensitivity | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None

    def __post_init__(self) -> None:
        _flag(self.disabled, "vad.disabled")
        _choice(self.start_sensitivity, StartSensitivity, "vad.start_sensitivity")
        _choice(self.end_sensitivity, EndSensitivity, "vad.end_sensitivity")
        _whole(self.prefix_padding_ms, "vad.prefix_padding_ms", minimum=0)
        _whole(self.silence_duration_ms, "vad.silence_duration_ms", minimum=0)


@dataclass(frozen=True, slots=True)
class ThinkingConfig:
    """``generationConfig.thinkingConfig``: how much the model reasons before it speaks.

    ``thinking_budget`` is in tokens (0 turns thinking off, -1 lets the model decide);
    ``thinking_level`` is the newer, coarser knob. The service refuses both at once.
    """

    thinking_budget: int | None = None
    include_thoughts: bool | None = None
    thinking_level: ThinkingLevel | None = None

    def __post_init__(self) -> None:
        _whole(self.thinking_budget, "thinking_config.thinking_budget", minimum=-1)
        _flag(self.include_thoughts, "thinking_config.include_thoughts")
        _choice(self.thinking_level, ThinkingLevel, "thinking_config.thinking_level")
        if self.thinking_budget is not None and self.thinking_level is not None:
            raise ConfigError(
                "set thinking_budget or thinking_level, not both (the service refuses both)",
                key="thinking_config",
            )


@dataclass(frozen=True, slots=True)
class SlidingWindow:
    """``contextWindowCompression.slidingWindow``: keep the newest ``target_tokens`` of context.

    ``None`` lets the service choose (half of the trigger).
    """

    target_tokens: int | None = None

    def __post_init__(self) -> None:
        _whole(self.target_tokens, "context_window_compression.sliding_window.target_tokens", 1)


@dataclass(frozen=True, slots=True)
class ContextWindowCompressionConfig:
    """``contextWindowCompression``: trim old context once it reaches ``trigger_tokens``.

    Without it an audio session ends after 15 minutes. ``trigger_tokens=None`` lets the service
    choose (80% of the model's context window).
    """

    trigger_tokens: int | None = None
    sliding_window: SlidingWindow = field(default_factory=SlidingWindow)

    def __post_init__(self) -> None:
        _whole(self.trigger_tokens, "context_window_compression.trigger_tokens", minimum=1)
        _instance(self.sliding_window, SlidingWindow, "context_window_compression.sliding_window")
        target = self.sliding_window.target_tokens
        if self.trigger_tokens is not None and target is not None and target >= self.trigger_tokens:
            raise ConfigError(
                f"sliding_window.target_tokens ({target}) must be below trigger_tokens "
                f"({self.trigger_tokens}): compression keeps fewer tokens than it starts at",
                key="context_window_compression.sliding_window.target_tokens",
            )


@dataclass(frozen=True, slots=True)
class SessionResumptionConfig:
    """``sessionResumption``: ask the server for handles to resume the session with.

    The handle itself is a connect-time argument (it changes during a call), not configuration.
    ``transparent`` is Vertex AI only.
    """

    transparent: bool | None = None

    def __post_init__(self) -> None:
        _flag(self.transparent, "session_resumption.transparent")


@dataclass(frozen=True, slots=True)
class ProactivityConfig:
    """``proactivity``: let the model decide not to answer (e.g. speech not meant for it)."""

    proactive_audio: bool | None = None

    def __post_init__(self) -> None:
        _flag(self.proactive_audio, "proactivity.proactive_audio")


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """``historyConfig``: with ``initial_history_in_client_content``, the server takes
    ``clientContent`` turns as history (no model call) until one has ``turnComplete`` true."""

    initial_history_in_client_content: bool | None = None

    def __post_init__(self) -> None:
        _flag(
            self.initial_history_in_client_content,
            "history_config.initial_history_in_client_content",
        )


@dataclass(frozen=True, slots=True)
class FunctionDeclaration:
    """One function the model may call (``tools[].functionDeclarations[]``).

    Give its arguments as a JSON Schema in ``parameters_json_schema`` (sent verbatim as
    ``parametersJsonSchema``: what the SDK sends for Python functions and for JSON-schema dicts,
    and what current Live models handle best). ``parameters`` is the API's older OpenAPI subset
    (``type: OBJECT``...), sent verbatim too, for models that ignore ``parametersJsonSchema``; set
    at most one. ``behavior`` is per tool because models differ: some accept only ``NON_BLOCKING``,
    some only blocking.
    """

    name: str
    description: str | None = None
    parameters_json_schema: Mapping[str, Any] | None = None
    parameters: Mapping[str, Any] | None = None
    behavior: Behavior | None = None

    def __post_init__(self) -> None:
        key = "tools.function_declarations"
        if not isinstance(self.name, str) or not _FUNCTION_NAME_RE.fullmatch(self.name):
            raise ConfigError(
                f"function name {self.name!r} must start with a letter or underscore and contain "
                "only letters, digits, '_', '.', ':' or '-' (64 characters at most)",
                key=f"{key}.name",
            )
        where = f"function {self.name!r}"
        _text(self.description, f"{key}.description")
        _choice(self.behavior, Behavior, f"{key}.behavior")
        if self.parameters_json_schema is not None and self.parameters is not None:
            raise ConfigError(
                f"{where}: set parameters_json_schema or parameters, not both",
                key=f"{key}.parameters",
            )
        # A private, JSON-checked deep copy: the frozen config cannot change behind our back, and
        # a value JSON cannot carry fails here rather than when the setup is sent.
        for attr in ("parameters_json_schema", "parameters"):
            value = getattr(self, attr)
            if value is not None:
                object.__setattr__(self, attr, _json_object(value, f"{where}: {attr}", key))
        if self.parameters is not None:
            _check_openapi_types(self.parameters, f"{where}: parameters", f"{key}.parameters")


@dataclass(frozen=True, slots=True)
class ToolsConfig:
    """``tools``: the agent's functions and the built-in tools it may use."""

    function_declarations: tuple[FunctionDeclaration, ...] = ()
    google_search: bool = False
    code_execution: bool = False
    url_context: bool = False

    def __post_init__(self) -> None:
        declarations = self.function_declarations
        if isinstance(declarations, list):  # YAML gives lists; keep the frozen object hashable
            declarations = tuple(declarations)
            object.__setattr__(self, "function_declarations", declarations)
        _instance(declarations, tuple, "tools.function_declarations")
        seen: set[str] = set()
        for declaration in declarations:
            _instance(declaration, FunctionDeclaration, "tools.function_declarations")
            if declaration.name in seen:
                raise ConfigError(
                    f"function {declaration.name!r} is declared twice",
                    key="tools.function_declarations.name",
                )
            seen.add(declaration.name)
        for attr in ("google_search", "code_execution", "url_context"):
            _flag(getattr(self, attr), f"tools.{attr}")

    def __bool__(self) -> bool:
        return bool(
            self.function_declarations
            or self.google_search
            or self.code_execution
            or self.url_context
        )


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """How a call behaves around the conversation: keypad input, time limits, idle callers.

    The session reads it; the model never sees it. ``None`` disables a limit."""

    dtmf_group_timeout_s: float = 2.0
    dtmf_message: str = "The caller typed on their keypad: {digits}"
    max_duration_s: float | None = 1800.0
    wrap_up_before_s: float = 30.0
    wrap_up_message: str = (
        "The call is about to reach its time limit. Wrap up politely now and say goodbye."
    )
    idle_timeout_s: float | None = 20.0
    idle_message: str = (
        "The caller has been silent for a while. Ask briefly whether they are still there."
    )
    preconnect_timeout_s: float = 30.0  # a pre-opened Live session waits this long for its stream
    max_concurrent_tools: int = 4  # a call's function calls running at once; more get an error
    resume_message: str = (
        'The line dropped while you were speaking; the caller heard you up to: "{heard}". '
        "Continue naturally from there, without starting over."
    )

    def __post_init__(self) -> None:
        for key in ("max_duration_s", "idle_timeout_s"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError("must be a positive number of seconds or null", key=f"call.{key}")
        for key in ("dtmf_group_timeout_s", "wrap_up_before_s", "preconnect_timeout_s"):
            if not getattr(self, key) >= 0:
                raise ConfigError("must not be negative", key=f"call.{key}")
        if "{digits}" not in self.dtmf_message:
            raise ConfigError("must contain {digits}", key="call.dtmf_message")


@dataclass(frozen=True, slots=True)
class FallbackConfig:
    """What the caller gets when the model cannot be reached (the Live API is down for longer
    than the reconnection deadline): ``message`` is spoken to them instead of dead air (``None``:
    the bundled apology recording), then the call moves to ``transfer_to`` (E.164) if set, or
    ends. Message and transfer are Twilio call updates (``<Say>``, ``<Dial>``): without REST
    credentials the bundled apology plays instead. The session reads it; the model never sees
    it."""

    message: str | None = None
    transfer_to: str | None = None

    def __post_init__(self) -> None:
        _text(self.message, "fallback.message")
        _phone_number(self.transfer_to, "fallback.transfer_to")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """One voice agent: the model, its voice and instructions, its tools and how it takes turns.

    Maps onto the Live ``setup`` message; see the module docstring for the naming rule and
    :func:`agent.live.protocol.build_setup` for where each field goes.
    """

    name: str = "default"
    model: str = DEFAULT_MODEL
    """Any model name (``gemini-3.8-live``); ``models/`` or the Vertex path is added on connect."""
    api_version: ApiVersion = "v1beta"
    """The Developer API version (Vertex AI versions its service separately)."""
    response_modality: ResponseModality = "AUDIO"
    voice: str | None = "Puck"
    language: str | None = None
    system_instruction: str | None = (
        "You are a friendly, concise phone agent for Acme support. Speak in short sentences; "
        "the caller hears you over a telephone line."
    )
    greeting: str | None = None
    """Text sent as the first user turn so the model speaks first (not part of ``setup``)."""

    # generationConfig
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_output_tokens: int | None = None
    seed: int | None = None
    media_resolution: MediaResolution | None = None
    thinking_config: ThinkingConfig | None = None
    enable_affective_dialog: bool | None = None

    # realtimeInputConfig
    vad: VadConfig = field(default_factory=VadConfig)
    activity_handling: ActivityHandling | None = None
    turn_coverage: TurnCoverage | None = None
    explicit_vad_signal: bool | None = None
    """Vertex AI only: the server reports its VAD decisions as events."""

    input_transcription: bool = True
    output_transcription: bool = True
    context_window_compression: ContextWindowCompressionConfig | None = field(
        default_factory=ContextWindowCompressionConfig
    )
    session_resumption: SessionResumptionConfig | None = field(
        default_factory=SessionResumptionConfig
    )
    proactivity: ProactivityConfig | None = None
    history_config: HistoryConfig | None = None
    tools: ToolsConfig = field(default_factory=ToolsConfig)

    # What the bridge does around the conversation (never sent to the Live API).
    call: CallPolicy = field(default_factory=CallPolicy)
    tool_specs: tuple[ToolSpec, ...] = ()
    """Executable tools; their declarations (bound parameters removed) are in ``tools``."""
    phone_numbers: tuple[str, ...] = ()
    """E.164 numbers this agent answers (the voice webhook's ``To``); see
    :mod:`agent.config.agents`."""
    timezone: str = "UTC"
    """IANA time zone of the business: ``{local_time}`` in prompts and tools is told in it."""
    prefetch_crm: bool = False
    """Look the caller's number up in the CRM before the call, for ``{customer.*}`` in prompts."""
    trust_caller_id: TrustCallerId = "any"
    """``verified``: the caller's number identifies them (CRM prefetch, tools bound to
    ``caller_number``) only when Twilio reports a passed STIR/SHAKEN attestation; caller ID is
    otherwise easy to spoof."""
    fallback: FallbackConfig = field(default_factory=FallbackConfig)

    def __post_init__(self) -> None:
        _text(self.name, "name", required=True)
        _model_name(self.model)
        _choice(self.api_version, ApiVersion, "api_version", required=True)
        _choice(self.response_modality, ResponseModality, "response_modality", required=True)
        _text(self.voice, "voice")
        _text(self.language, "language")
        if self.language and not _LANGUAGE_RE.fullmatch(self.language):
            raise ConfigError(
                f"language must be a BCP-47 tag such as 'en-US', got {self.language!r}",
                key="language",
            )
        _text(self.system_instruction, "system_instruction")
        _text(self.greeting, "greeting")
        _number(self.temperature, "temperature", 0.0, 2.0)
        _number(self.top_p, "top_p", 0.0, 1.0)
        _whole(self.top_k, "top_k", minimum=1)
        _whole(self.max_output_tokens, "max_output_tokens", minimum=1)
        _whole(self.seed, "seed", minimum=_INT32_MIN, maximum=_INT32_MAX)
        _choice(self.media_resolution, MediaResolution, "media_resolution")
        _instance(self.thinking_config, ThinkingConfig | None, "thinking_config")
        _flag(self.enable_affective_dialog, "enable_affective_dialog")
        _instance(self.vad, VadConfig, "vad")
        _choice(self.activity_handling, ActivityHandling, "activity_handling")
        _choice(self.turn_coverage, TurnCoverage, "turn_coverage")
        _flag(self.explicit_vad_signal, "explicit_vad_signal")
        _flag(self.input_transcription, "input_transcription", required=True)
        _flag(self.output_transcription, "output_transcription", required=True)
        _instance(
            self.context_window_compression,
            ContextWindowCompressionConfig | None,
            "context_window_compression",
        )
        _instance(self.session_resumption, SessionResumptionConfig | None, "session_resumption")
        _instance(self.proactivity, ProactivityConfig | None, "proactivity")
        _instance(self.history_config, HistoryConfig | None, "history_config")
        _instance(self.tools, ToolsConfig, "tools")
        numbers = self.phone_numbers
        if isinstance(numbers, list):  # YAML gives lists; keep the frozen object hashable
            numbers = tuple(numbers)
            object.__setattr__(self, "phone_numbers", numbers)
        _instance(numbers, tuple, "phone_numbers")
        for number in numbers:
            _phone_number(number, "phone_numbers", required=True)
        if len(set(numbers)) != len(numbers):
            raise ConfigError("a phone number is listed twice", key="phone_numbers")
        _time_zone(self.timezone)
        _flag(self.prefetch_crm, "prefetch_crm", required=True)
        _choice(self.trust_caller_id, TrustCallerId, "trust_caller_id", required=True)
        _instance(self.fallback, FallbackConfig, "fallback")


# --------------------------------------------------------------------------------------------
# Validation helpers: each raises ConfigError naming the key, and accepts None unless required.
# --------------------------------------------------------------------------------------------


def _choice(value: object, options: Any, key: str, *, required: bool = False) -> None:
    allowed: tuple[str, ...] = get_args(options)
    if value is None and not required:
        return
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}", key=key)


def _flag(value: object, key: str, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}", key=key)


def _text(value: object, key: str, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value.strip()):
        raise ConfigError(f"{key} must be a non-empty string, got {value!r}", key=key)


def _whole(value: object, key: str, minimum: int | None = None, maximum: int | None = None) -> None:
    if value is None:
        return
    # bool is an int in Python; "true" is never a sensible token count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be a whole number, got {value!r}", key=key)
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key} must be at least {minimum}, got {value}", key=key)
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key} must be at most {maximum}, got {value}", key=key)


def _number(value: object, key: str, minimum: float, maximum: float) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a number, got {value!r}", key=key)
    if not minimum <= value <= maximum:
        raise ConfigError(f"{key} must be between {minimum} and {maximum}, got {value}", key=key)


def _instance(value: object, kind: Any, key: str) -> None:
    if not isinstance(value, kind):
        raise ConfigError(f"{key} has the wrong type: {type(value).__name__}", key=key)


def _model_name(model: object) -> None:
    # The SDK refuses the same characters: they would change the meaning of the resource path.
    if (
        not isinstance(model, str)
        or not model
        or any(c.isspace() for c in model)
        or any(bad in model for bad in ("..", "?", "&", "#"))
    ):
        raise ConfigError(
            f"model must be a model name such as 'gemini-3.8-live', got {model!r}", key="model"
        )


def _phone_number(value: object, key: str, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not E164_RE.fullmatch(value):
        raise ConfigError(
            f"{key} must be an E.164 phone number such as '+15555550100', got {value!r}", key=key
        )


def _time_zone(name: object) -> None:
    # Checked here so a typo fails at start-up rather than when the first call renders its prompt.
    try:
        if not isinstance(name, str) or not name:
            raise ValueError(name)
        zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ConfigError(
            f"timezone must be an IANA time zone such as 'America/New_York', got {name!r}",
            key="timezone",
        ) from None


def _json_object(value: object, what: str, key: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} must be a JSON object (a mapping)", key=key)
    try:
        copy: dict[str, Any] = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}", key=key) from exc
    return copy


def _check_openapi_types(schema: Mapping[str, Any], what: str, key: str) -> None:
    """The OpenAPI ``parameters`` form names types in capitals (``OBJECT``); JSON Schema's
    lowercase ``object`` belongs in ``parameters_json_schema``. Walk the schema's nested schemas."""
    kind = schema.get("type")
    if kind is not None and kind not in _SCHEMA_TYPES:
        raise ConfigError(
            f"{what}: type {kind!r} is not one of {', '.join(sorted(_SCHEMA_TYPES))} "
            "(for a JSON Schema use parameters_json_schema)",
            key=key,
        )
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for sub in properties.values():
            if isinstance(sub, Mapping):
                _check_openapi_types(sub, what, key)
    items = schema.get("items")
    if isinstance(items, Mapping):
        _check_openapi_types(items, what, key)
    for alternatives in (schema.get("anyOf"), schema.get("any_of")):
        if isinstance(alternatives, list):
            for sub in alternatives:
                if isinstance(sub, Mapping):
                    _check_openapi_types(sub, what, key)


DEFAULT_AGENT = AgentConfig()
