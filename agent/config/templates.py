"""Prompts as templates, rendered for each call.

An agent's ``system_prompt`` and ``greeting`` may use ``{caller_number}``, ``{called_number}``,
``{call_sid}``, ``{agent}``, ``{local_time}``, ``{local_date}``, ``{timezone}`` and, with
``prefetch_crm``, ``{customer.name}`` and the other :data:`CUSTOMER_FIELDS`; an outbound call's
``--param name=value`` pairs are ``{param.name}``. A missing value
renders as ``unknown``. The renderer only substitutes names from a fixed set and looks customer
fields up by key: no attribute access, no format specs, no recursion, so neither a prompt nor a
CRM value can reach into Python objects. :func:`template_problems` is the load-time check of the
same rules, so a mistake is a problem in the file rather than ``unknown`` in a call.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # the models check templates with this module: no import at run time
    from agent.config.models import AgentConfig

#: What a missing template value renders as: honest to the model, never a crash.
UNKNOWN: Final = "unknown"
#: Columns of the CRM's ``customers`` table a prompt may use as ``{customer.<field>}``.
CUSTOMER_FIELDS: Final = ("id", "name", "phone", "email", "tier")
#: Call-context names a prompt may use (``{customer.*}`` comes on top).
TEMPLATE_KEYS: Final = (
    "caller_number",
    "called_number",
    "call_sid",
    "agent",
    "local_time",
    "local_date",
    "timezone",
)
# A template value is one line of at most this many characters: a CRM field cannot smuggle a
# page of instructions into the prompt.
_MAX_VALUE_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class TemplateContext:
    """What is known about a call when its agent is rendered (all optional: missing values
    render as ``unknown``). ``customer`` is the CRM's row for the caller, if prefetched."""

    caller_number: str | None = None
    called_number: str | None = None
    call_sid: str | None = None
    now: datetime | None = None  # None: the current time; naive times are taken as UTC
    customer: Mapping[str, Any] | None = None
    params: Mapping[str, str] | None = None  # an outbound call's ``{param.<name>}`` values


# {{ and }} are literal braces; {name} or {customer.field} a placeholder; any other {...} text.
_TEMPLATE_RE: Final = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_PLACEHOLDER_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?")
_FORMAT_SPEC_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.\[\]]*\s*[!:\[]")


def template_problems(template: str, *, prefetch_crm: bool) -> list[str]:
    """Why ``template`` would not render as its author expects (unknown placeholders, format
    specs, ``{customer.*}`` without ``prefetch_crm``); empty if it is fine."""
    problems: list[str] = []
    known = [*TEMPLATE_KEYS, *(f"customer.{f}" for f in CUSTOMER_FIELDS)]
    for match in _TEMPLATE_RE.finditer(template):
        inner = match.group(1)
        if inner is None:
            continue
        if _PLACEHOLDER_RE.fullmatch(inner):
            if inner.startswith("param."):
                continue  # an outbound call's parameter: any name a dial may give
            if inner not in known:
                near = difflib.get_close_matches(inner, known, n=1, cutoff=0.6)
                hint = f" (did you mean {{{near[0]}}}?)" if near else ""
                problems.append(
                    f"unknown placeholder {{{inner}}}{hint}; known: "
                    f"{', '.join('{' + k + '}' for k in TEMPLATE_KEYS)}, {{customer.<field>}} "
                    f"with fields {', '.join(CUSTOMER_FIELDS)}; write {{{{ and }}}} for a brace"
                )
            elif inner.startswith("customer.") and not prefetch_crm:
                problems.append(
                    f"{{{inner}}} needs 'prefetch_crm: true' (otherwise it is always {UNKNOWN!r})"
                )
        elif _FORMAT_SPEC_RE.match(inner):
            problems.append(
                f"{{{inner}}}: format specs, conversions and indexing are not supported; write "
                "{{ and }} for literal braces"
            )
    return problems


def format_local_time(now: datetime, timezone: str) -> str:
    """``now`` in ``timezone`` as people say it: ``Tuesday 14 May 2024, 15:05 EDT
    (America/New_York)``. Naive datetimes are taken as UTC."""
    zone = zoneinfo.ZoneInfo(timezone)
    local = (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(zone)
    abbreviation = local.tzname() or timezone
    place = "" if abbreviation == timezone else f" ({timezone})"
    return f"{local:%A} {local.day} {local:%B %Y, %H:%M} {abbreviation}{place}"


def format_local_date(now: datetime, timezone: str) -> str:
    """Today's date in ``timezone`` as ``2026-05-14`` (``{local_date}``; bindable in tools, so
    a query can compare with it). Naive datetimes are taken as UTC."""
    zone = zoneinfo.ZoneInfo(timezone)
    return (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(zone).date().isoformat()


def template_values(agent: AgentConfig, context: TemplateContext) -> dict[str, str]:
    """The values of ``TEMPLATE_KEYS`` for one call (``unknown`` where not known). The keys in
    ``agent.config.tools.CONTEXT_KEYS`` are the same values tools can be bound to."""
    now = context.now or datetime.now(UTC)
    zone = zoneinfo.ZoneInfo(agent.timezone)
    local = (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(zone)
    return {
        "caller_number": _value(context.caller_number),
        "called_number": _value(context.called_number),
        "call_sid": _value(context.call_sid),
        "agent": agent.name,
        "local_time": format_local_time(now, agent.timezone),
        "local_date": local.date().isoformat(),
        "timezone": agent.timezone,
    }


def render_template(
    template: str,
    values: Mapping[str, str],
    customer: Mapping[str, Any] | None = None,
    params: Mapping[str, str] | None = None,
) -> str:
    """``template`` with each ``{name}`` from ``values`` and each ``{customer.field}`` from
    ``customer`` (by key, never by attribute). Unknown or missing values render as ``unknown``;
    text in braces that is not a placeholder (JSON, ``{x:>9}``) is left as written. Never raises.
    """

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        inner = match.group(1)
        if not _PLACEHOLDER_RE.fullmatch(inner):
            return token
        root, _, leaf = inner.partition(".")
        if not leaf:
            return values.get(root, UNKNOWN)
        if root == "customer" and customer is not None:
            return _value(customer.get(leaf))
        if root == "param" and params is not None:
            return _value(params.get(leaf))
        return UNKNOWN

    return _TEMPLATE_RE.sub(replace, template)


def render_for_call(agent: AgentConfig, context: TemplateContext) -> AgentConfig:
    """A copy of ``agent`` whose system instruction and greeting are rendered for this call.
    The copy is what the call uses from then on; the registry's agent stays a template."""
    values = template_values(agent, context)
    system = agent.system_instruction
    greeting = agent.greeting
    customer, params = context.customer, context.params
    rendered_system = None if system is None else render_template(system, values, customer, params)
    rendered_greeting = (
        None if greeting is None else render_template(greeting, values, customer, params)
    )
    if rendered_system == system and rendered_greeting == greeting:
        return agent
    return dataclasses.replace(
        agent, system_instruction=rendered_system, greeting=rendered_greeting
    )


def _value(raw: object) -> str:
    """A call or CRM value as one short line of prompt text; ``unknown`` if missing or not a
    plain value (objects are never turned into text: their ``str`` is not ours to call)."""
    if raw is True or raw is False:
        return "yes" if raw else "no"
    if type(raw) not in (str, int, float):  # exact types: a subclass could override __str__
        return UNKNOWN
    text = " ".join(str(raw).split())[:_MAX_VALUE_CHARS]
    return text or UNKNOWN
