"""What a business configures for each tool an agent may call: pure, frozen data.

A :class:`ToolSpec` says what the model sees (name, description, JSON-schema parameters, blocking
or not) and how the bridge runs it (``kind``: an HTTP request, one SQL query, a Python function,
or a built-in such as hanging up). ``bind`` fills parameters from trusted call context (the
caller's number, the CallSid): those parameters are removed from the schema the model sees and
any value the model sends for them is ignored, so a caller cannot talk the model into looking up
someone else's account.

Executing a spec is ``agent.tools``' job; this module only describes and validates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Behavior = Literal["BLOCKING", "NON_BLOCKING"]
Scheduling = Literal["INTERRUPT", "WHEN_IDLE", "SILENT"]

#: Trusted values a parameter may be bound to (see :class:`ToolSpec.bind`).
CONTEXT_KEYS = frozenset({"caller_number", "called_number", "call_sid", "agent", "local_time"})


@dataclass(frozen=True, slots=True)
class HttpTool:
    """One HTTP request. ``url`` and string values in ``headers``/``json_body`` are templates
    (``{order_id}``); arguments in the URL are URL-encoded. Only idempotent methods retry."""

    url: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    json_body: Mapping[str, Any] | None = None
    retries: int = 0
    max_response_bytes: int = 64 * 1024
    select: str | None = None  # dotted path into the JSON response, e.g. "data.order"


@dataclass(frozen=True, slots=True)
class SqlTool:
    """One parameterised query (``:name`` placeholders) against ``DATABASE_URL`` or the CRM."""

    query: str
    max_rows: int = 20
    database_url: str | None = None  # None: the embedded CRM


@dataclass(frozen=True, slots=True)
class PythonTool:
    """``module:function``, sync (run in a thread) or async, called with the arguments."""

    target: str


@dataclass(frozen=True, slots=True)
class EndCallTool:
    """Built-in: let the goodbye finish playing, then hang up through Twilio's REST API."""


@dataclass(frozen=True, slots=True)
class TransferCallTool:
    """Built-in: move the call to ``number`` (a REST call update with ``<Dial>``)."""

    number: str


ToolKind = HttpTool | SqlTool | PythonTool | EndCallTool | TransferCallTool


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One function the model may call, and how to run it."""

    name: str
    description: str
    kind: ToolKind
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    bind: Mapping[str, str] = field(default_factory=dict)  # parameter -> one of CONTEXT_KEYS
    behavior: Behavior | None = None  # None: the model's default
    scheduling: Scheduling = "WHEN_IDLE"  # how a NON_BLOCKING result is delivered
    timeout_s: float = 10.0
