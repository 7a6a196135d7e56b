"""The official ``google-genai`` SDK against an emulator that hears and speaks (offline engines).

The issue's own check: a caller saying "I would like to check the status of my order" must come
back in ``input_transcription`` with those words, and the greeting the client asks for is spoken
in the agent's words with the same text in ``output_transcription``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
from google.genai import types

from agent.audio.codec import read_wav
from agent.sim.live.server import EmulatorSpeech

from .conftest import EmulatedLive
from .test_genai_sdk import FIXTURES, MODEL, send_audio, transcript

Live = Callable[..., Awaitable[EmulatedLive]]
GREETING = "Thank you for calling Bright Smile Dental. How can I help you today?"


async def test_the_callers_words_come_back_in_the_input_transcription(live: Live) -> None:
    env = await live(speech=EmulatorSpeech.installed())
    # speak()'s voice, recorded once (eSpeak NG's waveform varies from call to call).
    caller, _ = read_wav(FIXTURES / "tts-order-status-16k.wav")
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        input_audio_transcription=types.AudioTranscriptionConfig(),
    )
    async with env.client.aio.live.connect(model=MODEL, config=config) as session:
        await send_audio(session, caller + bytes(32 * 800))
        received = [message async for message in session.receive()]
    heard = "".join(
        m.server_content.input_transcription.text or ""
        for m in received
        if m.server_content and m.server_content.input_transcription
    ).split()
    assert "status" in heard
    assert "order" in heard


async def test_the_greeting_is_spoken_in_the_agents_words(live: Live) -> None:
    env = await live(speech=EmulatorSpeech.installed())
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        output_audio_transcription=types.AudioTranscriptionConfig(),
    )
    async with env.client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text=GREETING)]),
            turn_complete=True,
        )
        received = [message async for message in session.receive()]
    assert transcript(received) == GREETING
    audio = np.frombuffer(b"".join(m.data for m in received if m.data), dtype="<i2")
    assert len(audio) / 24000 > 2.0
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 300
