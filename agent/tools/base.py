"""What every tool executor shares: the trusted call context, outcomes, actions, ``ToolError``.

These types are the seam between the call session and the tools: the session builds a
:class:`CallContext` from what Twilio told it (never from the model), hands it to
:meth:`agent.tools.Toolbox.run` with the model's arguments, and gets back a :class:`ToolOutcome`
whose ``response`` goes to the model as the function response and whose ``action`` (hang up,
transfer) the session carries out itself once the goodbye has played.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from agent.errors import AgentError

#: A result bigger than this (as JSON text) is refused: the model would pay for it in tokens and
#: latency, and a tool that returns this much is misconfigured (add a LIMIT, a ``select``).
MAX_RESULT_CHARS: Final = 32_000

Outcome = Literal["ok", "error", "timeout", "completed after cancellation"]


class ToolError(AgentError):
    """A tool failed in a way the model may be told about.

    The message goes back to the model verbatim as ``{"error": message}``, so it must be short,
    in plain words and free of secrets and internals. Executors raise it for expected failures
    (a 404, a constraint violation, a result too large); a ``python`` tool may raise it too, to
    say something specific ("no such order"). Any other exception becomes a generic message.
    """


@dataclass(frozen=True, slots=True)
class CallContext:
    """Trusted facts about the call a tool runs in. Never built from anything the model said.

    ``caller_number`` and ``called_number`` are None when Twilio did not give them (anonymous or
    SIP callers); a tool that binds one of them then fails rather than run with a guess.
    ``local_time`` is the business's local time as the session chose to format it;
    ``local_date`` its date (``2026-05-14``, as ``{local_date}`` in prompts), for queries that
    compare dates.
    """

    call_sid: str
    account_sid: str
    stream_sid: str
    agent: str
    caller_number: str | None
    called_number: str | None
    local_time: str
    local_date: str | None = None

    def value(self, key: str) -> str | None:
        """The value a ``ToolSpec.bind`` entry names (one of ``toolspec.CONTEXT_KEYS``).

        Raises ``KeyError`` for any other key: ``validate_specs`` refuses such a binding at
        start-up, so reaching this is a programming error, not a model's doing.
        """
        match key:
            case "caller_number":
                return self.caller_number
            case "called_number":
                return self.called_number
            case "call_sid":
                return self.call_sid
            case "agent":
                return self.agent
            case "local_time":
                return self.local_time
            case "local_date":
                return self.local_date
        raise KeyError(f"{key!r} is not a call-context key a parameter can be bound to")


@dataclass(frozen=True, slots=True)
class EndCall:
    """The model asked to hang up: the session lets the goodbye finish, then ends the call."""


@dataclass(frozen=True, slots=True)
class TransferCall:
    """The model asked to transfer the caller to ``number`` (E.164, from configuration).
    ``announce``: tell the caller first, with ``announcement`` said by the carrier, or (None) the
    bundled recording played by the session before it moves the call."""

    number: str
    announce: bool = True
    announcement: str | None = None
    #: Warm: dial ``number`` first, say ``summary`` to whoever answers, then join the caller.
    warm: bool = False
    ring_timeout_s: int = 25
    summary: str | None = None


@dataclass(frozen=True, slots=True)
class HandOff:
    """The model asked to hand the call to the agent named ``agent`` (from configuration)."""

    agent: str


@dataclass(frozen=True, slots=True)
class PressKeys:
    """The model asked to press ``digits`` (checked keypad keys): the session sends their
    tones after the audio already on its way, and the call goes on."""

    digits: str


Action = EndCall | TransferCall | HandOff | PressKeys


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """How one tool call ended.

    ``response`` is what goes back to the model: ``{"result": ...}`` or ``{"error": "..."}``,
    always plain JSON. ``outcome`` is for records and metrics (a cancelled call has no outcome:
    ``CancelledError`` propagates instead). ``action`` is set by the built-ins only.

    ``arguments`` are the arguments the tool ran with (checked, bound parameters filled from the
    call), for the audit trail; None when it never ran. ``refused`` is True when the call was
    refused before running (no such tool, arguments that fail the schema, a bound value the
    call lacks): ``outcome`` is then ``error`` and the response says why.
    """

    response: Mapping[str, Any]
    outcome: Outcome
    latency_s: float
    action: Action | None = None
    arguments: Mapping[str, Any] | None = None
    refused: bool = False


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data (dict, list, str, int, float, bool, None).

    Databases and Python tools return ``Decimal``, ``datetime``, ``UUID`` and ``bytes``; the
    model's function response must be JSON, so they become numbers and strings here. Raises
    :class:`ToolError` for anything else, or when the result is larger than
    :data:`MAX_RESULT_CHARS`.
    """
    try:
        text = json.dumps(value, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ToolError("the tool returned a value that is not JSON") from exc
    if len(text) > MAX_RESULT_CHARS:
        raise ToolError(
            f"the result is too large ({len(text)} characters, the limit is {MAX_RESULT_CHARS})"
        )
    return json.loads(text)


def _json_default(value: object) -> Any:
    if isinstance(value, decimal.Decimal):
        # Money and counts: an int when whole, else a float (what the model reads aloud anyway).
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
