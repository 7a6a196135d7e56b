"""The Live messages the bridge sends against the official ``google-genai`` SDK's own.

For each agent configuration below, the ``setup`` message :func:`agent.live.protocol.build_setup`
produces must equal, field for field, the one ``client.aio.live.connect`` would send for the same
configuration. The SDK's request is rebuilt exactly as ``AsyncLive.connect`` builds it
(``google/genai/live.py``): ``_t_live_connect_config``, then ``_LiveConnectParameters_to_mldev``
(Developer API) or ``_to_vertex`` (Vertex AI), ``convert_to_dict``, ``config`` dropped, the model
set, and on Vertex the ``projects/.../locations/...`` prefix and the default AUDIO modality. No
socket is opened.

The SDK mixes snake_case and camelCase (``speechConfig.voice_config``,
``realtimeInputConfig.automatic_activity_detection``), which the service accepts alike, so both
sides are normalised to camelCase before comparing, except user data: JSON schemas, the property
names of an OpenAPI schema, function responses.

Where the SDK and docs/live-api-protocol.md disagree, these tests follow the SDK:
* tools: every function is merged into ONE ``functionDeclarations`` entry placed after the
  built-in tools (the doc's example lists it first);
* ``thinkingLevel`` also has ``XHIGH``;
* ``contextWindowCompression`` with no tokens is ``{"slidingWindow": {}}`` (the mechanism must be
  named; the doc shows only the full form).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from google import genai
from google.genai import _common, _live_converters, live, types
from google.genai import _transformers as t

from agent.config.models import (
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
from agent.live import protocol
from agent.live.protocol import FunctionResult
from agent.live.targets import VertexTarget

PROJECT = "acme-prod"
LOCATION = "us-central1"
PROMPT = "You are a phone agent. Be brief."

# A JSON Schema whose property names look like field names: normalisation must not touch them.
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "description": "Like A17"},
        "max_items": {"type": "integer", "minimum": 1},
        "include_history": {"type": "boolean"},
    },
    "required": ["order_id"],
    "additionalProperties": False,
}
# The same non-blocking function, as the bridge declares it and as the SDK does.
LOOKUP_ORDER = FunctionDeclaration(
    "lookup_order",
    "Find an order and its status.",
    parameters_json_schema=ORDER_SCHEMA,
    behavior="NON_BLOCKING",
)
SDK_LOOKUP_ORDER = types.FunctionDeclaration(
    name="lookup_order",
    description="Find an order and its status.",
    parameters_json_schema=ORDER_SCHEMA,
    behavior=types.Behavior.NON_BLOCKING,
)
# The API's OpenAPI subset, in the form the SDK's Schema model produces (types in capitals).
TRANSFER_PARAMETERS: dict[str, Any] = {
    "type": "OBJECT",
    "properties": {
        "department_name": {"type": "STRING", "enum": ["sales", "billing"]},
        "call_back_at": {"anyOf": [{"type": "STRING"}, {"type": "NULL"}]},
    },
    "required": ["department_name"],
}

SENT_VERBATIM = frozenset({"parametersJsonSchema", "responseJsonSchema", "response", "args"})
NAME_MAPS = frozenset({"properties"})


@pytest.fixture(autouse=True)
def _no_sdk_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK reads keys, projects and versions from the environment: keep it out."""
    for name in (
        "GOOGLE_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_GENAI_USE_ENTERPRISE",
        "GOOGLE_GENAI_API_VERSION",
    ):
        monkeypatch.delenv(name, raising=False)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def normalise(value: Any) -> Any:
    """Field names in camelCase at every level; user data (schemas, responses) as sent."""
    if isinstance(value, list):
        return [normalise(item) for item in value]
    if not isinstance(value, dict):
        return value
    result: dict[str, Any] = {}
    for key, item in value.items():
        name = camel(key)
        if name in SENT_VERBATIM:
            result[name] = item
        elif name in NAME_MAPS and isinstance(item, dict):
            result[name] = {prop: normalise(schema) for prop, schema in item.items()}
        else:
            result[name] = normalise(item)
    return result


