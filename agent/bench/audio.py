"""Micro-benchmark of the per-call transcoders, for ``agent bench``.

Every call runs one transcoder per direction 50 times a second, so the cost of one 20 ms frame times
the number of concurrent calls is the CPU the audio path needs. This feeds a synthetic signal (the
cost does not depend on the content) through fresh transcoders in real-time-sized chunks and reports
the best of a few runs, which is the least disturbed by other work on the machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from agent.audio.codec import pcm16_to_ulaw
from agent.audio.transcoder import InboundTranscoder, OutboundTranscoder

__all__ = ["bench_transcoders"]

_FRAMES_PER_SECOND = 50  # 20 ms frames
_RUNS = 5


def _noise(rate: int, seconds: float) -> bytes:
    rng = np.random.default_rng(0)
    samples = np.clip(np.round(rng.normal(0.0, 3000.0, int(rate * seconds))), -32768, 32767)
    return samples.astype("<i2").tobytes()


def _best_us_per_frame(
    new_process: Callable[[], Callable[[bytes], object]], chunks: list[bytes]
) -> float:
    best = float("inf")
    for _ in range(_RUNS):
        process = new_process()  # a fresh transcoder per run, as a new call would have
        start = time.perf_counter()
        for chunk in chunks:
            process(chunk)
        best = min(best, time.perf_counter() - start)
    return 1e6 * best / len(chunks)


def bench_transcoders(seconds: float = 10.0) -> dict[str, float]:
    """Microseconds per 20 ms frame: ``{"inbound": ..., "outbound": ...}``.

    ``inbound`` is 160 bytes of mu-law in, 640 bytes of 16 kHz PCM16 out; ``outbound`` is 960 bytes
    of 24 kHz PCM16 in, one 160-byte mu-law frame out. ``seconds`` of audio are timed per direction.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    frames = max(1, int(seconds * _FRAMES_PER_SECOND))
    ulaw = pcm16_to_ulaw(_noise(8000, frames / _FRAMES_PER_SECOND))
    pcm24 = _noise(24000, frames / _FRAMES_PER_SECOND)
    inbound_chunks = [ulaw[i : i + 160] for i in range(0, len(ulaw), 160)]
    outbound_chunks = [pcm24[i : i + 960] for i in range(0, len(pcm24), 960)]
    return {
        "inbound": _best_us_per_frame(lambda: InboundTranscoder().process, inbound_chunks),
        "outbound": _best_us_per_frame(lambda: OutboundTranscoder().process, outbound_chunks),
    }
