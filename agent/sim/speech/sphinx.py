"""Speech to text with CMU PocketSphinx and the US English model its wheel bundles.

The ``pocketsphinx`` wheel (5.x) carries the en-us acoustic model, a general language model and
the CMU pronouncing dictionary, so nothing is fetched. The model is for 16 kHz audio: other rates
are resampled to 16 kHz first (telephone audio, 8 kHz, is band-limited, which costs accuracy).
A decoder is not thread-safe and takes ~0.5 s to load, so one is kept and a lock serialises use.
"""

from __future__ import annotations

from typing import Any

from agent.audio.codec import resample_offline
from agent.sim.speech.lazy import LazyEngine

MODEL_RATE = 16_000


class _Engine:
    def __init__(self) -> None:
        import pocketsphinx  # the optional ``speech`` extra

        # loglevel FATAL: PocketSphinx writes its progress to stderr otherwise.
        self.decoder: Any = pocketsphinx.Decoder(samprate=MODEL_RATE, loglevel="FATAL")
        self.initial_cmn = self.decoder.get_cmn()

    def recognise(self, pcm16k: bytes) -> str:
        decoder = self.decoder
        # Cepstral mean normalisation carries over from one utterance to the next; start each
        # from the model's own, so what is heard does not depend on what was heard before.
        decoder.set_cmn(self.initial_cmn)
        decoder.start_utt()
        decoder.process_raw(pcm16k, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return "" if hypothesis is None else str(hypothesis.hypstr)


_engine = LazyEngine(_Engine, (ImportError, RuntimeError))


def supports(language: str) -> bool:
    """Whether the bundled model is for ``language`` (a BCP-47 tag): any English."""
    return language.lower().split("-")[0] == "en"


def available() -> bool:
    """Whether PocketSphinx and its English model load here."""
    with _engine.lock:
        return _engine.get() is not None


def recognise(pcm: bytes, sample_rate: int, language: str) -> str | None:
    """The words in ``pcm``; ``None`` for a language the model is not for, or without the engine."""
    if not supports(language):
        return None
    with _engine.lock:
        engine = _engine.get()
        if engine is None:
            return None
    audio = resample_offline(pcm[: len(pcm) - len(pcm) % 2], sample_rate, MODEL_RATE)
    with _engine.lock:
        return engine.recognise(audio)
