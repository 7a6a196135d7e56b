"""Settings from the environment, and the refusal to expose an unauthenticated bridge."""

from __future__ import annotations

import pytest

from agent.errors import ConfigError
from agent.server.settings import Settings


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


def test_the_stream_ticket_secret_and_database_passwords_are_secrets() -> None:
    settings = Settings.from_env(
        {"STREAM_TOKEN_SECRET": "ticket-key-1234", "SHARED_STATE_URL": "postgresql://a:s3cret@h/d"}
    )
    assert {"ticket-key-1234", "s3cret"} <= set(settings.secrets())
    assert "ticket-key-1234" not in repr(settings)
    assert "s3cret" not in repr(settings)
