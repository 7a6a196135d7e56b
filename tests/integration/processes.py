"""Helpers for tests that run the real server as a subprocess, on the real clock: its JSON log
read line by line as it comes, a free port, waiting for it to listen, its environment."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from timing import scaled_timeout

_CHECKOUT = Path(__file__).resolve().parents[2]

LogLine = dict[str, Any]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerLog:
    """The server's stderr, read line by line as it comes: every line must be one JSON object."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[LogLine] = []
        self.raw: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode("utf-8", "replace").rstrip("\n")
            self.raw.append(text)
            parsed = json.loads(text)  # a non-JSON line fails the reader, and so the test
            async with self._changed:
                self.lines.append(parsed)
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    @property
    def ended(self) -> bool:
        return self._reader.done()

    async def wait_for(self, found: Callable[[list[LogLine]], bool], timeout_s: float) -> None:
        """Until ``found(lines)`` holds; fails on timeout or when the server's stderr closes."""
        async with asyncio.timeout(timeout_s), self._changed:
            while not found(self.lines):
                if self.ended:
                    self._reader.result()  # a parse error surfaces here
                    raise AssertionError("the server exited:\n" + "\n".join(self.raw[-20:]))
                await self._changed.wait()

    async def finish(self) -> None:
        """Read to the end of the stream (after the process is gone)."""
        async with asyncio.timeout(scaled_timeout(10)):
            await asyncio.wait([self._reader])


def events(lines: list[LogLine], name: str, call_sid: str | None = None) -> list[LogLine]:
    return [
        line
        for line in lines
        if line["event"] == name and (call_sid is None or line.get("call_sid") == call_sid)
    ]


async def wait_listening(port: int, timeout_s: float) -> None:
    """``server.started`` is logged just before the socket is bound: connect until it accepts."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except ConnectionRefusedError:
                await asyncio.sleep(0.05)  # a readiness probe, not a synchronisation delay
                continue
            writer.close()
            await writer.wait_closed()
            return


def server_env(
    tmp_path: Path, port: int, live_url: str | None, db: Path, auth_token: str
) -> dict[str, str]:
    """The server's environment: this one's, minus anything that would point it elsewhere."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GEMINI_", "LIVE_", "VERTEX_", "TWILIO_", "AGENTS_", "PRICE_"))
    }
    env.update(
        DATABASE_URL=f"sqlite:///{db}",
        PUBLIC_URL=f"http://127.0.0.1:{port}",
        TWILIO_AUTH_TOKEN=auth_token,
        LOG_FORMAT="json",
        LOG_LEVEL="info",
        MASK_CALLER_NUMBERS="true",
        PYTHONUNBUFFERED="1",
        # This checkout's code, whichever one the virtualenv installed (a git worktree shares
        # the main checkout's .venv, whose editable install points there).
        PYTHONPATH=os.pathsep.join(
            p for p in (str(_CHECKOUT), os.environ.get("PYTHONPATH", "")) if p
        ),
    )
    if live_url is not None:  # else the embedded emulator answers
        env["LIVE_API_URL"] = live_url
    return env


async def run_cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(scaled_timeout(30)):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def start_server(port: int, env: dict[str, str], cwd: Path) -> tuple[Any, ServerLog]:
    """``agent serve`` on ``port`` as a subprocess; returns it and its log once it listens."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "agent", "serve", "--host", "127.0.0.1", "--port", str(port)),
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    log = ServerLog(process.stderr)
    timeout = scaled_timeout(30.0)  # a loaded machine starts Python slowly
    try:
        await log.wait_for(lambda lines: bool(events(lines, "server.started")), timeout)
        await wait_listening(port, timeout)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await log.finish()
        raise
    return process, log
