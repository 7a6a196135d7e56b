"""Telephone numbers: the one E.164 check and the one normaliser.

Routing (which agent answers the dialled number), the CRM (who is calling), the REST client
(where a transfer goes) and configuration checks all read numbers through this module, so they
agree on who is who. E.164 is ITU-T's international format: ``+``, a country code, at most 15
digits in all (https://www.itu.int/rec/T-REC-E.164).
"""

from __future__ import annotations

import re
from typing import Final

E164_RE: Final = re.compile(r"\+[1-9][0-9]{1,14}")
# Separators people and carriers put in numbers: spaces, dots, dashes, slashes, parentheses.
_SEPARATORS: Final = re.compile(r"[\s().\-/]")
_URI_SCHEMES: Final = ("tel:", "sip:", "sips:")


def is_e164(number: str) -> bool:
    """Whether ``number`` is already an E.164 number such as ``+15551234567``."""
    return bool(E164_RE.fullmatch(number))


def normalise_number(raw: str | None) -> str | None:
    """``raw`` as an E.164 number, or None when it is not a telephone number.

    Accepts what carriers and people write: ``+1 (555) 555-0199``, ``0044 7700 900123`` (``00`` is
    the international prefix), ``tel:+15555550199``, a SIP URI whose user part is a number
    (``sip:+15555550199@pbx.example.com;transport=tls``), and ten- or eleven-digit North American
    numbers without a plus (``555-555-0100``, ``1 555 555 0100``). ``anonymous``,
    ``client:alice`` and ``sip:alice@pbx`` are not numbers and give None, so they can never match
    an agent or a customer.
    """
    if not raw:
        return None
    text = raw.strip()
    lowered = text.lower()
    for scheme in _URI_SCHEMES:
        if lowered.startswith(scheme):
            # The user part only: no host, no URI parameters.
            text = text[len(scheme) :].split("@", 1)[0].split(";", 1)[0]
            break
    if text.startswith("00"):
        text = "+" + text[2:]
    plus = text.startswith("+")
    digits = _SEPARATORS.sub("", text.removeprefix("+"))
    if not digits.isascii() or not digits.isdigit():
        return None
    if plus:
        candidate = "+" + digits
    elif len(digits) == 10:
        candidate = "+1" + digits
    elif len(digits) == 11 and digits.startswith("1"):
        candidate = "+" + digits
    else:
        return None
    return candidate if is_e164(candidate) else None
