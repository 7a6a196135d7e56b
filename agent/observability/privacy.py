"""Masking, in one place: secrets in log lines, and callers' phone numbers in logs and records.

Every log line and every stored record passes through these before it leaves the process; tests
scan the whole suite's log output for known secrets (``tests/conftest.py``)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final
from urllib.parse import quote

from structlog.types import EventDict, WrappedLogger

REDACTED: Final = "***"
"""What a masked secret becomes."""

# -- phone numbers and named fields ----------------------------------------------------------------


def redact_fields(value: Any, fields: frozenset[str]) -> Any:
    """``value`` with every mapping entry whose key is in ``fields`` (case-insensitive) replaced
    by ``***``, at any depth of mappings, lists and tuples. ``fields`` must be lower-case."""
    if not fields:
        return value
    if isinstance(value, Mapping):
        return {
            key: REDACTED if str(key).lower() in fields else redact_fields(item, fields)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_fields(item, fields) for item in value]
    return value


#: Keys whose values are phone numbers, masked with ``MASK_CALLER_NUMBERS`` (logs use them too).
NUMBER_FIELDS: Final = frozenset(
    {
        "from",
        "to",
        "caller",
        "called",
        "callee",
        "caller_number",
        "from_number",
        "to_number",
        "phone",
        "phone_number",
        "transfer_to",
    }
)


def mask_number_fields(value: Any) -> Any:
    """``value`` with every string under a :data:`NUMBER_FIELDS` key masked, at any depth."""
    if isinstance(value, Mapping):
        return {
            key: mask_number(item)
            if isinstance(item, str) and str(key).lower() in NUMBER_FIELDS
            else mask_number_fields(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_number_fields(item) for item in value]
    return value


def mask_number(number: str) -> str:
    """A phone number with its middle digits hidden: ``+15555550100`` -> ``+1555****100``.

    Keeps up to 5 leading characters (country and area code: enough to tell where a call came
    from) and 3 trailing ones (enough to match against a complaint), hiding at least 4. Values
    with no digit (``anonymous``, ``client:alice``) are not numbers and are kept as they are.
    """
    if not any(ch.isdigit() for ch in number):
        return number
    n = len(number)
    tail = min(3, n // 3)
    head = min(5, max(0, n - tail - 4))
    return number[:head] + "*" * (n - head - tail) + number[n - tail :]


# A phone number in free text (a transcript, what the caller heard): +15555550100,
# (415) 555-0100, 415 555 0100: seven to fifteen digits, with at most one separator between two.
# An ISO date (2026-12-03) has eight digits too, and is not a number to hide.
_NUMBER_IN_TEXT: Final = re.compile(
    r"(?<![\w+])(?!\d{4}-\d{2}-\d{2}(?![\w-]))\+?\d(?:[ ().-]{0,2}\d){6,14}(?![\w])"
)
#: Keys whose values are free text in which a caller's words (and so numbers) appear.
TEXT_FIELDS: Final = frozenset({"heard_text", "said", "heard", "text", "transcript"})


def mask_numbers_in_text(text: str) -> str:
    """``text`` with every phone number in it masked like :func:`mask_number` masks one: a caller
    who says their number has it hidden in the transcript as in the ``from`` field. Errs on the
    side of hiding: any run of seven or more digits counts."""
    return _NUMBER_IN_TEXT.sub(lambda m: mask_number(m.group()), text)


# -- secrets ---------------------------------------------------------------------------------------

# A key names a secret if it ends with one of these words: token, auth_token, stream_token, api_key,
# x-goog-api-key, password, db_password, client_secret, authorization... ("tokens", a usage count,
# does not end with "token").
_SECRET_WORDS: Final = r"(?:token|secret|passw(?:or)?d|api[_-]?key|private[_-]?key|authorization)"
_SECRET_KEY: Final = re.compile(rf"[\w.-]*{_SECRET_WORDS}", re.IGNORECASE)

# Secrets recognised by their shape inside text, each (pattern, replacement). Cheap enough to run
# on every string: a handful of precompiled searches on values that are mostly short.
_SECRET_SHAPES: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # "token": "..." in JSON, 'token': '...' in a Python repr; also an excerpt cut mid-value (a
    # protocol error's ``raw`` keeps the first 200 characters of a frame).
    (
        re.compile(rf'("[\w.-]*{_SECRET_WORDS}"\s*:\s*")(?:\\.|[^"\\])*("|\\?$)', re.IGNORECASE),
        rf"\g<1>{REDACTED}\g<2>",
    ),
    (
        re.compile(rf"('[\w.-]*{_SECRET_WORDS}'\s*:\s*')(?:\\.|[^'\\])*('|\\?$)", re.IGNORECASE),
        rf"\g<1>{REDACTED}\g<2>",
    ),
    # ?token=... &key=... in a URL or a form body (the Live API accepts ?key=API_KEY).
    (
        re.compile(rf"([?&;][\w.-]*(?:{_SECRET_WORDS}|key)=)[^&#\s\"'<>]*", re.IGNORECASE),
        rf"\g<1>{REDACTED}",
    ),
    # Header lines, as websockets logs its handshake at DEBUG: "> x-goog-api-key: AIza...".
    (
        re.compile(
            r"(\b(?:x-goog-api-key|x-api-key|(?:proxy-)?authorization|cookie|set-cookie)"
            r"\s*:\s*)[^\r\n\"',}]+",
            re.IGNORECASE,
        ),
        rf"\g<1>{REDACTED}",
    ),
    (re.compile(r"(\bBearer\s+)[\w.~+/-]+=*", re.IGNORECASE), rf"\g<1>{REDACTED}"),
    # The password in a URL's user info: postgresql://user:PASSWORD@host/db.
    (
        re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@/\s]+@", re.IGNORECASE),
        rf"\g<1>{REDACTED}@",
    ),
    # A stream token, "st2.{payload}.{mac}" (agent.telephony.webhooks.StreamTokens), wherever it
    # turns up: the payload is base64url (it names the caller), the MAC 43 URL-safe characters.
    (re.compile(r"\bst2\.[\w-]{16,}\.[\w-]{20,}"), REDACTED),
    # A Google API key.
    (re.compile(r"\bAIza[\w-]{35}"), REDACTED),
)


def redact_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***`` (longest first, so a secret
    containing another is masked whole): for messages built before any logging, such as agent
    file problems quoting a value that came from ``${ENV}``. Values under 4 characters are left
    alone: masking every "1" or "v2" in a message would hide more than it protects."""
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


