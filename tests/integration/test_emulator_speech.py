"""The emulator hearing the caller and speaking the agent's words, with the real offline engines.

PocketSphinx and eSpeak NG (the ``speech`` extra, in ``dev``) run in the emulator's worker
threads while the suite's simulated clock keeps the loop's time; the verdicts are about words and
audio, never about how long recognition took.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from agent.audio.codec import read_wav, resample_offline
from agent.config.models import AgentConfig
from agent.server.state import CALLS
from agent.sim.carrier import CarrierOptions, place_call
from agent.sim.live.server import (
    LIVE_PATH,
    EmulatorOptions,
    EmulatorSpeech,
    RunningEmulator,
    load_bundled_clips,
    start_emulator,
)

from .conftest import FIXTURES, BridgeFactory, caller_clip

Message = dict[str, Any]
PATH = LIVE_PATH.format(version="v1beta")
TIMEOUT = 60.0  # simulated seconds
SETUP: Message = {
    "setup": {
        "model": "models/gemini-2.5-flash-native-audio-preview-12-2025",
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
    }
}
DENTIST = AgentConfig(
    name="bright-smile",
    greeting="Thank you for calling Bright Smile Dental. How can I help you today?",
)


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    """The emulator with the installed engines (the bridge fixture talks to this one too)."""
    running = await start_emulator(EmulatorOptions(), speech=EmulatorSpeech.installed())
    yield running
    await running.close()


def telephone_16k(name: str, trailing_silence_ms: int = 800) -> bytes:
    """A caller fixture as the bridge sends it: 8 kHz upsampled to 16 kHz, then silence."""
    pcm = resample_offline(caller_clip(name), 8000, 16000)
    return pcm + bytes(32 * trailing_silence_ms)


async def receive(ws: ClientConnection) -> Message:
    frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(frame, bytes)
    message: Message = json.loads(frame)
    return message


async def receive_until_turn_complete(ws: ClientConnection) -> list[Message]:
    received: list[Message] = []
    while not received or not received[-1].get("serverContent", {}).get("turnComplete"):
        received.append(await receive(ws))
    return received


async def send_audio(ws: ClientConnection, pcm: bytes) -> None:
    for start in range(0, len(pcm), 640):
        data = base64.b64encode(pcm[start : start + 640]).decode()
        audio = {"data": data, "mimeType": "audio/pcm;rate=16000"}
        await ws.send(json.dumps({"realtimeInput": {"audio": audio}}))


def said(received: list[Message], kind: str) -> str:
    return "".join(
        m["serverContent"][kind]["text"] for m in received if kind in m.get("serverContent", {})
    )


def audio_of(received: list[Message]) -> bytes:
    return b"".join(
        base64.b64decode(part["inlineData"]["data"])
        for m in received
        for part in m.get("serverContent", {}).get("modelTurn", {}).get("parts", [])
    )


async def hear(emulator: RunningEmulator, pcm: bytes, setup: Message = SETUP) -> list[Message]:
    async with connect(emulator.url + PATH) as ws:
        await ws.send(json.dumps(setup))
        assert await receive(ws) == {"setupComplete": {}}
        await send_audio(ws, pcm)
        return await receive_until_turn_complete(ws)


async def test_the_recorded_caller_is_heard_in_words(emulator: RunningEmulator) -> None:
    received = await hear(emulator, telephone_16k("order-status"))
    words = said(received, "inputTranscription").split()
    # PocketSphinx on this 8 kHz recording hears "i would like to add order please": the order,
    # not its status (the README's Offline speech says what it gets right and wrong).
    assert "order" in words
    assert emulator.sessions[0].heard == [" ".join(words)]
    # The turn logic had the words too: they are the user's turn in the history.
    assert any(entry.text == " ".join(words) for entry in emulator.sessions[0].history)


async def test_a_caller_line_spoken_by_the_tts_is_heard_word_for_word(
    emulator: RunningEmulator,
) -> None:
    # speak()'s voice, recorded once (eSpeak NG's waveform varies from call to call).
    voice, _ = read_wav(FIXTURES / "tts-order-status-16k.wav")
    received = await hear(emulator, voice + bytes(32 * 800))
    words = said(received, "inputTranscription").split()
    assert "status" in words
    assert "order" in words


async def test_a_language_without_a_recogniser_is_heard_as_the_placeholder(
    emulator: RunningEmulator,
) -> None:
    setup: Message = json.loads(json.dumps(SETUP))
    setup["setup"]["generationConfig"] = {"speechConfig": {"languageCode": "fr-FR"}}
    received = await hear(emulator, telephone_16k("order-status"), setup)
    assert said(received, "inputTranscription").startswith("[caller speech ")


async def test_the_dentists_agent_greets_with_its_own_greeting(
    start_bridge: BridgeFactory, emulator: RunningEmulator
) -> None:
    bridge = await start_bridge(agent=DENTIST)
    report = await place_call(CarrierOptions(url=bridge.url), [caller_clip("goodbye")])
    call = await bridge.app[CALLS].wait_ended(report.call_sid)

    record = emulator.sessions[0]
    assert record.voiced[0] == DENTIST.greeting
    greeting = call.transcript.turns[0]
    assert greeting.role == "agent"
    assert greeting.said == DENTIST.greeting  # the output transcription, as the bridge got it
    # The caller heard it: speech-level audio before they spoke, and not Acme's bundled clip.
    before = report.heard[: report.utterances[0].start_ms * 16]
    samples = np.frombuffer(before, dtype="<i2").astype(np.float64)
    assert np.sqrt(np.mean(samples**2)) > 300
    assert "Acme" not in greeting.said


async def test_without_engines_the_emulator_keeps_its_placeholder_and_clips() -> None:
    running = await start_emulator(EmulatorOptions(), speech=EmulatorSpeech())
    try:
        async with connect(running.url + PATH) as ws:
            await ws.send(json.dumps(SETUP))
            assert await receive(ws) == {"setupComplete": {}}
            turn = {"role": "user", "parts": [{"text": DENTIST.greeting}]}
            await ws.send(json.dumps({"clientContent": {"turns": [turn], "turnComplete": True}}))
            greeting = await receive_until_turn_complete(ws)
            await send_audio(ws, telephone_16k("order-status"))
            reply = await receive_until_turn_complete(ws)
    finally:
        await running.close()
    clips = load_bundled_clips()
    assert audio_of(greeting) == clips.greeting.pcm
    assert said(greeting, "outputTranscription") == clips.greeting.transcript
    assert said(reply, "inputTranscription").startswith("[caller speech ")
    assert running.sessions[0].voiced == []


async def test_a_slow_recognition_does_not_hold_up_another_sessions_answer() -> None:
    started, released = threading.Event(), threading.Event()
    heard_while_blocked: list[bool] = []

    def slow_recogniser(pcm: bytes, rate: int, language: str) -> str | None:
        # Returns once the other session's greeting has streamed (or after 30 s, not to hang).
        started.set()
        heard_while_blocked.append(released.wait(30))
        return "hello"

    running = await start_emulator(
        EmulatorOptions(), speech=EmulatorSpeech(transcribe=slow_recogniser)
    )
    try:
        async with (
            connect(running.url + PATH) as caller,
            connect(running.url + PATH) as greeted,
        ):
            for ws in (caller, greeted):
                await ws.send(json.dumps(SETUP))
                assert await receive(ws) == {"setupComplete": {}}
            await send_audio(caller, telephone_16k("order-status"))
            assert await asyncio.to_thread(started.wait, 30)
            turn = {"role": "user", "parts": [{"text": "Greet the caller."}]}
            await greeted.send(
                json.dumps({"clientContent": {"turns": [turn], "turnComplete": True}})
            )
            greeting = await receive_until_turn_complete(greeted)
            assert not heard_while_blocked  # the recogniser is still at work
            released.set()
            reply = await receive_until_turn_complete(caller)
    finally:
        released.set()
        await running.close()
    assert audio_of(greeting) == load_bundled_clips().greeting.pcm
    assert said(reply, "inputTranscription") == "hello"
    assert heard_while_blocked == [True]
