"""The one phone-number normaliser: routing, the CRM and the REST client all read numbers so."""

from __future__ import annotations

import pytest

from agent.numbers import is_e164, normalise_number


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+15555550100", "+15555550100"),
        ("+1 (555) 555-0100", "+15555550100"),
        ("555.555.0100", "+15555550100"),
        ("1-555-555-0100", "+15555550100"),
        ("0044 7700 900123", "+447700900123"),
        ("+44 7700 900123", "+447700900123"),
        ("anonymous", None),
        ("sip:alice@example.com", None),
        ("+0123456", None),
        ("+1234567890123456", None),
        ("+15555550123", "+15555550123"),
        ("+1 (555) 555-0123", "+15555550123"),
        ("0015555550123", "+15555550123"),
        ("5555550123", "+15555550123"),
        ("15555550123", "+15555550123"),
        ("tel:+15555550123", "+15555550123"),
        ("sip:+15555550123@trunk.example.com;transport=tls", "+15555550123"),
        ("client:alice", None),
        ("", None),
        (None, None),
        ("+0123", None),
    ],
)
def test_numbers_are_normalised_to_e164(raw: str | None, expected: str | None) -> None:
    assert normalise_number(raw) == expected


def test_a_sip_or_tel_caller_is_the_same_customer_as_the_plain_number() -> None:
    # Routing and the CRM used to disagree here: the CRM refused SIP and tel URIs outright.
    plain = normalise_number("+1 555 555 0123")
    assert plain == normalise_number("tel:+15555550123")
    assert plain == normalise_number("sip:+15555550123@trunk.example.com;transport=tls")


def test_e164_is_a_plus_a_country_code_and_at_most_15_digits() -> None:
    assert is_e164("+15555550123")
    assert is_e164("+447700900123")
    assert not is_e164("+1234567890123456")  # 16 digits
    assert not is_e164("15555550123")
