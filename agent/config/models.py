"""Agent configuration: frozen, typed objects, validated once, and the agent file they come from.

An agent is what a business configures: which model answers, with what voice, prompt, tools and
turn-taking settings. The Live ``setup`` message is built from one of these
(``agent.live.protocol.build_setup``). Field names are the snake_case mirrors of the Live API's
own (``top_p`` is ``topP``, ``context_window_compression.sliding_window.target_tokens`` is
``contextWindowCompression.slidingWindow.targetTokens``). A few older names stay as they were
(``vad``, ``voice``, ``language``, ``input_transcription``) because other code reads them, and
``response_modality`` is singular because a Live session produces exactly one modality.

``None`` means "not sent: the service's own default applies". Two features are on by default
because a phone call needs them: context-window compression (an audio session is otherwise cut at
15 minutes) and session resumption (the bridge reconnects every ~10 minutes without the caller
noticing).

:class:`AgentFile` is the shape of one agent YAML file, the contract a business writes to: flatter
than :class:`AgentConfig` (``max_call_duration_s`` rather than ``call.max_duration_s``) and with
the names the docs use (``system_prompt``). Sections that read the same in both (``vad``,
``thinking``, ``fallback``, the tool kinds) are the same classes, and every value has one type
(:mod:`agent.config.fields`), so each rule lives in one place. The JSON Schema and the README's
field table are generated from these classes (:mod:`agent.config.schema`).

Every constructor validates its values and raises :class:`~agent.errors.ConfigError` naming the
key, so a mistake is reported at start-up, never as a rejected ``setup`` mid-call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BeforeValidator, Field, Strict, model_validator
from pydantic.config import JsonDict

from agent.config.fields import (
    NOT_SENT,
    AgentName,
    CallingHoursText,
    DigitsTemplate,
    Flag,
    FunctionName,
    JsonObject,
    LanguageTag,
    Loc,
    ModelName,
    PhoneNumber,
    PhoneNumbers,
    PositiveSeconds,
    Seconds,
    Shown,
    Text,
    TimeZone,
    VoiceName,
    config_model,
    refuse,
    shown,
    with_problems,
)
from agent.config.templates import template_problems
from agent.config.tools import Behavior, ToolEntries, ToolSpec

ApiVersion = Literal["v1", "v1beta", "v1alpha"]
ResponseModality = Literal["AUDIO", "TEXT"]
InputSampleRate = Literal[8000, 16000]
TrustCallerId = Literal["any", "verified"]
GreetingAt = Literal["webhook", "stream_start"]
OnReload = Literal["keep", "update"]
OnMachine = Literal["voicemail", "hang_up"]
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

DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"

Temperature = Annotated[float, Strict(), Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Strict(), Field(ge=0.0, le=1.0)]
Tokens = Annotated[int, Strict(), Field(ge=1)]
Milliseconds = Annotated[int, Strict(), Field(ge=0)]
Seed = Annotated[int, Strict(), Field(ge=-(2**31), le=2**31 - 1)]
Usd = Annotated[float, Strict(), Field(gt=0)]
# The OpenAPI Schema types the API's ``parameters`` field accepts (its ``Type`` enum).
_SCHEMA_TYPES: Final = frozenset(
    {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
)


@config_model("vad")
class VadConfig:
    """The Live API's automatic activity detection (its server-side VAD):
    ``realtimeInputConfig.automaticActivityDetection``.

    ``disabled=True`` hands turn-taking to the client (``activityStart``/``activityEnd``).
    ``None`` for a field means "leave it to the service's default" and is not sent.
    """

    disabled: Flag = Field(
        default=False,
        description="true: the bridge marks caller turns itself (`activityStart`/`activityEnd`).",
    )
    start_sensitivity: Annotated[StartSensitivity | None, NOT_SENT] = Field(
        default=None, description="`startOfSpeechSensitivity`."
    )
    end_sensitivity: Annotated[EndSensitivity | None, NOT_SENT] = Field(
        default=None, description="`endOfSpeechSensitivity`."
    )
    prefix_padding_ms: Annotated[Milliseconds | None, NOT_SENT] = Field(
        default=None, description="`prefixPaddingMs`: speech needed before a turn starts."
    )
    silence_duration_ms: Annotated[Milliseconds | None, NOT_SENT] = Field(
        default=None, description="`silenceDurationMs`: silence that ends the caller's turn."
    )


@config_model("thinking_config")
class ThinkingConfig:
    """``generationConfig.thinkingConfig``: how much the model reasons before it speaks.

    ``thinking_budget`` is in tokens (0 turns thinking off, -1 lets the model decide);
    ``thinking_level`` is the newer, coarser knob. The service refuses both at once.
    """

    thinking_budget: Annotated[Annotated[int, Strict(), Field(ge=-1)] | None, NOT_SENT] = Field(
        default=None,
        validation_alias="budget",
        description="`thinkingBudget` in tokens: 0 off, -1 the model decides.",
    )
    thinking_level: Annotated[ThinkingLevel | None, NOT_SENT] = Field(
        default=None,
        validation_alias="level",
        description="`thinkingLevel`; not together with `budget`.",
    )
    include_thoughts: Annotated[Flag | None, NOT_SENT] = Field(
        default=None, description="`includeThoughts` (never spoken to the caller)."
    )

    @model_validator(mode="after")
    def _budget_or_level(self) -> ThinkingConfig:
        if self.thinking_budget is not None and self.thinking_level is not None:
            raise refuse(
                "set thinking_budget or thinking_level, not both (the service refuses both)"
            )
        return self


def _target_below_trigger(trigger: int | None, target: int | None) -> str | None:
    if trigger is not None and target is not None and target >= trigger:
        return (
            f"sliding_window.target_tokens ({target}) must be below trigger_tokens ({trigger}): "
            "compression keeps fewer tokens than it starts at"
        )
    return None


@config_model("context_window_compression.sliding_window")
class SlidingWindow:
    """``contextWindowCompression.slidingWindow``: keep the newest ``target_tokens`` of context.

    ``None`` lets the service choose (half of the trigger).
    """

    target_tokens: Tokens | None = None


@config_model("context_window_compression")
class ContextWindowCompressionConfig:
    """``contextWindowCompression``: trim old context once it reaches ``trigger_tokens``.

    Without it an audio session ends after 15 minutes. ``trigger_tokens=None`` lets the service
    choose (80% of the model's context window).
    """

    trigger_tokens: Tokens | None = None
    sliding_window: SlidingWindow = dataclasses.field(default_factory=SlidingWindow)

    @model_validator(mode="after")
    def _keeps_less_than_it_starts_at(self) -> ContextWindowCompressionConfig:
        problem = _target_below_trigger(self.trigger_tokens, self.sliding_window.target_tokens)
        if problem is not None:
            raise refuse(problem, at=("sliding_window", "target_tokens"))
        return self


@config_model("session_resumption")
class SessionResumptionConfig:
    """``sessionResumption``: ask the server for handles to resume the session with.

    The handle itself is a connect-time argument (it changes during a call), not configuration.
    ``transparent`` is Vertex AI only.
    """

    transparent: Annotated[Flag | None, NOT_SENT] = Field(
        default=None, description="`sessionResumption.transparent` (Vertex AI only)."
    )


@config_model("proactivity")
class ProactivityConfig:
    """``proactivity``: let the model decide not to answer (e.g. speech not meant for it)."""

    proactive_audio: Flag | None = None


@config_model("history_config")
class HistoryConfig:
    """``historyConfig``: with ``initial_history_in_client_content``, the server takes
    ``clientContent`` turns as history (no model call) until one has ``turnComplete`` true."""

    initial_history_in_client_content: Flag | None = None


def _openapi_types(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI ``parameters`` form names types in capitals (``OBJECT``); JSON Schema's
    lowercase ``object`` belongs in ``parameters_json_schema``. Checks nested schemas too."""
    pending: list[Any] = [schema]
    while pending:
        node = pending.pop()
        if not isinstance(node, Mapping):
            continue
        kind = node.get("type")
        if kind is not None and kind not in _SCHEMA_TYPES:
            raise refuse(
                f"type {kind!r} is not one of {', '.join(sorted(_SCHEMA_TYPES))} "
                "(for a JSON Schema use parameters_json_schema)"
            )
        properties = node.get("properties")
        if isinstance(properties, Mapping):
            pending.extend(properties.values())
        pending.append(node.get("items"))
        for alternatives in (node.get("anyOf"), node.get("any_of")):
            if isinstance(alternatives, list):
                pending.extend(alternatives)
    return schema


@config_model("tools.function_declarations")
class FunctionDeclaration:
    """One function the model may call (``tools[].functionDeclarations[]``).

    Give its arguments as a JSON Schema in ``parameters_json_schema`` (sent verbatim as
    ``parametersJsonSchema``: what the SDK sends for Python functions and for JSON-schema dicts,
    and what current Live models handle best). ``parameters`` is the API's older OpenAPI subset
    (``type: OBJECT``...), sent verbatim too, for models that ignore ``parametersJsonSchema``; set
    at most one. ``behavior`` is per tool because models differ: some accept only ``NON_BLOCKING``,
    some only blocking. Both schemas are kept as private copies.
    """

    name: FunctionName
    description: Text | None = None
    parameters_json_schema: JsonObject | None = None
    parameters: Annotated[JsonObject, AfterValidator(_openapi_types)] | None = None
    behavior: Behavior | None = None

    @model_validator(mode="after")
    def _one_schema(self) -> FunctionDeclaration:
        if self.parameters_json_schema is not None and self.parameters is not None:
            raise refuse("set parameters_json_schema or parameters, not both", at=("parameters",))
        return self


@config_model("tools")
class ToolsConfig:
    """``tools``: the agent's functions and the built-in tools it may use."""

    function_declarations: tuple[FunctionDeclaration, ...] = ()
    google_search: Flag = False
    code_execution: Flag = False
    url_context: Flag = False

    @model_validator(mode="after")
    def _unique_names(self) -> ToolsConfig:
        seen: set[str] = set()
        for declaration in self.function_declarations:
            if declaration.name in seen:
                raise refuse(
                    f"function {declaration.name!r} is declared twice",
                    at=("function_declarations", "name"),
                )
            seen.add(declaration.name)
        return self

    def __bool__(self) -> bool:
        return bool(
            self.function_declarations
            or self.google_search
            or self.code_execution
            or self.url_context
        )


@config_model("call")
class CallPolicy:
    """How a call behaves around the conversation: keypad input, time limits, idle callers.

    The session reads it; the model never sees it. ``None`` disables a limit."""

    dtmf_group_timeout_s: Seconds = 2.0
    dtmf_message: DigitsTemplate = "The caller typed on their keypad: {digits}"
    max_duration_s: PositiveSeconds | None = 1800.0
    wrap_up_before_s: Seconds = 30.0
    wrap_up_message: Text = (
        "The call is about to reach its time limit. Wrap up politely now and say goodbye."
    )
    idle_timeout_s: PositiveSeconds | None = 20.0
    idle_message: Text = (
        "The caller has been silent for a while. Ask briefly whether they are still there."
    )
    preconnect_timeout_s: Seconds = 30.0  # a pre-opened Live session waits this long for its stream
    # When a pre-connected session asks for the greeting: at the webhook (ready at ``start``) or
    # at the stream's ``start`` (none generated, and billed, for a stream that never comes).
    greeting_at: GreetingAt = "webhook"
    # A reload that changes this agent's instructions or tools: calls in progress keep what they
    # started with, or take the new ones (mid-session where the model allows, else a reconnect).
    on_reload: OnReload = "keep"
    # What the agent taking a call over (hand_off) is told, on a model that reconnects for it.
    hand_off_message: Text = (
        "You have just taken this call over from the {agent} agent; the caller last heard: "
        '"{heard}". Carry on as yourself, briefly, without greeting them again.'
    )
    max_concurrent_tools: Tokens = 4  # a call's function calls running at once; more get an error
    # A blocking tool this slow gets the caller a "one moment, please" (None: silence until done).
    tool_hold_after_s: PositiveSeconds | None = 3.0
    resume_message: Text = (
        'The line dropped while you were speaking; the caller heard you up to: "{heard}". '
        "Continue naturally from there, without starting over."
    )
    # The model owes an answer and has sent nothing for this long: nudge it, then reconnect (a
    # filler plays meanwhile), then the fallback. None: wait for it however long it takes.
    stall_after_s: PositiveSeconds | None = 8.0
    stall_message: Text = (
        "The caller is waiting for your answer and has heard nothing. Answer them now."
    )
    # The cost guard: once the Live API has reported this many tokens, or the call's estimated
    # cost (by the price table) reaches this many dollars, the model is told to say goodbye,
    # then the call ends (``cost limit``).
    max_tokens: Tokens | None = None
    max_cost_usd: Usd | None = None
    cost_limit_message: Text = (
        "This call has reached its length limit. Tell the caller in one or two short sentences "
        "that you have to end the call now, suggest they call back if they need more help, and "
        "say goodbye. Do not call any tools."
    )
    # The goodbye may take this long (from the prompt to its last audio sent); then the call
    # ends anyway, so a model that will not stop cannot run up the bill it was stopped for.
    cost_limit_goodbye_s: PositiveSeconds = 15.0


@config_model("fallback")
class FallbackConfig:
    """What the caller gets when the model cannot be reached (the Live API is down for longer
    than the reconnection deadline): ``message`` is spoken to them instead of dead air (``None``:
    the bundled apology recording), then the call moves to ``transfer_to`` (E.164) if set, or
    ends. Message and transfer are Twilio call updates (``<Say>``, ``<Dial>``): without REST
    credentials the bundled apology plays instead. The session reads it; the model never sees
    it."""

    message: Annotated[Text | None, Shown("the bundled apology recording")] = Field(
        default=None,
        description=(
            "Spoken to the caller by Twilio's text-to-speech (`<Say>`) when the model cannot be "
            "reached. Needs Twilio REST credentials; without them the bundled apology plays."
        ),
    )
    transfer_to: Annotated[PhoneNumber | None, Shown("hang up")] = Field(
        default=None,
        description=(
            "Then move the call to this number (`<Dial>`; without a message, at once). Needs "
            "Twilio REST credentials."
        ),
    )


@config_model("outbound")
class OutboundConfig:
    """How the agent places calls (``agent dial``, ``POST /calls``): the caller ID it presents,
    what it does when an answering machine picks up, how often a busy or unanswered number is
    tried, and when it may call at all. Without ``caller_id`` the agent does not dial."""

    caller_id: Annotated[PhoneNumber | None, Shown("none: the agent does not dial")] = Field(
        default=None,
        description="The number the callee sees (`From`, E.164): one of your Twilio numbers "
        "or a verified caller ID.",
    )
    on_machine: OnMachine = Field(
        default="hang_up",
        description="When an answering machine picks up: `voicemail` leaves "
        "`voicemail_message` after its beep; `hang_up` ends the call.",
    )
    voicemail_message: Annotated[Text | None, Shown("none")] = Field(
        default=None,
        description="What the agent says, in its own voice, after the beep; then it hangs up.",
    )
    max_attempts: Annotated[int, Strict(), Field(ge=1, le=10)] = Field(
        default=1, description="Dials in all when the number is busy or does not answer."
    )
    retry_delay_s: PositiveSeconds = Field(
        default=300.0, description="The wait before dialling a busy or unanswered number again."
    )
    ring_timeout_s: Annotated[int, Strict(), Field(ge=5, le=600)] = Field(
        default=30, description="How long it rings before it counts as `no-answer` (`Timeout`)."
    )
    amd_timeout_s: Annotated[int, Strict(), Field(ge=3, le=59)] = Field(
        default=30,
        description="Twilio's `MachineDetectionTimeout`; the agent holds its greeting until "
        "the verdict, or this long and 5 s more (then it greets: nobody is left in silence).",
    )
    calling_hours: Annotated[CallingHoursText | None, Shown("any time")] = Field(
        default=None,
        description="`HH:MM-HH:MM`, every day, in `callee_timezone`: a dial outside them is "
        "refused, saying when they open.",
    )
    callee_timezone: Annotated[TimeZone | None, Shown("the agent's `timezone`")] = Field(
        default=None, description="IANA time zone of the people called (a dial may name its own)."
    )

    @model_validator(mode="after")
    def _voicemail_needs_a_message(self) -> OutboundConfig:
        if self.on_machine == "voicemail" and self.voicemail_message is None:
            raise refuse(
                "on_machine: voicemail needs a voicemail_message to leave",
                at=("voicemail_message",),
                hint="write the message, or on_machine: hang_up",
            )
        return self


@config_model()
class AgentConfig:
    """One voice agent: the model, its voice and instructions, its tools and how it takes turns.

    Maps onto the Live ``setup`` message; see the module docstring for the naming rule and
    :func:`agent.live.protocol.build_setup` for where each field goes.
    """

    name: Text = "default"
    model: ModelName = DEFAULT_MODEL
    """Any model name (``gemini-3.8-live``); ``models/`` or the Vertex path is added on connect."""
    api_version: ApiVersion = "v1beta"
    """The Developer API version (Vertex AI versions its service separately)."""
    response_modality: ResponseModality = "AUDIO"
    # Caller audio to the Live API at 8 kHz as it comes (declared in the MIME type; the service
    # resamples) or upsampled to 16 kHz here. 8 kHz by default: the upsampler cost ~96,000
    # instructions a 20 ms frame (callgrind), seven times the rest of the frame's work, for a band
    # the phone never carried; see the README (The audio path).
    input_sample_rate: InputSampleRate = 8000
    voice: Text | None = "Puck"
    language: LanguageTag | None = None
    system_instruction: Text | None = (
        "You are a friendly, concise phone agent for Acme support. Speak in short sentences; "
        "the caller hears you over a telephone line."
    )
    greeting: Text | None = None
    """Text sent as the first user turn so the model speaks first (not part of ``setup``)."""

    # generationConfig
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: Tokens | None = None
    max_output_tokens: Tokens | None = None
    seed: Seed | None = None
    media_resolution: MediaResolution | None = None
    thinking_config: ThinkingConfig | None = None
    enable_affective_dialog: Flag | None = None

    # realtimeInputConfig
    vad: VadConfig = dataclasses.field(default_factory=VadConfig)
    activity_handling: ActivityHandling | None = None
    turn_coverage: TurnCoverage | None = None
    explicit_vad_signal: Flag | None = None
    """Vertex AI only: the server reports its VAD decisions as events."""

    input_transcription: Flag = True
    output_transcription: Flag = True
    context_window_compression: ContextWindowCompressionConfig | None = dataclasses.field(
        default_factory=ContextWindowCompressionConfig
    )
    session_resumption: SessionResumptionConfig | None = dataclasses.field(
        default_factory=SessionResumptionConfig
    )
    proactivity: ProactivityConfig | None = None
    history_config: HistoryConfig | None = None
    tools: ToolsConfig = dataclasses.field(default_factory=ToolsConfig)

    # What the bridge does around the conversation (never sent to the Live API).
    call: CallPolicy = dataclasses.field(default_factory=CallPolicy)
    tool_specs: tuple[ToolSpec, ...] = ()
    """Executable tools; their declarations (bound parameters removed) are in ``tools``."""
    phone_numbers: PhoneNumbers = ()
    """E.164 numbers this agent answers (the voice webhook's ``To``); see
    :mod:`agent.config.registry`."""
    timezone: TimeZone = "UTC"
    """IANA time zone of the business: ``{local_time}`` in prompts and tools is told in it."""
    prefetch_crm: Flag = False
    """Look the caller's number up in the CRM before the call, for ``{customer.*}`` in prompts."""
    trust_caller_id: TrustCallerId = "any"
    """``verified``: the caller's number identifies them (CRM prefetch, tools bound to
    ``caller_number``) only when Twilio reports a passed STIR/SHAKEN attestation; caller ID is
    otherwise easy to spoof."""
    fallback: FallbackConfig = dataclasses.field(default_factory=FallbackConfig)
    outbound: OutboundConfig = dataclasses.field(default_factory=OutboundConfig)


DEFAULT_AGENT = AgentConfig()
_CALL: Final = CallPolicy()


# --------------------------------------------------------------------------------------------
# The agent file
# --------------------------------------------------------------------------------------------


def _switch(value: Any) -> Any:
    """A feature written as true/false or as its settings: true is the defaults, false is off."""
    if value is True:
        return {}
    if value is False:
        return None
    if value is None:
        raise refuse(f"must be a mapping or true/false, got {shown(value)}")
    return value


@config_model(kw_only=True)
class Compression:
    """The agent file's ``compression`` settings (``ContextWindowCompressionConfig``, flat)."""

    trigger_tokens: Annotated[Tokens | None, Shown("service default (80% of the context)")] = Field(
        default=None, description="`contextWindowCompression.triggerTokens`."
    )
    target_tokens: Annotated[Tokens | None, Shown("service default (half the trigger)")] = Field(
        default=None, description="`slidingWindow.targetTokens`; below `trigger_tokens`."
    )

    @model_validator(mode="after")
    def _keeps_less_than_it_starts_at(self) -> Compression:
        problem = _target_below_trigger(self.trigger_tokens, self.target_tokens)
        if problem is not None:
            raise refuse(problem, at=("target_tokens",))
        return self


@config_model(kw_only=True)
class Transcription:
    """The agent file's ``transcription``: both directions, on by default."""

    input: Flag = Field(
        default=True, description="`inputAudioTranscription`: what the caller said, as text."
    )
    output: Flag = Field(
        default=True, description="`outputAudioTranscription`: what the agent said, as text."
    )


@config_model(kw_only=True)
class Dtmf:
    """The agent file's ``dtmf``: keypad input."""

    group_timeout_s: Seconds = Field(
        default=_CALL.dtmf_group_timeout_s,
        description="Keypad digits this close together are sent as one message.",
    )
    message: DigitsTemplate = Field(
        default=_CALL.dtmf_message,
        description="How typed digits reach the model; `{digits}` is replaced.",
    )


def _templates(value: Any) -> list[tuple[Loc, str]]:
    """Prompt templates that would not render as their author expects."""
    if not isinstance(value, Mapping):
        return []
    prefetch = value.get("prefetch_crm") is True
    return [
        ((key,), message)
        for key in ("system_prompt", "greeting")
        if isinstance(value.get(key), str)
        for message in template_problems(value[key], prefetch_crm=prefetch)
    ]


def _no_default(schema: JsonDict) -> None:
    # The real default (the file's name) is not a value the schema can state.
    schema.pop("default", None)


@config_model(kw_only=True)
class AgentFile:
    """One agent file: every key a business may write, its type, default and meaning.
    :meth:`agent_config` is the :class:`AgentConfig` it describes."""

    name: Annotated[AgentName, Shown("the file name without `.yaml`")] = Field(
        default="",  # unset: the loader takes the file's name
        json_schema_extra=_no_default,
        description="Agent name, in logs, metrics, call records and the stream's `agent` "
        "parameter. Unique across files.",
    )
    default: Flag = Field(
        default=False,
        description="Answer calls to numbers no agent lists. At most one agent; without one, "
        "the only agent or else the first by name.",
    )
    phone_numbers: PhoneNumbers = Field(
        default=(),
        description="E.164 numbers this agent answers (matched against the webhook's `To`).",
    )
    model: ModelName = Field(
        default=DEFAULT_MODEL,
        description="Live API model (`models/` or the Vertex path is added on connect).",
    )
    api_version: ApiVersion = Field(
        default="v1beta", description="Developer API version; some preview fields need `v1alpha`."
    )
    response_modality: ResponseModality = Field(
        default="AUDIO",
        description="`generationConfig.responseModalities`: what the model answers with.",
    )
    input_sample_rate: InputSampleRate = Field(
        default=8000,
        description="Caller audio to the Live API: `8000` (as the phone sends it, declared as "
        "`audio/pcm;rate=8000`: the service resamples; a tenth of the per-frame work and half "
        "the bytes) or `16000` (upsampled here to the rate the Live API is native in).",
    )
    voice: VoiceName | None = Field(
        default="Puck",
        description="Prebuilt voice (`speechConfig.voiceConfig`); `null`: the service's.",
    )
    language: Annotated[LanguageTag | None, NOT_SENT] = Field(
        default=None, description="`speechConfig.languageCode`: the language the agent speaks."
    )
    timezone: TimeZone = Field(
        default="UTC",
        description="The business's time zone, for `{local_time}` in prompts and tools.",
    )
    system_prompt: Text = Field(
        description="`systemInstruction`, a template rendered for each call (placeholders below)."
    )
    greeting: Annotated[Text | None, Shown("none: the caller speaks first")] = Field(
        default=None,
        description="Sent as the first user turn so the agent speaks first; a template too.",
    )
    prefetch_crm: Flag = Field(
        default=False,
        description="Look the caller's number up in the CRM before the call, for "
        "`{customer.*}` placeholders.",
    )
    trust_caller_id: TrustCallerId = Field(
        default="any",
        description="`verified`: the caller's number identifies them (CRM prefetch, tools "
        "bound to `caller_number`) only when Twilio's `StirVerstat` reports a passed "
        "STIR/SHAKEN attestation (`TN-Validation-Passed-A/B/C`); caller ID is easy to spoof.",
    )
    temperature: Annotated[Temperature | None, NOT_SENT] = Field(
        default=None, description="`generationConfig.temperature`."
    )
    top_p: Annotated[TopP | None, NOT_SENT] = Field(
        default=None, description="`generationConfig.topP`."
    )
    top_k: Annotated[Tokens | None, NOT_SENT] = Field(
        default=None, description="`generationConfig.topK`."
    )
    max_output_tokens: Annotated[Tokens | None, NOT_SENT] = Field(
        default=None, description="`generationConfig.maxOutputTokens`."
    )
    seed: Annotated[Seed | None, NOT_SENT] = Field(
        default=None, description="`generationConfig.seed`."
    )
    media_resolution: Annotated[MediaResolution | None, NOT_SENT] = Field(
        default=None, description="`generationConfig.mediaResolution`."
    )
    thinking: Annotated[ThinkingConfig | None, NOT_SENT] = Field(
        default=None, description="`generationConfig.thinkingConfig`."
    )
    affective_dialog: Annotated[Flag | None, NOT_SENT] = Field(
        default=None,
        description="`generationConfig.enableAffectiveDialog`: adapt tone to the caller's.",
    )
    proactive_audio: Annotated[Flag | None, NOT_SENT] = Field(
        default=None,
        description="`proactivity.proactiveAudio`: the model may stay silent when speech is "
        "not meant for it.",
    )
    vad: Annotated[VadConfig, Shown("service's automatic detection")] = Field(
        default_factory=VadConfig,
        description="`realtimeInputConfig.automaticActivityDetection` (server-side VAD).",
    )
    activity_handling: Annotated[ActivityHandling | None, NOT_SENT] = Field(
        default=None, description="`realtimeInputConfig.activityHandling`: may the caller barge in."
    )
    turn_coverage: Annotated[TurnCoverage | None, NOT_SENT] = Field(
        default=None, description="`realtimeInputConfig.turnCoverage`."
    )
    explicit_vad_signal: Annotated[Flag | None, NOT_SENT] = Field(
        default=None, description="`explicitVadSignal` (Vertex AI only)."
    )
    transcription: Annotated[Transcription, Shown("both on")] = Field(
        default_factory=Transcription, description="Transcripts for call records and logs."
    )
    compression: Annotated[
        Compression | None, BeforeValidator(_switch, json_schema_input_type=bool | Compression)
    ] = Field(
        default_factory=Compression,
        json_schema_extra={"default": True},
        description="`contextWindowCompression`; `false` turns it off (an audio session then "
        "ends after 15 minutes).",
    )
    session_resumption: Annotated[
        SessionResumptionConfig | None,
        BeforeValidator(_switch, json_schema_input_type=bool | SessionResumptionConfig),
    ] = Field(
        default_factory=SessionResumptionConfig,
        json_schema_extra={"default": True},
        description="`sessionResumption`: reconnect mid-call without the caller noticing.",
    )
    initial_history_in_client_content: Annotated[Flag | None, NOT_SENT] = Field(
        default=None, description="`historyConfig.initialHistoryInClientContent`."
    )
    google_search: Flag = Field(default=False, description="Built-in tool `googleSearch`.")
    code_execution: Flag = Field(default=False, description="Built-in tool `codeExecution`.")
    url_context: Flag = Field(default=False, description="Built-in tool `urlContext`.")
    max_call_duration_s: PositiveSeconds | None = Field(
        default=_CALL.max_duration_s,
        description="The call ends after this long; `null`: no limit.",
    )
    wrap_up_before_s: Seconds = Field(
        default=_CALL.wrap_up_before_s,
        description="This long before the limit, the model is told to wrap up.",
    )
    wrap_up_message: Text = Field(
        default=_CALL.wrap_up_message, description="What the model is told then."
    )
    idle_timeout_s: PositiveSeconds | None = Field(
        default=_CALL.idle_timeout_s,
        description="After this much caller silence the model is prompted; after as much "
        "again the call ends. `null`: never.",
    )
    idle_message: Text = Field(
        default=_CALL.idle_message, description="What the model is told when the caller is silent."
    )
    preconnect_timeout_s: Seconds = Field(
        default=_CALL.preconnect_timeout_s,
        description="How long a Live session opened at the webhook waits for the media stream.",
    )
    greeting_at: GreetingAt = Field(
        default=_CALL.greeting_at,
        description="When a Live session opened at the webhook asks the model for the `greeting`: "
        "`webhook` (it is ready when the stream starts) or `stream_start` (no greeting is "
        "generated, or billed, for a stream that never arrives; the caller waits for the "
        "model's first audio).",
    )
    on_reload: OnReload = Field(
        default=_CALL.on_reload,
        description="What calls in progress do when a reload changes this agent's instructions "
        "or tools: `keep` what they started with, or `update` to the new ones (mid-session on a "
        "model that takes a `contextUpdate`, else a reconnect that keeps the conversation).",
    )
    hand_off_message: Text = Field(
        default=_CALL.hand_off_message,
        description="What an agent taking a call over with `hand_off` is told, on a model that "
        "reconnects for it: `{agent}` is the agent it took over from, `{heard}` what the caller "
        "last heard.",
    )
    tool_hold_after_s: PositiveSeconds | None = Field(
        default=_CALL.tool_hold_after_s,
        description="When a blocking tool has kept the caller waiting this long, they hear "
        '"One moment, please." (once per wait); `null`: silence until it answers.',
    )
    stall_after_s: PositiveSeconds | None = Field(
        default=_CALL.stall_after_s,
        description="When the model owes the caller an answer (they spoke, a tool answered, its "
        "turn ended empty or its audio stopped mid-turn) and has sent nothing for this long, it "
        'is nudged; then the session reconnects while the caller hears "One moment, please."; '
        "then the fallback plays. `null`: wait however long it takes.",
    )
    stall_message: Text = Field(
        default=_CALL.stall_message, description="What the model is told when it has stalled."
    )
    max_call_tokens: Tokens | None = Field(
        default=_CALL.max_tokens,
        description="The model is told to say goodbye (`cost_limit_message`) and the call ends "
        "(reason `cost limit`) once the Live API has reported this many tokens, prompt and "
        "response (each turn's prompt counts the whole conversation again); `null`: no limit.",
    )
    max_call_cost_usd: Usd | None = Field(
        default=_CALL.max_cost_usd,
        description="The same once the call's estimated cost (its tokens at the `PRICE_TABLE` "
        "prices for the model) reaches this many US dollars; `null`: no limit.",
    )
    cost_limit_message: Text = Field(
        default=_CALL.cost_limit_message,
        description="What the model is told when a cost limit is reached: it says goodbye in "
        "its own voice, then the call ends (at the latest 15 s later).",
    )
    dtmf: Annotated[Dtmf, Shown("see its keys")] = Field(
        default_factory=Dtmf, description="Keypad input."
    )
    fallback: Annotated[FallbackConfig, Shown("apology, then hang up")] = Field(
        default_factory=FallbackConfig, description="What happens when the Live API is unreachable."
    )
    outbound: Annotated[OutboundConfig, Shown("no outbound calls")] = Field(
        default_factory=OutboundConfig,
        description="Placing calls: caller ID, voicemail, retries, calling hours.",
    )
    tools: Annotated[ToolEntries, Shown(type="list, each a tool mapping (below)")] = Field(
        default=(), description="Functions the model may call (next table)."
    )

    @model_validator(mode="wrap")
    @classmethod
    def _prompts(cls, value: Any, handler: Callable[[Any], AgentFile]) -> AgentFile:
        return with_problems(handler, value, _templates(value))

    def agent_config(self, name: str) -> AgentConfig:
        """The agent this file describes, called ``name`` (its ``name``, or the file's)."""
        specs = tuple(tool.spec() for tool in self.tools)
        compression = self.compression
        return AgentConfig(
            name=name,
            model=self.model,
            api_version=self.api_version,
            response_modality=self.response_modality,
            input_sample_rate=self.input_sample_rate,
            voice=self.voice,
            language=self.language,
            system_instruction=self.system_prompt,
            greeting=self.greeting,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_output_tokens=self.max_output_tokens,
            seed=self.seed,
            media_resolution=self.media_resolution,
            thinking_config=self.thinking,
            enable_affective_dialog=self.affective_dialog,
            vad=self.vad,
            activity_handling=self.activity_handling,
            turn_coverage=self.turn_coverage,
            explicit_vad_signal=self.explicit_vad_signal,
            input_transcription=self.transcription.input,
            output_transcription=self.transcription.output,
            context_window_compression=None
            if compression is None
            else ContextWindowCompressionConfig(
                trigger_tokens=compression.trigger_tokens,
                sliding_window=SlidingWindow(target_tokens=compression.target_tokens),
            ),
            session_resumption=self.session_resumption,
            proactivity=None
            if self.proactive_audio is None
            else ProactivityConfig(proactive_audio=self.proactive_audio),
            history_config=None
            if self.initial_history_in_client_content is None
            else HistoryConfig(
                initial_history_in_client_content=self.initial_history_in_client_content
            ),
            tools=ToolsConfig(
                function_declarations=tuple(
                    FunctionDeclaration(
                        name=spec.name,
                        description=spec.description,
                        parameters_json_schema=spec.visible_parameters(),
                        behavior=spec.behavior,
                    )
                    for spec in specs
                ),
                google_search=self.google_search,
                code_execution=self.code_execution,
                url_context=self.url_context,
            ),
            call=CallPolicy(
                dtmf_group_timeout_s=self.dtmf.group_timeout_s,
                dtmf_message=self.dtmf.message,
                max_duration_s=self.max_call_duration_s,
                wrap_up_before_s=self.wrap_up_before_s,
                wrap_up_message=self.wrap_up_message,
                idle_timeout_s=self.idle_timeout_s,
                idle_message=self.idle_message,
                preconnect_timeout_s=self.preconnect_timeout_s,
                greeting_at=self.greeting_at,
                on_reload=self.on_reload,
                hand_off_message=self.hand_off_message,
                tool_hold_after_s=self.tool_hold_after_s,
                stall_after_s=self.stall_after_s,
                stall_message=self.stall_message,
                max_tokens=self.max_call_tokens,
                max_cost_usd=self.max_call_cost_usd,
                cost_limit_message=self.cost_limit_message,
            ),
            tool_specs=specs,
            phone_numbers=self.phone_numbers,
            timezone=self.timezone,
            prefetch_crm=self.prefetch_crm,
            trust_caller_id=self.trust_caller_id,
            fallback=self.fallback,
            outbound=self.outbound,
        )
