"""The Gemini Live API wire protocol, client side, sans-I/O.

Builders turn an :class:`~agent.config.models.AgentConfig` and audio into the JSON text frames the
Live API expects; :func:`parse_server_message` turns one server frame into a list of typed events.
One frame can carry several fields at once (``serverContent`` with ``usageMetadata``, several parts
in one turn), so a frame always yields a *list*, in the order a client must act on them.

Nothing here touches a socket or a clock, and nothing raises on wire input: a frame that cannot be
understood becomes a :class:`LiveProtocolError` event that the adapter logs and drops. Builders do
raise on a caller's mistake (a Vertex-only field sent to the Developer API, an empty tool response).
"""

from __future__ import annotations

import binascii
import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from agent import wire
from agent.config.models import AgentConfig, ToolsConfig
from agent.config.tools import Behavior
from agent.errors import ConfigError

DEFAULT_LIVE_API_URL = "wss://generativelanguage.googleapis.com"
LIVE_PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
INPUT_MIME_TYPE = "audio/pcm;rate=16000"
OUTPUT_SAMPLE_RATE = 24000

Backend = Literal["gemini", "vertex"]
"""Which Live API a setup is for: the Developer API (``gemini``) or Vertex AI."""
Scheduling = Literal["INTERRUPT", "WHEN_IDLE", "SILENT"]
"""When the model takes a non-blocking function's result (``FunctionResponse.scheduling``)."""


@dataclass(frozen=True, slots=True)
class WireProfile:
    """What one model, on one backend, takes on the wire beyond what every model takes: the
    builders send a field only where it is accepted (and honoured), so a setting that is right
    for one model never turns into a refused ``setup`` or a silently ignored message on another.
    :func:`agent.live.models.wire_profile` derives it from the capability table; the default is
    the protocol reference's: every field sent, functions ``BLOCKING`` unless they say otherwise,
    no mid-session context updates (a reconnect applies new instructions instead).
    """

    default_behavior: Behavior = "BLOCKING"
    """How a function that sets no ``behavior`` is run by the model (3.8 Live: NON_BLOCKING)."""
    behaviors: frozenset[Behavior] = frozenset({"BLOCKING", "NON_BLOCKING"})
    """The ``behavior`` values the model takes; one alone is the only mode, never sent."""
    scheduling: bool = True
    """``FunctionResponse.scheduling`` is honoured (Vertex AI ignores it)."""
    will_continue: bool = True
    """``FunctionResponse.willContinue`` is accepted (Vertex AI refuses it)."""
    context_update: bool = False
    """``contextUpdate`` (new system instruction and tools mid-session) is accepted."""

    def behavior(self, declared: Behavior | None) -> Behavior:
        """How the model runs a function declared with ``declared`` (None: its default)."""
        return declared or self.default_behavior

    def behavior_field(self, declared: Behavior | None) -> Behavior | None:
        """The ``behavior`` to send for a function declared with ``declared``: None when the
        model has one mode only (3.1 Flash Live has no ``behavior``; sending it is noise at
        best), else what the agent said, since the model's default applies to the rest."""
        if len(self.behaviors) < 2:
            return None
        return declared


#: For a model the capability table does not list.
DEFAULT_WIRE: Final = WireProfile()

# Servers send the standard base64 alphabet; the Python SDK sends URL-safe. Accept both everywhere.
_URLSAFE_TO_STD = str.maketrans("-_", "+/")
_RATE_RE = re.compile(r"rate=(\d+)")


def live_url(base_url: str, version: str) -> str:
    """The BidiGenerateContent WebSocket URL for ``base_url`` (``LIVE_API_URL``) and API version."""
    return base_url.rstrip("/") + LIVE_PATH.format(version=version)


# --------------------------------------------------------------------------------------------
# Client -> server
# --------------------------------------------------------------------------------------------


def developer_model_path(model: str) -> str:
    """The Developer API's resource name for ``model``: ``models/`` is added when missing."""
    return model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"


