"""ToolRunner: one call's function calls as tasks, and the per-call limit on how many run at once.

The toolbox and the Live link are fakes: a tool here runs until the test lets it finish, so what
is running when the next request arrives is decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from agent.call.tools import ToolRunner
from agent.config.tools import EndCallTool, Scheduling, ToolSpec
from agent.live.protocol import DEFAULT_WIRE, FunctionCall, WireProfile
from agent.records.store import CallRecorder, RecordStore
from agent.tools import CallContext, ToolOutcome

CONTEXT = CallContext(
    call_sid="CA" + "1" * 32,
    account_sid="AC" + "a" * 32,
    stream_sid="MZ" + "5" * 32,
    agent="tester",
    caller_number=None,
    called_number=None,
    local_time="2025-06-02T10:00:00-04:00",
)
TOO_MANY = {"error": "Too many lookups are already running; try again in a moment."}


class HeldToolbox:
    """Every tool call waits for :attr:`finish`, then answers with its own id."""

    def __init__(self) -> None:
        self.finish = asyncio.Event()
        self.started: list[str] = []

    def spec(self, name: str) -> ToolSpec | None:
        return None  # a BLOCKING tool: its result is sent as soon as it is ready

    async def run(
        self,
        name: str,
        args: Mapping[str, Any],
        context: CallContext,
        *,
        on_arguments: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> ToolOutcome:
        self.started.append(args["n"])
        if on_arguments is not None:
            on_arguments({**args, "bound": "from the call"})
        await self.finish.wait()
        return ToolOutcome(
            response={"result": args["n"]},
            outcome="ok",
            latency_s=0.0,
            arguments={**args, "bound": "from the call"},
        )


class SentMessages:
    """The Live link, as far as the runner uses it: tool responses, by call id."""

    def __init__(self, wire: WireProfile = DEFAULT_WIRE) -> None:
        self.responses: dict[str, Any] = {}
        self.scheduling: dict[str, str | None] = {}
        self.wire = wire

    async def send(self, message: str) -> None:
        for response in json.loads(message)["toolResponse"]["functionResponses"]:
            self.responses[response["id"]] = response["response"]
            self.scheduling[response["id"]] = response.get("scheduling")


def calls(*ids: str) -> list[FunctionCall]:
    return [FunctionCall(id=i, name="lookup", args={"n": i}) for i in ids]


async def settle() -> None:
    """Let started tasks run up to their first wait (they wait on events, never on time)."""
    for _ in range(5):
        await asyncio.sleep(0)


def runner(
    toolbox: HeldToolbox,
    live: SentMessages,
    max_concurrent: int = 4,
    recorder: CallRecorder | None = None,
    **callbacks: Any,
) -> ToolRunner:
    return ToolRunner(
        toolbox=toolbox,  # type: ignore[arg-type]
        context=CONTEXT,
        live=live,  # type: ignore[arg-type]
        recorder=recorder or CallRecorder.discarding(CONTEXT.call_sid),
        on_action=_no_action,
        max_concurrent=max_concurrent,
        **callbacks,
    )


async def test_calls_past_the_per_call_limit_are_refused_at_once() -> None:
    toolbox, live = HeldToolbox(), SentMessages()
    tools = runner(toolbox, live, max_concurrent=2)
    async with asyncio.TaskGroup() as group:
        tools.attach(group)
        await tools.requested(calls("a", "b", "c"))
        await settle()
        # Two run; the third is told to try again, without waiting for the others.
        assert toolbox.started == ["a", "b"]
        assert sorted(tools.running) == ["a", "b"]
        assert live.responses == {"c": TOO_MANY}
        await tools.requested(calls("d"))
        assert live.responses["d"] == TOO_MANY
        toolbox.finish.set()
    assert live.responses == {
        "a": {"result": "a"},
        "b": {"result": "b"},
        "c": TOO_MANY,
        "d": TOO_MANY,
    }
    assert tools.running == {}


async def test_a_finished_or_cancelled_call_frees_its_place() -> None:
    toolbox, live = HeldToolbox(), SentMessages()
    tools = runner(toolbox, live, max_concurrent=1)
    async with asyncio.TaskGroup() as group:
        tools.attach(group)
        await tools.requested(calls("a"))
        await settle()
        tools.cancelled(["a"])  # the model no longer wants it: nothing is sent for it
        await settle()
        await tools.requested(calls("b"))
        await settle()
        assert toolbox.started == ["a", "b"]
        toolbox.finish.set()
    assert live.responses == {"b": {"result": "b"}}
    assert tools.stats.cancelled == 1


async def test_refused_and_cancelled_calls_are_recorded(tmp_path: Path) -> None:
    store = RecordStore.from_url(f"sqlite:///{tmp_path / 'calls.db'}")
    toolbox, live = HeldToolbox(), SentMessages()
    tools = runner(toolbox, live, max_concurrent=1, recorder=store.recorder(CONTEXT.call_sid))
    async with asyncio.TaskGroup() as group:
        tools.attach(group)
        await tools.requested(calls("a", "b"))  # b: over the limit
        await settle()
        tools.cancelled(["a"])
        await settle()
    await store.flush()
    call = store.get_call(CONTEXT.call_sid)
    assert call is not None
    by_id = {tool.call_id: tool for tool in call.tool_calls}
    refused = by_id["b"]
    assert (refused.outcome, refused.arguments, refused.requested) == ("refused", None, {"n": "b"})
    assert refused.result == TOO_MANY
    cancelled = by_id["a"]
    assert cancelled.outcome == "cancelled"
    assert cancelled.arguments == {"n": "a", "bound": "from the call"}  # what ran
    assert cancelled.requested == {"n": "a"}  # what the model asked
    await store.close()


class StubbornToolbox(HeldToolbox):
    """Its tool catches the cancellation and finishes anyway, as the real toolbox reports it."""

    async def run(
        self,
        name: str,
        args: Mapping[str, Any],
        context: CallContext,
        *,
        on_arguments: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> ToolOutcome:
        self.started.append(args["n"])
        with contextlib.suppress(asyncio.CancelledError):
            await self.finish.wait()
        return ToolOutcome(
            response={"result": "booked anyway"},
            outcome="completed after cancellation",
            latency_s=0.0,
            arguments=dict(args),
        )


async def test_a_tool_that_finishes_after_its_cancellation_is_recorded_so_and_not_sent(
    tmp_path: Path,
) -> None:
    store = RecordStore.from_url(f"sqlite:///{tmp_path / 'calls.db'}")
    toolbox, live = StubbornToolbox(), SentMessages()
    tools = runner(toolbox, live, max_concurrent=1, recorder=store.recorder(CONTEXT.call_sid))
    async with asyncio.TaskGroup() as group:
        tools.attach(group)
        await tools.requested(calls("a"))
        await settle()
        tools.cancelled(["a"])
        await settle()
    assert live.responses == {}  # the model cancelled it: it gets nothing
    assert tools.stats.cancelled == 1
    await store.flush()
    call = store.get_call(CONTEXT.call_sid)
    assert call is not None
    [ran] = call.tool_calls
    assert (ran.outcome, ran.result) == (
        "completed after cancellation",
        {"result": "booked anyway"},
    )
    await store.close()


class SpecToolbox(HeldToolbox):
    """As :class:`HeldToolbox`, with one declared tool that says nothing of its behavior."""

    def spec(self, name: str) -> ToolSpec | None:
        return ToolSpec("lookup", "Look it up.", EndCallTool(), scheduling="INTERRUPT")


async def test_a_tool_without_behavior_runs_the_models_way() -> None:
    # 3.8 Live runs it NON_BLOCKING: the model talks on, the result goes with its scheduling.
    for wire, waited, scheduling in (
        (WireProfile(default_behavior="NON_BLOCKING"), [], "INTERRUPT"),
        (DEFAULT_WIRE, [True, False], None),
    ):
        toolbox, live = SpecToolbox(), SentMessages(wire)
        waiting: list[bool] = []
        tools = runner(toolbox, live, on_waiting=waiting.append)
        async with asyncio.TaskGroup() as group:
            tools.attach(group)
            await tools.requested(calls("a"))
            await settle()
            toolbox.finish.set()
        assert waiting == waited
        assert live.scheduling == {"a": scheduling}


async def _no_action(action: object) -> None:
    raise AssertionError("no tool here ends or moves the call")


class ScheduledToolbox(HeldToolbox):
    """One NON_BLOCKING tool whose results go with ``scheduling``."""

    def __init__(self, scheduling: Scheduling) -> None:
        super().__init__()
        self.scheduling: Scheduling = scheduling

    def spec(self, name: str) -> ToolSpec | None:
        return ToolSpec(
            "lookup",
            "Look it up.",
            EndCallTool(),
            behavior="NON_BLOCKING",
            scheduling=self.scheduling,
        )


async def test_a_result_the_model_is_to_speak_about_leaves_it_owing_an_answer() -> None:
    # WHEN_IDLE and INTERRUPT prompt the model to answer; SILENT does not, except where
    # scheduling is ignored (Vertex AI), so the default, WHEN_IDLE, applies.
    ignored = WireProfile(scheduling=False)
    cases: tuple[tuple[Scheduling, WireProfile, int], ...] = (
        ("WHEN_IDLE", DEFAULT_WIRE, 1),
        ("INTERRUPT", DEFAULT_WIRE, 1),
        ("SILENT", DEFAULT_WIRE, 0),
        ("SILENT", ignored, 1),
    )
    for scheduling, wire, owed in cases:
        toolbox, live = ScheduledToolbox(scheduling), SentMessages(wire)
        owing: list[None] = []
        tools = runner(toolbox, live, on_answer_owed=partial(owing.append, None))
        async with asyncio.TaskGroup() as group:
            tools.attach(group)
            await tools.requested(calls("a"))
            await settle()
            assert owing == []  # not before the result went
            toolbox.finish.set()
        assert len(owing) == owed, (scheduling, wire)
