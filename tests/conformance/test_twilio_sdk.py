"""Our signatures and TwiML against the official ``twilio`` library (twilio-python).

The SDK is the reference for what Twilio computes and accepts; these tests pin
``agent.telephony.webhooks`` to it so a divergence shows up here rather than as rejected webhooks in
production.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET

import pytest
from twilio.http.http_client import HttpClient  # type: ignore[import-untyped]
from twilio.http.response import Response  # type: ignore[import-untyped]
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]
from twilio.twiml.voice_response import (  # type: ignore[import-untyped]
    Connect,
    Dial,
    VoiceResponse,
)

from agent.telephony.rest import conference_twiml, create_call_params, warm_transfer_params
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


# -- the Calls.json create form against the SDK's calls.create ------------------------------------


class _CapturingHttpClient(HttpClient):  # type: ignore[misc]
    """Keeps the SDK's request instead of sending it, and answers like Twilio's 201."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("twilio.http_client"), False)
        self.requests: list[tuple[str, str, dict[str, object]]] = []

    def request(
        self, method: str, uri: str, *args: object, data: object = None, **kwargs: object
    ) -> Response:
        self.requests.append((method, uri, dict(data or {})))  # type: ignore[call-overload]
        return Response(201, json.dumps({"sid": "CA" + "1" * 32, "status": "queued"}))


def _sdk_form(**create: object) -> tuple[str, str, dict[str, object]]:
    http = _CapturingHttpClient()
    client = Client("AC" + "a" * 32, TOKEN, http_client=http)
    client.calls.create(**create)
    [request] = http.requests
    return request


def test_our_outbound_create_form_is_what_the_sdks_calls_create_sends() -> None:
    ours = create_call_params(
        to="+15555550201",
        from_="+15555550123",
        answer_url="https://agent.example.com/twilio/outbound",
        status_callback="https://agent.example.com/twilio/call-status",
        amd_callback="https://agent.example.com/twilio/amd",
        ring_timeout_s=25,
        amd_timeout_s=20,
    )
    method, uri, sdk = _sdk_form(
        to="+15555550201",
        from_="+15555550123",
        url="https://agent.example.com/twilio/outbound",
        method="POST",
        timeout=25,
        status_callback="https://agent.example.com/twilio/call-status",
        status_callback_method="POST",
        status_callback_event=["initiated", "ringing", "answered", "completed"],
        machine_detection="DetectMessageEnd",
        machine_detection_timeout=20,
        async_amd="true",
        async_amd_status_callback="https://agent.example.com/twilio/amd",
        async_amd_status_callback_method="POST",
    )
    assert (method, uri.rsplit("/", 1)[-1]) == ("POST", "Calls.json")
    # The same field names; values as strings (the SDK sends lists as repeated fields).
    normalised = {
        k: tuple(v) if isinstance(v, list) else str(v) for k, v in sdk.items() if v is not None
    }
    assert normalised == ours


def test_the_colleagues_create_form_is_what_the_sdk_sends() -> None:
    ours = warm_transfer_params(
        to="+15555550143",
        from_="+15555550199",
        summary="Ada wants a refund.",
        room="transfer-CA1",
        status_callback="https://agent.example.com/twilio/warm-status?for=CA1",
        ring_timeout_s=20,
    )
    _, _, sdk = _sdk_form(
        to="+15555550143",
        from_="+15555550199",
        twiml=ours["Twiml"],
        timeout=20,
        status_callback="https://agent.example.com/twilio/warm-status?for=CA1",
        status_callback_method="POST",
        status_callback_event=["answered", "completed"],
    )
    normalised = {
        k: tuple(v) if isinstance(v, list) else str(v) for k, v in sdk.items() if v is not None
    }
    assert normalised == ours


def test_the_conference_twiml_is_what_the_sdk_builds() -> None:
    response = VoiceResponse()
    response.say("Ada & co")
    dial = Dial()
    dial.conference("transfer-CA1", end_conference_on_exit=True, beep=False)
    response.append(dial)
    # Canonical XML (attributes sorted, the SDK's declaration dropped): the same document.
    ours = ET.canonicalize(conference_twiml("transfer-CA1", say="Ada & co"))
    theirs = ET.canonicalize(str(response).split("?>", 1)[-1])
    assert ours == theirs
