"""The Gemini Live API wire protocol, client side, sans-I/O.

Builders turn an :class:`~agent.config.AgentConfig` and audio into the JSON text frames the Live API
expects; :func:`parse_server_message` turns one server frame into a list of typed events. One frame
can carry several fields at once (``serverContent`` with ``usageMetadata``, several parts in one
turn), so a frame always yields a *list*, in the order a client must act on them.

Nothing here touches a socket or a clock, and nothing raises on wire input: a frame that cannot be
understood becomes a :class:`LiveProtocolError` event that the adapter logs and drops.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.config import AgentConfig

DEFAULT_LIVE_API_URL = "wss://generativelanguage.googleapis.com"
LIVE_PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
INPUT_MIME_TYPE = "audio/pcm;rate=16000"
OUTPUT_SAMPLE_RATE = 24000

# Servers send the standard base64 alphabet; the Python SDK sends URL-safe. Accept both everywhere.
_URLSAFE_TO_STD = str.maketrans("-_", "+/")
_RATE_RE = re.compile(r"rate=(\d+)")


def live_url(base_url: str, version: str) -> str:
    """The BidiGenerateContent WebSocket URL for ``base_url`` (``LIVE_API_URL``) and API version."""
    return base_url.rstrip("/") + LIVE_PATH.format(version=version)


# --------------------------------------------------------------------------------------------
# Client -> server
# --------------------------------------------------------------------------------------------


def build_setup(agent: AgentConfig, *, resumption_handle: str | None = None) -> dict[str, Any]:
    """The ``setup`` message for ``agent``, in the Live API's canonical camelCase JSON.

    Only fields the agent sets are sent, so the service's own defaults apply to the rest.
    """
    speech: dict[str, Any] = {}
    if agent.voice:
        speech["voiceConfig"] = {"prebuiltVoiceConfig": {"voiceName": agent.voice}}
    if agent.language:
        speech["languageCode"] = agent.language
    generation: dict[str, Any] = {"responseModalities": ["AUDIO"]}
    if speech:
        generation["speechConfig"] = speech

    vad: dict[str, Any] = {"disabled": agent.vad.disabled}
    if agent.vad.start_sensitivity is not None:
        vad["startOfSpeechSensitivity"] = agent.vad.start_sensitivity
    if agent.vad.end_sensitivity is not None:
        vad["endOfSpeechSensitivity"] = agent.vad.end_sensitivity
    if agent.vad.prefix_padding_ms is not None:
        vad["prefixPaddingMs"] = agent.vad.prefix_padding_ms
    if agent.vad.silence_duration_ms is not None:
        vad["silenceDurationMs"] = agent.vad.silence_duration_ms

    model = agent.model if agent.model.startswith("models/") else f"models/{agent.model}"
    setup: dict[str, Any] = {
        "model": model,
        "generationConfig": generation,
        "systemInstruction": {"parts": [{"text": agent.system_instruction}], "role": "user"},
        "realtimeInputConfig": {"automaticActivityDetection": vad},
    }
    if agent.input_transcription:
        setup["inputAudioTranscription"] = {}
    if agent.output_transcription:
        setup["outputAudioTranscription"] = {}
    resumption: dict[str, Any] = {}
    if resumption_handle:
        resumption["handle"] = resumption_handle
    setup["sessionResumption"] = resumption
    return {"setup": setup}


def setup_message(agent: AgentConfig, *, resumption_handle: str | None = None) -> str:
    """:func:`build_setup` serialised as the first text frame of a connection."""
    return json.dumps(build_setup(agent, resumption_handle=resumption_handle))


def audio_message(pcm16k: bytes) -> str:
    """A ``realtimeInput.audio`` frame carrying 16 kHz PCM16 caller audio.

    Built by concatenation: it runs 50 times a second per call, and base64 text needs no escaping.
    """
    data = binascii.b2a_base64(pcm16k, newline=False).decode("ascii")
    return (
        '{"realtimeInput":{"audio":{"data":"' + data + '","mimeType":"' + INPUT_MIME_TYPE + '"}}}'
    )


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


def audio_stream_end_message() -> str:
    """Tells an automatic-VAD session that the caller's audio paused (flushes its turn)."""
    return '{"realtimeInput":{"audioStreamEnd":true}}'


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
    | OutputTranscription
    | Interrupted
    | GenerationComplete
    | TurnComplete
    | WaitingForInput
    | GroundingMetadata
    | ToolCallRequested
    | ToolCallCancelled
    | UsageReported
    | GoAway
    | ResumptionHandle
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
    return binascii.a2b_base64(data, strict_mode=True)


def parse_duration(text: str) -> float:
    """A protobuf Duration string (``"50s"``, ``"0.5s"``) in seconds; raises ``ValueError``."""
    if not text.endswith("s"):
        raise ValueError(f"not a Duration: {text!r}")
    return float(text[:-1])


def parse_server_message(frame: str | bytes) -> list[LiveEvent]:
    """Every event carried by one server frame, in the order a client must act on them."""
    try:
        message = json.loads(frame)
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


def _events(message: Mapping[str, Any]) -> list[LiveEvent]:
    events: list[LiveEvent] = []
    setup = _get(message, "setupComplete", "setup_complete")
    if setup is not None:
        events.append(SetupComplete(_get(setup, "sessionId", "session_id")))
    content = _get(message, "serverContent", "server_content")
    if content is not None:
        _server_content(content, events)
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
        events.append(
            ResumptionHandle(_get(update, "newHandle", "new_handle"), bool(update.get("resumable")))
        )
    return events


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
