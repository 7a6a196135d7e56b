"""structlog set-up: one processor chain for our logs and the standard library's, and call costs.

Every log line of the process goes through the same chain, whether it was written with structlog
(``log.info("call.started", ...)``) or with :mod:`logging` (aiohttp's access log and server errors,
websockets, asyncio): JSON lines when the output is not a TTY (production, CI), readable console
lines on one. :func:`configure_logging` installs it; ``LOG_LEVEL`` and ``LOG_FORMAT`` choose the
level and the renderer.

Per call, the media-stream handler binds ``call_sid``, ``stream_sid`` and ``agent`` once with
``structlog.contextvars.bind_contextvars``; :func:`structlog.contextvars.merge_contextvars` is the
first step of the chain, for structlog events and for standard-library records alike, so every line
the call logs carries them: lines from the tasks the call starts (they copy the context) and
aiohttp's access-log line for the stream (written by the handler's task when the call is over).

Two processors run last, after exceptions are formatted and just before rendering, so nothing
reaches the output without passing them:

* :class:`MaskCallerNumbers` masks phone numbers under keys such as ``from`` / ``to`` when
  ``MASK_CALLER_NUMBERS`` is set (the same mask as call records: ``+1555****100``);
* :class:`RedactSecrets` replaces secrets with ``***``: configured values (API keys, the Twilio auth
  token, the database password, agents' ``${ENV}`` values, added with :func:`add_secrets` whenever
  they become known), any value under a secret-looking key (``token``, ``api_key``, ...), and
  secrets recognised by their shape inside text: ``"token": "..."`` in a JSON excerpt, ``?key=``
  in a URL, an ``Authorization:`` header line, a password in a database URL, a stream token.

aiohttp's access-log lines become ``server.access`` events with ``method``, ``path``, ``status``,
``bytes``...; health probes and metric scrapes (:data:`PROBE_PATHS`) are demoted to DEBUG so they
do not bury the calls. websockets logs every frame at DEBUG, so its loggers never go below INFO.

The second half of the module estimates what a call cost: :class:`PriceTable` holds USD prices per
million tokens by model, direction (prompt, response) and modality, defaults in
:data:`DEFAULT_PRICES`, overridable with ``PRICE_TABLE`` (inline JSON, or a JSON or YAML file).

The event names, levels and fields are listed in ``docs/logging.md``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, TextIO
from urllib.parse import quote

import structlog
import yaml
from structlog.types import EventDict, Processor, WrappedLogger

from agent.errors import ConfigError
from agent.records.store import NUMBER_FIELDS, mask_number

__all__ = [
    "CALL_KEYS",
    "DEFAULT_PRICES",
    "NUMBER_MASK",
    "PROBE_PATHS",
    "REDACTED",
    "REDACTOR",
    "CostEstimate",
    "MaskCallerNumbers",
    "ModelPrices",
    "PriceTable",
    "RedactSecrets",
    "add_log_sink",
    "add_secrets",
    "configure_logging",
    "log_formatter",
    "remove_log_sink",
    "shape_access_log",
]

REDACTED: Final = "***"

#: The context every line of a call carries (bound once by the media-stream handler).
CALL_KEYS: Final = ("call_sid", "stream_sid", "agent")

#: Request paths whose access-log lines are logged at DEBUG: probes and scrapes, many a minute.
PROBE_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})

# Loggers of libraries that log every frame at DEBUG: kept at INFO or above whatever LOG_LEVEL says.
_CHATTY_LIBRARIES: Final = ("websockets",)

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
    # A stream token, "{expiry_ms}.{nonce}.{mac}" (agent.telephony.webhooks.StreamTokens), wherever
    # it turns up: the nonce is 22 URL-safe characters, the MAC 43.
    (re.compile(r"\b\d{10,16}\.[\w-]{16,}\.[\w-]{20,}"), REDACTED),
    # A Google API key.
    (re.compile(r"\bAIza[\w-]{35}"), REDACTED),
)

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

    It masks the values of :attr:`NUMBER_KEYS` (any case, at any depth of mappings) and the same
    keys' string values inside JSON text (a raw frame excerpt). The mask is
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
            if str(key).lower() in self.NUMBER_KEYS:
                return mask_number(value)
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


# -- aiohttp's access log --------------------------------------------------------------------------


def shape_access_log(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    """Turn an aiohttp access-log record into a ``server.access`` event with fields.

    aiohttp passes the pieces of its line as ``extra`` attributes on the record; this reads them
    (``first_request_line`` ``"GET /twilio/stream HTTP/1.1"``, ``response_status`` ...) so a reader
    can filter on ``.status`` or ``.path`` instead of parsing an Apache-style line. Any other
    record passes through unchanged.
    """
    record = event_dict.get("_record")
    if not isinstance(record, logging.LogRecord) or record.name != "aiohttp.access":
        return event_dict
    fields = record.__dict__
    method, _, rest = str(fields.get("first_request_line", "")).partition(" ")
    target = rest.rsplit(" ", 1)[0] if rest else ""
    event_dict["event"] = "server.access"
    event_dict["method"] = method or None
    event_dict["path"] = target or None
    for attribute, key in (("response_status", "status"), ("response_size", "bytes")):
        if attribute in fields:
            event_dict[key] = _int_or_text(fields[attribute])
    if "remote_address" in fields:
        event_dict["remote"] = fields["remote_address"]
    if "request_time_frac" in fields:
        event_dict["duration_ms"] = _ms(fields["request_time_frac"], 1000.0)
    elif "request_time_micro" in fields:
        event_dict["duration_ms"] = _ms(fields["request_time_micro"], 0.001)
    headers = fields.get("request_header")
    if isinstance(headers, Mapping) and headers.get("User-Agent") not in (None, "-"):
        event_dict["user_agent"] = headers["User-Agent"]
    return event_dict


def _int_or_text(value: object) -> int | str:
    try:
        return int(str(value))
    except ValueError:
        return str(value)


def _ms(value: object, factor: float) -> float | None:
    try:
        return round(float(str(value)) * factor, 3)
    except ValueError:
        return None


class _DemoteProbes(logging.Filter):
    """Access-log lines for :data:`PROBE_PATHS` become DEBUG records (dropped unless enabled)."""

    def filter(self, record: logging.LogRecord) -> bool:
        line = str(getattr(record, "first_request_line", ""))
        parts = line.split(" ")
        path = parts[1].partition("?")[0] if len(parts) > 1 else ""
        if path not in PROBE_PATHS:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


# -- the chain -------------------------------------------------------------------------------------

# Read first when a line is read raw (``tail -f``): when, how bad, what, which call.
_LEADING_KEYS: Final = ("timestamp", "level", "event", *CALL_KEYS, "logger")


def _leading_keys_first(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    ordered = {key: event_dict.pop(key) for key in _LEADING_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


def _pre_chain() -> list[Processor]:
    """What every event gets before formatting, structlog's and the standard library's alike."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        shape_access_log,
    ]


