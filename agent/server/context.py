"""A call's context: the agent rendered for this call, the caller's identity and CRM record, the
toolbox for its agent."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from agent.call.session import CallAgent
from agent.config.models import AgentConfig
from agent.config.registry import AgentRegistry
from agent.config.templates import TemplateContext, render_for_call
from agent.errors import AgentError
from agent.server.preconnect import live_opener
from agent.server.state import AGENTS, CALLS, CLOCK, METRICS, SETTINGS, TOOLS
from agent.tools import CallContext, Toolbox
from agent.tools.availability import unavailable_tools, without_tools

log = structlog.get_logger("agent.app")


def toolbox_for(app: web.Application, agent: AgentConfig) -> Toolbox | None:
    """The toolbox for an agent's tools: one per configuration, reused by its calls.

    Found by the specs' value, not their identity: each call's agent is rendered afresh (and,
    without REST credentials, has its unavailable tools taken out), so its specs are a new tuple
    equal to the last call's; keyed by identity, every call built (and kept) a toolbox of its own,
    the slow leak the soak bench showed (about 25 Python blocks a call)."""
    tools = app[TOOLS]
    if not agent.tool_specs or tools.http is None or tools.crm is None:
        return None
    versions = tools.toolboxes.setdefault(agent.name, [])
    for specs, toolbox in versions:
        if specs == agent.tool_specs:
            return toolbox
    toolbox = Toolbox(
        agent.tool_specs,
        http=tools.http,
        crm=tools.crm,
        metrics=app[METRICS],
        redact_fields=app[SETTINGS].record_redact_fields,
    )
    versions.append((agent.tool_specs, toolbox))  # a reload that changes the tools adds one
    return toolbox


async def agent_for_call(
    app: web.Application,
    configured: AgentConfig,
    call_sid: str,
    caller: str | None,
    called: str | None,
    verified: bool,
    *,
    rest: bool = True,
    params: Mapping[str, str] | None = None,
) -> tuple[AgentConfig, Mapping[str, Any] | None]:
    """``configured`` rendered for this call (prompt templated with the numbers, the local time,
    the caller's CRM record and an outbound call's ``params``), and that record. ``rest``: the
    call can be controlled through the carrier's REST API (a console call cannot, whatever the
    settings)."""
    customer = await prefetch_customer(
        app, configured, identity(configured, caller, verified=verified)
    )
    if not rest or app[TOOLS].twilio is None:
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


@dataclasses.dataclass(frozen=True, slots=True)
class CallAgents:
    """Renders any agent for one call in progress, as its webhook rendered the first: for a
    ``hand_off`` to another agent, or a reload of its own (:meth:`CallSession.agent_reloaded`)."""

    app: web.Application
    call_sid: str
    caller: str | None
    called: str | None
    verified: bool
    context: CallContext | None
    rest: bool = True
    """The call can be controlled through the carrier's REST API (not a console call)."""
    params: Mapping[str, str] | None = None
    """An outbound call's parameters (``{param.NAME}`` in the prompt)."""

    async def __call__(self, name: str) -> CallAgent | None:
        """The agent called ``name`` in the agents loaded now, rendered for this call."""
        configured = self.app[AGENTS].current.by_name(name)
        if configured is None:
            return None
        agent, _ = await agent_for_call(
            self.app,
            configured,
            self.call_sid,
            self.caller,
            self.called,
            self.verified,
            rest=self.rest,
            params=self.params,
        )
        context = self.context
        return CallAgent(
            agent=agent,
            toolbox=toolbox_for(self.app, agent),
            context=None if context is None else dataclasses.replace(context, agent=agent.name),
            opener=live_opener(self.app, agent),
            source=configured,
        )


async def reload_into_calls(app: web.Application, registry: AgentRegistry) -> None:
    """After a reload: each call in progress whose agent changed takes the new version if its
    file says ``on_reload: update`` (one call's failure is logged and never stops the others)."""
    for call_sid, session in list(app[CALLS].active.items()):
        source = registry.by_name(session.agent.name)
        if source is None:
            continue  # the agent was removed: the call goes on with what it has
        try:
            await session.agent_reloaded(source)
        except (AgentError, ConnectionResetError) as exc:
            log.warning("call.agent_reload_failed", call_sid=call_sid, error=str(exc))
