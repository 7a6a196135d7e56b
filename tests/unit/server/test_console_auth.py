"""The console's credential: a bearer token, or basic auth with the token as password."""

from __future__ import annotations

import base64

import pytest

from agent.server.console import authorized

TOKEN = "s3cret-console-token"


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {TOKEN}",
        f"bearer {TOKEN}",
        f"  Bearer   {TOKEN}  ",
        basic(f"anyone:{TOKEN}"),
        basic(f":{TOKEN}"),
    ],
)
def test_the_token_as_bearer_or_as_the_basic_password_is_let_in(header: str) -> None:
    assert authorized(header, TOKEN)


def test_a_basic_password_is_everything_after_the_first_colon() -> None:
    assert authorized(basic("user:pa:ss"), "pa:ss")
    assert not authorized(basic("us:er:pass"), "pass")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong",
        f"Bearer {TOKEN}x",
        f"Token {TOKEN}",
        basic(TOKEN),  # no colon: a user name without a password
        basic(f"{TOKEN}:"),  # the token as the user name
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),  # not UTF-8
        "Bearer s3cret-console-tokén",
    ],
)
def test_anything_else_is_refused(header: str | None) -> None:
    assert not authorized(header, TOKEN)


def test_without_a_token_the_console_is_open() -> None:
    """Only on loopback: the settings refuse CONSOLE_ENABLED elsewhere without a token."""
    assert authorized(None, None)
