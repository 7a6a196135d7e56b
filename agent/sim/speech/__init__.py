"""Offline speech for the simulators: text to speech and speech to text, with no network.

The Live API emulator uses these to hear the caller (``inputAudioTranscription`` carries what was
said, not a placeholder) and to speak the agent's own words (its greeting, scripted lines, tool
results); ``agent test`` uses :func:`speak` for callers' lines given as text. Both engines are
real libraries that ship their data in PyPI wheels and never fetch a model at run time:

- text to speech: eSpeak NG, from the ``espeakng-loader`` wheel (the shared library and its
  voice data), driven through ``ctypes`` (:mod:`agent.sim.speech.espeak`);
- speech to text: CMU PocketSphinx, from the ``pocketsphinx`` wheel with its bundled US English
  acoustic and language model (:mod:`agent.sim.speech.sphinx`).

They are the optional extra ``speech`` (also in ``dev``). Without them :func:`speak` and
:func:`transcribe` return ``None`` and the emulator falls back to its bundled clips and to the
``[caller speech 3.4 s]`` placeholder. Both calls block for a while (recognition runs at about
half real time on one core) and :func:`transcribe` holds the GIL while it decodes: next to an
event loop, call :func:`speak` in a thread (``asyncio.to_thread``) and recognise with
:func:`agent.sim.speech.worker.transcribe_in_worker` (a worker process) from a thread.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.sim.speech import espeak, sphinx

__all__ = [
    "Recogniser",
    "Synthesiser",
    "speak",
    "speech_available",
    "transcribe",
]

Synthesiser = Callable[[str, int], bytes | None]
"""``speak``'s shape: text and a sample rate in, PCM16 mono little-endian out (``None``: no TTS)."""

Recogniser = Callable[[bytes, int, str], str | None]
"""``transcribe``'s shape: PCM16 mono, its rate and a BCP-47 language in; text out (``None``: no
recogniser for that language)."""


def speak(text: str, sample_rate: int) -> bytes | None:
    """``text`` spoken by eSpeak NG as PCM16 mono little-endian at ``sample_rate`` Hz.

    ``None`` when no TTS engine is installed (the ``speech`` extra is missing). Blocking.
    """
    return espeak.synthesise(text, sample_rate)


def transcribe(pcm: bytes, sample_rate: int, language: str = "en-US") -> str | None:
    """What is said in ``pcm`` (PCM16 mono little-endian at ``sample_rate`` Hz), lower case.

    ``None`` when there is no recogniser for ``language`` (PocketSphinx's bundled model is US
    English, so any ``en`` tag) or none is installed; ``""`` when it heard no words. Blocking.
    """
    return sphinx.recognise(pcm, sample_rate, language)


def speech_available() -> dict[str, bool]:
    """Which engines this installation has: ``{"tts": ..., "stt": ...}``."""
    return {"tts": espeak.available(), "stt": sphinx.available()}
