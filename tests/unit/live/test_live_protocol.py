"""The Live protocol core, fed literal frames: no socket, no event loop."""

from __future__ import annotations

import base64
import json

import pytest

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
from agent.errors import ConfigError
from agent.live import protocol
from agent.live.protocol import (
    FunctionCall,
    FunctionResult,
    GenerationComplete,
    GoAway,
    GroundingMetadata,
    InputTranscription,
    InteractionStatusChanged,
    InterimInputTranscription,
    Interrupted,
    LiveProtocolError,
    ModelAudio,
    ModelText,
    OutputTranscription,
    ResumptionHandle,
    SetupComplete,
    ToolCallCancelled,
    ToolCallRequested,
    TurnComplete,
    UnknownFields,
    UsageReported,
    VoiceActivityReported,
    WaitingForInput,
    WireProfile,
    build_setup,
    context_update_message,
    tool_response_message,
)


def test_live_url_joins_base_and_versioned_path() -> None:
    assert protocol.live_url("wss://generativelanguage.googleapis.com/", "v1beta") == (
        "wss://generativelanguage.googleapis.com/ws/"
        "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    )


def test_setup_carries_the_agents_choices_in_camel_case() -> None:
    agent = AgentConfig(
        model="gemini-3.8-live",
        voice="Kore",
        language="en-GB",
        system_instruction="Be brief.",
        vad=VadConfig(
            start_sensitivity="START_SENSITIVITY_LOW",
            end_sensitivity="END_SENSITIVITY_HIGH",
            prefix_padding_ms=40,
            silence_duration_ms=600,
        ),
    )
    assert protocol.build_setup(agent, resumption_handle="h-1") == {
        "setup": {
            "model": "models/gemini-3.8-live",
            "generationConfig": {
                "responseModalities": ["AUDIO"],
                "speechConfig": {
                    "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}},
                    "languageCode": "en-GB",
                },
            },
            "systemInstruction": {"parts": [{"text": "Be brief."}], "role": "user"},
            "realtimeInputConfig": {
                "automaticActivityDetection": {
                    "startOfSpeechSensitivity": "START_SENSITIVITY_LOW",
                    "endOfSpeechSensitivity": "END_SENSITIVITY_HIGH",
                    "prefixPaddingMs": 40,
                    "silenceDurationMs": 600,
                }
            },
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
            "contextWindowCompression": {"slidingWindow": {}},
            "sessionResumption": {"handle": "h-1"},
        }
    }


def test_default_agent_turns_on_compression_and_resumption_and_nothing_else() -> None:
    assert json.loads(protocol.setup_message(AgentConfig(system_instruction=None))) == {
        "setup": {
            "model": "models/gemini-2.5-flash-native-audio-preview-12-2025",
            "generationConfig": {
                "responseModalities": ["AUDIO"],
                "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Puck"}}},
            },
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
            "contextWindowCompression": {"slidingWindow": {}},
            "sessionResumption": {},
        }
    }


def test_setup_leaves_unset_fields_to_the_service() -> None:
    setup = protocol.build_setup(
        AgentConfig(
            voice=None,
            input_transcription=False,
            output_transcription=False,
            context_window_compression=None,
            session_resumption=None,
        )
    )["setup"]
    assert "speechConfig" not in setup["generationConfig"]
    assert "realtimeInputConfig" not in setup
    assert "inputAudioTranscription" not in setup
    assert "contextWindowCompression" not in setup
    assert "sessionResumption" not in setup
    assert "tools" not in setup


def test_a_resumption_handle_is_sent_even_with_resumption_configured_off() -> None:
    setup = protocol.build_setup(AgentConfig(session_resumption=None), resumption_handle="h-9")
    assert setup["setup"]["sessionResumption"] == {"handle": "h-9"}


