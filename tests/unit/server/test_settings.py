"""Settings from the environment, and the refusal to expose an unauthenticated bridge."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.settings import Settings, agents_path_from_env, reveal


def test_the_default_listens_on_loopback_only() -> None:
    settings = Settings.from_env({})
    assert settings.host == "127.0.0.1"
    settings.check_exposure()  # development on loopback needs no token


def test_an_unauthenticated_bridge_is_not_served_beyond_this_machine() -> None:
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        Settings.from_env({"HOST": "0.0.0.0"}).check_exposure()


@pytest.mark.parametrize(
    "env",
    [
        {"HOST": "0.0.0.0", "TWILIO_AUTH_TOKEN": "a-real-looking-token"},
        {"HOST": "0.0.0.0", "ALLOW_UNAUTHENTICATED": "true"},
        {"HOST": "::1"},
    ],
)
def test_exposure_is_allowed_with_a_token_or_an_explicit_choice(env: dict[str, str]) -> None:
    Settings.from_env(env).check_exposure()


def test_bad_values_name_their_variable() -> None:
    with pytest.raises(ConfigError, match="DRAIN_TIMEOUT_S"):
        Settings.from_env({"DRAIN_TIMEOUT_S": "soon"})
    with pytest.raises(ConfigError, match="ALLOW_UNAUTHENTICATED"):
        Settings.from_env({"ALLOW_UNAUTHENTICATED": "maybe"})


def test_replicas_share_state_in_their_postgresql_records_database_by_default() -> None:
    pg = "postgresql://agent:pw@db/agent"
    assert Settings.from_env({}).shared_state_url is None  # one instance: in memory, as before
    assert Settings.from_env({"DATABASE_URL": "sqlite:///./calls.db"}).shared_state_url is None
    assert Settings.from_env({"DATABASE_URL": pg}).shared_state_url == pg
    own = "postgresql://other/state"
    assert Settings.from_env({"DATABASE_URL": pg, "SHARED_STATE_URL": own}).shared_state_url == own
    with pytest.raises(ConfigError, match="SHARED_STATE_URL"):
        Settings.from_env({"SHARED_STATE_URL": "redis://cache"})


def test_drain_mode_workers_and_handover_are_read_and_checked() -> None:
    settings = Settings.from_env(
        {"DRAIN_MODE": "Wait", "WORKERS": "2", "HANDOVER_TIMEOUT_S": "12.5"}
    )
    assert (settings.drain_mode, settings.workers, settings.handover_timeout_s) == ("wait", 2, 12.5)
    assert Settings.from_env({}).drain_mode == "handover"
    with pytest.raises(ConfigError, match="DRAIN_MODE"):
        Settings.from_env({"DRAIN_MODE": "sometime"})
    with pytest.raises(ConfigError, match="WORKERS"):
        Settings.from_env({"WORKERS": "0"})


def test_max_calls_is_read_and_checked() -> None:
    assert Settings.from_env({}).max_calls == 50
    assert Settings.from_env({"MAX_CALLS": "12"}).max_calls == 12
    for bad in ("0", "many"):
        with pytest.raises(ConfigError, match="MAX_CALLS"):
            Settings.from_env({"MAX_CALLS": bad})


def test_connection_cap_and_read_timeout_are_read_and_checked() -> None:
    defaults = Settings.from_env({})
    assert (defaults.max_connections, defaults.http_read_timeout_s) == (500, 15.0)
    settings = Settings.from_env({"MAX_CONNECTIONS": "64", "HTTP_READ_TIMEOUT_S": "75"})
    assert (settings.max_connections, settings.http_read_timeout_s) == (64, 75.0)
    with pytest.raises(ConfigError, match="MAX_CONNECTIONS"):
        Settings.from_env({"MAX_CONNECTIONS": "0"})
    with pytest.raises(ConfigError, match="HTTP_READ_TIMEOUT_S"):
        Settings.from_env({"HTTP_READ_TIMEOUT_S": "0"})


def test_the_stream_ticket_secret_and_database_passwords_are_secrets() -> None:
    settings = Settings.from_env(
        {"STREAM_TOKEN_SECRET": "ticket-key-1234", "SHARED_STATE_URL": "postgresql://a:s3cret@h/d"}
    )
    assert {"ticket-key-1234", "s3cret"} <= set(settings.secrets())
    assert "ticket-key-1234" not in repr(settings)
    assert "s3cret" not in repr(settings)


def test_a_dotenv_file_is_read_and_the_environment_wins_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "# development secrets\nGEMINI_API_KEY=key-from-dotenv\nLOG_LEVEL=debug\n"
        "SOME_OTHER_TOOL=1\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("LOG_LEVEL", "warning")
    settings = Settings.from_env()
    assert reveal(settings.gemini_api_key) == "key-from-dotenv"
    assert settings.log_level == "warning"
    assert "key-from-dotenv" not in repr(settings)
    assert settings.secrets() == ("key-from-dotenv",)


def test_an_explicit_mapping_is_all_that_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("GEMINI_API_KEY=key-from-dotenv\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOST", "0.0.0.0")
    settings = Settings.from_env({"TWILIO_AUTH_TOKEN": " ", "RECORD_REDACT_FIELDS": "A, b,,"})
    assert (settings.gemini_api_key, settings.host) == (None, "127.0.0.1")
    assert settings.twilio_auth_token is None  # blank is unset
    assert settings.record_redact_fields == frozenset({"a", "b"})


def test_settings_built_in_code_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="PUBLIC_URL must start with http"):
        Settings(public_url="ftp://example.com")
    assert Settings(port=9000).public_url == "http://127.0.0.1:9000"


def test_agent_check_finds_agents_path_where_the_server_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("AGENTS_PATH=from-dotenv/\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENTS_PATH", raising=False)
    assert agents_path_from_env() == Settings.from_env().agents_path == "from-dotenv/"
    monkeypatch.setenv("AGENTS_PATH", "from-env/")
    assert agents_path_from_env() == Settings.from_env().agents_path == "from-env/"


def test_a_host_name_that_starts_with_127_is_not_loopback() -> None:
    with pytest.raises(ConfigError, match="refusing to listen"):
        Settings(host="127.example.com").check_exposure()
    Settings(host="127.0.0.2").check_exposure()  # the loopback network
    Settings(host="::1").check_exposure()


def test_streams_can_be_pointed_at_this_pod_while_webhooks_stay_on_the_shared_url() -> None:
    settings = Settings.from_env(
        {"PUBLIC_URL": "https://agent.example.com", "STREAM_URL": "https://pod-3.example.com/"}
    )
    assert (settings.public_url, settings.stream_url) == (
        "https://agent.example.com",
        "https://pod-3.example.com",
    )
    assert Settings.from_env({}).stream_url is None
    with pytest.raises(ConfigError, match="STREAM_URL"):
        Settings.from_env({"STREAM_URL": "wss://pod-3.example.com"})


def test_the_console_is_refused_beyond_loopback_without_its_token() -> None:
    with pytest.raises(ConfigError, match="CONSOLE_TOKEN") as refused:
        Settings.from_env(
            {"HOST": "0.0.0.0", "TWILIO_AUTH_TOKEN": "t", "CONSOLE_ENABLED": "true"}
        ).check_exposure()
    assert refused.value.key == "CONSOLE_TOKEN"
    env = {"HOST": "0.0.0.0", "TWILIO_AUTH_TOKEN": "t", "CONSOLE_ENABLED": "true"}
    Settings.from_env(env | {"CONSOLE_TOKEN": "c"}).check_exposure()
    Settings.from_env({"CONSOLE_ENABLED": "true"}).check_exposure()  # loopback: development


def test_the_console_token_is_a_secret() -> None:
    settings = Settings.from_env({"CONSOLE_TOKEN": "console-token-value"})
    assert "console-token-value" in settings.secrets()
    assert "console-token-value" not in repr(settings)


def test_event_loop_is_uvloop_unless_asyncio_is_asked_for() -> None:
    assert Settings.from_env({}).event_loop == "uvloop"
    assert Settings.from_env({"EVENT_LOOP": "AsyncIO"}).event_loop == "asyncio"
    with pytest.raises(ConfigError, match=r"EVENT_LOOP.*must be uvloop or asyncio, got 'trio'"):
        Settings.from_env({"EVENT_LOOP": "trio"})
