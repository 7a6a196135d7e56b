"""The toolbox: validates tool specs once, then runs one tool call at a time per ``run``.

The session starts each function call the model makes as its own task (``Toolbox.run``), so a
slow CRM lookup never stalls the audio, and cancels those tasks when the call ends. ``run``
never raises for a tool's failure: everything becomes a :class:`ToolOutcome` the model can be
told about, except cancellation, which propagates so a cancelled call is really cancelled.

What ``run`` does, in order:

1. look the tool up (an unknown name, the model's invention, is an error outcome);
2. drop any value the model sent for a *bound* parameter (logged as
   ``tool.bound_override_ignored``), check the rest against the JSON schema, then fill the bound
   parameters from the trusted :class:`CallContext`: a caller cannot talk the model into
   looking up someone else's account. A failure in 1 or 2 is an error outcome marked
   ``refused`` (the tool never ran); otherwise the outcome carries the ``arguments`` it ran
   with, for the audit trail;
3. run the executor under ``asyncio.timeout(spec.timeout_s)``;
4. turn the result into plain JSON, or any failure into a short, safe message (the stack and
   the exception text go to the log, never to the model);
5. log one DEBUG ``tool.executed`` line and observe ``agent_tool_latency_seconds`` (the call
   session logs the INFO ``tool.finished`` line on-call engineers read).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import aiohttp
import structlog

from agent.config.tools import (
    EndCallTool,
    HandOffTool,
    HttpTool,
    PressKeysTool,
    PythonTool,
    SqlTool,
    ToolSpec,
    TransferCallTool,
)
from agent.crm import Crm
from agent.errors import ConfigError
from agent.observability.metrics import Metrics
from agent.observability.privacy import redact_fields
from agent.tools.arguments import check_arguments
from agent.tools.base import (
    Action,
    CallContext,
    Outcome,
    ToolError,
    ToolOutcome,
    json_safe,
)
from agent.tools.builtin import run_builtin
from agent.tools.http import run_http, validate_http
from agent.tools.python import ToolWorkers, check_signature, resolve_target, run_python
from agent.tools.sql import Databases, bind_parameters, validate_sql
from agent.tools.sql_params import ParsedQuery, parse_query

log = structlog.get_logger("agent.tools")

#: The outcome of a tool that was cancelled but finished anyway (it caught the cancellation): in
#: records as it reads, in metrics as ``completed_after_cancellation``.
COMPLETED_AFTER_CANCELLATION: Final = "completed after cancellation"
#: What the model hears when a tool fails for a reason it should not see (a bug, a crash).
GENERIC_FAILURE: Final = "the tool failed; tell the caller it could not be done right now"
_NAME_IN_LOGS: Final = 64  # an invented tool name is logged, but not without bound


def validate_specs(specs: Sequence[ToolSpec]) -> list[str]:
    """Every problem with ``specs`` (empty: all good), each naming its tool.

    Each spec's own values are valid already (:class:`ToolSpec` and its kinds refuse anything
    else when built); checked here is how they fit together and what needs the executors:
    unique names, an object schema for the parameters, templates and placeholders that name
    declared or bound parameters, single SQL statements, SQLite file paths, literal URL hosts,
    python targets that import and accept the parameters. Python targets are imported here, so
    this is the load-time check that catches a missing module.
    """
    problems: list[str] = []
    seen: set[str] = set()
    for spec in specs:
        where = f"tool {spec.name!r}"
        if spec.name in seen:
            problems.append(f"{where}: declared twice")
        seen.add(spec.name)
        problems.extend(f"{where}: {problem}" for problem in _validate_spec(spec))
    return problems


def _validate_spec(spec: ToolSpec) -> list[str]:
    # The spec's values are valid (its classes refuse anything else): what is checked here is
    # how they fit together, and what needs the executors.
    problems: list[str] = []
    schema = spec.parameters
    if not isinstance(schema, Mapping) or str(schema.get("type", "object")).lower() != "object":
        problems.append("parameters must be a JSON schema of type object")
        schema = {}
    properties = schema.get("properties")
    declared = set(properties) if isinstance(properties, Mapping) else set()
    listed = schema.get("required")
    required = {n for n in listed if isinstance(n, str)} if isinstance(listed, list) else set()
    # With ``properties`` the schema lists every argument (see ``agent.tools.arguments``), so a
    # required name missing from it could never be given.
    if isinstance(properties, Mapping):
        for name in sorted(required - declared - set(spec.bind)):
            problems.append(f"required parameter {name!r} is not among the properties")
    known = declared | required | set(spec.bind)
    kind = spec.kind
    if isinstance(kind, HttpTool):
        problems.extend(validate_http(kind, known))
    elif isinstance(kind, SqlTool):
        problems.extend(validate_sql(kind, known))
    elif isinstance(kind, PythonTool):
        try:
            function = resolve_target(kind.target)
        except ValueError as exc:
            problems.append(str(exc))
        else:
            mismatch = check_signature(function, known)
            if mismatch:
                problems.append(f"python target {kind.target!r}: {mismatch}")
    elif not isinstance(kind, EndCallTool | TransferCallTool | HandOffTool | PressKeysTool):
        problems.append(f"unknown kind {type(kind).__name__}")
    return problems


class Toolbox:
    """Runs an agent's tools: one per app, shared by every call.

    It borrows ``http`` (the app's ``aiohttp`` session) and ``crm`` and does not
    close them; :meth:`close` closes only the database connections it opened. Raises
    ``ConfigError`` listing every problem :func:`validate_specs` finds.

    ``metrics``: where ``agent_tool_latency_seconds`` is observed, including ``cancelled`` (so
    the session must not observe tool calls itself). ``redact_fields``: argument keys shown as
    ``***`` in the debug log of arguments (lower-case, as ``RECORD_REDACT_FIELDS``).
    """

    def __init__(
        self,
        specs: Sequence[ToolSpec],
        *,
        http: aiohttp.ClientSession,
        crm: Crm,
        metrics: Metrics | None = None,
        redact_fields: frozenset[str] = frozenset(),
    ) -> None:
        problems = validate_specs(specs)
        if problems:
            raise ConfigError("invalid tools:\n  " + "\n  ".join(problems), key="tools")
        self._specs = {spec.name: spec for spec in specs}
        self._http = http
        self._crm = crm
        self._metrics = metrics
        self._redact_fields = redact_fields
        self._databases = Databases(crm.path)
        # Resolved once: the import and the SQL scan are start-up work, not per-call work.
        self._functions: dict[str, Callable[..., Any]] = {}
        self._queries: dict[str, ParsedQuery] = {}
        sync_targets: list[str] = []
        for spec in specs:
            if isinstance(spec.kind, PythonTool):
                function = self._functions[spec.name] = resolve_target(spec.kind.target)
                if not inspect.iscoroutinefunction(function):
                    sync_targets.append(spec.kind.target)
            elif isinstance(spec.kind, SqlTool):
                self._queries[spec.name] = parse_query(spec.kind.query)
        # Sync python tools run in worker processes, which can be killed when a call is
        # cancelled (a thread cannot be stopped); one is started now, off the first call's path.
        self._workers: ToolWorkers | None = None
        if sync_targets:
            self._workers = ToolWorkers(sync_targets)
            self._workers.warm_up()

    @property
    def specs(self) -> Sequence[ToolSpec]:
        """The tools, in configuration order."""
        return tuple(self._specs.values())

    def spec(self, name: str) -> ToolSpec | None:
        """The tool called ``name``, or None (the model invented it)."""
        return self._specs.get(name)

    async def run(
        self,
        name: str,
        args: Mapping[str, Any],
        context: CallContext,
        *,
        on_arguments: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> ToolOutcome:
        """Run one function call; see the module docstring. Only cancellation raises.

        ``on_arguments``, if given, is called with the arguments the tool runs with (bound
        values applied) once they are checked, so a caller recording a call that is then
        cancelled still knows them. It is not called for a refused call.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        spec = self._specs.get(name)
        if spec is None:
            log.warning("tool.unknown", tool=name[:_NAME_IN_LOGS])
            return self._finish(
                name, "error", {"error": f"there is no tool called {name!r}"}, started, refused=True
            )
        action: Action | None = None
        try:
            arguments = self._arguments(spec, args, context)
        except ToolError as exc:
            return self._finish(name, "error", {"error": str(exc)}, started, refused=True)
        if on_arguments is not None:
            on_arguments(dict(arguments))
        try:
            log.debug(
                "tool.started", tool=name, arguments=redact_fields(arguments, self._redact_fields)
            )
            async with asyncio.timeout(spec.timeout_s):
                result, action = await self._execute(spec, arguments)
            response: dict[str, Any] = {"result": json_safe(result)}
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Cancelled, but the tool caught the cancellation and finished anyway (an async
                # tool that swallows CancelledError): its side effect happened, and the record
                # and metrics must say so rather than "cancelled".
                return self._finish(
                    name, COMPLETED_AFTER_CANCELLATION, response, started, arguments=arguments
                )
        except TimeoutError:
            message = f"the tool did not finish within {spec.timeout_s:g} seconds"
            return self._finish(name, "timeout", {"error": message}, started, arguments=arguments)
        except ToolError as exc:
            return self._finish(name, "error", {"error": str(exc)}, started, arguments=arguments)
        except asyncio.CancelledError:
            latency = loop.time() - started
            log.debug("tool.execution_cancelled", tool=name, latency_ms=round(latency * 1000, 1))
            self._observe(name, "cancelled", latency)
            raise
        except Exception as exc:
            # A bug or an unexpected failure: the details (and stack) are for the operator.
            log.error("tool.crashed", tool=name, error=repr(exc), exc_info=True)
            return self._finish(
                name, "error", {"error": GENERIC_FAILURE}, started, arguments=arguments
            )
        return self._finish(name, "ok", response, started, action, arguments=arguments)

    @property
    def workers(self) -> ToolWorkers | None:
        """The worker processes of the sync python tools (None: the agent has none)."""
        return self._workers

    async def close(self) -> None:
        """Close the database connections and worker processes the toolbox opened (not the
        borrowed resources)."""
        await self._databases.close()
        if self._workers is not None:
            await self._workers.close()

    # -- internals ---------------------------------------------------------------------------------

    def _arguments(
        self, spec: ToolSpec, args: Mapping[str, Any], context: CallContext
    ) -> dict[str, Any]:
        """The model's arguments, checked, with the bound parameters taken from ``context``."""
        if not isinstance(args, Mapping):
            raise ToolError("the arguments must be a JSON object")
        overridden = sorted(name for name in args if name in spec.bind)
        if overridden:
            # Only the names: the value may be someone else's number, which the logs need not
            # keep. The model's attempt is a signal (a prompt injection, a confused model).
            log.warning("tool.bound_override_ignored", tool=spec.name, parameters=overridden)
        arguments = check_arguments(spec.parameters, args, bound=spec.bind.keys())
        for parameter, key in spec.bind.items():
            value = context.value(key)
            if value is None:
                raise ToolError(f"this call has no {key.replace('_', ' ')}, which the tool needs")
            arguments[parameter] = value
        return arguments

    async def _execute(
        self, spec: ToolSpec, arguments: dict[str, Any]
    ) -> tuple[Any, Action | None]:
        kind = spec.kind
        if isinstance(kind, HttpTool):
            return await run_http(kind, arguments, self._http), None
        if isinstance(kind, SqlTool):
            query = self._queries[spec.name]
            database = self._databases.get(kind.database_url)
            params = bind_parameters(query, arguments)
            return await database.execute(query, params, kind.max_rows), None
        if isinstance(kind, PythonTool):
            function = self._functions[spec.name]
            result = await run_python(
                function, arguments, workers=self._workers, target=kind.target
            )
            return result, None
        return run_builtin(kind, arguments)

    def _finish(
        self,
        name: str,
        outcome: Outcome,
        response: Mapping[str, Any],
        started: float,
        action: Action | None = None,
        *,
        arguments: Mapping[str, Any] | None = None,
        refused: bool = False,
    ) -> ToolOutcome:
        latency = asyncio.get_running_loop().time() - started
        fields: dict[str, Any] = {
            "tool": name[:_NAME_IN_LOGS],
            "outcome": outcome,
            "latency_ms": round(latency * 1000, 1),
        }
        if outcome != "ok":
            fields["error"] = response.get("error")
        if action is not None:
            fields["action"] = type(action).__name__
        if refused:
            fields["refused"] = True
        log.debug("tool.executed", **fields)
        self._observe(name, outcome, latency)
        return ToolOutcome(
            response=response,
            outcome=outcome,
            latency_s=latency,
            action=action,
            arguments=arguments,
            refused=refused,
        )

    def _observe(self, name: str, outcome: str, latency: float) -> None:
        if self._metrics is not None:
            self._metrics.observe_tool(name, outcome, latency)