def check_backend(agent: AgentConfig, backend: Backend) -> None:
    """Refuse fields ``backend`` does not have, so a misconfiguration fails at start-up.

    The Developer API rejects Vertex-only fields with a 1007 close after the handshake (and the
    SDK refuses to send them); better a :class:`~agent.errors.ConfigError` naming the key.
    """
    if backend == "vertex":
        return
    if agent.explicit_vad_signal is not None:
        raise ConfigError(
            "explicit_vad_signal is Vertex AI only (set LIVE_BACKEND=vertex or remove it)",
            key="explicit_vad_signal",
        )
    if agent.session_resumption is not None and agent.session_resumption.transparent is not None:
        raise ConfigError(
            "session_resumption.transparent is Vertex AI only (set LIVE_BACKEND=vertex or "
            "remove it)",
            key="session_resumption.transparent",
        )


def build_setup(
    agent: AgentConfig,
    *,
    resumption_handle: str | None = None,
    model_path: str | None = None,
    backend: Backend = "gemini",
    wire: WireProfile = DEFAULT_WIRE,
) -> dict[str, Any]:
    """The ``setup`` message for ``agent``, in the Live API's canonical camelCase JSON.

    Only fields the agent sets are sent, so the service's own defaults apply to the rest, and of
    those only what the model takes (``wire``, from the capability table).
    ``model_path`` is the target's resource name for the model (Vertex AI's is a project path);
    by default the Developer API's ``models/...``. ``resumption_handle`` resumes a session; it is
    sent even if the agent turned resumption off, because the caller asked for it explicitly.
    Raises :class:`~agent.errors.ConfigError` for fields ``backend`` does not have.
    """
    check_backend(agent, backend)
    setup: dict[str, Any] = {"model": model_path or developer_model_path(agent.model)}
    setup["generationConfig"] = _generation_config(agent)
    if agent.system_instruction:
        setup["systemInstruction"] = _system_instruction(agent.system_instruction)
    if agent.tools:
        setup["tools"] = _tools(agent.tools, wire)
    realtime = _realtime_input_config(agent)
    if realtime:
        setup["realtimeInputConfig"] = realtime
    if agent.explicit_vad_signal is not None:
        setup["explicitVadSignal"] = agent.explicit_vad_signal
    if agent.input_transcription:
        setup["inputAudioTranscription"] = {}
    if agent.output_transcription:
        setup["outputAudioTranscription"] = {}
    compression = agent.context_window_compression
    if compression is not None:
        window: dict[str, Any] = {}
        if compression.sliding_window.target_tokens is not None:
            window["targetTokens"] = compression.sliding_window.target_tokens
        # slidingWindow is the compression mechanism: an empty object still selects it.
        setup["contextWindowCompression"] = _without_none(
            {"triggerTokens": compression.trigger_tokens, "slidingWindow": window}
        )
    if agent.session_resumption is not None or resumption_handle:
        transparent = agent.session_resumption.transparent if agent.session_resumption else None
        setup["sessionResumption"] = _without_none(
            {"handle": resumption_handle or None, "transparent": transparent}
        )
    if agent.proactivity is not None:
        setup["proactivity"] = _without_none({"proactiveAudio": agent.proactivity.proactive_audio})
    if agent.history_config is not None:
        history = agent.history_config.initial_history_in_client_content
        setup["historyConfig"] = _without_none({"initialHistoryInClientContent": history})
    return {"setup": setup}


def setup_message(
    agent: AgentConfig,
    *,
    resumption_handle: str | None = None,
    model_path: str | None = None,
    backend: Backend = "gemini",
    wire: WireProfile = DEFAULT_WIRE,
) -> str:
    """:func:`build_setup` serialised as the first text frame of a connection."""
    return json.dumps(
        build_setup(
            agent,
            resumption_handle=resumption_handle,
            model_path=model_path,
            backend=backend,
            wire=wire,
        )
    )


def _generation_config(agent: AgentConfig) -> dict[str, Any]:
    speech: dict[str, Any] = {}
    if agent.voice:
        speech["voiceConfig"] = {"prebuiltVoiceConfig": {"voiceName": agent.voice}}
    if agent.language:
        speech["languageCode"] = agent.language
    thinking = agent.thinking_config
    return _without_none(
        {
            # Always sent: the bridge's whole job depends on the modality, and Vertex has no
            # AUDIO default for some models (the SDK adds it there too).
            "responseModalities": [agent.response_modality],
            "temperature": agent.temperature,
            "topP": agent.top_p,
            "topK": agent.top_k,
            "maxOutputTokens": agent.max_output_tokens,
            "seed": agent.seed,
            "mediaResolution": agent.media_resolution,
            "speechConfig": speech or None,
            "thinkingConfig": None
            if thinking is None
            else _without_none(
                {
                    "thinkingBudget": thinking.thinking_budget,
                    "includeThoughts": thinking.include_thoughts,
                    "thinkingLevel": thinking.thinking_level,
                }
            ),
            "enableAffectiveDialog": agent.enable_affective_dialog,
        }
    )