def wire(message: dict[str, Any]) -> dict[str, Any]:
    """What the server parses: the JSON text round trip (enums become strings, tuples lists)."""
    parsed: dict[str, Any] = json.loads(json.dumps(message))
    return parsed


async def sdk_setup(
    model: str, config: types.LiveConnectConfig, *, vertex: bool = False
) -> dict[str, Any]:
    """The ``setup`` message ``AsyncLive.connect`` would send, built as it builds it."""
    if vertex:
        client = genai.Client(vertexai=True, project=PROJECT, location=LOCATION)
    else:
        client = genai.Client(api_key="test-key")
    api_client = client._api_client
    transformed_model = t.t_model(api_client, model)
    parameter_model = await live._t_live_connect_config(api_client, config)
    if vertex:
        # connect()'s project/location branch: a publisher model gets the project path.
        if transformed_model.startswith("publishers/"):
            transformed_model = f"projects/{PROJECT}/locations/{LOCATION}/" + transformed_model
        converter = _live_converters._LiveConnectParameters_to_vertex
    else:
        converter = _live_converters._LiveConnectParameters_to_mldev
    request = _common.convert_to_dict(
        converter(
            api_client=api_client,
            from_object=types.LiveConnectParameters(
                model=transformed_model, config=parameter_model
            ).model_dump(exclude_none=True),
        )
    )
    del request["config"]
    message = wire(_common.encode_unserializable_types(request))
    setup: dict[str, Any] = message["setup"]
    setup["model"] = transformed_model
    if vertex and "responseModalities" not in setup.get("generationConfig", {}):
        setup.setdefault("generationConfig", {})["responseModalities"] = ["AUDIO"]
    return message


def voice(name: str, language: str | None = None) -> types.SpeechConfig:
    return types.SpeechConfig(
        voice_config=types.VoiceConfig(
            prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=name)
        ),
        language_code=language,
    )


def default_sdk_fields() -> dict[str, Any]:
    """The SDK spelling of what every AgentConfig sends unless told otherwise."""
    return {
        "response_modalities": [types.Modality.AUDIO],
        "input_audio_transcription": types.AudioTranscriptionConfig(),
        "output_audio_transcription": types.AudioTranscriptionConfig(),
        "context_window_compression": types.ContextWindowCompressionConfig(
            sliding_window=types.SlidingWindow()
        ),
        "session_resumption": types.SessionResumptionConfig(),
    }


def sdk_config(**fields: Any) -> types.LiveConnectConfig:
    merged = default_sdk_fields()
    merged.update(fields)
    return types.LiveConnectConfig(**{k: v for k, v in merged.items() if v is not None})


# Each case: an id, our agent, the SDK's config for the same thing, and a resumption handle.
Case = tuple[str, AgentConfig, types.LiveConnectConfig, str | None]

