"""Text to speech with eSpeak NG, loaded from the ``espeakng-loader`` wheel through ``ctypes``.

The wheel carries ``libespeak-ng.so`` and its ``espeak-ng-data`` (voices, dictionaries): nothing
is fetched and no system package is needed. The library keeps global state (one voice, one
callback), so one lock serialises every synthesis in the process. It synthesises at its own rate
(22 050 Hz) and the result is resampled to the rate asked for.
"""

from __future__ import annotations

import ctypes
from typing import Any

from agent.audio.codec import resample_offline
from agent.sim.speech.lazy import LazyEngine

_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: synthesise in the caller's thread
_INITIALIZE_DONT_EXIT = 0x8000  # espeakINITIALIZE_DONT_EXIT: report errors, never exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE = 1  # espeakRATE, words per minute
VOICE = b"en-us"
WORDS_PER_MINUTE = 150
"""A little slower than eSpeak's default 175: closer to a phone voice, and easier to recognise."""

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Engine:
    """The loaded library, its native rate, and the samples the callback collects."""

    def __init__(self) -> None:
        import espeakng_loader  # the optional ``speech`` extra

        self.lib: Any = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data = espeakng_loader.get_data_path().encode()
        self.rate = int(
            self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT)
        )
        if self.rate <= 0:
            raise OSError(f"espeak_Initialize failed ({self.rate})")
        if self.lib.espeak_SetVoiceByName(VOICE) != 0:
            raise OSError(f"eSpeak NG has no voice {VOICE.decode()}")
        self.lib.espeak_SetParameter(_RATE, WORDS_PER_MINUTE, 0)
        self.chunks: list[bytes] = []
        # Kept on the instance: ctypes must not collect the callback while the library holds it.
        self.callback = _CALLBACK(self._collect)
        self.lib.espeak_SetSynthCallback(self.callback)

    def _collect(self, wav: Any, count: int, events: Any) -> int:
        if count > 0:
            self.chunks.append(ctypes.string_at(wav, count * 2))
        return 0  # go on

    def synthesise(self, text: str) -> bytes:
        self.chunks = []
        encoded = text.encode("utf-8")
        status = self.lib.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        if status != 0:
            raise OSError(f"espeak_Synth failed ({status})")
        self.lib.espeak_Synchronize()
        pcm, self.chunks = b"".join(self.chunks), []
        return pcm


_engine = LazyEngine(_Engine, (ImportError, OSError))


def available() -> bool:
    """Whether eSpeak NG can be loaded here."""
    with _engine.lock:
        return _engine.get() is not None


def synthesise(text: str, sample_rate: int) -> bytes | None:
    """``text`` as PCM16 mono at ``sample_rate``; ``None`` without the engine."""
    with _engine.lock:
        engine = _engine.get()
        if engine is None:
            return None
        pcm = engine.synthesise(text) if text.strip() else b""
        rate = engine.rate
    return resample_offline(pcm, rate, sample_rate)