# Keys whose values are ours, never secret: skipped for speed.
_PLAIN_KEYS: Final = frozenset({"timestamp", "level", "logger", "call_sid", "stream_sid"})
# No secret fits in fewer characters (and values shorter than this would mask innocent text).
_MIN_TEXT = 8


class RedactSecrets:
    """A processor that replaces secrets with ``***`` in every field of an event, at any depth.

    Three rules, so a secret is caught whichever way it travels:

    1. a field whose key names a secret (``token``, ``api_key``, ``auth_token``, ``password``,
       ``authorization``, anything ending in one of those words) is masked whatever its value;
    2. every configured secret value (:meth:`add`) is replaced wherever it occurs in text, also in
       its URL-encoded and JSON-escaped forms;
    3. secrets recognisable by shape are masked inside text: ``"token": "..."`` pairs in JSON or a
       repr (also cut off mid-value), ``?token=``/``&key=`` in URLs, ``Authorization:`` and
       ``x-goog-api-key:`` header lines, ``Bearer ...``, the password of a ``scheme://user:pw@``
       URL, stream tokens and Google API keys.

    Values that are not strings, numbers, mappings or sequences are rendered with ``repr`` first,
    the way the JSON renderer would, so an exception or an object cannot carry a secret past it.

    Secrets can be added at any time, from any thread (agents' ``${ENV}`` values are known only
    once the agent files are loaded); values shorter than 8 characters are ignored, since they
    would mask innocent text and no real key or token is that short.
    """

    MIN_LENGTH: ClassVar[int] = 8

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        # (secrets, one pattern matching any of them): replaced together, so a reader on another
        # thread always sees a consistent pair.
        self._state: tuple[frozenset[str], re.Pattern[str] | None] = (frozenset(), None)
        self.add(*secrets)

    @property
    def secrets(self) -> frozenset[str]:
        """The configured secret values (with their encoded forms)."""
        return self._state[0]

    def add(self, *values: str | None) -> None:
        """Mask these values from now on (``None``, empty and short values are ignored)."""
        fresh: set[str] = set()
        for value in values:
            if value and len(value) >= self.MIN_LENGTH:
                fresh.update(_encoded_forms(value))
        with self._lock:
            known, _ = self._state
            if fresh <= known:
                return
            merged = known | fresh
            # Longest first, so a secret that contains another is masked whole.
            alternatives = sorted(merged, key=len, reverse=True)
            self._state = (merged, re.compile("|".join(map(re.escape, alternatives))))

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        for key, value in event_dict.items():
            if key in _PLAIN_KEYS:
                continue
            if value is not None and _SECRET_KEY.fullmatch(key):
                event_dict[key] = REDACTED
            else:
                event_dict[key] = self.scrub(value)
        return event_dict

    def scrub(self, value: Any) -> Any:
        """``value`` with every secret masked: strings, and mappings and sequences at any depth."""
        if isinstance(value, str):
            return self.redact_text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {
                k: (REDACTED if v is not None and _SECRET_KEY.fullmatch(str(k)) else self.scrub(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self.scrub(v) for v in value]
        if isinstance(value, bytes | bytearray):
            return self.redact_text(bytes(value).decode("utf-8", "backslashreplace"))
        return self.redact_text(repr(value))

    def redact_text(self, text: str) -> str:
        """``text`` with configured secrets and secret-shaped substrings replaced by ``***``."""
        if len(text) < _MIN_TEXT:
            return text
        _, values = self._state
        if values is not None:
            text = values.sub(REDACTED, text)
        for pattern, replacement in _SECRET_SHAPES:
            text = pattern.sub(replacement, text)
        return text


def _encoded_forms(secret: str) -> set[str]:
    """The secret as it may appear in a log line: as is, URL-encoded, JSON-escaped."""
    forms = {secret, quote(secret, safe=""), json.dumps(secret)[1:-1]}
    return {form for form in forms if len(form) >= RedactSecrets.MIN_LENGTH}


# -- caller numbers --------------------------------------------------------------------------------


class MaskCallerNumbers:
    """A processor that masks phone numbers (``+15555550100`` -> ``+1555****100``) when enabled.

    It masks the values of :attr:`NUMBER_KEYS` (any case, at any depth of mappings), the same
    keys' string values inside JSON text (a raw frame excerpt), and the numbers inside free text
    under :data:`TEXT_FIELDS` (``heard_text``: what the caller heard). The mask is
    :func:`agent.records.store.mask_number`, the one call records use, so a masked number in a log
    line matches the masked number in ``agent calls list``.
    """

    NUMBER_KEYS: ClassVar[frozenset[str]] = NUMBER_FIELDS
    _IN_TEXT: ClassVar[re.Pattern[str]] = re.compile(
        r"""(["'](?:from|to|caller|called|callee|caller_number|from_number|to_number|phone|"""
        r"""phone_number)["']\s*:\s*["'])([^"']*)""",
        re.IGNORECASE,
    )

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        if not self.enabled:
            return event_dict
        for key, value in event_dict.items():
            event_dict[key] = self._mask(key, value)
        return event_dict

    def _mask(self, key: object, value: Any) -> Any:
        if isinstance(value, str):
            name = str(key).lower()
            if name in self.NUMBER_KEYS:
                return mask_number(value)
            if name in TEXT_FIELDS:
                return mask_numbers_in_text(value)
            if len(value) >= _MIN_TEXT and ":" in value:
                return self._IN_TEXT.sub(lambda m: m.group(1) + mask_number(m.group(2)), value)
            return value
        if isinstance(value, Mapping):
            return {k: self._mask(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._mask(key, v) for v in value]
        return value


#: The process's secret redactor: every handler :func:`configure_logging` and
#: :func:`add_log_sink` install uses it, so a secret added once is masked everywhere.
REDACTOR: Final = RedactSecrets()
#: The process's number mask, switched on by ``configure_logging(mask_numbers=True)``.
NUMBER_MASK: Final = MaskCallerNumbers()


def add_secrets(*values: str | None) -> None:
    """Mask these values in every log line from now on (e.g. agents' ``${ENV}`` values once the
    agent files are loaded). Safe before or after :func:`configure_logging`, from any thread."""
    REDACTOR.add(*values)