DEVELOPER_CASES: list[Case] = [
    (
        "defaults",
        AgentConfig(system_instruction=PROMPT),
        sdk_config(speech_config=voice("Puck"), system_instruction=PROMPT),
        None,
    ),
    (
        "vad-disabled-no-interruption-all-input-resumed",
        AgentConfig(
            model="gemini-3.8-live",
            system_instruction=PROMPT,
            vad=VadConfig(disabled=True),
            activity_handling="NO_INTERRUPTION",
            turn_coverage="TURN_INCLUDES_ALL_INPUT",
        ),
        sdk_config(
            speech_config=voice("Puck"),
            system_instruction=PROMPT,
            realtime_input_config=types.RealtimeInputConfig(
                automatic_activity_detection=types.AutomaticActivityDetection(disabled=True),
                activity_handling=types.ActivityHandling.NO_INTERRUPTION,
                turn_coverage=types.TurnCoverage.TURN_INCLUDES_ALL_INPUT,
            ),
            session_resumption=types.SessionResumptionConfig(handle="h-resume-1"),
        ),
        "h-resume-1",
    ),
    (
        "vad-low-start-high-end-timings-voice-language",
        AgentConfig(
            voice="Kore",
            language="en-GB",
            system_instruction=PROMPT,
            vad=VadConfig(
                start_sensitivity="START_SENSITIVITY_LOW",
                end_sensitivity="END_SENSITIVITY_HIGH",
                prefix_padding_ms=20,
                silence_duration_ms=100,
            ),
            activity_handling="START_OF_ACTIVITY_INTERRUPTS",
            turn_coverage="TURN_INCLUDES_ONLY_ACTIVITY",
        ),
        sdk_config(
            speech_config=voice("Kore", "en-GB"),
            system_instruction=PROMPT,
            realtime_input_config=types.RealtimeInputConfig(
                automatic_activity_detection=types.AutomaticActivityDetection(
                    start_of_speech_sensitivity=types.StartSensitivity.START_SENSITIVITY_LOW,
                    end_of_speech_sensitivity=types.EndSensitivity.END_SENSITIVITY_HIGH,
                    prefix_padding_ms=20,
                    silence_duration_ms=100,
                ),
                activity_handling=types.ActivityHandling.START_OF_ACTIVITY_INTERRUPTS,
                turn_coverage=types.TurnCoverage.TURN_INCLUDES_ONLY_ACTIVITY,
            ),
        ),
        None,
    ),
    (
        "vad-high-start-low-end",
        AgentConfig(
            system_instruction=PROMPT,
            vad=VadConfig(
                start_sensitivity="START_SENSITIVITY_HIGH", end_sensitivity="END_SENSITIVITY_LOW"
            ),
        ),
        sdk_config(
            speech_config=voice("Puck"),
            system_instruction=PROMPT,
            realtime_input_config=types.RealtimeInputConfig(
                automatic_activity_detection=types.AutomaticActivityDetection(
                    start_of_speech_sensitivity=types.StartSensitivity.START_SENSITIVITY_HIGH,
                    end_of_speech_sensitivity=types.EndSensitivity.END_SENSITIVITY_LOW,
                )
            ),
        ),
        None,
    ),
    (
        "generation-parameters-and-compression-tokens",
        AgentConfig(
            system_instruction=PROMPT,
            temperature=0.6,
            top_p=0.9,
            top_k=32,
            max_output_tokens=1024,
            seed=1234,
            media_resolution="MEDIA_RESOLUTION_LOW",
            context_window_compression=ContextWindowCompressionConfig(
                trigger_tokens=25_600, sliding_window=SlidingWindow(target_tokens=12_800)
            ),
        ),
        sdk_config(
            speech_config=voice("Puck"),
            system_instruction=PROMPT,
            temperature=0.6,
            top_p=0.9,
            top_k=32,
            max_output_tokens=1024,
            seed=1234,
            media_resolution=types.MediaResolution.MEDIA_RESOLUTION_LOW,
            context_window_compression=types.ContextWindowCompressionConfig(
                trigger_tokens=25_600, sliding_window=types.SlidingWindow(target_tokens=12_800)
            ),
        ),
        None,
    ),
    (
        "compression-trigger-only",
        AgentConfig(
            system_instruction=PROMPT,
            context_window_compression=ContextWindowCompressionConfig(trigger_tokens=100_000),
        ),
        sdk_config(
            speech_config=voice("Puck"),
            system_instruction=PROMPT,
            context_window_compression=types.ContextWindowCompressionConfig(
                trigger_tokens=100_000, sliding_window=types.SlidingWindow()
            ),
        ),
        None,
    ),
    (
        "proactive-audio-affective-dialog-history",
        AgentConfig(
            api_version="v1alpha",
            system_instruction=PROMPT,
            proactivity=ProactivityConfig(proactive_audio=True),
            enable_affective_dialog=True,
            history_config=HistoryConfig(initial_history_in_client_content=True),
        ),
        sdk_config(
            speech_config=voice("Puck"),
            system_instruction=PROMPT,
            proactivity=types.ProactivityConfig(proactive_audio=True),
            enable_affective_dialog=True,
            history_config=types.HistoryConfig(initial_history_in_client_content=True),
        ),
        None,
    ),
    (
        "thinking-budget",
        AgentConfig(
            system_instruction=PROMPT,
            thinking_config=ThinkingConfig(thinking_budget=512, include_thoughts=True),
        ),
        sdk_config(
            speech_config=voice("Puck"),
            system_instruction=PROMPT,
            thinking_config=types.ThinkingConfig(thinking_budget=512, include_thoughts=True),
        ),
        None,
    ),
    (
        "thinking-level",
        AgentConfig(
            system_instruction=PROMPT,
            thinking_config=ThinkingConfig(thinking_level="MINIMAL", include_thoughts=False),
        ),
        sdk_config(
            speech_config=voice("Puck"),
            system_instruction=PROMPT,
            thinking_config=types.ThinkingConfig(
                thinking_level=types.ThinkingLevel.MINIMAL, include_thoughts=False
            ),
        ),
        None,
    ),
    (
        "text-modality-nothing-else",
        AgentConfig(
            response_modality="TEXT",
            voice=None,
            system_instruction=None,
            input_transcription=False,
            output_transcription=False,
            context_window_compression=None,
            session_resumption=None,
        ),
        types.LiveConnectConfig(response_modalities=[types.Modality.TEXT]),
        None,
    ),
    (
        "every-tool-kind",
        AgentConfig(
            system_instruction=PROMPT,
            tools=ToolsConfig(
                function_declarations=(
                    LOOKUP_ORDER,
                    FunctionDeclaration(
                        "transfer_call",
                        "Transfer the caller to a department.",
                        parameters=TRANSFER_PARAMETERS,
                        behavior="BLOCKING",
                    ),
                    FunctionDeclaration("end_call", "Hang up politely."),
                ),
                google_search=True,
                code_execution=True,
                url_context=True,
            ),
        ),
        sdk_config(
            speech_config=voice("Puck"),
            system_instruction=PROMPT,
            tools=[
                types.Tool(
                    function_declarations=[
                        SDK_LOOKUP_ORDER,
                        types.FunctionDeclaration(
                            name="transfer_call",
                            description="Transfer the caller to a department.",
                            parameters=types.Schema.model_validate(TRANSFER_PARAMETERS),
                            behavior=types.Behavior.BLOCKING,
                        ),
                    ]
                ),
                types.Tool(google_search=types.GoogleSearch()),
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(name="end_call", description="Hang up politely.")
                    ]
                ),
                types.Tool(code_execution=types.ToolCodeExecution()),
                types.Tool(url_context=types.UrlContext()),
            ],
        ),
        None,
    ),
    (
        "one-non-blocking-function-gemini-3.8",
        AgentConfig(
            model="models/gemini-3.8-live",
            system_instruction=PROMPT,
            tools=ToolsConfig(
                function_declarations=(
                    FunctionDeclaration(
                        "check_balance",
                        parameters_json_schema={"type": "object", "properties": {}},
                        behavior="NON_BLOCKING",
                    ),
                )
            ),
        ),
        sdk_config(
            speech_config=voice("Puck"),
            system_instruction=PROMPT,
            tools=[
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name="check_balance",
                            parameters_json_schema={"type": "object", "properties": {}},
                            behavior=types.Behavior.NON_BLOCKING,
                        )
                    ]
                )
            ],
        ),
        None,
    ),
]

