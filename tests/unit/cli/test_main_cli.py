"""First-hour papercuts of ``agent serve`` and ``agent call`` (issue 15, point 8): errors are
one line, and ``agent call`` finds the server where ``PORT`` put it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.cli import main as cli
from agent.settings import Settings
from agent.sim.live.options import EmulatorOptions


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The commands configure logging for a process; the test session keeps its own.
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.chdir(tmp_path)  # no .env, and any default database lands here
    for name in ("PORT", "HOST", "GEMINI_API_KEY", "LIVE_API_URL", "TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_serve_on_a_port_in_use_is_one_line_before_anything_starts(
    busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with capture_logs() as logs:
        code = cli.main(["serve", "--port", str(busy_port)])
    assert code == 1
    assert capsys.readouterr().err == (
        f"agent: port {busy_port} on 127.0.0.1 is already in use (another `agent serve`?): "
        "stop it, or set PORT / --port to a free port (key 'PORT')\n"
    )
    assert "server.started" not in [log["event"] for log in logs]


def test_agent_call_defaults_to_the_port_agent_serve_uses() -> None:
    assert cli.default_bridge_url(Settings(port=9123)) == "http://127.0.0.1:9123"
    assert cli.default_bridge_url(Settings(port=8080, host="0.0.0.0")) == "http://127.0.0.1:8080"


def test_agent_call_to_no_bridge_is_one_line_naming_the_url(
    closed_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """PORT moves the Quick start's server, and ``agent call`` follows it; nothing listening
    there is one line saying where it looked."""
    monkeypatch.setenv("PORT", str(closed_port))
    assert cli.main(["call", "order-status"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(
        f"agent: could not reach the voice webhook http://127.0.0.1:{closed_port}/twilio/voice: "
        "connect call failed"
    )
    assert line.endswith(
        "(is the bridge running there? `agent serve` listens on PORT, default 8080)"
    )


def test_agent_call_with_an_unknown_clip_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["call", "order-stats"]) == 1
    assert capsys.readouterr().err == (
        "agent: caller audio 'order-stats' is neither a WAV file nor a bundled clip "
        "(order-status, interrupt, goodbye, transfer)\n"
    )


def test_emulate_backend_vertex_takes_the_key_env_as_the_bearer_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[EmulatorOptions] = []
    monkeypatch.setenv("EMULATOR_TOKEN", "ya29.local")

    def create_app(options: EmulatorOptions, **kwargs: object) -> object:
        built.append(options)
        return object()

    monkeypatch.setattr("agent.sim.live.server.create_emulator_app", create_app)
    monkeypatch.setattr("aiohttp.web.run_app", lambda *args, **kwargs: None)
    argv = ["emulate", "--backend", "vertex", "--api-key-env", "EMULATOR_TOKEN", "--no-speech"]
    assert cli.main(argv) == 0
    (options,) = built
    assert options.backend == "vertex"
    assert options.access_token == "ya29.local"
    assert options.api_key is None


def test_agent_serve_runs_on_uvloop_unless_asyncio_is_asked_for() -> None:
    import uvloop

    from agent.cli.main import _loop_factory

    assert _loop_factory("uvloop") is uvloop.new_event_loop
    assert _loop_factory("asyncio") is None  # asyncio.Runner's own default loop