def _formatter(as_json: bool, *, colors: bool = False) -> structlog.stdlib.ProcessorFormatter:
    # Exceptions are formatted into text *before* the masks, so a secret in an exception message
    # is masked too; the console therefore shows plain tracebacks, not Rich's.
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=colors)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_pre_chain(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            NUMBER_MASK,
            REDACTOR,
            *([_leading_keys_first] if as_json else []),
            renderer,
        ],
    )


class _AgentHandler(logging.StreamHandler[TextIO]):
    """A handler this module installed: the primary output, or an extra sink."""

    def __init__(self, stream: TextIO, role: Literal["primary", "sink"]) -> None:
        super().__init__(stream)
        self.role = role


def _wants_json(fmt: str, stream: TextIO) -> bool:
    if fmt not in ("auto", "json", "console"):
        raise ConfigError("LOG_FORMAT must be auto, json or console", key="LOG_FORMAT")
    return fmt == "json" or (fmt == "auto" and not _isatty(stream))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real stream
        return False


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    *,
    secrets: Iterable[str | None] = (),
    mask_numbers: bool = False,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route structlog and standard-library logging through one chain into ``stream``.

    ``level`` is ``LOG_LEVEL`` (debug, info, warning, error, critical); ``fmt`` is ``LOG_FORMAT``:
    ``json``, ``console``, or ``auto`` (console when ``stream`` is a TTY, JSON lines otherwise).
    ``secrets`` are added to :data:`REDACTOR` (more can be added later with :func:`add_secrets`;
    a secret once added stays masked for the life of the process). ``mask_numbers`` is
    ``MASK_CALLER_NUMBERS``. ``stream`` defaults to standard error.

    Calling it again reconfigures: the root logger's handlers are replaced by the new one, except
    the sinks :func:`add_log_sink` installed. Returns the handler it installed.
    """
    stream = sys.stderr if stream is None else stream
    as_json = _wants_json(fmt, stream)
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ConfigError(
            "LOG_LEVEL must be one of debug, info, warning, error, critical", key="LOG_LEVEL"
        )
    REDACTOR.add(*secrets)
    NUMBER_MASK.enabled = mask_numbers
    structlog.configure(
        processors=[
            # First: a debug event below the level costs one comparison, not the whole chain.
            structlog.stdlib.filter_by_level,
            *_pre_chain(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = _AgentHandler(stream, "primary")
    handler.setFormatter(_formatter(as_json, colors=_isatty(stream)))
    root = logging.getLogger()
    # Any other handler would print lines that bypass the masks: only our sinks stay.
    root.handlers[:] = [
        *(h for h in root.handlers if isinstance(h, _AgentHandler) and h.role == "sink"),
        handler,
    ]
    root.setLevel(numeric_level)
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric_level, logging.INFO))
    access = logging.getLogger("aiohttp.access")
    access.filters[:] = [f for f in access.filters if not isinstance(f, _DemoteProbes)]
    access.addFilter(_DemoteProbes())
    return handler


def log_formatter(fmt: Literal["json", "console"] = "json") -> logging.Formatter:
    """The formatter our handlers use, for a handler someone else owns (pytest's log capture):
    records rendered through the same chain and masks, as JSON lines or console lines."""
    return _formatter(fmt == "json")


def add_log_sink(stream: TextIO, fmt: Literal["json", "console"] = "json") -> logging.Handler:
    """Also write every log line to ``stream`` (through the same masks), until
    :func:`remove_log_sink`. Unlike the primary output, a sink survives :func:`configure_logging`
    being called again; the test suite's secret scan is one."""
    handler = _AgentHandler(stream, "sink")
    handler.setFormatter(_formatter(fmt == "json"))
    logging.getLogger().addHandler(handler)
    return handler


def remove_log_sink(handler: logging.Handler) -> None:
    """Stop writing to a sink :func:`add_log_sink` installed."""
    logging.getLogger().removeHandler(handler)


# -- what a call cost ------------------------------------------------------------------------------

Direction = Literal["prompt", "response"]


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """USD per million tokens for one model, by direction and upper-case modality (``AUDIO``).

    ``prompt`` is what the model reads (the Live API bills each turn's whole context again, which
    its per-turn ``promptTokenCount`` already includes); ``response`` is what it generates.
    """

    prompt: Mapping[str, float]
    response: Mapping[str, float]

    def per_million(self, direction: str, modality: str) -> float | None:
        """The price of a million ``direction`` tokens of ``modality``, or None if not listed."""
        table = self.prompt if direction == "prompt" else self.response
        return table.get(modality.upper())


def _same_price_media(text: float, media: float) -> dict[str, float]:
    return {"TEXT": text, "AUDIO": media, "VIDEO": media, "IMAGE": media}


#: USD per 1M tokens, Gemini Developer API paid tier, by model-name prefix. Estimates for
#: dashboards and call records, never for billing: prices change; check
#: https://ai.google.dev/gemini-api/docs/pricing and override with ``PRICE_TABLE``.
DEFAULT_PRICES: Final[Mapping[str, ModelPrices]] = {
    # Gemini 2.5 Flash native audio (Live API); Vertex AI names it gemini-live-2.5-flash-*.
    "gemini-2.5-flash-native-audio": ModelPrices(
        prompt=_same_price_media(0.50, 3.00), response={"TEXT": 2.00, "AUDIO": 12.00}
    ),
    "gemini-live-2.5-flash": ModelPrices(
        prompt=_same_price_media(0.50, 3.00), response={"TEXT": 2.00, "AUDIO": 12.00}
    ),
    "gemini-2.0-flash-live": ModelPrices(
        prompt=_same_price_media(0.35, 2.10), response={"TEXT": 1.50, "AUDIO": 8.50}
    ),
}


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """What a call's tokens cost, by the table: ``usd`` is None when no price matched the model.

    ``unpriced_tokens`` counts tokens of a modality the model's prices do not list: when it is not
    0 the estimate is low.
    """

    usd: float | None
    priced_as: str | None
    unpriced_tokens: int

    def summary_fields(self) -> dict[str, object]:
        """The fields for the ``call.ended`` line and the call record's summary."""
        return {
            "cost_usd": None if self.usd is None else round(self.usd, 6),
            "cost_priced_as": self.priced_as,
            "cost_unpriced_tokens": self.unpriced_tokens,
        }


class PriceTable:
    """Prices by model name; a model matches its exact name, else the longest listed prefix, else
    ``"*"`` if listed. ``models/`` and Vertex resource paths are stripped first."""

    def __init__(self, prices: Mapping[str, ModelPrices] = DEFAULT_PRICES) -> None:
        self.prices: Mapping[str, ModelPrices] = dict(prices)

    def lookup(self, model: str) -> tuple[str, ModelPrices] | None:
        """The table entry ``model`` is priced as: (its key, its prices), or None."""
        name = model.rsplit("/", 1)[-1]
        if name in self.prices:
            return name, self.prices[name]
        prefixes = [key for key in self.prices if key != "*" and name.startswith(key)]
        if prefixes:
            key = max(prefixes, key=len)
            return key, self.prices[key]
        if "*" in self.prices:
            return "*", self.prices["*"]
        return None

    def estimate(self, model: str, usage: Mapping[str, int]) -> CostEstimate:
        """The cost of ``usage``, keyed ``<direction>_<modality>`` (``prompt_audio``,
        ``response_text``: the shape of ``CallStats.usage`` and of call records)."""
        found = self.lookup(model)
        if found is None:
            return CostEstimate(None, None, sum(usage.values()))
        key, prices = found
        usd = 0.0
        unpriced = 0
        for usage_key, tokens in usage.items():
            direction, _, modality = usage_key.partition("_")
            price = prices.per_million(direction, modality)
            if price is None:
                unpriced += tokens
            else:
                usd += tokens * price / 1_000_000
        return CostEstimate(usd, key, unpriced)

    @classmethod
    def from_spec(cls, spec: str | None, *, defaults: bool = True) -> PriceTable:
        """The table ``PRICE_TABLE`` describes: unset or empty gives :data:`DEFAULT_PRICES`;
        inline JSON (starting with ``{``) or the path of a ``.json``, ``.yaml`` or ``.yml`` file
        gives those entries on top of the defaults (``defaults=False``: instead of them)::

            {"gemini-2.5-flash-native-audio": {"prompt": {"TEXT": 0.5, "AUDIO": 3.0},
                                               "response": {"TEXT": 2.0, "AUDIO": 12.0}},
             "*": {"prompt": {"AUDIO": 3.0}, "response": {"AUDIO": 12.0}}}

        Raises :class:`~agent.errors.ConfigError` naming ``PRICE_TABLE`` (and the file) when the
        text cannot be read or is not such a table.
        """
        base: dict[str, ModelPrices] = dict(DEFAULT_PRICES) if defaults else {}
        if spec is None or not spec.strip():
            return cls(base)
        text = spec.strip()
        source: str | None = None
        try:
            if text.startswith("{"):
                raw: object = json.loads(text)
            else:
                source = text
                content = Path(text).read_text(encoding="utf-8")
                if text.endswith((".yaml", ".yml")):
                    raw = yaml.safe_load(content)
                else:
                    raw = json.loads(content)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"cannot read the price table: {exc}", file=source, key="PRICE_TABLE"
            ) from exc
        base.update(_parse_prices(raw, source))
        return cls(base)