VERTEX_CASES: list[Case] = [
    (
        "vertex-defaults",
        AgentConfig(model="gemini-live-2.5-flash-native-audio", system_instruction=PROMPT),
        sdk_config(speech_config=voice("Puck"), system_instruction=PROMPT),
        None,
    ),
    (
        "vertex-only-fields-resumed",
        AgentConfig(
            model="gemini-live-2.5-flash-native-audio",
            voice="Charon",
            language="fr-FR",
            system_instruction=PROMPT,
            explicit_vad_signal=True,
            session_resumption=SessionResumptionConfig(transparent=True),
            vad=VadConfig(start_sensitivity="START_SENSITIVITY_HIGH", silence_duration_ms=500),
        ),
        sdk_config(
            speech_config=voice("Charon", "fr-FR"),
            system_instruction=PROMPT,
            explicit_vad_signal=True,
            session_resumption=types.SessionResumptionConfig(handle="v-h-1", transparent=True),
            realtime_input_config=types.RealtimeInputConfig(
                automatic_activity_detection=types.AutomaticActivityDetection(
                    start_of_speech_sensitivity=types.StartSensitivity.START_SENSITIVITY_HIGH,
                    silence_duration_ms=500,
                )
            ),
        ),
        "v-h-1",
    ),
    (
        "vertex-tools-thinking-compression",
        AgentConfig(
            model="gemini-3.8-live",
            system_instruction=PROMPT,
            thinking_config=ThinkingConfig(thinking_budget=0),
            context_window_compression=ContextWindowCompressionConfig(
                trigger_tokens=50_000, sliding_window=SlidingWindow(target_tokens=20_000)
            ),
            tools=ToolsConfig(
                function_declarations=(
                    FunctionDeclaration(
                        "lookup_order", parameters_json_schema=ORDER_SCHEMA, behavior="BLOCKING"
                    ),
                ),
                google_search=True,
            ),
        ),
        sdk_config(
            speech_config=voice("Puck"),
            system_instruction=PROMPT,
            thinking_config=types.ThinkingConfig(thinking_budget=0),
            context_window_compression=types.ContextWindowCompressionConfig(
                trigger_tokens=50_000, sliding_window=types.SlidingWindow(target_tokens=20_000)
            ),
            tools=[
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name="lookup_order",
                            parameters_json_schema=ORDER_SCHEMA,
                            behavior=types.Behavior.BLOCKING,
                        )
                    ]
                ),
                types.Tool(google_search=types.GoogleSearch()),
            ],
        ),
        None,
    ),
    (
        "vertex-text-no-extras",
        AgentConfig(
            model="gemini-3.8-live",
            response_modality="TEXT",
            voice=None,
            system_instruction=None,
            input_transcription=False,
            output_transcription=False,
            context_window_compression=None,
            session_resumption=None,
        ),
        types.LiveConnectConfig(response_modalities=[types.Modality.TEXT]),
        None,
    ),
]