def _realtime_input_config(agent: AgentConfig) -> dict[str, Any]:
    vad = agent.vad
    detection = _without_none(
        {
            # false is the service's default: send it only when it says something.
            "disabled": True if vad.disabled else None,
            "startOfSpeechSensitivity": vad.start_sensitivity,
            "endOfSpeechSensitivity": vad.end_sensitivity,
            "prefixPaddingMs": vad.prefix_padding_ms,
            "silenceDurationMs": vad.silence_duration_ms,
        }
    )
    return _without_none(
        {
            "automaticActivityDetection": detection or None,
            "activityHandling": agent.activity_handling,
            "turnCoverage": agent.turn_coverage,
        }
    )


def _tools(tools: ToolsConfig, wire: WireProfile) -> list[dict[str, Any]]:
    # The SDK's layout (t_tools): one entry per built-in tool, then every function merged into a
    # single functionDeclarations entry, last.
    entries: list[dict[str, Any]] = []
    if tools.google_search:
        entries.append({"googleSearch": {}})
    if tools.code_execution:
        entries.append({"codeExecution": {}})
    if tools.url_context:
        entries.append({"urlContext": {}})
    if tools.function_declarations:
        entries.append(
            {
                "functionDeclarations": [
                    _without_none(
                        {
                            "name": declaration.name,
                            "description": declaration.description,
                            # User data (schemas, property names): copied, never renamed.
                            "parametersJsonSchema": _copy(declaration.parameters_json_schema),
                            "parameters": _copy(declaration.parameters),
                            "behavior": wire.behavior_field(declaration.behavior),
                        }
                    )
                    for declaration in tools.function_declarations
                ]
            }
        )
    return entries


