"""The toolbox: argument checks, bound parameters, python and built-in tools, timeouts, crashes,
cancellation that really cancels (SQLite queries interrupted), the SQL scanner, spec validation.

HTTP tools are tested against a local server in ``tests/integration/test_tools_http.py``; the
CRM, SQL injection and the PostgreSQL variant in ``test_crm.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from structlog.testing import capture_logs
from timing import scaled_timeout

from agent.config.tools import (
    EndCallTool,
    HttpTool,
    PythonTool,
    SqlTool,
    ToolSpec,
    TransferCallTool,
)
from agent.crm import Crm
from agent.errors import ConfigError
from agent.observability.metrics import Metrics
from agent.tools import (
    GENERIC_FAILURE,
    CallContext,
    EndCall,
    Toolbox,
    ToolOutcome,
    TransferCall,
    validate_specs,
)
from agent.tools import python as tool_python
from agent.tools.sql import SqliteDatabase
from agent.tools.sql_params import parse_query

CONTEXT = CallContext(
    call_sid="CA" + "1" * 32,
    account_sid="AC" + "a" * 32,
    stream_sid="MZ" + "5" * 32,
    agent="acme-support",
    caller_number="+15555550100",
    called_number="+15555550199",
    local_time="2025-06-02T10:00:00-04:00",
    local_date="2025-06-02",
)

# Python tool targets, written to a module of their own so they are imported by name, as a
# configured ``module:function`` is.
TARGETS = """
import asyncio
import datetime
import decimal
import os
import pathlib
import threading
import time
import uuid

from agent.tools import ToolError

seen = {}


def echo(**arguments):
    seen["thread"] = threading.get_ident()
    return {"arguments": arguments}


def whereabouts():
    return {"pid": os.getpid()}


def book_later(started: str, booked: str, seconds: float = 0.5):
    # Says it started, waits, then makes its side effect: the file ``booked``.
    pathlib.Path(started).write_text(str(os.getpid()))
    time.sleep(seconds)
    pathlib.Path(booked).write_text("booked")
    return "booked"


async def async_book_later(started: str, booked: str, seconds: float = 0.5):
    seen["async_started"] = True
    await asyncio.sleep(seconds)
    pathlib.Path(booked).write_text("booked")
    return "booked"


async def stubborn(booked: str):
    # Catches its cancellation and finishes anyway.
    seen["stubborn_started"] = True
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        pass
    pathlib.Path(booked).write_text("booked")
    return "booked anyway"


def dies():
    os._exit(3)


def book_through_a_helper(started: str, booked: str, seconds: float = 0.5):
    # The side effect is left to a process of the tool's own, which it then waits for.
    import subprocess
    import sys
    script = f"import pathlib, time; time.sleep({seconds}); pathlib.Path({booked!r}).touch()"
    helper = subprocess.Popen([sys.executable, "-c", script])
    pathlib.Path(started).write_text(str(helper.pid))
    helper.wait()
    return "booked"


async def async_echo(**arguments):
    seen["async_thread"] = threading.get_ident()
    return {"arguments": arguments}


def order(order_id, caller_number, verbose=False, count=1, kind="order", note=None):
    return {"order_id": order_id, "caller_number": caller_number, "verbose": verbose}


def needs_both(order_id, note):
    return order_id + note


async def slow(seconds: float = 30.0):
    seen["slow_started"] = True
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        seen["slow_cancelled"] = True
        raise
    return "finished"


def crash():
    raise RuntimeError("cannot connect: password=hunter2-very-secret")


def refuse(order_id):
    raise ToolError(f"there is no order {order_id}")


def not_json():
    return object()


def huge():
    return "x" * 100_000


def rich():
    return {
        "when": datetime.datetime(2025, 6, 2, 10, 30),
        "day": datetime.date(2025, 6, 3),
        "amount": decimal.Decimal("12.50"),
        "count": decimal.Decimal("3"),
        "blob": b"abc",
        "id": uuid.UUID(int=1),
        "tags": ("a", "b"),
    }


