"""The workers of one ``agent serve --workers N`` see each other's load, so that admission and
``/readyz`` speak for the machine, not for whichever worker the kernel handed a connection to.

With ``SO_REUSEPORT`` the kernel spreads connections over the workers by a hash of their ports:
the probe's ``/readyz``, a webhook and its media stream each land on any worker. A worker that
answered for itself alone would say "full" while its siblings idle (Twilio then sends the caller
to the number's fallback URL), or "ready" while every other worker is full. So each worker
publishes its load (calls in progress plus answered webhooks awaiting their stream) in a small
file in a directory the supervisor shares with its workers (``WORKERS_DIR``, an internal
supervisor-to-worker variable, not a setting), and reads its siblings' files when it decides.

Files are named by worker index, so a restarted worker takes over its predecessor's file; a file
whose process is gone (a crash) is ignored. Load is published when it changes, checked a few
times a second, never from the per-frame path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: The supervisor's directory for its workers' load files, and each worker's index.
WORKERS_DIR = "WORKERS_DIR"
WORKER_INDEX = "WORKER_INDEX"

_PREFIX = "load-"


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """What one worker last said of itself."""

    index: int
    pid: int
    calls: int  # in progress plus answered webhooks whose stream has not started
    taking_calls: bool  # False while draining or shutting down


def format_load(load: WorkerLoad) -> str:
    """One load file's text."""
    return f"{load.pid} {load.calls} {int(load.taking_calls)}\n"


def parse_load(index: int, text: str) -> WorkerLoad | None:
    """A load file's text, or None if it is not one (half written, say)."""
    parts = text.split()
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return None
    pid, calls, taking = (int(part) for part in parts)
    return WorkerLoad(index, pid, calls, taking == 1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process took the pid: not our worker
        return False
    return True


class WorkerLoads:
    """This worker's published load and its siblings' (see the module docstring)."""

    def __init__(self, directory: Path, index: int, pid: int | None = None) -> None:
        self.directory = directory
        self.index = index
        self.pid = os.getpid() if pid is None else pid
        self._path = directory / f"{_PREFIX}{index}"
        self._published: WorkerLoad | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> WorkerLoads | None:
        """This worker's, when the supervisor started it; None for a lone process."""
        directory, index = environ.get(WORKERS_DIR), environ.get(WORKER_INDEX, "")
        if not directory or not index.isdigit():
            return None
        return cls(Path(directory), int(index))

    def publish(self, calls: int, taking_calls: bool) -> None:
        """Say this worker's load, if it changed. Written whole and renamed into place, so a
        sibling never reads half a file."""
        load = WorkerLoad(self.index, self.pid, calls, taking_calls)
        if load == self._published:
            return
        staging = self._path.with_suffix(".tmp")
        staging.write_text(format_load(load))
        staging.replace(self._path)
        self._published = load

    def siblings(self) -> list[WorkerLoad]:
        """The other live workers' last published loads."""
        found = []
        for path in self.directory.glob(f"{_PREFIX}*"):
            suffix = path.name[len(_PREFIX) :]
            if not suffix.isdigit() or int(suffix) == self.index:
                continue
            try:
                load = parse_load(int(suffix), path.read_text())
            except OSError:  # removed while we looked: that worker is gone
                continue
            if load is not None and _alive(load.pid):
                found.append(load)
        return sorted(found, key=lambda load: load.index)

    def withdraw(self) -> None:
        """This worker stops: its siblings stop counting it."""
        self._path.unlink(missing_ok=True)
        self._published = None


def machine_full(own_calls: int, max_calls: int, siblings: list[WorkerLoad]) -> bool:
    """Whether the machine is at capacity: ``max_calls`` per worker that takes calls, summed.

    A media stream lands on any worker, so where a webhook was answered says little about where
    its call will run: the machine's total is what admission can honestly bound. A lone worker
    (no siblings) is full at ``max_calls``, as before.
    """
    open_siblings = [load for load in siblings if load.taking_calls]
    capacity = max_calls * (1 + len(open_siblings))
    total = own_calls + sum(load.calls for load in open_siblings)
    return total >= capacity
