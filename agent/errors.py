"""The project's one exception tree.

Vendor exceptions (websockets, aiohttp, soxr, yaml) are mapped to these at the boundary with
``raise X(...) from exc`` so callers handle our names, never a library's::

    AgentError
    ├── ConfigError            bad settings or agent configuration (file, line, key when known)
    │   └── GroupedConfigError       several at once (``.errors``), so a file is fixed in one pass
    ├── AudioError             audio that cannot be decoded or has the wrong shape
    ├── TelephonyError
    │   ├── SignatureError     a webhook or stream whose Twilio signature / stream token fails
    │   └── DialRefusedError   an outbound call not placed (agent, caller ID, calling hours)
    ├── LiveError              the Live API leg
    │   ├── LiveConnectError   could not open or set up a Live session (``kind``: why)
    │   │   └── LiveRefusedError   refused for good: bad key, unknown model, no permission
    │   └── LiveClosedError    the Live socket closed (carries the close code and reason)
    ├── SharedStateError       the store replicas share (used stream tickets) failed
    └── AgentTestError         an ``agent test`` call could not be run to its end

Protocol cores never raise on bad *input from the wire*: a malformed message becomes a
protocol-error event. These exceptions are for the adapters and for configuration.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(AgentError):
    """Settings or agent configuration are invalid; the message says where and why."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        where = ":".join(str(p) for p in (file, line) if p is not None)
        prefix = f"{where}: " if where else ""
        suffix = f" (key {key!r})" if key else ""
        super().__init__(f"{prefix}{message}{suffix}")
        self.file = file
        self.line = line
        self.key = key


class GroupedConfigError(ConfigError):
    """Several configuration errors found together (``.errors``, in order); the message has one
    per line. A check that finds more than one problem raises this, so all are reported."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("\n".join(str(error) for error in errors))
        self.errors = tuple(errors)


class AudioError(AgentError):
    """Audio that cannot be decoded or has the wrong sample width or rate."""


class TelephonyError(AgentError):
    """The telephony leg (Twilio webhooks, media stream, REST)."""


class SignatureError(TelephonyError):
    """A request whose X-Twilio-Signature or stream token does not verify."""


class DialRefusedError(TelephonyError):
    """An outbound call the bridge will not place: unknown agent, no caller ID, a number that
    is not E.164, outside calling hours, or no Twilio REST credentials."""


class LiveError(AgentError):
    """The Gemini Live API leg."""


class LiveConnectError(LiveError):
    """Opening the Live socket or completing its setup failed; ``code`` is the close code if the
    service closed it during setup (1007: a rejected setup or resumption handle), ``kind`` one
    word of :data:`agent.live.failures.FAILURE_KINDS` (the metric's label)."""

    def __init__(self, message: str, *, code: int | None = None, kind: str = "other") -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind


class LiveRefusedError(LiveConnectError):
    """The Live API refused the connection in a way no retry can fix (``kind`` is ``auth``,
    ``model`` or ``permission``): the call plays its fallback at once; ``fix`` says what to
    change."""

    def __init__(self, message: str, *, code: int | None = None, kind: str, fix: str) -> None:
        super().__init__(message, code=code, kind=kind)
        self.fix = fix


class LiveClosedError(LiveError):
    """The Live socket closed; ``code`` and ``reason`` are the WebSocket close frame's."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"Live connection closed (code={code}, reason={reason!r})")
        self.code = code
        self.reason = reason


class SharedStateError(AgentError):
    """The database that replicas share could not be read or written."""


class AgentTestError(AgentError):
    """An ``agent test`` could not run its call to the end (the bridge never took the stream,
    or the call never ended): a broken test setup, not a failed expectation."""
