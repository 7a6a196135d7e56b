"""One call's function calls: each its own task, so the conversation never waits on a tool.

The model asks (``toolCall``); the runner starts a task per call in the call's task group, runs it
through the app's :class:`~agent.tools.Toolbox` with the call's trusted context, and sends the
result back with the tool's scheduling (``NON_BLOCKING``) or as soon as it is ready (``BLOCKING``).
A ``toolCallCancellation`` cancels the task for real and sends nothing; the call ending cancels
every task with the task group. "For real" holds for every kind: HTTP and async Python tools stop
at the ``await`` they are in, SQLite queries are interrupted, sync Python tools' worker
processes are killed. A tool that catches the cancellation and finishes anyway is recorded as
``completed after cancellation`` (its result is not sent: the model no longer wants it). A
timeout or a crash becomes an error result the model can talk about; the call goes on. Built-in
actions (hang up, transfer) are handed to the session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog

from agent.config.tools import Scheduling, ToolSpec
from agent.live import protocol
from agent.live.link import LiveLink
from agent.live.protocol import FunctionCall, FunctionResult
from agent.records.store import CallRecorder
from agent.tools import Action, CallContext, HandOff, Toolbox, ToolOutcome
from agent.tools.toolbox import COMPLETED_AFTER_CANCELLATION

log = structlog.get_logger("agent.tools")


HandOffHandler = Callable[[HandOff, Mapping[str, Any]], Awaitable[Mapping[str, Any] | None]]
"""Carries out a hand-off; given the result meant for the model, returns what to send."""


@dataclass(slots=True)
class ToolStats:
    """For the call's summary line."""

    calls: int = 0
    errors: int = 0
    cancelled: int = 0
    slowest_ms: float = 0.0
    slowest_tool: str | None = None


