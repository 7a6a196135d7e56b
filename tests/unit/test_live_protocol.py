"""The Live protocol core, fed literal frames: no socket, no event loop."""

from __future__ import annotations

import base64
import json

import pytest

from agent.config import AgentConfig, VadConfig
from agent.live import protocol
from agent.live.protocol import (
    FunctionCall,
    GenerationComplete,
    GoAway,
    GroundingMetadata,
    InputTranscription,
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
    UsageReported,
    WaitingForInput,
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
                    "disabled": False,
                    "startOfSpeechSensitivity": "START_SENSITIVITY_LOW",
                    "endOfSpeechSensitivity": "END_SENSITIVITY_HIGH",
                    "prefixPaddingMs": 40,
                    "silenceDurationMs": 600,
                }
            },
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
            "sessionResumption": {"handle": "h-1"},
        }
    }


def test_setup_leaves_unset_fields_to_the_service() -> None:
    setup = protocol.build_setup(
        AgentConfig(voice=None, input_transcription=False, output_transcription=False)
    )["setup"]
    assert "speechConfig" not in setup["generationConfig"]
    assert setup["realtimeInputConfig"] == {"automaticActivityDetection": {"disabled": False}}
    assert "inputAudioTranscription" not in setup
    assert setup["sessionResumption"] == {}


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
