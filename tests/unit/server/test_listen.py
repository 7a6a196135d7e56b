"""The connection cap's arithmetic: the open-files clamp and one log line per episode."""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import Callable
from contextlib import AbstractContextManager
from io import StringIO

import pytest

from agent.server.listen import ConnectionGate, connection_limit


class _Inner(asyncio.Protocol):
    lost = 0

    def connection_lost(self, exc: Exception | None) -> None:
        _Inner.lost += 1


def test_the_cap_is_at_most_half_the_open_files_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    assert connection_limit(500) == 500
    assert connection_limit(2000) == 512
    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY,) * 2)
    assert connection_limit(2000) == 2000


def test_a_full_gate_logs_once_per_episode_and_counts_every_refusal(
    log_capture: Callable[..., AbstractContextManager[StringIO]],
) -> None:
    refused: list[None] = []
    _Inner.lost = 0
    with log_capture("info", "json") as buffer:
        gate = ConnectionGate(20, on_refused=lambda: refused.append(None))
        factory = gate.factory(_Inner)
        admitted = [factory() for _ in range(20)]
        assert gate.open == 20
        assert not gate.full
        for _ in range(5):
            factory().connection_made(_Transport())  # answered 503 and closed
        assert gate.full
        assert len(refused) == 5
        # Flapping at the boundary is one episode (one line): it ends 10 % below the cap. A slot
        # freed meanwhile is used, though.
        admitted.pop().connection_lost(None)
        assert gate.full
        admitted.append(factory())
        assert gate.open == 20
        refusal = _Transport()
        factory().connection_made(refusal)
        assert refusal.closed
        assert refusal.written.startswith(b"HTTP/1.1 503 ")
        for protocol in admitted[:3]:
            protocol.connection_lost(None)
        assert gate.open == 17
        assert not gate.full
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    names = [line["event"] for line in lines]
    assert names.count("server.connections_full") == 1
    (available,) = [line for line in lines if line["event"] == "server.connections_available"]
    assert available["refused"] == 6
    assert _Inner.lost == 4  # aiohttp's handler heard each close


class _Transport(asyncio.WriteTransport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True