def test_setup_with_every_field_set() -> None:
    schema = {
        "type": "object",
        "properties": {"order_id": {"type": "string"}, "snake_case_name": {"type": "integer"}},
        "required": ["order_id"],
        "additionalProperties": False,
    }
    agent = AgentConfig(
        name="everything",
        model="models/gemini-3.8-live",
        api_version="v1alpha",
        response_modality="TEXT",
        voice="Aoede",
        language="de-DE",
        system_instruction="Sei kurz.",
        temperature=0.7,
        top_p=0.95,
        top_k=40,
        max_output_tokens=512,
        seed=42,
        media_resolution="MEDIA_RESOLUTION_LOW",
        thinking_config=ThinkingConfig(thinking_budget=1024, include_thoughts=True),
        enable_affective_dialog=True,
        vad=VadConfig(disabled=True),
        activity_handling="NO_INTERRUPTION",
        turn_coverage="TURN_INCLUDES_ALL_INPUT",
        input_transcription=True,
        output_transcription=False,
        context_window_compression=ContextWindowCompressionConfig(
            trigger_tokens=25600, sliding_window=SlidingWindow(target_tokens=12800)
        ),
        session_resumption=SessionResumptionConfig(),
        proactivity=ProactivityConfig(proactive_audio=True),
        history_config=HistoryConfig(initial_history_in_client_content=True),
        tools=ToolsConfig(
            function_declarations=(
                FunctionDeclaration(
                    "lookup_order",
                    "Find an order by its id.",
                    parameters_json_schema=schema,
                    behavior="NON_BLOCKING",
                ),
                FunctionDeclaration(
                    "transfer",
                    parameters={"type": "OBJECT", "properties": {"to": {"type": "STRING"}}},
                    behavior="BLOCKING",
                ),
                FunctionDeclaration("hang_up"),
            ),
            google_search=True,
            code_execution=True,
            url_context=True,
        ),
    )
    assert protocol.build_setup(agent) == {
        "setup": {
            "model": "models/gemini-3.8-live",
            "generationConfig": {
                "responseModalities": ["TEXT"],
                "temperature": 0.7,
                "topP": 0.95,
                "topK": 40,
                "maxOutputTokens": 512,
                "seed": 42,
                "mediaResolution": "MEDIA_RESOLUTION_LOW",
                "speechConfig": {
                    "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Aoede"}},
                    "languageCode": "de-DE",
                },
                "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True},
                "enableAffectiveDialog": True,
            },
            "systemInstruction": {"parts": [{"text": "Sei kurz."}], "role": "user"},
            "tools": [
                {"googleSearch": {}},
                {"codeExecution": {}},
                {"urlContext": {}},
                {
                    "functionDeclarations": [
                        {
                            "name": "lookup_order",
                            "description": "Find an order by its id.",
                            "parametersJsonSchema": {
                                "type": "object",
                                "properties": {
                                    "order_id": {"type": "string"},
                                    "snake_case_name": {"type": "integer"},
                                },
                                "required": ["order_id"],
                                "additionalProperties": False,
                            },
                            "behavior": "NON_BLOCKING",
                        },
                        {
                            "name": "transfer",
                            "parameters": {
                                "type": "OBJECT",
                                "properties": {"to": {"type": "STRING"}},
                            },
                            "behavior": "BLOCKING",
                        },
                        {"name": "hang_up"},
                    ]
                },
            ],
            "realtimeInputConfig": {
                "automaticActivityDetection": {"disabled": True},
                "activityHandling": "NO_INTERRUPTION",
                "turnCoverage": "TURN_INCLUDES_ALL_INPUT",
            },
            "inputAudioTranscription": {},
            "contextWindowCompression": {
                "triggerTokens": 25600,
                "slidingWindow": {"targetTokens": 12800},
            },
            "sessionResumption": {},
            "proactivity": {"proactiveAudio": True},
            "historyConfig": {"initialHistoryInClientContent": True},
        }
    }


def test_thinking_level_is_sent_as_is() -> None:
    setup = protocol.build_setup(AgentConfig(thinking_config=ThinkingConfig(thinking_level="LOW")))
    assert setup["setup"]["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "LOW"}


def test_the_built_setup_is_a_copy_of_the_agents_schemas() -> None:
    agent = AgentConfig(
        tools=ToolsConfig(
            function_declarations=(
                FunctionDeclaration("f", parameters_json_schema={"type": "object"}),
            )
        )
    )
    first = protocol.build_setup(agent)
    first["setup"]["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["type"] = "x"
    second = protocol.build_setup(agent)
    assert second["setup"]["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"] == {
        "type": "object"
    }


def test_vertex_setup_takes_the_targets_model_path_and_vertex_only_fields() -> None:
    agent = AgentConfig(
        model="gemini-live-2.5-flash-native-audio",
        system_instruction=None,
        voice=None,
        explicit_vad_signal=True,
        session_resumption=SessionResumptionConfig(transparent=True),
    )
    path = (
        "projects/p-1/locations/us-central1/publishers/google/models/"
        "gemini-live-2.5-flash-native-audio"
    )
    assert protocol.build_setup(
        agent, resumption_handle="h", model_path=path, backend="vertex"
    ) == {
        "setup": {
            "model": path,
            "generationConfig": {"responseModalities": ["AUDIO"]},
            "explicitVadSignal": True,
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
            "contextWindowCompression": {"slidingWindow": {}},
            "sessionResumption": {"handle": "h", "transparent": True},
        }
    }


@pytest.mark.parametrize(
    ("agent", "key"),
    [
        (AgentConfig(explicit_vad_signal=False), "explicit_vad_signal"),
        (
            AgentConfig(session_resumption=SessionResumptionConfig(transparent=True)),
            "session_resumption.transparent",
        ),
    ],
)
def test_vertex_only_fields_are_refused_for_the_developer_api(agent: AgentConfig, key: str) -> None:
    with pytest.raises(ConfigError, match="Vertex AI only") as caught:
        protocol.build_setup(agent)
    assert caught.value.key == key
    protocol.check_backend(agent, "vertex")  # fine there


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("gemini-3.8-live", "models/gemini-3.8-live"),
        ("models/gemini-3.8-live", "models/gemini-3.8-live"),
        ("tunedModels/my-tuned", "tunedModels/my-tuned"),
    ],
)
def test_developer_model_path(model: str, path: str) -> None:
    assert protocol.developer_model_path(model) == path