def _ids(cases: Sequence[Case]) -> list[str]:
    return [case[0] for case in cases]


@pytest.mark.parametrize(
    ("name", "agent", "config", "handle"), DEVELOPER_CASES, ids=_ids(DEVELOPER_CASES)
)
async def test_developer_api_setup_equals_the_sdks(
    name: str, agent: AgentConfig, config: types.LiveConnectConfig, handle: str | None
) -> None:
    ours = wire(protocol.build_setup(agent, resumption_handle=handle))
    sdk = await sdk_setup(agent.model, config)
    assert normalise(ours) == normalise(sdk)
    # Ours is canonical already: normalising changes nothing.
    assert normalise(ours) == ours


@pytest.mark.parametrize(
    ("name", "agent", "config", "handle"), VERTEX_CASES, ids=_ids(VERTEX_CASES)
)
async def test_vertex_setup_equals_the_sdks(
    name: str, agent: AgentConfig, config: types.LiveConnectConfig, handle: str | None
) -> None:
    target = VertexTarget(PROJECT, LOCATION, credentials_provider=_NoTokens())
    ours = wire(
        protocol.build_setup(
            agent,
            resumption_handle=handle,
            model_path=target.model_path(agent.model),
            backend=target.backend,
        )
    )
    sdk = await sdk_setup(agent.model, config, vertex=True)
    assert normalise(ours) == normalise(sdk)
    assert normalise(ours) == ours