def _without_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _copy(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    # A fresh copy per message, so a caller editing the built dict cannot reach into the config.
    return None if value is None else copy.deepcopy(dict(value))


@dataclass(frozen=True, slots=True)
class FunctionResult:
    """The outcome of one function call, sent back in a ``toolResponse``.

    ``id`` and ``name`` are the call's. ``scheduling`` (for ``NON_BLOCKING`` functions) says
    whether the model should interrupt itself, wait until idle, or take the result silently;
    ``will_continue`` says more results for this call will follow. ``None`` is not sent.
    """

    id: str
    name: str
    response: Mapping[str, Any]
    scheduling: Scheduling | None = None
    will_continue: bool | None = None


def tool_response_message(
    responses: Sequence[FunctionResult], wire: WireProfile = DEFAULT_WIRE
) -> str:
    """A ``toolResponse`` frame answering one or more function calls.

    ``scheduling`` goes beside ``response``, as the SDK sends it (the docs' examples also put it
    inside ``response``; servers accept it beside). It is left out where ``wire`` says the model
    does not honour it, and ``willContinue`` where it is refused (Vertex AI: the SDK raises
    "will_continue parameter is only supported in Gemini Developer API mode"). Raises
    ``ValueError`` for no responses (the server would refuse an empty one) and ``TypeError``
    for a response JSON cannot carry.
    """
    if not responses:
        raise ValueError("a tool response needs at least one function result")
    return json.dumps(
        {
            "toolResponse": {
                "functionResponses": [
                    _without_none(
                        {
                            "id": result.id,
                            "name": result.name,
                            "response": dict(result.response),
                            "willContinue": result.will_continue if wire.will_continue else None,
                            "scheduling": result.scheduling if wire.scheduling else None,
                        }
                    )
                    for result in responses
                ]
            }
        }
    )


def context_update_message(
    *,
    system_instruction: str | None = None,
    tools: ToolsConfig | None = None,
    wire: WireProfile = DEFAULT_WIRE,
) -> str:
    """A ``contextUpdate`` frame: a new system instruction and/or tool list for the session in
    progress, taken in order with the rest of the input, without reconnecting.

    The shape is google-genai's ``AsyncSession.send_context_update`` (``LiveClientContextUpdate``:
    ``systemInstruction`` replaces the setup's, ``tools.tools`` replaces the tool list; an empty
    list clears it). Only models whose ``wire`` says so take it (Gemini 3.8 Live: "full-session
    client content updates", https://ai.google.dev/gemini-api/docs/models/gemini-3.8-live);
    elsewhere the session reconnects with the new setup instead. Raises ``ValueError`` when
    neither is given, as the SDK does.
    """
    if system_instruction is None and tools is None:
        raise ValueError("a context update needs a system instruction or tools")
    update: dict[str, Any] = {}
    if system_instruction is not None:
        update["systemInstruction"] = _system_instruction(system_instruction)
    if tools is not None:
        update["tools"] = {"tools": _tools(tools, wire)}
    return json.dumps({"contextUpdate": update})


def _system_instruction(text: str) -> dict[str, Any]:
    return {"parts": [{"text": text}], "role": "user"}


def history_message(turns: Sequence[tuple[str, str]], *, turn_complete: bool = False) -> str:
    """A ``clientContent`` frame replaying a conversation as text turns.

    ``turns`` are ``(role, text)`` pairs, ``role`` being ``"user"`` or ``"model"``; it seeds a
    fresh session with the conversation so far when no resumption handle is left. With
    ``turn_complete=False`` (the default) the model does not answer it; with
    ``history_config.initial_history_in_client_content`` the server takes everything up to the
    first ``turn_complete=True`` as history. Raises ``ValueError`` for any other role.
    """
    contents = []
    for role, text in turns:
        if role not in ("user", "model"):
            raise ValueError(f"a history turn's role must be 'user' or 'model', got {role!r}")
        contents.append({"role": role, "parts": [{"text": text}]})
    return json.dumps({"clientContent": {"turns": contents, "turnComplete": turn_complete}})


_AUDIO_PREFIX = '{"realtimeInput":{"audio":{"data":"'
_AUDIO_SUFFIXES = {rate: f'","mimeType":"audio/pcm;rate={rate}"}}}}}}' for rate in (8000, 16000)}


def audio_message(pcm: bytes, sample_rate: int = 16000) -> str:
    """A ``realtimeInput.audio`` frame carrying PCM16 caller audio at ``sample_rate``: 16 kHz, the
    Live API's native input rate, or 8 kHz as the phone sends it. The Live API guide (audio
    formats, https://ai.google.dev/gemini-api/docs/live-guide): input audio "is natively 16kHz,
    but the Live API will resample if needed", the rate conveyed by the MIME type.

    Built by concatenation: it runs 50 times a second per call, and base64 text needs no escaping.
    """
    return _AUDIO_PREFIX + wire.b64encode(pcm) + _AUDIO_SUFFIXES[sample_rate]


def text_turn_message(text: str, *, role: str = "user", turn_complete: bool = True) -> str:
    """A ``clientContent`` turn: how the bridge speaks to the model in text (greeting, DTMF...)."""
    return json.dumps(
        {
            "clientContent": {
                "turns": [{"role": role, "parts": [{"text": text}]}],
                "turnComplete": turn_complete,
            }
        }
    )


def activity_start_message() -> str:
    """Marks the start of caller speech when automatic VAD is disabled."""
    return '{"realtimeInput":{"activityStart":{}}}'


def activity_end_message() -> str:
    """Marks the end of caller speech when automatic VAD is disabled."""
    return '{"realtimeInput":{"activityEnd":{}}}'


# --------------------------------------------------------------------------------------------
# Server -> client events
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetupComplete:
    """The server accepted ``setup``; audio may flow. Vertex also names the session."""

    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class ModelAudio:
    """A chunk of the model's speech: PCM16 little-endian mono at ``sample_rate`` (24 kHz)."""

    pcm: bytes
    sample_rate: int = OUTPUT_SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class ModelText:
    """Text the model produced. ``thought`` parts are reasoning and never reach the caller."""

    text: str
    thought: bool = False


@dataclass(frozen=True, slots=True)
class InputTranscription:
    """What the service heard the caller say (a fragment)."""

    text: str
    finished: bool = False


@dataclass(frozen=True, slots=True)
class OutputTranscription:
    """What the model said, as text (a fragment)."""

    text: str
    finished: bool = False


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The caller barged in: the model stopped its turn; audio already sent is stale."""


@dataclass(frozen=True, slots=True)
class GenerationComplete:
    """The model finished generating this turn (its audio may still be playing)."""


@dataclass(frozen=True, slots=True)
class TurnComplete:
    """The model's turn is over; ``reason`` is ``turnCompleteReason`` when given."""

    reason: str | None = None


@dataclass(frozen=True, slots=True)
class WaitingForInput:
    """The model is waiting for the caller."""


@dataclass(frozen=True, slots=True)
class InteractionStatusChanged:
    """``serverContent.interactionStatus``: the session's activity state (``IN_PROGRESS``,
    ``REQUIRES_ACTION``: it waits for a function result, ``IDLE``), sent alongside
    ``turnComplete`` by newer models (the extended-thinking variant among them). Per the
    official SDK's ``LiveServerContent.interaction_status``: "The current activity status of the
    live session. Always sent alongside turn_complete"."""

    status: str


@dataclass(frozen=True, slots=True)
class InterimInputTranscription:
    """``serverContent.interimInputTranscription``: a low-latency guess at what the caller is
    saying, revised while they speak. Not a fragment to append: the final
    :class:`InputTranscription` replaces it."""

    text: str


@dataclass(frozen=True, slots=True)
class VoiceActivityReported:
    """The service's own voice activity detection saw the caller start or stop speaking
    (``voiceActivity`` with ``ACTIVITY_START``/``ACTIVITY_END``, or the allow-listed
    ``voiceActivityDetectionSignal`` with ``VAD_SIGNAL_TYPE_SOS``/``_EOS``)."""

    started: bool
    audio_offset_s: float | None = None


@dataclass(frozen=True, slots=True)
class UnknownFields:
    """Fields of a server message this client does not know (``serverContent.x`` for those
    inside ``serverContent``): a newer protocol than this parser. Logged once per call at debug,
    never an error: the fields it knows in the same message are still acted on."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GroundingMetadata:
    """Search grounding (or URL context) the model used; logged, never spoken."""

    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """One function the model wants run; ``id`` must come back with its response."""

    id: str
    name: str
    args: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCallRequested:
    """The model asked for one or more function calls."""

    calls: tuple[FunctionCall, ...]


@dataclass(frozen=True, slots=True)
class ToolCallCancelled:
    """Pending function calls the model no longer wants (usually after a barge-in)."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UsageReported:
    """Token usage reported by the server; ``by_modality`` sums prompt and response details."""

    prompt_tokens: int = 0
    response_tokens: int = 0
    total_tokens: int = 0
    thoughts_tokens: int = 0
    prompt_by_modality: Mapping[str, int] = field(default_factory=dict)
    response_by_modality: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GoAway:
    """The server will end this connection in ``time_left_s`` seconds: reconnect before then."""

    time_left_s: float


@dataclass(frozen=True, slots=True)
class ResumptionHandle:
    """A ``sessionResumptionUpdate``: the newest handle to resume the session with."""

    handle: str | None
    resumable: bool
    # With transparent resumption: the last client message the handle's state includes.
    last_consumed_index: int | None = None


@dataclass(frozen=True, slots=True)
class LiveProtocolError:
    """A server frame the client could not understand; logged and dropped."""

    reason: str
    raw: str


LiveEvent = (
    SetupComplete
    | ModelAudio
    | ModelText
    | InputTranscription
    | InterimInputTranscription
    | OutputTranscription
    | Interrupted
    | GenerationComplete
    | TurnComplete
    | WaitingForInput
    | InteractionStatusChanged
    | VoiceActivityReported
    | GroundingMetadata
    | ToolCallRequested
    | ToolCallCancelled
    | UsageReported
    | GoAway
    | ResumptionHandle
    | UnknownFields
    | LiveProtocolError
)

_INTERRUPTED = Interrupted()
_GENERATION_COMPLETE = GenerationComplete()
_WAITING = WaitingForInput()


def decode_b64(data: str) -> bytes:
    """Decode base64 in either alphabet, padded or not; raises ``binascii.Error`` if invalid."""
    if "-" in data or "_" in data:
        data = data.translate(_URLSAFE_TO_STD)
    missing = -len(data) % 4
    if missing:
        data += "=" * missing
    return wire.b64decode(data)


def parse_duration(text: str) -> float:
    """A protobuf Duration string (``"50s"``, ``"0.5s"``) in seconds; raises ``ValueError``."""
    if not text.endswith("s"):
        raise ValueError(f"not a Duration: {text!r}")
    return float(text[:-1])


def parse_server_message(frame: str | bytes) -> list[LiveEvent]:
    """Every event carried by one server frame, in the order a client must act on them."""
    try:
        message = wire.loads(frame)
    except (ValueError, UnicodeDecodeError) as exc:
        return [LiveProtocolError(f"invalid JSON: {exc}", _excerpt(frame))]
    if not isinstance(message, dict):
        return [LiveProtocolError("a server message must be a JSON object", _excerpt(frame))]
    try:
        events = _events(message)
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
        return [LiveProtocolError(f"malformed server message: {exc!r}", _excerpt(frame))]
    if not events:
        return [LiveProtocolError("no field this client understands", _excerpt(frame))]
    return events


# The fields this parser knows, in both spellings (the wire's camelCase; the SDK's snake_case),
# after the official google-genai SDK's LiveServerMessage and LiveServerContent.
_KNOWN_MESSAGE_FIELDS = frozenset(
    {
        "setupComplete", "setup_complete", "serverContent", "server_content",
        "usageMetadata", "usage_metadata", "toolCall", "tool_call",
        "toolCallCancellation", "tool_call_cancellation", "goAway", "go_away",
        "sessionResumptionUpdate", "session_resumption_update",
        "voiceActivity", "voice_activity",
        "voiceActivityDetectionSignal", "voice_activity_detection_signal",
    }
)  # fmt: skip
_KNOWN_CONTENT_FIELDS = frozenset(
    {
        "modelTurn", "model_turn", "turnComplete", "turn_complete", "interrupted",
        "groundingMetadata", "grounding_metadata", "generationComplete", "generation_complete",
        "inputTranscription", "input_transcription", "outputTranscription",
        "output_transcription", "urlContextMetadata", "url_context_metadata",
        "turnCompleteReason", "turn_complete_reason", "waitingForInput", "waiting_for_input",
        "interimInputTranscription", "interim_input_transcription",
        "interactionStatus", "interaction_status",
    }
)  # fmt: skip
_ACTIVITY_STARTS = frozenset({"ACTIVITY_START", "VAD_SIGNAL_TYPE_SOS"})
_ACTIVITY_ENDS = frozenset({"ACTIVITY_END", "VAD_SIGNAL_TYPE_EOS"})


def _events(message: Mapping[str, Any]) -> list[LiveEvent]:
    events: list[LiveEvent] = []
    unknown = [name for name in message if name not in _KNOWN_MESSAGE_FIELDS]
    setup = _get(message, "setupComplete", "setup_complete")
    if setup is not None:
        events.append(SetupComplete(_get(setup, "sessionId", "session_id")))
    content = _get(message, "serverContent", "server_content")
    if content is not None:
        _server_content(content, events)
        unknown += [f"serverContent.{n}" for n in content if n not in _KNOWN_CONTENT_FIELDS]
    usage = _get(message, "usageMetadata", "usage_metadata")
    if usage is not None:
        events.append(_usage(usage))
    tool_call = _get(message, "toolCall", "tool_call")
    if tool_call is not None:
        calls = _get(tool_call, "functionCalls", "function_calls") or []
        events.append(
            ToolCallRequested(
                tuple(
                    FunctionCall(str(c.get("id", "")), str(c["name"]), dict(c.get("args") or {}))
                    for c in calls
                )
            )
        )
    cancellation = _get(message, "toolCallCancellation", "tool_call_cancellation")
    if cancellation is not None:
        events.append(ToolCallCancelled(tuple(str(i) for i in cancellation.get("ids", []))))
    go_away = _get(message, "goAway", "go_away")
    if go_away is not None:
        left = _get(go_away, "timeLeft", "time_left")
        events.append(GoAway(parse_duration(left) if left else 0.0))
    update = _get(message, "sessionResumptionUpdate", "session_resumption_update")
    if update is not None:
        consumed = _get(
            update, "lastConsumedClientMessageIndex", "last_consumed_client_message_index"
        )
        events.append(
            ResumptionHandle(
                _get(update, "newHandle", "new_handle"),
                bool(update.get("resumable")),
                None if consumed is None else int(consumed),  # an int64: a JSON string
            )
        )
    activity = _get(message, "voiceActivity", "voice_activity")
    if activity is not None:
        kind = _get(activity, "voiceActivityType", "voice_activity_type")
        offset = _get(activity, "audioOffset", "audio_offset")
        _voice_activity(kind, parse_duration(offset) if offset else None, events)
    signal = _get(message, "voiceActivityDetectionSignal", "voice_activity_detection_signal")
    if signal is not None:
        _voice_activity(_get(signal, "vadSignalType", "vad_signal_type"), None, events)
    if unknown:
        events.append(UnknownFields(tuple(unknown)))
    return events


def _voice_activity(kind: object, offset: float | None, events: list[LiveEvent]) -> None:
    if kind in _ACTIVITY_STARTS:
        events.append(VoiceActivityReported(True, offset))
    elif kind in _ACTIVITY_ENDS:
        events.append(VoiceActivityReported(False, offset))


def _server_content(content: Mapping[str, Any], events: list[LiveEvent]) -> None:
    # Transcriptions first: the last one of a turn precedes its interrupted/generationComplete.
    heard = _get(content, "inputTranscription", "input_transcription")
    if heard is not None:
        events.append(InputTranscription(str(heard.get("text", "")), bool(heard.get("finished"))))
    said = _get(content, "outputTranscription", "output_transcription")
    if said is not None:
        events.append(OutputTranscription(str(said.get("text", "")), bool(said.get("finished"))))
    if content.get("interrupted"):
        events.append(_INTERRUPTED)
    turn = _get(content, "modelTurn", "model_turn")
    if turn is not None:
        for part in turn.get("parts") or ():
            inline = _get(part, "inlineData", "inline_data")
            if inline is not None:
                mime = str(_get(inline, "mimeType", "mime_type") or "")
                if mime.startswith("audio/"):
                    rate = _RATE_RE.search(mime)
                    events.append(
                        ModelAudio(
                            decode_b64(inline["data"]),
                            int(rate.group(1)) if rate else OUTPUT_SAMPLE_RATE,
                        )
                    )
            elif "text" in part:
                events.append(ModelText(str(part["text"]), bool(part.get("thought"))))
    if _get(content, "generationComplete", "generation_complete"):
        events.append(_GENERATION_COMPLETE)
    if _get(content, "turnComplete", "turn_complete"):
        events.append(TurnComplete(_get(content, "turnCompleteReason", "turn_complete_reason")))
    if _get(content, "waitingForInput", "waiting_for_input"):
        events.append(_WAITING)
    status = _get(content, "interactionStatus", "interaction_status")
    if status is not None:
        events.append(InteractionStatusChanged(str(status)))
    interim = _get(content, "interimInputTranscription", "interim_input_transcription")
    if interim is not None:
        events.append(InterimInputTranscription(str(interim.get("text", ""))))
    grounding = _get(content, "groundingMetadata", "grounding_metadata")
    if grounding is not None:
        events.append(GroundingMetadata(dict(grounding)))
    url_context = _get(content, "urlContextMetadata", "url_context_metadata")
    if url_context is not None:
        events.append(GroundingMetadata({"urlContextMetadata": url_context}))


def _usage(usage: Mapping[str, Any]) -> UsageReported:
    # Vertex names the response count candidatesTokenCount.
    response = _get(usage, "responseTokenCount", "response_token_count")
    if response is None:
        response = _get(usage, "candidatesTokenCount", "candidates_token_count")
    return UsageReported(
        prompt_tokens=int(_get(usage, "promptTokenCount", "prompt_token_count") or 0),
        response_tokens=int(response or 0),
        total_tokens=int(_get(usage, "totalTokenCount", "total_token_count") or 0),
        thoughts_tokens=int(_get(usage, "thoughtsTokenCount", "thoughts_token_count") or 0),
        prompt_by_modality=_by_modality(
            _get(usage, "promptTokensDetails", "prompt_tokens_details") or []
        ),
        response_by_modality=_by_modality(
            _get(usage, "responseTokensDetails", "response_tokens_details")
            or _get(usage, "candidatesTokensDetails", "candidates_tokens_details")
            or []
        ),
    )


def _by_modality(details: list[Mapping[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for item in details:
        modality = str(item.get("modality", "MODALITY_UNSPECIFIED"))
        totals[modality] = totals.get(modality, 0) + int(
            _get(item, "tokenCount", "token_count") or 0
        )
    return totals


def _get(obj: Mapping[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _excerpt(frame: str | bytes, limit: int = 200) -> str:
    text = frame if isinstance(frame, str) else frame[:limit].decode("utf-8", "replace")
    return text[:limit]
