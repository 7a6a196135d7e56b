"""TwiML, Twilio webhook signatures and stream tokens, with literal values; no event loop."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from agent.telephony.webhooks import (
    PARAMETER_LIMIT,
    StreamTicket,
    StreamTokens,
    UsedNonces,
    compute_signature,
    connect_stream_twiml,
    stream_url_from_public_url,
    verify_signature,
)

# -- TwiML -----------------------------------------------------------------------------------------

STREAM_URL = "wss://agent.example.com/twilio/stream"


def test_connect_stream_twiml_literal() -> None:
    twiml = connect_stream_twiml(STREAM_URL, {"agent": "acme-support", "token": "t.1"})
    assert twiml == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://agent.example.com/twilio/stream">'
        '<Parameter name="agent" value="acme-support"/><Parameter name="token" value="t.1"/>'
        "</Stream></Connect></Response>"
    )


def test_connect_stream_twiml_structure() -> None:
    twiml = connect_stream_twiml(
        STREAM_URL, {"agent": "acme-support", "token": "abc"}, status_callback="https://h/status"
    )
    root = ET.fromstring(twiml.encode())
    assert root.tag == "Response"
    [connect] = list(root)
    assert connect.tag == "Connect"
    assert connect.attrib == {}
    [stream] = list(connect)
    assert stream.tag == "Stream"
    assert stream.attrib == {"url": STREAM_URL, "statusCallback": "https://h/status"}
    assert [(p.tag, p.attrib) for p in stream] == [
        ("Parameter", {"name": "agent", "value": "acme-support"}),
        ("Parameter", {"name": "token", "value": "abc"}),
    ]


def test_connect_stream_twiml_without_parameters() -> None:
    root = ET.fromstring(connect_stream_twiml("ws://localhost:8080/twilio/stream", {}))
    stream = root.find("Connect/Stream")
    assert stream is not None
    assert stream.attrib == {"url": "ws://localhost:8080/twilio/stream"}
    assert list(stream) == []


@pytest.mark.parametrize(
    "value",
    [
        'a&b<c>d"e',
        "it's",
        "&amp; already",
        "multi\nline\r\n\ttabbed",
        "naïve ✓ 日本 🎧",
        "  spaced  ",
    ],
)
def test_twiml_escapes_parameter_values_exactly(value: str) -> None:
    twiml = connect_stream_twiml(
        STREAM_URL, {'na&me<">': value}, status_callback="https://h/s?a=1&b=2"
    )
    stream = ET.fromstring(twiml.encode()).find("Connect/Stream")
    assert stream is not None
    assert stream.attrib["statusCallback"] == "https://h/s?a=1&b=2"
    [param] = list(stream)
    assert param.attrib == {"name": 'na&me<">', "value": value}


def test_twiml_escaping_literal() -> None:
    twiml = connect_stream_twiml(STREAM_URL, {"q": 'a&b<c>d"e\n'})
    assert '<Parameter name="q" value="a&amp;b&lt;c&gt;d&quot;e&#10;"/>' in twiml


@pytest.mark.parametrize(
    "url",
    [
        "https://agent.example.com/twilio/stream",
        "http://agent.example.com/twilio/stream",
        "agent.example.com/twilio/stream",
        "wss:///twilio/stream",
        "",
        "wss://agent.example.com/twilio/stream?token=abc",
        "wss://agent.example.com/twilio/stream?",
        "wss://agent.example.com/twilio/stream#frag",
        "wss://[::1/twilio/stream",
    ],
)
def test_twiml_rejects_bad_stream_urls(url: str) -> None:
    with pytest.raises(ValueError, match="stream URL"):
        connect_stream_twiml(url, {})


def test_twiml_parameter_length_limit() -> None:
    name = "token"
    ok = "x" * (PARAMETER_LIMIT - len(name) - 1)
    connect_stream_twiml(STREAM_URL, {name: ok})
    with pytest.raises(ValueError, match="500"):
        connect_stream_twiml(STREAM_URL, {name: ok + "x"})


def test_twiml_rejects_empty_names_and_non_xml_characters() -> None:
    with pytest.raises(ValueError, match="empty"):
        connect_stream_twiml(STREAM_URL, {"": "v"})
    with pytest.raises(ValueError, match="XML"):
        connect_stream_twiml(STREAM_URL, {"n": "bell\x07"})
    with pytest.raises(ValueError, match="XML"):
        connect_stream_twiml(STREAM_URL, {"n": "\ud800"})


@pytest.mark.parametrize(
    ("public_url", "expected"),
    [
        ("https://agent.example.com", "wss://agent.example.com/twilio/stream"),
        ("https://agent.example.com/", "wss://agent.example.com/twilio/stream"),
        ("http://localhost:8080", "ws://localhost:8080/twilio/stream"),
        ("https://example.com:8443/bot", "wss://example.com:8443/bot/twilio/stream"),
        ("https://example.com/bot/", "wss://example.com/bot/twilio/stream"),
        ("https://[2001:db8::1]:8443", "wss://[2001:db8::1]:8443/twilio/stream"),
        ("wss://already.example.com", "wss://already.example.com/twilio/stream"),
    ],
)
def test_stream_url_from_public_url(public_url: str, expected: str) -> None:
    assert stream_url_from_public_url(public_url) == expected


def test_stream_url_from_public_url_custom_path() -> None:
    assert stream_url_from_public_url("https://h.example/base", "ws") == "wss://h.example/base/ws"
    assert stream_url_from_public_url("https://h.example", "/a/b") == "wss://h.example/a/b"


@pytest.mark.parametrize(
    "public_url", ["ftp://h.example", "h.example", "https://", "https://h/?x=1", "https://h/#f"]
)
def test_stream_url_from_public_url_rejects(public_url: str) -> None:
    with pytest.raises(ValueError, match="public URL"):
        stream_url_from_public_url(public_url)


def test_stream_url_round_trips_into_twiml() -> None:
    connect_stream_twiml(stream_url_from_public_url("https://example.com:8443/bot"), {})


# -- signatures ------------------------------------------------------------------------------------

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
# The worked example in Twilio's webhook-security documentation.
EXPECTED = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_compute_signature_matches_twilios_documented_example() -> None:
    assert compute_signature(TOKEN, URL, PARAMS) == EXPECTED


def test_compute_signature_other_literals() -> None:
    # twilio-python's own test vector.
    params = {**PARAMS, "Caller": "+14158675309", "From": "+14158675309"}
    assert compute_signature(TOKEN, URL, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    # No params: the URL alone is signed.
    assert compute_signature(TOKEN, URL, {}) == "zYQTYrRWXE7LtzbG4PfP7/bkkGo="


def test_compute_signature_sorts_by_name_not_insertion_order() -> None:
    reordered = dict(reversed(list(PARAMS.items())))
    assert compute_signature(TOKEN, URL, reordered) == EXPECTED


def test_verify_signature_accepts_the_right_signature() -> None:
    assert verify_signature(TOKEN, URL, PARAMS, EXPECTED)


@pytest.mark.parametrize(
    ("token", "url", "params", "signature"),
    [
        ("54321", URL, PARAMS, EXPECTED),
        (TOKEN, URL.replace("foo=1", "foo=2"), PARAMS, EXPECTED),
        (TOKEN, URL, {**PARAMS, "Digits": "1235"}, EXPECTED),
        (TOKEN, URL, {**PARAMS, "Extra": ""}, EXPECTED),
        (TOKEN, URL, PARAMS, EXPECTED[:-1]),
        (TOKEN, URL, PARAMS, EXPECTED.lower()),
        (TOKEN, URL, PARAMS, ""),
        (TOKEN, URL, PARAMS, None),
        (TOKEN, URL, PARAMS, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=é"),  # non-ASCII must not raise
        (TOKEN, URL, PARAMS, "\ud800"),
        (TOKEN, URL, {**PARAMS, "Digits": "\udc80"}, EXPECTED),  # unencodable param must not raise
        (TOKEN, "https://h:bad/x", PARAMS, EXPECTED),  # unparseable port must not raise
    ],
)
def test_verify_signature_rejects(
    token: str, url: str, params: dict[str, str], signature: str | None
) -> None:
    assert not verify_signature(token, url, params, signature)


@pytest.mark.parametrize(
    ("signed_url", "request_url"),
    [
        (
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
        ),
        (
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            "https://mycompany.com/myapp.php?foo=1&bar=2",
        ),
        ("http://mycompany.com/hook", "http://mycompany.com:80/hook"),
        ("http://mycompany.com:80/hook", "http://mycompany.com/hook"),
        ("wss://mycompany.com/twilio/stream", "wss://mycompany.com:443/twilio/stream"),
        ("https://user:pw@mycompany.com/hook", "https://user:pw@mycompany.com:443/hook"),
        ("https://[2001:db8::1]/hook", "https://[2001:db8::1]:443/hook"),
        ("https://[2001:db8::1]:443/hook", "https://[2001:db8::1]/hook"),
        ("https://mycompany.com/hook?", "https://mycompany.com:443/hook?"),  # empty query kept
    ],
)
def test_verify_signature_accepts_default_port_added_or_removed(
    signed_url: str, request_url: str
) -> None:
    signature = compute_signature(TOKEN, signed_url, PARAMS)
    assert verify_signature(TOKEN, request_url, PARAMS, signature)


@pytest.mark.parametrize(
    ("signed_url", "request_url"),
    [
        ("https://mycompany.com/hook", "https://mycompany.com:8443/hook"),
        ("https://mycompany.com:8443/hook", "https://mycompany.com/hook"),
        ("https://mycompany.com/hook", "https://mycompany.com:80/hook"),  # wrong default for https
        ("http://mycompany.com/hook", "http://mycompany.com:443/hook"),
        ("https://mycompany.com/hook", "http://mycompany.com/hook"),
    ],
)
def test_verify_signature_does_not_accept_other_ports_or_schemes(
    signed_url: str, request_url: str
) -> None:
    signature = compute_signature(TOKEN, signed_url, PARAMS)
    assert not verify_signature(TOKEN, request_url, PARAMS, signature)


# -- stream tokens ---------------------------------------------------------------------------------

SECRET = b"0123456789abcdef0123456789abcdef"
CALL = "CA5e9b7b3a0c1f4d2a8b6e0f1a2b3c4d5e"
T0 = 1_700_000_000.0


def test_token_verifies_once_for_its_call() -> None:
    tokens = StreamTokens(SECRET, ttl_s=60.0)
    token = tokens.issue(CALL, T0)
    assert tokens.verify(token, CALL, T0 + 1) is not None
    assert tokens.verify(token, CALL, T0 + 2) is None  # single use


def test_a_ticket_carries_what_the_webhook_learned() -> None:
    tokens = StreamTokens(SECRET, ttl_s=60.0)
    token = tokens.issue(
        CALL,
        T0,
        agent="acme-support",
        from_number="+14155550100",
        to_number="+14155550199",
        caller_verified=True,
    )
    # Another replica with the same secret reads the same facts back.
    ticket = StreamTokens(SECRET).open(token, CALL, T0 + 1)
    assert ticket == StreamTicket(
        call_sid=CALL,
        nonce=ticket.nonce if ticket else "",
        expires_ms=int((T0 + 60) * 1000),
        agent="acme-support",
        from_number="+14155550100",
        to_number="+14155550199",
        caller_verified=True,
    )
    assert ticket is not None
    assert len(ticket.nonce) == 22


def test_a_ticket_without_numbers_says_so() -> None:
    ticket = StreamTokens(SECRET).open(StreamTokens(SECRET).issue(CALL, T0), CALL, T0)
    assert ticket is not None
    assert (ticket.agent, ticket.from_number, ticket.to_number, ticket.caller_verified) == (
        "",
        None,
        None,
        False,
    )


def test_opening_does_not_consume_a_ticket() -> None:
    tokens = StreamTokens(SECRET)
    token = tokens.issue(CALL, T0)
    assert tokens.open(token, CALL, T0) is not None
    assert tokens.open(token, CALL, T0) is not None
    assert tokens.verify(token, CALL, T0) is not None
    assert tokens.verify(token, CALL, T0) is None


def test_token_is_url_safe_and_fits_a_twiml_parameter_at_its_largest() -> None:
    token = StreamTokens(SECRET).issue(
        "CA" + "f" * 62,
        T0,
        agent="a" * 64,
        from_number="sip:" + "x" * 60,
        to_number="+" + "9" * 63,
        caller_verified=True,
    )
    prefix, payload, mac = token.split(".")
    assert prefix == "st2"
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in payload + mac)
    connect_stream_twiml(STREAM_URL, {"token": token})  # under the 500-character limit


def test_a_number_too_long_to_be_one_is_left_out() -> None:
    tokens = StreamTokens(SECRET)
    ticket = tokens.open(tokens.issue(CALL, T0, from_number="x" * 65), CALL, T0)
    assert ticket is not None
    assert ticket.from_number is None


def test_quotes_and_non_ascii_text_round_trip() -> None:
    tokens = StreamTokens(SECRET)
    token = tokens.issue(CALL, T0, agent='a"b<c>\\d', from_number="+1 (415) \u00e9")
    ticket = tokens.open(token, CALL, T0)
    assert ticket is not None
    assert (ticket.agent, ticket.from_number) == ('a"b<c>\\d', "+1 (415) \u00e9")


def test_tokens_are_unique() -> None:
    tokens = StreamTokens(SECRET)
    assert len({tokens.issue(CALL, T0) for _ in range(100)}) == 100


def test_token_expiry_is_inclusive_to_the_millisecond() -> None:
    tokens = StreamTokens(SECRET, ttl_s=60.0)
    assert tokens.verify(tokens.issue(CALL, T0), CALL, T0 + 60.0) is not None
    assert tokens.verify(tokens.issue(CALL, T0), CALL, T0 + 60.002) is None


def test_token_wrong_call_sid_is_rejected_and_not_consumed() -> None:
    tokens = StreamTokens(SECRET)
    token = tokens.issue(CALL, T0)
    assert tokens.verify(token, "CAsomeoneelse", T0) is None
    assert tokens.verify(token, "", T0) is None
    assert tokens.verify(token, CALL, T0) is not None


def test_token_from_another_secret_is_rejected() -> None:
    token = StreamTokens(b"another secret").issue(CALL, T0)
    assert StreamTokens(SECRET).verify(token, CALL, T0) is None


def test_tampered_tokens_are_rejected() -> None:
    tokens = StreamTokens(SECRET)
    token = tokens.issue(CALL, T0, from_number="+14155550100")
    prefix, payload, mac = token.split(".")
    # Someone else's number, re-encoded into an otherwise valid token.
    other = StreamTokens(SECRET).issue(CALL, T0, from_number="+14155550111").split(".")[1]
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    for forged in (
        f"{prefix}.{other}.{mac}",
        f"st1.{payload}.{mac}",
        f"{prefix}.{payload}x.{mac}",
        f"{prefix}.{payload}.{flipped}",
        f"{prefix}.{payload}.{mac}=",
        f"{prefix}.{payload}.{mac}.{mac}",
    ):
        assert tokens.verify(forged, CALL, T0) is None
    assert tokens.verify(token, CALL, T0) is not None


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "..",
        "st2.",
        "st2..",
        "abc",
        "st2.abc",
        "st2.abc.def.ghi",
        "st2." + "A" * 5000 + ".mac",
        "st2.\ud800.mac",
        "st2.abc.\ud800",
        "st2.a\x00c.mac",
        "st2.a=c.mac",
        "1700000060000.nonce.mac",  # the old format
    ],
)
def test_malformed_tokens_are_rejected(token: str) -> None:
    assert StreamTokens(SECRET).verify(token, CALL, T0) is None


def test_used_nonces_are_forgotten_once_expired() -> None:
    tokens = StreamTokens(SECRET, ttl_s=10.0)
    used = UsedNonces()
    for i in range(50):
        ticket = tokens.open(tokens.issue(CALL, T0 + i), CALL, T0 + i)
        assert ticket is not None
        assert used.claim(ticket, T0 + i)
    # At T0+49, tokens that expired before then (issued before T0+39) were pruned.
    assert len(used) <= 11
    late = tokens.open(tokens.issue(CALL, T0 + 1000), CALL, T0 + 1000)
    assert late is not None
    assert used.claim(late, T0 + 1000)
    assert len(used) == 1


def test_a_replay_after_expiry_still_fails() -> None:
    tokens = StreamTokens(SECRET, ttl_s=10.0)
    token = tokens.issue(CALL, T0)
    assert tokens.verify(token, CALL, T0) is not None
    assert tokens.verify(token, CALL, T0 + 11) is None  # pruned from memory, rejected as expired


def test_stream_tokens_reject_bad_configuration() -> None:
    with pytest.raises(ValueError, match="secret"):
        StreamTokens(b"")
    with pytest.raises(ValueError, match="TTL"):
        StreamTokens(SECRET, ttl_s=0)
    with pytest.raises(ValueError, match="TTL"):
        StreamTokens(SECRET, ttl_s=float("nan"))
    with pytest.raises(ValueError, match="call_sid"):
        StreamTokens(SECRET).issue("", T0)
