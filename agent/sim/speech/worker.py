"""Speech recognition in a worker process, for callers that must keep an event loop running.

PocketSphinx holds the GIL while it decodes: measured here, recognising a 7 s utterance in a
worker *thread* stopped the event loop for 2.6 s, which would stall every session's audio in the
emulator. So the emulator recognises in one worker process (``python -m
agent.sim.speech.worker``, started on first use), which loads the model once (~0.5 s) and serves
every emulator in the parent process; the parent's thread waits on a pipe without holding the GIL.
Synthesis stays in-process: eSpeak NG is called through ``ctypes``, which releases the GIL, and
runs at ~0.003x real time anyway.

The pipe carries, per request, one JSON line (``rate``, ``language``, ``size``) and ``size``
bytes of PCM16; the worker answers one JSON line, ``{"words": ...}``.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from agent.sim.speech import sphinx

_lock = threading.Lock()
_process: subprocess.Popen[bytes] | None = None


def _start() -> subprocess.Popen[bytes]:
    global _process
    if _process is None or _process.poll() is not None:
        env = dict(os.environ)
        # The worker imports this package from wherever the parent did (an editable checkout too).
        root = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        _process = subprocess.Popen(
            [sys.executable, "-m", "agent.sim.speech.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
    return _process


def transcribe_in_worker(pcm: bytes, sample_rate: int, language: str = "en-US") -> str | None:
    """:func:`agent.sim.speech.transcribe`, run in the shared worker process. Blocking (call it
    from a thread); a worker that died is replaced on the next call (this one raises
    :class:`OSError`)."""
    if not sphinx.supports(language):
        return None  # no need to ask the worker
    with _lock:
        process = _start()
        assert process.stdin is not None
        assert process.stdout is not None
        header = {"rate": sample_rate, "language": language, "size": len(pcm)}
        try:
            process.stdin.write(json.dumps(header).encode() + b"\n" + pcm)
            process.stdin.flush()
            line = process.stdout.readline()
        except (BrokenPipeError, ValueError) as exc:
            raise OSError("the speech recognition worker is gone") from exc
        if not line:
            raise OSError("the speech recognition worker ended")
    words = json.loads(line)["words"]
    return None if words is None else str(words)


@atexit.register
def shutdown() -> None:
    """Stop the worker process, if one was started (the next call starts another)."""
    global _process
    with _lock:
        process, _process = _process, None
    if process is not None:
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.close()  # the worker ends at end of input
        process.wait(timeout=10)
        process.stdout.close()


def _serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """The worker's loop: answer each request until the parent closes the pipe."""
    while line := requests.readline():
        header = json.loads(line)
        pcm = requests.read(int(header["size"]))
        words = sphinx.recognise(pcm, int(header["rate"]), str(header["language"]))
        answers.write(json.dumps({"words": words}).encode() + b"\n")
        answers.flush()


if __name__ == "__main__":
    _serve(sys.stdin.buffer, sys.stdout.buffer)