NOT_CALLABLE = 3
"""


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The targets module, importable as ``phone_tool_targets``."""
    root = tmp_path_factory.mktemp("targets")
    (root / "phone_tool_targets.py").write_text(textwrap.dedent(TARGETS))
    sys.path.insert(0, str(root))
    import phone_tool_targets  # type: ignore[import-not-found]

    yield phone_tool_targets
    sys.path.remove(str(root))
    sys.modules.pop("phone_tool_targets", None)


def python_tool(function: str, parameters: dict[str, Any] | None = None, **spec: Any) -> ToolSpec:
    return ToolSpec(
        name=spec.pop("name", function),
        description=f"the {function} tool",
        kind=PythonTool(f"phone_tool_targets:{function}"),
        parameters=parameters or {"type": "object", "properties": {}},
        **spec,
    )


ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "maxLength": 12},
        "verbose": {"type": "boolean"},
        "count": {"type": "integer"},
        "kind": {"type": "string", "enum": ["order", "return"]},
        "note": {"type": ["string", "null"]},
    },
    "required": ["order_id"],
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def crm(tmp_path: Path) -> Crm:
    return await Crm.open(f"sqlite:///{tmp_path / 'crm.db'}")


@pytest.fixture
async def make_toolbox(http: aiohttp.ClientSession, crm: Crm, targets: Any) -> AsyncIterator[Any]:
    made: list[Toolbox] = []

    def make(*specs: ToolSpec, **options: Any) -> Toolbox:
        toolbox = Toolbox(specs, http=http, crm=crm, **options)
        made.append(toolbox)
        return toolbox

    yield make
    for toolbox in made:
        await toolbox.close()


# -- the call context ------------------------------------------------------------------------------


def test_the_context_gives_each_bindable_value_and_nothing_else() -> None:
    assert CONTEXT.value("caller_number") == "+15555550100"
    assert CONTEXT.value("called_number") == "+15555550199"
    assert CONTEXT.value("call_sid") == CONTEXT.call_sid
    assert CONTEXT.value("agent") == "acme-support"
    assert CONTEXT.value("local_time") == "2025-06-02T10:00:00-04:00"
    assert CONTEXT.value("local_date") == "2025-06-02"
    for key in ("account_sid", "stream_sid", "__class__", ""):
        with pytest.raises(KeyError):
            CONTEXT.value(key)


# -- arguments -------------------------------------------------------------------------------------


async def test_an_unknown_tool_is_an_error_the_model_is_told_about(make_toolbox: Any) -> None:
    outcome = await make_toolbox().run("delete_everything", {}, CONTEXT)
    assert outcome.outcome == "error"
    assert outcome.response == {"error": "there is no tool called 'delete_everything'"}
    assert outcome.action is None


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({}, "missing required argument(s): order_id"),
        ({"order_id": None}, "missing required argument(s): order_id"),
        ({"order_id": ["A1017"]}, "order_id must be a string"),
        ({"order_id": "A1017", "verbose": "yes"}, "verbose must be true or false"),
        ({"order_id": "A1017", "count": 1.5}, "count must be a whole number"),
        ({"order_id": "A1017", "count": True}, "count must be a whole number"),
        ({"order_id": "A1017", "kind": "refund"}, "kind must be one of 'order', 'return'"),
        ({"order_id": "A" * 13}, "order_id must be at most 12 characters"),
    ],
)
async def test_arguments_that_do_not_fit_the_schema_are_errors(
    make_toolbox: Any, args: dict[str, Any], error: str
) -> None:
    outcome = await make_toolbox(python_tool("echo", ORDER_SCHEMA)).run("echo", args, CONTEXT)
    assert outcome.outcome == "error"
    assert outcome.response == {"error": error}


async def test_arguments_are_normalised_and_undeclared_ones_dropped(make_toolbox: Any) -> None:
    toolbox = make_toolbox(python_tool("echo", ORDER_SCHEMA))
    args = {
        "order_id": 1017,  # said as digits: a string parameter gets the text
        "count": 2.0,  # the Live API's numbers are doubles
        "note": None,  # nullable: kept
        "kind": "order",
        "sql": "DROP TABLE orders",  # not declared: never reaches the tool
    }
    outcome = await toolbox.run("echo", args, CONTEXT)
    assert outcome.response == {
        "result": {"arguments": {"order_id": "1017", "count": 2, "note": None, "kind": "order"}}
    }