def _parse_prices(raw: object, source: str | None) -> dict[str, ModelPrices]:
    def fail(message: str) -> ConfigError:
        return ConfigError(f"price table: {message}", file=source, key="PRICE_TABLE")

    if not isinstance(raw, Mapping):
        raise fail("must map model names to {prompt: {...}, response: {...}}")
    parsed: dict[str, ModelPrices] = {}
    for model, entry in raw.items():
        if not isinstance(model, str) or not model:
            raise fail(f"model names must be text, got {model!r}")
        if not isinstance(entry, Mapping) or set(entry) - {"prompt", "response"}:
            raise fail(f"{model}: must have only 'prompt' and 'response' tables")
        tables: dict[str, dict[str, float]] = {}
        for direction in ("prompt", "response"):
            table = entry.get(direction, {})
            if not isinstance(table, Mapping):
                raise fail(f"{model}.{direction}: must map modalities to USD per 1M tokens")
            prices: dict[str, float] = {}
            for modality, price in table.items():
                if (
                    isinstance(price, bool)
                    or not isinstance(price, int | float)
                    or not math.isfinite(price)
                    or price < 0
                ):
                    raise fail(f"{model}.{direction}.{modality}: must be a number >= 0")
                prices[str(modality).upper()] = float(price)
            tables[direction] = prices
        parsed[model] = ModelPrices(prompt=tables["prompt"], response=tables["response"])
    return parsed
