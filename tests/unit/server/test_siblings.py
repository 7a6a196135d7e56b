"""Workers' load files: their literal format, how admission sums them, and who counts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent.server.siblings import (
    WorkerLoad,
    WorkerLoads,
    format_load,
    machine_full,
    parse_load,
)


def test_a_load_file_is_pid_calls_and_whether_it_takes_calls() -> None:
    assert format_load(WorkerLoad(1, 4242, 17, True)) == "4242 17 1\n"
    assert parse_load(1, "4242 17 1\n") == WorkerLoad(1, 4242, 17, True)
    assert parse_load(0, "4242 0 0") == WorkerLoad(0, 4242, 0, False)


def test_a_half_written_or_foreign_file_is_not_a_load() -> None:
    for text in ("", "4242 17", "4242 17 1 9", "4242 -1 1", "pid calls yes"):
        assert parse_load(0, text) is None


def test_the_machine_is_full_at_max_calls_per_worker_that_takes_calls() -> None:
    two_busy = [WorkerLoad(1, 1, 2, True)]
    assert machine_full(3, 2, []) is True  # alone: MAX_CALLS as before
    assert machine_full(1, 2, []) is False
    assert machine_full(2, 2, two_busy) is True  # 4 of 2 x 2
    assert (
        machine_full(3, 2, [WorkerLoad(1, 1, 0, True)]) is False
    )  # this one is busy, not the machine
    # A draining sibling neither counts its calls nor offers room.
    assert machine_full(2, 2, [WorkerLoad(1, 1, 0, False)]) is True


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_siblings_are_the_other_live_workers_as_they_last_published(tmp_path: Path) -> None:
    me = WorkerLoads(tmp_path, 0)
    other = WorkerLoads(tmp_path, 1)
    me.publish(3, True)
    other.publish(5, True)
    assert me.siblings() == [WorkerLoad(1, os.getpid(), 5, True)]
    assert other.siblings() == [WorkerLoad(0, os.getpid(), 3, True)]
    other.publish(4, False)
    assert me.siblings() == [WorkerLoad(1, os.getpid(), 4, False)]
    other.withdraw()
    assert me.siblings() == []


def test_a_crashed_workers_file_is_not_counted(tmp_path: Path) -> None:
    (tmp_path / "load-1").write_text(f"{_dead_pid()} 40 1\n")
    (tmp_path / "load-2").write_text("garbage")
    assert WorkerLoads(tmp_path, 0).siblings() == []


def test_only_a_supervised_worker_has_siblings(tmp_path: Path) -> None:
    assert WorkerLoads.from_environ({}) is None
    assert WorkerLoads.from_environ({"WORKERS_DIR": str(tmp_path)}) is None
    loads = WorkerLoads.from_environ({"WORKERS_DIR": str(tmp_path), "WORKER_INDEX": "3"})
    assert loads is not None
    assert (loads.directory, loads.index) == (tmp_path, 3)