async def test_arguments_that_are_not_an_object_are_an_error(make_toolbox: Any) -> None:
    toolbox: Toolbox = make_toolbox(python_tool("echo"))
    outcome = await toolbox.run("echo", ["A1017"], CONTEXT)  # type: ignore[arg-type]
    assert outcome.response == {"error": "the arguments must be a JSON object"}


async def test_bound_parameters_always_come_from_the_call(make_toolbox: Any) -> None:
    spec = python_tool("order", ORDER_SCHEMA, bind={"caller_number": "caller_number"})
    toolbox = make_toolbox(spec)
    with capture_logs() as logs:
        outcome = await toolbox.run(
            "order",
            {"order_id": "A1017", "caller_number": "+15555550101"},  # someone else's number
            CONTEXT,
        )
    assert outcome.response["result"]["caller_number"] == "+15555550100"
    [warning] = [e for e in logs if e["event"] == "tool.bound_override_ignored"]
    assert warning == {
        "event": "tool.bound_override_ignored",
        "log_level": "warning",
        "tool": "order",
        "parameters": ["caller_number"],
    }
    # Without an attempt there is no warning.
    with capture_logs() as logs:
        await toolbox.run("order", {"order_id": "A1017"}, CONTEXT)
    assert not [e for e in logs if e["event"] == "tool.bound_override_ignored"]


async def test_the_outcome_says_what_ran_and_whether_it_was_refused(make_toolbox: Any) -> None:
    spec = python_tool("order", ORDER_SCHEMA, bind={"caller_number": "caller_number"})
    refusing = {"type": "object", "properties": {"order_id": {"type": "string"}}}
    toolbox = make_toolbox(spec, python_tool("refuse", refusing))
    used: list[Any] = []
    outcome = await toolbox.run(
        "order",
        {"order_id": "A1017", "caller_number": "+15555550101"},
        CONTEXT,
        on_arguments=used.append,
    )
    ran = {"order_id": "A1017", "caller_number": "+15555550100"}  # the call's, not the model's
    assert (outcome.arguments, used, outcome.refused) == (ran, [ran], False)
    # A tool that runs and fails ran all the same: not refused.
    failed = await toolbox.run("refuse", {"order_id": "A9999"}, CONTEXT)
    assert (failed.outcome, failed.refused) == ("error", False)
    assert failed.arguments == {"order_id": "A9999"}
    # Never run: no such tool, arguments the schema refuses, a bound value the call lacks.
    anonymous = CallContext(**{**_fields(CONTEXT), "caller_number": None})
    for name, args, context in (
        ("delete_everything", {}, CONTEXT),
        ("order", {"order_id": "A1017", "kind": "refund"}, CONTEXT),
        ("order", {"order_id": "A1017"}, anonymous),
    ):
        used = []
        refused = await toolbox.run(name, args, context, on_arguments=used.append)
        assert (refused.outcome, refused.refused, refused.arguments) == ("error", True, None)
        assert used == []
        assert "error" in refused.response


async def test_a_bound_value_the_call_does_not_have_fails_the_tool(make_toolbox: Any) -> None:
    spec = python_tool("order", ORDER_SCHEMA, bind={"caller_number": "caller_number"})
    anonymous = CallContext(**{**_fields(CONTEXT), "caller_number": None})
    outcome = await make_toolbox(spec).run(
        "order", {"order_id": "A1017", "caller_number": "+15555550100"}, anonymous
    )
    assert outcome.response == {"error": "this call has no caller number, which the tool needs"}


def _fields(context: CallContext) -> dict[str, Any]:
    return {name: getattr(context, name) for name in context.__slots__}


# -- python tools ----------------------------------------------------------------------------------


async def test_a_sync_function_runs_in_a_worker_process_that_is_reused(
    make_toolbox: Any,
) -> None:
    toolbox = make_toolbox(python_tool("whereabouts"), python_tool("echo"))
    first = await toolbox.run("whereabouts", {}, CONTEXT)
    assert first.outcome == "ok"
    assert first.response["result"]["pid"] != os.getpid()
    echoed = await toolbox.run("echo", {}, CONTEXT)
    assert echoed.response == {"result": {"arguments": {}}}
    again = await toolbox.run("whereabouts", {}, CONTEXT)
    assert again.response == first.response  # the same warm worker, call after call
    assert toolbox.workers.started == 1


