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

import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Final, Literal, TextIO

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from agent.errors import ConfigError
from agent.observability.pricing import (
    DEFAULT_PRICES,
    CostEstimate,
    ModelPrices,
    PriceTable,
)
from agent.observability.privacy import (
    NUMBER_MASK,
    REDACTED,
    REDACTOR,
    MaskCallerNumbers,
    RedactSecrets,
    add_secrets,
)

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


#: The context every line of a call carries (bound once by the media-stream handler).
CALL_KEYS: Final = ("call_sid", "stream_sid", "agent")

#: Request paths whose access-log lines are logged at DEBUG: probes and scrapes, many a minute.
PROBE_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})

# Loggers of libraries that log every frame at DEBUG: kept at INFO or above whatever LOG_LEVEL says.
_CHATTY_LIBRARIES: Final = ("websockets",)


# -- aiohttp's access log --------------------------------------------------------------------------


_TICKET_IN_QUERY: Final = re.compile(r"([?&]ticket=)[^&\s]*")


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
    # Plivo's stream URL carries its single-use stream ticket (agent.telephony.plivo): masked.
    event_dict["path"] = _TICKET_IN_QUERY.sub(r"\1***", target) if target else None
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