def test_tool_response_puts_scheduling_beside_the_response() -> None:
    message = protocol.tool_response_message(
        [
            FunctionResult(
                "function-call-58",
                "lookup_order",
                {"result": {"status": "shipped"}},
                scheduling="WHEN_IDLE",
                will_continue=False,
            ),
            FunctionResult("function-call-59", "hang_up", {"result": "ok"}),
        ]
    )
    assert json.loads(message) == {
        "toolResponse": {
            "functionResponses": [
                {
                    "id": "function-call-58",
                    "name": "lookup_order",
                    "response": {"result": {"status": "shipped"}},
                    "willContinue": False,
                    "scheduling": "WHEN_IDLE",
                },
                {"id": "function-call-59", "name": "hang_up", "response": {"result": "ok"}},
            ]
        }
    }


def test_tool_response_needs_a_result() -> None:
    with pytest.raises(ValueError, match="at least one"):
        protocol.tool_response_message([])


def test_history_replays_turns_without_asking_for_an_answer() -> None:
    message = protocol.history_message(
        [("user", "Where is order A17?"), ("model", 'It shipped "today".')]
    )
    assert json.loads(message) == {
        "clientContent": {
            "turns": [
                {"role": "user", "parts": [{"text": "Where is order A17?"}]},
                {"role": "model", "parts": [{"text": 'It shipped "today".'}]},
            ],
            "turnComplete": False,
        }
    }
    assert json.loads(protocol.history_message([], turn_complete=True)) == {
        "clientContent": {"turns": [], "turnComplete": True}
    }


def test_history_refuses_other_roles() -> None:
    with pytest.raises(ValueError, match="'user' or 'model'"):
        protocol.history_message([("system", "x")])


def test_audio_message_is_valid_json_with_standard_base64() -> None:
    pcm = bytes(range(256)) * 2
    message = json.loads(protocol.audio_message(pcm))
    audio = message["realtimeInput"]["audio"]
    assert audio["mimeType"] == "audio/pcm;rate=16000"
    assert base64.b64decode(audio["data"], validate=True) == pcm


def test_text_turn_escapes_the_text() -> None:
    message = json.loads(protocol.text_turn_message('Say "hi" \\ now'))
    assert message == {
        "clientContent": {
            "turns": [{"role": "user", "parts": [{"text": 'Say "hi" \\ now'}]}],
            "turnComplete": True,
        }
    }


def test_setup_complete_with_and_without_vertex_session_id() -> None:
    assert protocol.parse_server_message(b'{"setupComplete":{}}') == [SetupComplete(None)]
    assert protocol.parse_server_message('{"setupComplete":{"sessionId":"s-1"}}') == [
        SetupComplete("s-1")
    ]


def test_model_audio_decodes_both_base64_alphabets() -> None:
    pcm = b"\xfb\xff\xfe\x00" * 3
    std = base64.b64encode(pcm).decode()
    url = base64.urlsafe_b64encode(pcm).decode().rstrip("=")
    for data in (std, url):
        frame = (
            '{"serverContent":{"modelTurn":{"role":"model","parts":[{"inlineData":'
            '{"mimeType":"audio/pcm;rate=24000","data":"' + data + '"}}]}}}'
        )
        assert protocol.parse_server_message(frame) == [ModelAudio(pcm, 24000)]