class ToolRunner:
    """Starts, tracks and cancels one call's function-call tasks."""

    def __init__(
        self,
        *,
        toolbox: Toolbox,
        context: CallContext,
        live: LiveLink,
        recorder: CallRecorder,
        on_action: Callable[[Action], Awaitable[None]],
        max_concurrent: int = 4,
        on_waiting: Callable[[bool], None] | None = None,
        on_hand_off: HandOffHandler | None = None,
        on_answer_owed: Callable[[], None] | None = None,
    ) -> None:
        """``on_waiting`` hears True when a blocking tool starts and the model falls silent
        for it, False when no blocking tool is left running. ``on_hand_off`` carries out a
        ``hand_off`` (another agent takes the call over) before its result is sent, so that
        the result reaches the new agent; it returns the response to send, or None to send
        nothing. ``on_answer_owed`` hears that a non-blocking result went to the model with a
        scheduling that asks it to speak (``INTERRUPT``, ``WHEN_IDLE``): it owes an answer, and
        the call's stall watchdog waits for one."""
        self._toolbox = toolbox
        self._context = context
        self._live = live
        self._recorder = recorder
        self._on_action = on_action
        self._max_concurrent = max_concurrent
        self._group: asyncio.TaskGroup | None = None
        self.running: dict[str, asyncio.Task[None]] = {}
        self.stats = ToolStats()
        self._on_waiting = on_waiting
        self._on_hand_off = on_hand_off
        self._on_answer_owed = on_answer_owed
        self._blocking = 0  # blocking tools running: the model says nothing until they answer

    def attach(self, group: asyncio.TaskGroup) -> None:
        """Tasks start in the call's task group, so they end with the call."""
        self._group = group

    async def requested(self, calls: Sequence[FunctionCall]) -> None:
        """The model asked for ``calls``: start each as its own task (or refuse it at once)."""
        assert self._group is not None, "attach() the call's task group first"
        for call in calls:
            if len(self.running) >= self._max_concurrent:
                log.warning(
                    "tool.refused", tool=call.name, call_id=call.id, running=len(self.running)
                )
                response = {"error": "Too many lookups are already running; try again in a moment."}
                self._recorder.tool_call(
                    call_id=call.id,
                    name=call.name,
                    arguments=None,
                    result=response,
                    outcome="refused",
                    started_at=time.time(),
                    latency_ms=0.0,
                    requested=_requested(call),
                )
                await self._respond(call, response, scheduling=None)
                continue
            task = self._group.create_task(self._run(call), name=f"tool {call.name}")
            self.running[call.id] = task
            task.add_done_callback(partial(self._finished, call.id))

    def _finished(self, call_id: str, task: asyncio.Task[None]) -> None:
        self.running.pop(call_id, None)

    def cancelled(self, ids: Sequence[str]) -> None:
        """The model no longer wants these results: cancel the tasks, send nothing."""
        for call_id in ids:
            task = self.running.get(call_id)
            if task is not None:
                task.cancel()
                self.stats.cancelled += 1
                log.info("tool.cancelled", call_id=call_id)

    def swap(self, toolbox: Toolbox, context: CallContext) -> None:
        """Run calls from now on with ``toolbox`` and ``context`` (a hand-off to another agent,
        or an agent reloaded into the call); calls already running finish with the old ones."""
        self._toolbox = toolbox
        self._context = context

    def _non_blocking(self, spec: ToolSpec | None) -> bool:
        # The model's own default applies where the tool says nothing (3.8 Live: NON_BLOCKING).
        return spec is not None and self._live.wire.behavior(spec.behavior) == "NON_BLOCKING"

    async def _run(self, call: FunctionCall) -> None:
        spec = self._toolbox.spec(call.name)
        blocking = spec is not None and not self._non_blocking(spec)
        if blocking:
            self._blocking += 1
            if self._on_waiting is not None:
                self._on_waiting(True)
        try:
            await self._run_tool(call, spec)
        finally:
            if blocking:
                self._blocking -= 1
                if self._blocking == 0 and self._on_waiting is not None:
                    self._on_waiting(False)

    async def _run_tool(self, call: FunctionCall, spec: ToolSpec | None) -> None:
        self.stats.calls += 1
        started = time.time()
        log.info("tool.started", tool=call.name, call_id=call.id)
        ran: list[Mapping[str, Any]] = []  # the arguments, once the toolbox has checked them
        try:
            outcome = await self._toolbox.run(
                call.name, call.args, self._context, on_arguments=ran.append
            )
        except asyncio.CancelledError:
            # The toolbox has counted it in the metrics; the record says so too.
            self._recorder.tool_call(
                call_id=call.id,
                name=call.name,
                arguments=dict(ran[0]) if ran else None,
                result=None,
                outcome="cancelled",
                started_at=started,
                latency_ms=(time.time() - started) * 1000,
                requested=_requested(call),
            )
            raise
        except Exception:
            # The toolbox maps tool failures to outcomes; this is a bug in it. Keep the call alive.
            log.exception("tool.failed", tool=call.name, call_id=call.id)
            outcome = ToolOutcome(
                response={"error": "The tool failed unexpectedly."},
                outcome="error",
                latency_s=time.time() - started,
            )
        latency_ms = round(outcome.latency_s * 1000, 1)
        if outcome.outcome == COMPLETED_AFTER_CANCELLATION:
            self._completed_after_cancellation(call, outcome, started, latency_ms)
            return
        if outcome.outcome != "ok":
            self.stats.errors += 1
        if latency_ms > self.stats.slowest_ms:
            self.stats.slowest_ms, self.stats.slowest_tool = latency_ms, call.name
        log.info(
            "tool.finished",
            tool=call.name,
            call_id=call.id,
            outcome="refused" if outcome.refused else outcome.outcome,
            latency_ms=latency_ms,
            error=outcome.response.get("error"),
            action=type(outcome.action).__name__ if outcome.action else None,
        )
        self._recorder.tool_call(
            call_id=call.id,
            name=call.name,
            # What ran, bound values applied: the model's value for a bound parameter was
            # ignored, and is kept apart, in ``requested``, with everything else it sent.
            arguments=None if outcome.arguments is None else dict(outcome.arguments),
            result=dict(outcome.response),
            outcome="refused" if outcome.refused else outcome.outcome,
            started_at=started,
            latency_ms=latency_ms,
            requested=_requested(call),
        )
        non_blocking = self._non_blocking(spec)
        scheduling = spec.scheduling if spec is not None and non_blocking else None
        if isinstance(outcome.action, HandOff) and self._on_hand_off is not None:
            # The new agent's instructions first, then the result it is to carry on from.
            response = await self._on_hand_off(outcome.action, outcome.response)
            if response is not None:
                await self._respond(call, response, scheduling=scheduling)
                self._answer_owed(non_blocking, scheduling)
            return
        if outcome.action is not None:
            # The model should not talk over its own goodbye or transfer.
            scheduling = "SILENT" if non_blocking else None
        await self._respond(call, outcome.response, scheduling=scheduling)
        if outcome.action is None:
            self._answer_owed(non_blocking, scheduling)
        else:
            await self._on_action(outcome.action)

    def _answer_owed(self, non_blocking: bool, scheduling: Scheduling | None) -> None:
        # A blocking result is watched by on_waiting(False). A non-blocking one makes the model
        # speak unless SILENT, or where scheduling is not honoured (Vertex AI), the default,
        # WHEN_IDLE, applies.
        silent = scheduling == "SILENT" and self._live.wire.scheduling
        if non_blocking and not silent and self._on_answer_owed is not None:
            self._on_answer_owed()

    def _completed_after_cancellation(
        self, call: FunctionCall, outcome: ToolOutcome, started: float, latency_ms: float
    ) -> None:
        """The tool was cancelled but caught it and finished: what it did is done, so the record
        says so; the model, which cancelled it, gets nothing, and no action is carried out."""
        log.warning(
            "tool.finished",
            tool=call.name,
            call_id=call.id,
            outcome=COMPLETED_AFTER_CANCELLATION,
            latency_ms=latency_ms,
            error=None,
            action=None,
        )
        self._recorder.tool_call(
            call_id=call.id,
            name=call.name,
            arguments=None if outcome.arguments is None else dict(outcome.arguments),
            result=dict(outcome.response),
            outcome=COMPLETED_AFTER_CANCELLATION,
            started_at=started,
            latency_ms=latency_ms,
            requested=_requested(call),
        )

    async def _respond(
        self, call: FunctionCall, response: Mapping[str, Any], *, scheduling: Scheduling | None
    ) -> None:
        result = FunctionResult(
            id=call.id, name=call.name, response=dict(response), scheduling=scheduling
        )
        await self._live.send(protocol.tool_response_message([result], self._live.wire))


def _requested(call: FunctionCall) -> Any:
    """What the model asked for, as it sent it (normally a JSON object)."""
    return dict(call.args) if isinstance(call.args, Mapping) else call.args
