"""Agent configuration: frozen, typed objects, validated once.

An agent is what a business configures: which model answers, with what voice, prompt and turn-taking
settings. The Live setup message is built from one of these (``agent.live.protocol.build_setup``).
Loading agents from YAML files builds on these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

StartSensitivity = Literal["START_SENSITIVITY_HIGH", "START_SENSITIVITY_LOW"]
EndSensitivity = Literal["END_SENSITIVITY_HIGH", "END_SENSITIVITY_LOW"]

DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"


@dataclass(frozen=True, slots=True)
class VadConfig:
    """The Live API's automatic activity detection (its server-side VAD).

    ``None`` for a field means "leave it to the service's default" and is not sent.
    """

    disabled: bool = False
    start_sensitivity: StartSensitivity | None = None
    end_sensitivity: EndSensitivity | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """One voice agent: the model, its voice and instructions, and how it takes turns."""

    name: str = "default"
    model: str = DEFAULT_MODEL
    api_version: Literal["v1", "v1beta", "v1alpha"] = "v1beta"
    voice: str | None = "Puck"
    language: str | None = None
    system_instruction: str = (
        "You are a friendly, concise phone agent for Acme support. Speak in short sentences; "
        "the caller hears you over a telephone line."
    )
    greeting: str | None = None
    vad: VadConfig = field(default_factory=VadConfig)
    input_transcription: bool = True
    output_transcription: bool = True


DEFAULT_AGENT = AgentConfig()