def test_one_frame_with_several_fields_yields_every_event_in_order() -> None:
    frame = json.dumps(
        {
            "serverContent": {
                "modelTurn": {
                    "parts": [
                        {"text": "thinking...", "thought": True},
                        {"text": "Hello"},
                        {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "AAA="}},
                    ]
                },
                "outputTranscription": {"text": "Hello", "finished": True},
                "generationComplete": True,
                "turnComplete": True,
                "turnCompleteReason": "NEED_MORE_INPUT",
                "waitingForInput": True,
                "groundingMetadata": {"webSearchQueries": ["acme"]},
            },
            "usageMetadata": {
                "promptTokenCount": 515,
                "responseTokenCount": 31,
                "totalTokenCount": 546,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 515}],
                "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 31}],
            },
            "sessionResumptionUpdate": {"newHandle": "h-2", "resumable": True},
        }
    )
    assert protocol.parse_server_message(frame) == [
        OutputTranscription("Hello", True),
        ModelText("thinking...", thought=True),
        ModelText("Hello"),
        ModelAudio(b"\x00\x00", 24000),
        GenerationComplete(),
        TurnComplete("NEED_MORE_INPUT"),
        WaitingForInput(),
        GroundingMetadata({"webSearchQueries": ["acme"]}),
        UsageReported(
            prompt_tokens=515,
            response_tokens=31,
            total_tokens=546,
            prompt_by_modality={"TEXT": 515},
            response_by_modality={"AUDIO": 31},
        ),
        ResumptionHandle("h-2", True),
    ]


def test_interrupted_turn() -> None:
    frame = '{"serverContent":{"inputTranscription":{"text":"wait"},"interrupted":true}}'
    assert protocol.parse_server_message(frame) == [InputTranscription("wait"), Interrupted()]


def test_vertex_usage_names_response_tokens_candidates() -> None:
    (usage,) = protocol.parse_server_message(
        '{"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":7,"totalTokenCount":17,'
        '"candidatesTokensDetails":[{"modality":"AUDIO","tokenCount":7}]}}'
    )
    assert usage == UsageReported(10, 7, 17, response_by_modality={"AUDIO": 7})


def test_tool_call_and_cancellation() -> None:
    frame = (
        '{"toolCall":{"functionCalls":[{"id":"function-call-58","name":"lookup_order",'
        '"args":{"order_id":"A17"}}]}}'
    )
    assert protocol.parse_server_message(frame) == [
        ToolCallRequested((FunctionCall("function-call-58", "lookup_order", {"order_id": "A17"}),))
    ]
    assert protocol.parse_server_message(
        '{"toolCallCancellation":{"ids":["function-call-58"]}}'
    ) == [ToolCallCancelled(("function-call-58",))]


@pytest.mark.parametrize(("left", "seconds"), [("50s", 50.0), ("0.5s", 0.5)])
def test_go_away_duration(left: str, seconds: float) -> None:
    assert protocol.parse_server_message('{"goAway":{"timeLeft":"' + left + '"}}') == [
        GoAway(seconds)
    ]


def test_snake_case_server_fields_are_understood() -> None:
    frame = (
        '{"server_content":{"turn_complete":true},"session_resumption_update":{"new_handle":"h"}}'
    )
    assert protocol.parse_server_message(frame) == [
        TurnComplete(None),
        ResumptionHandle("h", False),
    ]


@pytest.mark.parametrize(
    "frame",
    [
        b"\xff\xfe not json",
        "[1, 2]",
        "{}",
        '{"goAway":{"timeLeft":"soon"}}',
        '{"serverContent":{"modelTurn":{"parts":[{"inlineData":'
        '{"mimeType":"audio/pcm;rate=24000","data":"!!!"}}]}}}',
        '{"toolCall":{"functionCalls":[{"id":"x"}]}}',
    ],
)
def test_malformed_frames_become_protocol_errors_never_exceptions(frame: str | bytes) -> None:
    (event,) = protocol.parse_server_message(frame)
    assert isinstance(event, LiveProtocolError)
    assert event.reason


def test_interaction_status_rides_along_with_turn_complete() -> None:
    frame = '{"serverContent":{"turnComplete":true,"interactionStatus":"REQUIRES_ACTION"}}'
    assert protocol.parse_server_message(frame) == [
        TurnComplete(None),
        InteractionStatusChanged("REQUIRES_ACTION"),
    ]


