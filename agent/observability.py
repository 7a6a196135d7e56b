"""structlog set-up: one processor chain for our logs and the standard library's (aiohttp's too).

JSON lines when stderr is not a TTY (production, CI), readable console lines on one. A call binds
its ids once with ``structlog.contextvars.bind_contextvars`` and every line it logs carries them.
A redaction processor replaces configured secret values wherever they appear in an event.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

REDACTED = "***"


class RedactSecrets:
    """Replaces every occurrence of a secret value in string fields with ``***``.

    Keys that name a secret (``token``, ``api_key``...) are masked whatever their value.
    """

    SECRET_KEYS = frozenset(
        {"token", "api_key", "auth_token", "authorization", "x-goog-api-key", "password"}
    )

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Short values would mask innocent text; real keys and tokens are long.
        self.secrets = tuple(s for s in secrets if len(s) >= 8)

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        for key, value in event_dict.items():
            if key.lower() in self.SECRET_KEYS and value is not None:
                event_dict[key] = REDACTED
            else:
                event_dict[key] = self._scrub(value)
        return event_dict

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, MutableMapping):
            return {
                k: (REDACTED if str(k).lower() in self.SECRET_KEYS else self._scrub(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(v) for v in value)
        return value


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Route structlog and stdlib logging through one chain, rendered as JSON or console."""
    stream = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        RedactSecrets(secrets),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.format_exc_info] if as_json else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
