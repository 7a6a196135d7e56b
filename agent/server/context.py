"""A call's context: the agent rendered for this call, the caller's identity and CRM record, the
toolbox for its agent."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from agent.config.models import AgentConfig
from agent.config.templates import TemplateContext, render_for_call
from agent.server.state import CLOCK, METRICS, SETTINGS, TOOLS
from agent.tools import Toolbox
from agent.tools.availability import unavailable_tools, without_tools

log = structlog.get_logger("agent.app")


def toolbox_for(app: web.Application, agent: AgentConfig) -> Toolbox | None:
    """The toolbox for an agent's tools (one per configuration, reused by its calls)."""
    tools = app[TOOLS]
    if not agent.tool_specs or tools.http is None or tools.crm is None:
        return None
    key = id(agent.tool_specs)  # the specs object is kept in the value, so the id stays unique
    cached = tools.toolboxes.get(key)
    if cached is None:
        toolbox = Toolbox(
            agent.tool_specs,
            http=tools.http,
            crm=tools.crm,
            metrics=app[METRICS],
            redact_fields=app[SETTINGS].record_redact_fields,
        )
        cached = tools.toolboxes[key] = (agent.tool_specs, toolbox)
    return cached[1]


async def agent_for_call(
    app: web.Application,
    configured: AgentConfig,
    call_sid: str,
    caller: str | None,
    called: str | None,
    verified: bool,
    params: Mapping[str, str] | None = None,
) -> tuple[AgentConfig, Mapping[str, Any] | None]:
    """``configured`` rendered for this call (prompt templated with the numbers, the local time,
    the caller's CRM record and an outbound call's ``params``), and that record."""
    customer = await prefetch_customer(
        app, configured, identity(configured, caller, verified=verified)
    )
    if app[TOOLS].twilio is None:
        # Never offer the model a tool that can only fail here (transfer_call without REST).
        unavailable = unavailable_tools(configured, rest=False)
        configured = without_tools(configured, {tool.name for tool in unavailable})
    agent = render_for_call(
        configured,
        TemplateContext(
            caller_number=caller,
            called_number=called,
            call_sid=call_sid,
            now=datetime.fromtimestamp(app[CLOCK](), UTC),
            customer=customer,
            params=params,
        ),
    )
    return agent, customer


def identity(agent: AgentConfig, caller: str | None, *, verified: bool) -> str | None:
    """The caller's number as their identity (CRM prefetch, tools bound to ``caller_number``),
    or None when the agent trusts only attested caller IDs and this one is not."""
    if agent.trust_caller_id == "verified" and not verified:
        return None
    return caller


async def prefetch_customer(
    app: web.Application, agent: AgentConfig, caller: str | None
) -> Mapping[str, Any] | None:
    """The caller's CRM record, so the first model turn knows who is calling (bounded: a slow
    CRM costs the greeting at most a second, and a failure only the personal touch)."""
    crm = app[TOOLS].crm
    if not agent.prefetch_crm or crm is None or not caller:
        return None
    try:
        async with asyncio.timeout(1.0):
            return await crm.lookup_caller(caller)
    except Exception as exc:
        log.warning("crm.prefetch_failed", error=str(exc) or type(exc).__name__)
        return None
