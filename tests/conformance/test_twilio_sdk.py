"""Our signatures and TwiML against the official ``twilio`` library (twilio-python).

The SDK is the reference for what Twilio computes and accepts; these tests pin
``agent.telephony.webhooks`` to it so a divergence shows up here rather than as rejected webhooks in
production.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]
from twilio.twiml.voice_response import Connect, VoiceResponse  # type: ignore[import-untyped]

from agent.telephony.webhooks import compute_signature, connect_stream_twiml, verify_signature

TOKEN = "8f3c0e2a9b7d4c1e6f5a0b9c8d7e6f5a"

CASES: list[tuple[str, dict[str, str]]] = [
    ("https://agent.example.com/twilio/voice", {}),
    (
        "https://agent.example.com/twilio/voice",
        {
            "AccountSid": "AC0123456789abcdef0123456789abcdef",
            "CallSid": "CA5e9b7b3a0c1f4d2a8b6e0f1a2b3c4d5e",
            "CallStatus": "ringing",
            "Direction": "inbound",
            "From": "+14155550100",
            "To": "+14155550199",
        },
    ),
    (
        "https://mycompany.com/myapp.php?foo=1&bar=2",
        {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+12349013030"},
    ),
    (
        "https://agent.example.com:8443/base/hook?x=%20y&z=%E2%9C%93",
        {"Caller": "+1 (415) 555-0100"},
    ),
    (
        "https://agent.example.com/hook",
        {
            "CallerName": "Zoë Ñúñez 日本 🎧",
            "SpeechResult": 'He said "hi" & <left>; 100% sure\nnew line',
            "a": "lowercase sorts after uppercase",
            "Z": "",
            "Body+": "=?&",
        },
    ),
    ("http://localhost:8080/twilio/voice", {"CallSid": "CAlocal"}),
    ("wss://agent.example.com/twilio/stream", {}),
]


@pytest.mark.parametrize(("url", "params"), CASES)
def test_compute_signature_equals_sdk(url: str, params: dict[str, str]) -> None:
    assert compute_signature(TOKEN, url, params) == RequestValidator(TOKEN).compute_signature(
        url, params
    )


@pytest.mark.parametrize(("url", "params"), CASES)
def test_sdk_validates_our_signatures(url: str, params: dict[str, str]) -> None:
    signature = compute_signature(TOKEN, url, params)
    assert RequestValidator(TOKEN).validate(url, params, signature)
    assert not RequestValidator("another token").validate(url, params, signature)


@pytest.mark.parametrize(("url", "params"), CASES)
def test_we_verify_sdk_signatures(url: str, params: dict[str, str]) -> None:
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    assert verify_signature(TOKEN, url, params, signature)
    assert not verify_signature("another token", url, params, signature)
    assert not verify_signature(TOKEN, url, {**params, "Injected": "1"}, signature)


# (URL Twilio signed, URL the request arrived at): the default port added or removed.
PORT_VARIANTS = [
    ("https://agent.example.com/twilio/voice", "https://agent.example.com:443/twilio/voice"),
    ("https://agent.example.com:443/twilio/voice", "https://agent.example.com/twilio/voice"),
    (
        "https://mycompany.com/myapp.php?foo=1&bar=2",
        "https://mycompany.com:443/myapp.php?foo=1&bar=2",
    ),
    ("http://agent.example.com/twilio/voice", "http://agent.example.com:80/twilio/voice"),
    ("http://agent.example.com:80/twilio/voice", "http://agent.example.com/twilio/voice"),
]
PARAMS = {"CallSid": "CA5e9b7b3a0c1f4d2a8b6e0f1a2b3c4d5e", "From": "+14155550100"}


@pytest.mark.parametrize(("signed_url", "request_url"), PORT_VARIANTS)
def test_port_variants_are_accepted_like_the_sdk(signed_url: str, request_url: str) -> None:
    sdk_signature = RequestValidator(TOKEN).compute_signature(signed_url, PARAMS)
    our_signature = compute_signature(TOKEN, signed_url, PARAMS)
    assert our_signature == sdk_signature
    assert RequestValidator(TOKEN).validate(request_url, PARAMS, sdk_signature)
    assert verify_signature(TOKEN, request_url, PARAMS, sdk_signature)


def _sdk_twiml(url: str, parameters: dict[str, str], status_callback: str | None = None) -> str:
    response = VoiceResponse()
    connect = Connect()
    kwargs = {} if status_callback is None else {"status_callback": status_callback}
    stream = connect.stream(url=url, **kwargs)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response.to_xml())


def _tree(xml: str) -> tuple[str, dict[str, str], str, list[object]]:
    """A comparable form of an XML document: tag, attributes, text, children, recursively."""

    def walk(element: ET.Element) -> tuple[str, dict[str, str], str, list[object]]:
        return (
            element.tag,
            dict(element.attrib),
            (element.text or "").strip(),
            [walk(c) for c in element],
        )

    return walk(ET.fromstring(xml.encode("utf-8")))


@pytest.mark.parametrize(
    ("url", "parameters", "status_callback"),
    [
        ("wss://agent.example.com/twilio/stream", {}, None),
        (
            "wss://agent.example.com/twilio/stream",
            {"agent": "acme-support", "token": "1.ab-c.d_e"},
            None,
        ),
        (
            "wss://agent.example.com:8443/base/twilio/stream",
            {"agent": "acme-support"},
            "https://agent.example.com/twilio/stream-status?a=1&b=2",
        ),
        (
            "wss://agent.example.com/twilio/stream",
            {
                "quotes": 'He said "hi" & <left>',
                "apostrophe": "it's",
                "unicode": "Zoë 日本 🎧",
                "whitespace": "line\nbreak\ttab",
                "empty": "",
            },
            None,
        ),
    ],
)
def test_twiml_is_structurally_equal_to_the_sdks(
    url: str, parameters: dict[str, str], status_callback: str | None
) -> None:
    ours = connect_stream_twiml(url, parameters, status_callback=status_callback)
    theirs = _sdk_twiml(url, parameters, status_callback)
    assert _tree(ours) == _tree(theirs)
    assert ours.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert theirs.startswith('<?xml version="1.0" encoding="UTF-8"?>')