async def test_an_idle_worker_is_let_go_and_the_next_call_starts_another(
    make_toolbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A toolbox left behind by a reload (or an agent nobody calls) keeps no process for ever."""
    monkeypatch.setattr(tool_python, "IDLE_RETIRE_S", 0.2)
    toolbox = make_toolbox(python_tool("whereabouts"))
    first = await toolbox.run("whereabouts", {}, CONTEXT)
    pid = first.response["result"]["pid"]
    await _until(lambda: toolbox.workers.retired == 1)
    await _until(lambda: _gone(pid))
    again = await toolbox.run("whereabouts", {}, CONTEXT)
    assert again.outcome == "ok"
    assert again.response["result"]["pid"] != pid
    assert toolbox.workers.started == 2


async def test_a_sync_tool_whose_worker_dies_is_a_safe_error_and_the_next_call_works(
    make_toolbox: Any,
) -> None:
    toolbox = make_toolbox(python_tool("dies"), python_tool("whereabouts"))
    with capture_logs() as logs:
        outcome = await toolbox.run("dies", {}, CONTEXT)
    assert (outcome.outcome, outcome.response) == ("error", {"error": GENERIC_FAILURE})
    assert [e["event"] for e in logs if e["event"] == "tool.crashed"] == ["tool.crashed"]
    assert (await toolbox.run("whereabouts", {}, CONTEXT)).outcome == "ok"


def _book_args(tmp_path: Path, seconds: float = 0.5) -> dict[str, Any]:
    return {
        "started": str(tmp_path / "started"),
        "booked": str(tmp_path / "booked"),
        "seconds": seconds,
    }


BOOK_SCHEMA = {
    "type": "object",
    "properties": {
        "started": {"type": "string"},
        "booked": {"type": "string"},
        "seconds": {"type": "number"},
    },
}


def _gone(pid: int) -> bool:
    """The process has exited (and been reaped, or is a zombie nobody will wake)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split(") ", 1)[1].startswith("Z")


async def test_a_cancelled_sync_tool_is_stopped_and_its_side_effect_never_happens(
    make_toolbox: Any, tmp_path: Path
) -> None:
    metrics = Metrics()
    toolbox = make_toolbox(python_tool("book_later", BOOK_SCHEMA), metrics=metrics)
    task = asyncio.create_task(toolbox.run("book_later", _book_args(tmp_path), CONTEXT))
    started = tmp_path / "started"
    await _until(started.exists)  # the tool is running: it has written its first file
    await _until(lambda: started.read_text() != "")
    pid = int(started.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The process that would have booked is gone, so the booking can never be made.
    await _until(lambda: _gone(pid))
    assert toolbox.workers.killed == [pid]
    assert not (tmp_path / "booked").exists()
    assert _observed(metrics, "book_later", "cancelled") == 1
    # A spare worker took its place: the next call runs (and books, uncancelled).
    done = await toolbox.run("book_later", _book_args(tmp_path, seconds=0), CONTEXT)
    assert done.response == {"result": "booked"}
    assert (tmp_path / "booked").read_text() == "booked"


async def test_a_cancelled_sync_tool_takes_the_processes_it_started_with_it(
    make_toolbox: Any, tmp_path: Path
) -> None:
    toolbox = make_toolbox(python_tool("book_through_a_helper", BOOK_SCHEMA))
    args = _book_args(tmp_path, seconds=30)
    task = asyncio.create_task(toolbox.run("book_through_a_helper", args, CONTEXT))
    started = tmp_path / "started"
    await _until(lambda: started.exists() and started.read_text() != "")
    helper = int(started.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until(lambda: _gone(helper))  # killed with the worker's process group
    assert not (tmp_path / "booked").exists()


async def test_a_sync_tool_that_times_out_is_stopped_too(make_toolbox: Any, tmp_path: Path) -> None:
    toolbox = make_toolbox(python_tool("book_later", BOOK_SCHEMA, timeout_s=1.0))
    # A first call, so the timed one does not spend its second starting the worker process.
    warm = tmp_path / "warm"
    warm.mkdir()
    assert (await toolbox.run("book_later", _book_args(warm, seconds=0), CONTEXT)).outcome == "ok"
    outcome = await toolbox.run("book_later", _book_args(tmp_path, seconds=30), CONTEXT)
    assert outcome.outcome == "timeout"
    [pid] = toolbox.workers.killed
    await _until(lambda: _gone(pid))
    assert not (tmp_path / "booked").exists()


async def test_a_cancelled_async_tool_is_stopped_at_its_await(
    make_toolbox: Any, targets: Any, tmp_path: Path
) -> None:
    targets.seen.pop("async_started", None)
    toolbox = make_toolbox(python_tool("async_book_later", BOOK_SCHEMA))
    task = asyncio.create_task(toolbox.run("async_book_later", _book_args(tmp_path), CONTEXT))
    await _until(lambda: bool(targets.seen.get("async_started")))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The coroutine is finished (cancelled): nothing is left that could write the file.
    assert not (tmp_path / "booked").exists()


async def test_a_tool_that_swallows_its_cancellation_is_recorded_as_completed_after_it(
    make_toolbox: Any, targets: Any, tmp_path: Path
) -> None:
    targets.seen.pop("stubborn_started", None)
    metrics = Metrics()
    schema = {"type": "object", "properties": {"booked": {"type": "string"}}}
    toolbox = make_toolbox(python_tool("stubborn", schema), metrics=metrics)
    booked = str(tmp_path / "booked")
    task = asyncio.create_task(toolbox.run("stubborn", {"booked": booked}, CONTEXT))
    await _until(lambda: bool(targets.seen.get("stubborn_started")))
    task.cancel()
    outcome = await task
    assert outcome.outcome == "completed after cancellation"
    assert (tmp_path / "booked").exists()
    assert _observed(metrics, "stubborn", "completed_after_cancellation") == 1


async def test_an_async_function_is_awaited_on_the_loop(make_toolbox: Any, targets: Any) -> None:
    outcome = await make_toolbox(python_tool("async_echo")).run("async_echo", {}, CONTEXT)
    assert outcome.response == {"result": {"arguments": {}}}
    assert targets.seen["async_thread"] == threading.get_ident()


async def test_a_tool_error_message_reaches_the_model(make_toolbox: Any) -> None:
    spec = python_tool("refuse", {"type": "object", "properties": {"order_id": {"type": "string"}}})
    outcome = await make_toolbox(spec).run("refuse", {"order_id": "A9999"}, CONTEXT)
    assert (outcome.outcome, outcome.response) == ("error", {"error": "there is no order A9999"})


async def test_a_crash_becomes_a_safe_error_and_the_details_go_to_the_log(
    make_toolbox: Any,
) -> None:
    with capture_logs() as logs:
        outcome = await make_toolbox(python_tool("crash")).run("crash", {}, CONTEXT)
    assert outcome.outcome == "error"
    assert outcome.response == {"error": GENERIC_FAILURE}
    assert "hunter2" not in repr(outcome)
    [crashed] = [e for e in logs if e["event"] == "tool.crashed"]
    assert "RuntimeError" in crashed["error"]


async def test_a_missing_optional_argument_the_function_needs_is_an_error(
    make_toolbox: Any,
) -> None:
    parameters = {
        "type": "object",
        "properties": {"order_id": {"type": "string"}, "note": {"type": "string"}},
    }
    outcome = await make_toolbox(python_tool("needs_both", parameters)).run(
        "needs_both", {"order_id": "A1"}, CONTEXT
    )
    assert outcome.outcome == "error"
    assert outcome.response["error"].startswith("the tool cannot be called with these arguments")


@pytest.mark.parametrize(
    ("function", "error"),
    [
        ("not_json", "the tool returned a value that is not JSON"),
        ("huge", "the result is too large"),
    ],
)
async def test_results_must_be_modest_json(make_toolbox: Any, function: str, error: str) -> None:
    outcome = await make_toolbox(python_tool(function)).run(function, {}, CONTEXT)
    assert outcome.outcome == "error"
    assert outcome.response["error"].startswith(error)


async def test_results_become_plain_json(make_toolbox: Any) -> None:
    outcome = await make_toolbox(python_tool("rich")).run("rich", {}, CONTEXT)
    assert outcome.response == {
        "result": {
            "when": "2025-06-02T10:30:00",
            "day": "2025-06-03",
            "amount": 12.5,
            "count": 3,
            "blob": "<3 bytes>",
            "id": "00000000-0000-0000-0000-000000000001",
            "tags": ["a", "b"],
        }
    }


# -- timeouts and cancellation ---------------------------------------------------------------------


async def test_a_timeout_is_an_outcome_and_the_tool_is_cancelled(
    make_toolbox: Any, targets: Any
) -> None:
    targets.seen.pop("slow_cancelled", None)
    metrics = Metrics()
    toolbox = make_toolbox(python_tool("slow", timeout_s=0.1), metrics=metrics)
    outcome = await toolbox.run("slow", {}, CONTEXT)
    assert outcome.outcome == "timeout"
    assert outcome.response == {"error": "the tool did not finish within 0.1 seconds"}
    assert 0.1 <= outcome.latency_s < 1.0
    assert targets.seen["slow_cancelled"] is True
    assert _observed(metrics, "slow", "timeout") == 1


async def test_cancelling_a_running_tool_cancels_it_and_propagates(
    make_toolbox: Any, targets: Any
) -> None:
    targets.seen.pop("slow_cancelled", None)
    targets.seen.pop("slow_started", None)
    metrics = Metrics()
    toolbox = make_toolbox(python_tool("slow"), metrics=metrics)
    task = asyncio.create_task(toolbox.run("slow", {}, CONTEXT))
    await _until(lambda: bool(targets.seen.get("slow_started")))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert targets.seen["slow_cancelled"] is True
    assert _observed(metrics, "slow", "cancelled") == 1


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` (state another thread or module changes) until it holds."""
    deadline = time.monotonic() + scaled_timeout(timeout_s)
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.005)


def _observed(metrics: Metrics, tool: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "agent_tool_latency_seconds_count", {"tool": tool, "outcome": outcome}
    )
    return value or 0.0


def _endless_db(tmp_path: Path) -> Path:
    path = tmp_path / "other.db"
    sqlite3.connect(path).close()
    return path


# Counts to ten billion: minutes of work, unless it is interrupted.
ENDLESS = (
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10000000000) "
    "SELECT count(*) AS total FROM n WHERE x > :floor"
)


async def test_a_timed_out_sqlite_query_is_interrupted(make_toolbox: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{_endless_db(tmp_path)}"
    spec = ToolSpec(
        name="count",
        description="count",
        kind=SqlTool(query=ENDLESS, database_url=url),
        parameters={"type": "object", "properties": {"floor": {"type": "integer"}}},
        timeout_s=0.2,
    )
    toolbox = make_toolbox(spec)
    started = time.monotonic()
    outcome = await toolbox.run("count", {"floor": 0}, CONTEXT)
    assert outcome.outcome == "timeout"
    # The run waited for the interrupted thread, which stopped at once.
    assert time.monotonic() - started < 1.5
    # The database is usable straight away (the pooled connection is idle).
    quick = ToolSpec(
        name="quick", description="q", kind=SqlTool(query="SELECT 1 AS one", database_url=url)
    )
    assert (await make_toolbox(quick).run("quick", {}, CONTEXT)).response == {
        "result": [{"one": 1}]
    }


async def test_cancelling_a_sqlite_query_interrupts_it_and_its_thread_ends(
    tmp_path: Path,
) -> None:
    database = SqliteDatabase(_endless_db(tmp_path))
    task = asyncio.create_task(database.execute(parse_query(ENDLESS), {"floor": 0}, 5))
    await _until(lambda: database.running > 0)
    await asyncio.sleep(0.1)  # well into the query
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.0
    assert database.running == 0  # the worker thread has returned
    await database.close()


async def test_a_query_cancelled_before_its_thread_starts_never_runs(tmp_path: Path) -> None:
    """interrupt() alone would miss a statement that had not started: the flag catches it."""
    path = tmp_path / "t.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (x)")
    connection.commit()
    connection.close()
    # One worker thread, kept busy, so the query's job waits in the executor's queue.
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    release = threading.Event()
    busy = loop.run_in_executor(pool, release.wait)
    database = SqliteDatabase(path, executor=pool)
    task = asyncio.create_task(database.execute(parse_query("INSERT INTO t VALUES (1)"), {}, 5))
    await asyncio.sleep(0)  # one loop turn: the task queues its job and awaits it
    task.cancel()
    await asyncio.sleep(0)  # one loop turn: the task handles it, marking the job cancelled
    release.set()  # only now does the job reach a thread
    with pytest.raises(asyncio.CancelledError):
        await task
    await busy
    await _until(lambda: database.running == 0)
    check = sqlite3.connect(path)
    assert check.execute("SELECT count(*) FROM t").fetchone() == (0,)
    check.close()
    await database.close()
    pool.shutdown()


# -- built-ins -------------------------------------------------------------------------------------


async def test_end_call_returns_the_action_for_the_session(make_toolbox: Any) -> None:
    spec = ToolSpec(name="end_call", description="Hang up.", kind=EndCallTool())
    outcome = await make_toolbox(spec).run("end_call", {}, CONTEXT)
    assert outcome == ToolOutcome(
        response={"result": "ending the call"},
        outcome="ok",
        latency_s=outcome.latency_s,
        action=EndCall(),
        arguments={},
    )


async def test_transfer_call_returns_the_configured_number(make_toolbox: Any) -> None:
    spec = ToolSpec(
        name="transfer_call",
        description="Transfer to a person.",
        kind=TransferCallTool("+15555550123"),
        parameters={"type": "object", "properties": {"reason": {"type": "string"}}},
    )
    outcome = await make_toolbox(spec).run(
        "transfer_call", {"reason": "billing", "number": "+19005550000"}, CONTEXT
    )
    assert outcome.response == {
        "result": "transferring the call; the caller is told to hold, say nothing more"
    }
    assert outcome.action == TransferCall("+15555550123")  # never the model's number
    quiet = ToolSpec(
        name="transfer_call",
        description="Transfer to a person.",
        kind=TransferCallTool("+15555550123", announce=False),
    )
    outcome = await make_toolbox(quiet).run("transfer_call", {}, CONTEXT)
    assert outcome.response == {"result": "transferring the call"}
    assert outcome.action == TransferCall("+15555550123", announce=False)


# -- validation ------------------------------------------------------------------------------------


def spec(kind: Any, **fields: Any) -> ToolSpec:
    return ToolSpec(name=fields.pop("name", "t"), description="d", kind=kind, **fields)


@pytest.mark.parametrize(
    ("specs", "problem"),
    [
        ([spec(EndCallTool()), spec(EndCallTool())], "tool 't': declared twice"),
        ([spec(PythonTool("no_such_module_xyz:f"))], "cannot import 'no_such_module_xyz'"),
        ([spec(PythonTool("json:no_such_function"))], "json has no no_such_function"),
        ([spec(PythonTool("phone_tool_targets:NOT_CALLABLE"))], "is not callable"),
        (
            [spec(PythonTool("phone_tool_targets:needs_both"))],
            "needs argument(s) the tool does not declare: note, order_id",
        ),
        (
            [spec(PythonTool("phone_tool_targets:refuse"), bind={"who": "caller_number"})],
            "takes no argument(s) named who",
        ),
        ([spec(SqlTool("SELECT 1; DROP TABLE x"))], "exactly one statement, found 2"),
        ([spec(SqlTool("SELECT * FROM t WHERE a = :a"))], "neither parameters nor bound: :a"),
        ([spec(HttpTool("https://{host}/orders"))], "the scheme and host must be literal"),
        ([spec(HttpTool("https://example.com/{order}"))], "undeclared argument(s): order"),
        (
            [spec(HttpTool("https://example.com/", headers={"X-Who": "{who}"}))],
            "undeclared argument(s): who",
        ),
        (
            [
                spec(
                    EndCallTool(),
                    parameters={"type": "object", "properties": {}, "required": ["x"]},
                )
            ],
            "required parameter 'x' is not among the properties",
        ),
        ([spec(EndCallTool(), parameters={"type": "string"})], "must be a JSON schema of type"),
    ],
)
def test_validate_specs_names_each_problem(
    targets: Any, specs: list[ToolSpec], problem: str
) -> None:
    problems = validate_specs(specs)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    ("build", "key", "problem"),
    [
        (lambda: spec(EndCallTool(), timeout_s=0), "tool_specs.timeout_s", "must be above 0"),
        (
            lambda: spec(EndCallTool(), bind={"n": "caller_name"}),
            "tool_specs.bind.n",
            "must be one of agent, call_sid, called_number, caller_number, local_time, local_date; "
            "got 'caller_name'",
        ),
        (lambda: TransferCallTool("555-0123"), "transfer_call.number", "E.164 phone number"),
        (lambda: PythonTool("json"), "python.target", "must be module:function; 'json' is not"),
        (lambda: SqlTool("SELECT 1", max_rows=0), "sql.max_rows", "must be at least 1"),
        (
            lambda: SqlTool("SELECT 1", database_url="mysql://h/db"),
            "sql.database_url",
            "must be a sqlite:/// or postgresql:// URL",
        ),
        (lambda: HttpTool("ftp://example.com/x"), "http.url", "an http:// or https:// URL"),
        (
            lambda: HttpTool("https://x.example.com/", method=cast(Any, "FETCH")),
            "http.method",
            "GET, POST",
        ),
        (
            lambda: spec(EndCallTool(), parameters={"type": "object", "minProperties": -1}),
            "tool_specs.parameters.minProperties",
            "not a valid JSON Schema",
        ),
    ],
)
def test_impossible_specs_cannot_be_built(build: Any, key: str, problem: str) -> None:
    """What the spec classes refuse never reaches ``validate_specs``."""
    with pytest.raises(ConfigError) as caught:
        build()
    assert caught.value.key == key
    assert problem in str(caught.value)


def test_good_specs_have_no_problems(targets: Any) -> None:
    assert (
        validate_specs(
            [
                spec(EndCallTool(), name="end_call"),
                spec(TransferCallTool("+15555550123"), name="transfer"),
                python_tool("order", ORDER_SCHEMA, bind={"caller_number": "caller_number"}),
                spec(
                    SqlTool("SELECT * FROM orders WHERE id = :order_id AND x::int > 0;"),
                    name="sql",
                    parameters=ORDER_SCHEMA,
                ),
                spec(
                    HttpTool(
                        "https://crm.example.com/orders/{order_id}?src={{phone}}",
                        headers={"X-Caller": "{caller}"},
                        json_body={"id": "{order_id}"},
                    ),
                    name="http",
                    parameters=ORDER_SCHEMA,
                    bind={"caller": "caller_number"},
                ),
            ]
        )
        == []
    )


async def test_a_toolbox_with_bad_specs_is_a_config_error(
    http: aiohttp.ClientSession, crm: Crm
) -> None:
    with pytest.raises(ConfigError, match="no_such_module_xyz") as caught:
        Toolbox(
            [spec(PythonTool("no_such_module_xyz:f")), spec(SqlTool("SELECT :a"), name="u")],
            http=http,
            crm=crm,
        )
    assert "tool 'u'" in str(caught.value)


async def test_a_sql_parameter_bound_to_local_date_gets_the_agents_date(
    make_toolbox: Any,
) -> None:
    """``bind: {today: local_date}`` is ``{local_date}`` for queries: upcoming bookings are
    those from the business's today, whatever the model believes the date is."""
    spec = ToolSpec(
        name="today",
        description="Today's date as the database sees it.",
        kind=SqlTool("SELECT :today AS today, date(:today, '+1 day') AS tomorrow"),
        parameters={"type": "object", "properties": {"today": {"type": "string"}}},
        bind={"today": "local_date"},
    )
    outcome = await make_toolbox(spec).run("today", {"today": "1999-01-01"}, CONTEXT)
    assert outcome.response == {"result": [{"today": "2025-06-02", "tomorrow": "2025-06-03"}]}


def test_format_local_date_is_the_date_in_the_agents_time_zone() -> None:
    from datetime import UTC, datetime

    from agent.config.templates import format_local_date

    late = datetime(2026, 5, 15, 2, 30, tzinfo=UTC)  # still the 14th in New York
    assert format_local_date(late, "America/New_York") == "2026-05-14"
    assert format_local_date(late, "UTC") == "2026-05-15"