def test_audio_and_both_transcriptions_in_one_message_are_each_an_event() -> None:
    pcm = b"\x01\x00\x02\x00"
    frame = json.dumps(
        {
            "serverContent": {
                "inputTranscription": {"text": "my order", "finished": True},
                "outputTranscription": {"text": "Let me"},
                "interimInputTranscription": {"text": "my ord"},
                "modelTurn": {
                    "parts": [
                        {
                            "inlineData": {
                                "mimeType": "audio/pcm;rate=24000",
                                "data": base64.b64encode(pcm).decode(),
                            }
                        }
                    ]
                },
            }
        }
    )
    assert protocol.parse_server_message(frame) == [
        InputTranscription("my order", True),
        OutputTranscription("Let me", False),
        ModelAudio(pcm, 24000),
        InterimInputTranscription("my ord"),
    ]


@pytest.mark.parametrize(
    ("frame", "started", "offset"),
    [
        (
            '{"voiceActivity":{"voiceActivityType":"ACTIVITY_START","audioOffset":"1.5s"}}',
            True,
            1.5,
        ),
        ('{"voiceActivity":{"voiceActivityType":"ACTIVITY_END"}}', False, None),
        ('{"voiceActivityDetectionSignal":{"vadSignalType":"VAD_SIGNAL_TYPE_SOS"}}', True, None),
        (
            '{"voice_activity_detection_signal":{"vad_signal_type":"VAD_SIGNAL_TYPE_EOS"}}',
            False,
            None,
        ),
    ],
)
def test_the_services_voice_activity_signals(
    frame: str, started: bool, offset: float | None
) -> None:
    assert protocol.parse_server_message(frame) == [VoiceActivityReported(started, offset)]


def test_unknown_fields_are_named_and_the_known_ones_still_acted_on() -> None:
    frame = '{"serverContent":{"turnComplete":true,"sparkle":1},"futureThing":{}}'
    assert protocol.parse_server_message(frame) == [
        TurnComplete(None),
        UnknownFields(("futureThing", "serverContent.sparkle")),
    ]
    # A message of nothing but new fields is a newer protocol, not a broken peer.
    assert protocol.parse_server_message('{"interactionUpdate":{"x":1}}') == [
        UnknownFields(("interactionUpdate",))
    ]


def test_a_transparent_resumption_update_names_the_last_consumed_message() -> None:
    frame = (
        '{"sessionResumptionUpdate":{"newHandle":"h2","resumable":true,'
        '"lastConsumedClientMessageIndex":"418"}}'
    )
    assert protocol.parse_server_message(frame) == [ResumptionHandle("h2", True, 418)]


# -- only what the model takes ------------------------------------------------------------------


def test_the_setup_sends_behavior_only_where_the_model_has_a_choice() -> None:
    tools = ToolsConfig(
        function_declarations=(
            FunctionDeclaration("lookup", "Look it up.", behavior="BLOCKING"),
            FunctionDeclaration("note", "Take a note."),
        )
    )
    agent = AgentConfig(tools=tools)
    one_mode = WireProfile(behaviors=frozenset({"BLOCKING"}))
    declarations = build_setup(agent, wire=one_mode)["setup"]["tools"][0]["functionDeclarations"]
    assert declarations == [
        {"name": "lookup", "description": "Look it up."},
        {"name": "note", "description": "Take a note."},
    ]
    declarations = build_setup(agent)["setup"]["tools"][0]["functionDeclarations"]
    assert declarations[0]["behavior"] == "BLOCKING"
    assert "behavior" not in declarations[1]


def test_a_tool_response_leaves_out_what_the_model_ignores_or_refuses() -> None:
    result = FunctionResult("c1", "lookup", {"result": 1}, "SILENT", will_continue=False)
    vertex = WireProfile(scheduling=False, will_continue=False)
    assert json.loads(tool_response_message([result], vertex)) == {
        "toolResponse": {
            "functionResponses": [{"id": "c1", "name": "lookup", "response": {"result": 1}}]
        }
    }
    sent = json.loads(tool_response_message([result]))["toolResponse"]["functionResponses"][0]
    assert sent["scheduling"] == "SILENT"
    assert sent["willContinue"] is False


def test_a_context_update_carries_the_instruction_and_the_tools() -> None:
    tools = ToolsConfig(function_declarations=(FunctionDeclaration("pay", "Take a payment."),))
    assert json.loads(
        context_update_message(system_instruction="You are billing.", tools=tools)
    ) == {
        "contextUpdate": {
            "systemInstruction": {"parts": [{"text": "You are billing."}], "role": "user"},
            "tools": {
                "tools": [
                    {"functionDeclarations": [{"name": "pay", "description": "Take a payment."}]}
                ]
            },
        }
    }
    with pytest.raises(ValueError, match="needs a system instruction or tools"):
        context_update_message()