def test_the_cases_cover_every_field() -> None:
    """Every setup field the bridge can send appears in at least one case above."""
    seen: set[str] = set()

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in SENT_VERBATIM or key in NAME_MAPS:
                    seen.add(f"{path}.{key}")
                    continue
                walk(item, f"{path}.{key}")
                seen.add(f"{path}.{key}")
        elif isinstance(value, list):
            for item in value:
                walk(item, path)

    for _, agent, _, handle in DEVELOPER_CASES:
        walk(protocol.build_setup(agent, resumption_handle=handle), "")
    for _, agent, _, handle in VERTEX_CASES:
        walk(protocol.build_setup(agent, resumption_handle=handle, backend="vertex"), "")
    g, r, a = ".setup.generationConfig", ".setup.realtimeInputConfig", "automaticActivityDetection"
    expected = {
        f"{g}.responseModalities",
        f"{g}.temperature",
        f"{g}.topP",
        f"{g}.topK",
        f"{g}.maxOutputTokens",
        f"{g}.seed",
        f"{g}.mediaResolution",
        f"{g}.speechConfig.voiceConfig.prebuiltVoiceConfig.voiceName",
        f"{g}.speechConfig.languageCode",
        f"{g}.thinkingConfig.thinkingBudget",
        f"{g}.thinkingConfig.includeThoughts",
        f"{g}.thinkingConfig.thinkingLevel",
        f"{g}.enableAffectiveDialog",
        ".setup.systemInstruction.parts.text",
        ".setup.tools.googleSearch",
        ".setup.tools.codeExecution",
        ".setup.tools.urlContext",
        ".setup.tools.functionDeclarations.name",
        ".setup.tools.functionDeclarations.description",
        ".setup.tools.functionDeclarations.parametersJsonSchema",
        ".setup.tools.functionDeclarations.parameters",
        ".setup.tools.functionDeclarations.behavior",
        f"{r}.{a}.disabled",
        f"{r}.{a}.startOfSpeechSensitivity",
        f"{r}.{a}.endOfSpeechSensitivity",
        f"{r}.{a}.prefixPaddingMs",
        f"{r}.{a}.silenceDurationMs",
        f"{r}.activityHandling",
        f"{r}.turnCoverage",
        ".setup.explicitVadSignal",
        ".setup.inputAudioTranscription",
        ".setup.outputAudioTranscription",
        ".setup.contextWindowCompression.triggerTokens",
        ".setup.contextWindowCompression.slidingWindow.targetTokens",
        ".setup.sessionResumption.handle",
        ".setup.sessionResumption.transparent",
        ".setup.proactivity.proactiveAudio",
        ".setup.historyConfig.initialHistoryInClientContent",
    }
    assert expected <= seen, sorted(expected - seen)
    # Both values of every enum-like choice appear somewhere.
    sent = json.dumps(
        [protocol.build_setup(a, backend="vertex") for _, a, _, _ in DEVELOPER_CASES + VERTEX_CASES]
    )
    for value in (
        "START_SENSITIVITY_LOW",
        "START_SENSITIVITY_HIGH",
        "END_SENSITIVITY_LOW",
        "END_SENSITIVITY_HIGH",
        "NO_INTERRUPTION",
        "START_OF_ACTIVITY_INTERRUPTS",
        "TURN_INCLUDES_ALL_INPUT",
        "TURN_INCLUDES_ONLY_ACTIVITY",
        '"BLOCKING"',
        '"NON_BLOCKING"',
        '"TEXT"',
        '"AUDIO"',
    ):
        assert value in sent, value


class _NoTokens:
    """Building a setup never needs a token."""

    quota_project_id: str | None = None

    async def access_token(self) -> str:
        raise AssertionError("no token should be requested to build a setup")


# --------------------------------------------------------------------------------------------
# Client messages for tools and history, against AsyncSession.send_tool_response /
# send_client_content (Developer API path)
# --------------------------------------------------------------------------------------------


