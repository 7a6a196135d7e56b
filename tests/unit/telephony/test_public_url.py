"""PUBLIC_URL diagnostics from literal request headers: what the 403 line says, and when a
loopback PUBLIC_URL is worth a warning."""

from __future__ import annotations

import pytest

from agent.telephony.public_url import (
    is_loopback_host,
    loopback_public_url_warning,
    signature_rejected_fields,
    url_seen,
)

NGROK = {
    "Host": "127.0.0.1:8080",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "abc123.ngrok.app",
}


def test_a_tunnel_rejection_names_the_url_checked_the_headers_seen_and_the_public_url_to_set() -> (
    None
):
    fields = signature_rejected_fields("http://127.0.0.1:8080", "/twilio/voice", "http", NGROK)
    assert fields == {
        "checked_url": "http://127.0.0.1:8080/twilio/voice",
        "host": "127.0.0.1:8080",
        "x_forwarded_proto": "https",
        "x_forwarded_host": "abc123.ngrok.app",
        "hint": "the request was sent to https://abc123.ngrok.app/twilio/voice, but the "
        "signature was checked against http://127.0.0.1:8080/twilio/voice: if Twilio requests "
        "https://abc123.ngrok.app/twilio/voice, set PUBLIC_URL=https://abc123.ngrok.app",
    }


def test_a_rejection_whose_url_matches_points_at_the_auth_token() -> None:
    fields = signature_rejected_fields(
        "https://agent.example.com",
        "/twilio/voice",
        "http",
        {"Host": "agent.example.com", "X-Forwarded-Proto": "https"},
    )
    assert fields["checked_url"] == "https://agent.example.com/twilio/voice"
    assert fields["x_forwarded_host"] is None
    assert str(fields["hint"]).startswith(
        "the URL matches what the request says: check that TWILIO_AUTH_TOKEN"
    )


def test_header_values_are_the_first_of_a_proxy_chain_and_bounded() -> None:
    headers = {
        "Host": "h",
        "X-Forwarded-Host": "a.example, b.internal",
        "X-Forwarded-Proto": "x" * 500,
    }
    assert url_seen(headers, "http", "/p") == "x" * 200 + "://a.example/p"
    assert url_seen({}, "http", "/p") is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("localhost:8080", True),
        ("abc123.ngrok.app", False),
        ("127.example.com", False),
        ("10.0.0.5", False),
        (None, False),
    ],
)
def test_loopback_hosts(host: str | None, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_a_loopback_public_url_answering_a_tunnelled_request_is_warned_about() -> None:
    warning = loopback_public_url_warning(
        "http://127.0.0.1:8080", "ws://127.0.0.1:8080/twilio/stream", "127.0.0.1", NGROK
    )
    assert warning == (
        "PUBLIC_URL and the stream URL are on loopback (http://127.0.0.1:8080; streams to "
        "ws://127.0.0.1:8080/twilio/stream) but this request came from elsewhere "
        "(X-Forwarded-Host abc123.ngrok.app): Twilio cannot reach 127.0.0.1. Set PUBLIC_URL to "
        "the URL Twilio uses, e.g. PUBLIC_URL=https://abc123.ngrok.app"
    )


def test_a_request_from_a_public_address_to_a_loopback_public_url_is_warned_about() -> None:
    warning = loopback_public_url_warning(
        "http://127.0.0.1:8080",
        "ws://127.0.0.1:8080/twilio/stream",
        "54.172.60.1",
        {"Host": "203.0.113.9:8080"},
    )
    assert warning is not None
    assert "(remote address 54.172.60.1, Host 203.0.113.9:8080)" in warning
    assert warning.endswith("e.g. PUBLIC_URL=https://203.0.113.9:8080")


def test_local_requests_and_public_urls_are_not_warned_about() -> None:
    local = {"Host": "127.0.0.1:8080"}
    assert (
        loopback_public_url_warning(
            "http://127.0.0.1:8080", "ws://127.0.0.1:8080/twilio/stream", "127.0.0.1", local
        )
        is None
    )
    assert (
        loopback_public_url_warning(
            "https://agent.example.com", "wss://agent.example.com/twilio/stream", "54.1.1.1", NGROK
        )
        is None
    )


def test_a_loopback_stream_url_alone_is_warned_about() -> None:
    warning = loopback_public_url_warning(
        "https://agent.example.com", "ws://127.0.0.1:8080/twilio/stream", "54.172.60.1", {}
    )
    assert warning is not None
    assert warning.startswith("the stream URL is on loopback")
