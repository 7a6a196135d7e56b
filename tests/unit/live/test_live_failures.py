"""Which Live connect failures are refusals no retry can fix, from literal closes and statuses."""

from __future__ import annotations

import pytest

from agent.live.failures import FAILURE_KINDS, FIXES, classify_close, classify_status, is_permanent


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        (1007, "API key not valid. Please pass a valid API key.", "auth"),
        (1007, "API key expired. Please renew the API key.", "auth"),
        (
            1008,
            "models/gemini-9-live is not found for API version v1beta, or is not supported for "
            "bidiGenerateContent.",
            "model",
        ),
        (1007, "Your API key doesn't have the required permissions.", "permission"),
        (1008, "The caller does not have permission", "permission"),
        (1007, "User location is not supported for the API use.", "permission"),
        (1007, "Request contains an invalid argument.", "protocol"),
        (1011, "Internal error occurred.", "other"),
        (1008, "Operation is not implemented, or supported, or enabled.", "other"),
        (None, "connection lost", "other"),
    ],
)
def test_a_close_during_setup_is_classified_by_code_and_reason(
    code: int | None, reason: str, kind: str
) -> None:
    assert classify_close(code, reason) == kind


def test_bad_key_unknown_model_and_no_permission_are_permanent_the_rest_is_retried() -> None:
    assert {k for k in FAILURE_KINDS if is_permanent(k)} == {"auth", "model", "permission"}
    assert not is_permanent(classify_close(1011, "Internal error occurred."))


def test_handshake_statuses_401_and_403_are_refusals_others_are_not() -> None:
    assert classify_status(401) == "auth"
    assert classify_status(403) == "permission"
    assert classify_status(404) == "refused"
    assert classify_status(503) == "refused"


def test_every_kind_has_a_fix_naming_what_to_change() -> None:
    assert set(FIXES) == FAILURE_KINDS
    assert "GEMINI_API_KEY" in FIXES["auth"]
    assert "model:" in FIXES["model"]