def sdk_tool_response(responses: Sequence[types.FunctionResponse]) -> dict[str, Any]:
    """What ``AsyncSession.send_tool_response`` sends."""
    body = _common.convert_to_dict(t.t_tool_response(list(responses)), convert_keys=True)
    return wire({"tool_response": _common.encode_unserializable_types(body)})


def sdk_client_content(turns: list[types.Content], turn_complete: bool) -> dict[str, Any]:
    """What ``AsyncSession.send_client_content`` sends."""
    content = t.t_client_content(turns, turn_complete).model_dump(mode="json", exclude_none=True)
    return wire(
        {"client_content": _live_converters._LiveClientContent_to_mldev(from_object=content)}
    )


def test_tool_response_equals_the_sdks() -> None:
    ours = json.loads(
        protocol.tool_response_message(
            [
                FunctionResult(
                    "function-call-1",
                    "lookup_order",
                    {"result": {"order_id": "A17", "status_code": "shipped"}},
                    scheduling="INTERRUPT",
                    will_continue=True,
                ),
                FunctionResult("function-call-2", "end_call", {"result": "ok"}, "SILENT"),
                FunctionResult(
                    "function-call-3", "check_balance", {"error": "timeout"}, "WHEN_IDLE"
                ),
                FunctionResult("function-call-4", "noop", {}),
            ]
        )
    )
    sdk = sdk_tool_response(
        [
            types.FunctionResponse(
                id="function-call-1",
                name="lookup_order",
                response={"result": {"order_id": "A17", "status_code": "shipped"}},
                scheduling=types.FunctionResponseScheduling.INTERRUPT,
                will_continue=True,
            ),
            types.FunctionResponse(
                id="function-call-2",
                name="end_call",
                response={"result": "ok"},
                scheduling=types.FunctionResponseScheduling.SILENT,
            ),
            types.FunctionResponse(
                id="function-call-3",
                name="check_balance",
                response={"error": "timeout"},
                scheduling=types.FunctionResponseScheduling.WHEN_IDLE,
            ),
            types.FunctionResponse(id="function-call-4", name="noop", response={}),
        ]
    )
    assert normalise(ours) == normalise(sdk)
    assert normalise(ours) == ours


@pytest.mark.parametrize("turn_complete", [False, True])
def test_history_equals_the_sdks(turn_complete: bool) -> None:
    turns = [("user", "Where is my order A17?"), ("model", "It shipped today."), ("user", "Thanks")]
    ours = json.loads(protocol.history_message(turns, turn_complete=turn_complete))
    sdk = sdk_client_content(
        [types.Content(role=role, parts=[types.Part(text=text)]) for role, text in turns],
        turn_complete,
    )
    assert normalise(ours) == normalise(sdk)
    assert normalise(ours) == ours


def sdk_context_update(
    system_instruction: str | None, tools: list[types.ToolUnion] | None
) -> dict[str, Any]:
    """What ``AsyncSession.send_context_update`` sends to the Developer API."""
    client = genai.Client(api_key="test-key")
    update = types.LiveClientContextUpdate(
        system_instruction=system_instruction,
        tools=None if tools is None else types.LiveClientContextUpdateTools(tools=tools),
    )
    message = _live_converters._LiveClientMessage_to_mldev(
        client._api_client, types.LiveClientMessage(context_update=update)
    )
    return wire(_common.encode_unserializable_types(_common.convert_to_dict(message)))


def test_context_update_equals_the_sdks() -> None:
    ours = json.loads(
        protocol.context_update_message(
            system_instruction=PROMPT,
            tools=ToolsConfig(function_declarations=(LOOKUP_ORDER,)),
        )
    )
    sdk = sdk_context_update(
        PROMPT,
        [types.Tool(function_declarations=[SDK_LOOKUP_ORDER])],
    )
    # The SDK turns a bare string into a user-role Content, as the setup's instruction.
    assert normalise(ours) == normalise(sdk)
    assert normalise(ours) == ours
    cleared = json.loads(protocol.context_update_message(tools=ToolsConfig()))
    assert normalise(cleared) == normalise(sdk_context_update(None, []))
