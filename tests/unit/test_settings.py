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
