"""Which ``setup`` fields Google accepts, down to nested objects: an unknown field is a close
frame with ``Request contains an invalid argument.``, as the real service answers.

Part of the emulator's sans-I/O core (see :mod:`agent.sim.live.core`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from agent.live.models import capabilities, model_id
from agent.live.protocol import Backend
from agent.sim.live.wire import (
    CLOSE_INVALID,
    CLOSE_POLICY,
    INVALID_ARGUMENT,
    RETIRED_MODELS,
    RequestRejectedError,
    camel_case,
    snake_case,
)


@dataclass(frozen=True, slots=True)
class _Message:
    """The known fields of one proto message in ``setup`` (camelCase), for unknown-field errors.

    A field mapped to ``None`` is not looked into: user data (schemas, Structs) or a message whose
    contents the emulator has no reason to police.
    """

    fields: Mapping[str, _Message | None]
    repeated: bool = False


_OPAQUE: Final[None] = None
_CONTENT: Final = _Message({"parts": _OPAQUE, "role": _OPAQUE})
_TRANSCRIPTION: Final = _Message({"languageCodes": _OPAQUE})
_VOICE: Final = _Message({"prebuiltVoiceConfig": _Message({"voiceName": _OPAQUE})})
# From the generativelanguage v1beta proto (as the doc and google-genai 3.4 send them).
_SETUP: Final = _Message(
    {
        "model": _OPAQUE,
        "generationConfig": _Message(
            {
                "candidateCount": _OPAQUE,
                "maxOutputTokens": _OPAQUE,
                "temperature": _OPAQUE,
                "topP": _OPAQUE,
                "topK": _OPAQUE,
                "seed": _OPAQUE,
                "presencePenalty": _OPAQUE,
                "frequencyPenalty": _OPAQUE,
                "stopSequences": _OPAQUE,
                "responseMimeType": _OPAQUE,
                "responseSchema": _OPAQUE,
                "responseJsonSchema": _OPAQUE,
                "responseLogprobs": _OPAQUE,
                "logprobs": _OPAQUE,
                "enableEnhancedCivicAnswers": _OPAQUE,
                "responseModalities": _OPAQUE,
                "mediaResolution": _OPAQUE,
                "speechConfig": _Message(
                    {
                        "voiceConfig": _VOICE,
                        "languageCode": _OPAQUE,
                        "multiSpeakerVoiceConfig": _OPAQUE,
                    }
                ),
                "thinkingConfig": _Message(
                    {
                        "thinkingBudget": _OPAQUE,
                        "includeThoughts": _OPAQUE,
                        "thinkingLevel": _OPAQUE,
                    }
                ),
                "enableAffectiveDialog": _OPAQUE,
                "translationConfig": _OPAQUE,
            }
        ),
        "systemInstruction": _CONTENT,
        "tools": _Message(
            {
                "functionDeclarations": _Message(
                    {
                        "name": _OPAQUE,
                        "description": _OPAQUE,
                        "parameters": _OPAQUE,
                        "parametersJsonSchema": _OPAQUE,
                        "response": _OPAQUE,
                        "responseJsonSchema": _OPAQUE,
                        "behavior": _OPAQUE,
                    },
                    repeated=True,
                ),
                "googleSearch": _OPAQUE,
                "googleSearchRetrieval": _OPAQUE,
                "codeExecution": _OPAQUE,
                "urlContext": _OPAQUE,
            },
            repeated=True,
        ),
        "realtimeInputConfig": _Message(
            {
                "automaticActivityDetection": _Message(
                    {
                        "disabled": _OPAQUE,
                        "startOfSpeechSensitivity": _OPAQUE,
                        "endOfSpeechSensitivity": _OPAQUE,
                        "prefixPaddingMs": _OPAQUE,
                        "silenceDurationMs": _OPAQUE,
                    }
                ),
                "activityHandling": _OPAQUE,
                "turnCoverage": _OPAQUE,
            }
        ),
        "inputAudioTranscription": _TRANSCRIPTION,
        "outputAudioTranscription": _TRANSCRIPTION,
        "contextWindowCompression": _Message(
            {"triggerTokens": _OPAQUE, "slidingWindow": _Message({"targetTokens": _OPAQUE})}
        ),
        # "transparent" is Vertex-only: the Developer API does not know it.
        "sessionResumption": _Message({"handle": _OPAQUE}),
        "proactivity": _Message({"proactiveAudio": _OPAQUE}),
        "historyConfig": _Message({"initialHistoryInClientContent": _OPAQUE}),
    }
)


# Vertex AI's setup has two fields more (the SDK's LiveClientSetup documents both and sends them
# only to Vertex: https://googleapis.github.io/js-genai/release_docs/interfaces/types.LiveClientSetup.html).
_VERTEX_SETUP: Final = _Message(
    {
        **_SETUP.fields,
        "explicitVadSignal": _OPAQUE,
        "sessionResumption": _Message({"handle": _OPAQUE, "transparent": _OPAQUE}),
    }
)


def check_setup_fields(setup: Any, backend: Backend = "gemini") -> None:
    """Reject a ``setup`` body with a field the service does not know, as Google words it.

    ``backend`` is the API the emulator speaks: Vertex AI knows ``explicitVadSignal`` and
    ``sessionResumption.transparent``, the Developer API does not. Google names the first
    unknown field as sent and its parent by snake_case path: ``Invalid JSON payload received.
    Unknown name "x" at 'setup.generation_config': Cannot find field.``
    Raises :class:`RequestRejectedError` (1007).
    """
    _check_fields(setup, _VERTEX_SETUP if backend == "vertex" else _SETUP, "setup")


def _check_fields(value: Any, message: _Message, path: str) -> None:
    if message.repeated and isinstance(value, list):
        for index, item in enumerate(value):
            _check_fields(item, _Message(message.fields), f"{path}[{index}]")
        return
    if not isinstance(value, dict):
        raise RequestRejectedError(CLOSE_INVALID, INVALID_ARGUMENT)
    for key, item in value.items():
        name = camel_case(key)
        if name not in message.fields:
            raise RequestRejectedError(
                CLOSE_INVALID,
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{path}': "
                "Cannot find field.",
            )
        child = message.fields[name]
        if child is not None and item is not None:
            _check_fields(item, child, f"{path}.{snake_case(name)}")


def check_one_response_modality(modalities: list[Any]) -> None:
    """Refuse ``responseModalities`` naming both TEXT and AUDIO, as Google does: a session
    answers in one modality, text or audio, never both (the Live API capabilities guide,
    "Response modalities": https://ai.google.dev/gemini-api/docs/live-guide). Raises
    :class:`RequestRejectedError` with 1007, the code of Google's other setup errors; the guide
    gives no wording for this one, so the reason is the emulator's own."""
    if len(set(modalities)) > 1:
        raise RequestRejectedError(
            CLOSE_INVALID,
            "Multiple response modalities are not supported: set one of TEXT or AUDIO in "
            "'setup.generation_config.response_modalities'.",
        )


#: A setup the service accepts but then never completes (``setupComplete`` never comes): what
#: users report of ``gemini-3.1-flash-live-preview`` asked for affective dialog.
HANG: Final = "hang"


def check_model_capabilities(setup: Mapping[str, Any], backend: Backend = "gemini") -> str | None:
    """Refuse what the setup's model does not accept, as :mod:`agent.live.models` (the bridge's
    own table, from Google's model pages) says for ``backend``, the API the emulator speaks
    (a model has one row per backend). Returns
    :data:`HANG` for a setup the service leaves without ``setupComplete``, else None; raises
    :class:`RequestRejectedError` (1007) for one it refuses. Google words most of these refusals
    nowhere the emulator could copy from: the reasons are the emulator's own."""
    model = str(setup.get("model", ""))
    row = capabilities(model, backend)
    if row is None:
        return None
    name = model_id(model)
    generation = setup.get("generationConfig") or {}
    if generation.get("enableAffectiveDialog") is not None and row.affective_dialog == "no":
        if name == "gemini-3.1-flash-live-preview":
            return HANG
        _refuse(f"enable_affective_dialog is not supported by {name}.")
    proactive = (setup.get("proactivity") or {}).get("proactiveAudio")
    if proactive is not None:
        if row.proactive_audio == "no":
            _refuse(f"proactive_audio is not supported by {name}.")
        if row.proactive_audio == "always_on" and not proactive:
            _refuse(f"proactive_audio cannot be disabled for {name}.")
    if generation.get("responseModalities") == ["TEXT"] and not row.text_output:
        _refuse(f"The TEXT response modality is not supported by {name}.")
    thinking = generation.get("thinkingConfig") or {}
    if "thinkingLevel" in thinking and not row.thinking_level:
        _refuse(f"thinking_level is not supported by {name}.")
    if "thinkingBudget" in thinking and not row.thinking_budget:
        _refuse(f"thinking_budget is not supported by {name}.")
    for tool in setup.get("tools") or ():
        for declaration in (tool or {}).get("functionDeclarations") or ():
            behavior = (declaration or {}).get("behavior")
            if behavior == "NON_BLOCKING" and not row.non_blocking_functions:
                _refuse(f"NON_BLOCKING function calling is not supported by {name}.")
            if behavior == "BLOCKING" and not row.blocking_functions:
                _refuse(f"BLOCKING function calling is not supported by {name}.")
    return None


def _refuse(reason: str) -> None:
    raise RequestRejectedError(CLOSE_INVALID, reason)


def model_default_behavior(setup: Mapping[str, Any], backend: Backend = "gemini") -> str:
    """How the setup's model runs a function declared without ``behavior`` on ``backend`` (the
    table's ``default_behavior``; BLOCKING for a model it does not list)."""
    row = capabilities(str(setup.get("model", "")), backend)
    return "BLOCKING" if row is None else row.default_behavior


def check_context_update(model: str, backend: Backend = "gemini") -> None:
    """Refuse a ``contextUpdate`` on a model that does not take one mid-session (1007; the
    reason is the emulator's own, Google words it nowhere). A model the table does not list
    takes it: the service has the last word, and the emulator is not the service."""
    row = capabilities(model, backend)
    if row is not None and not row.context_update:
        _refuse(f"contextUpdate is not supported by {model_id(model)}: reconnect with a new setup.")


#: ``projects/{p}/locations/{l}/publishers/google/models/{m}``: a Google model on Vertex AI.
_VERTEX_MODEL: Final = re.compile(
    r"projects/[^/]+/locations/[^/]+/publishers/google/models/(?P<model>[^/]+)"
)


def vertex_model_name(model: str, served: frozenset[str] | None) -> str:
    """The bare name of the Google model a Vertex AI setup names, or a refusal (1008).

    A model is unknown when the name is not a publisher model resource name, when it is retired,
    when ``served``
    (bare names) leaves it out, or when the capability table lists it for the Developer API
    only. Vertex's REST API words an unknown model "Publisher Model `projects/...` was not
    found or your project does not have access to it." (as users quote it, e.g.
    https://github.com/google/adk-python/issues/833); the Live socket's close code for it is
    documented nowhere, so the emulator closes 1008 as the Developer API does.
    """
    match = _VERTEX_MODEL.fullmatch(model)
    name = match["model"] if match else ""
    known = (
        bool(name) and f"models/{name}" not in RETIRED_MODELS and (served is None or name in served)
    )
    if known and served is None:
        # Without a list, every model but one the table has for the Developer API alone.
        known = capabilities(name, "vertex") is not None or capabilities(name, "gemini") is None
    if not known:
        raise RequestRejectedError(
            CLOSE_POLICY,
            f"Publisher Model `{model}` was not found or your project does not have access to it.",
        )
    return name
