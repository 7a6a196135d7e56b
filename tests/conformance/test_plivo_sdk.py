"""Our Plivo V3 webhook signatures against Plivo's official Python library."""

from __future__ import annotations

import pytest
from plivo.utils.signature_v3 import validate_v3_signature  # type: ignore[import-untyped]

from agent.telephony.plivo import compute_signature, verify_signature

CALL_ID = "12345678-1234-1234-1234-123456789abc"


@pytest.mark.parametrize(
    ("method", "url", "params"),
    [
        ("POST", "https://bridge.example/plivo/answer", {"CallUUID": CALL_ID, "From": "+1555"}),
        ("POST", "https://bridge.example/plivo/answer?b=2&a=1", {"CallUUID": CALL_ID}),
        ("POST", "https://bridge.example/plivo/answer", {}),
        ("GET", "https://bridge.example/plivo/dial?to=%2B15555550142", {}),
    ],
)
def test_signatures_match_the_official_library(
    method: str, url: str, params: dict[str, str]
) -> None:
    signature = compute_signature("token-1", method, url, params, "nonce-42")
    assert validate_v3_signature(method, url, "nonce-42", "token-1", signature, dict(params))
    form = params if method == "POST" else {}
    assert verify_signature("token-1", method, url, form, "nonce-42", signature)
