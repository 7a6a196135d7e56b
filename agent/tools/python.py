"""``python`` tools: call ``module:function`` with the model's (checked) arguments.

The target is imported once, when the toolbox is built, so a typo is a start-up error rather
than a failed call. A coroutine function is awaited on the event loop; a plain function runs in
a worker process (:mod:`agent.tools.worker`), so a slow or blocking one never stalls the audio.

Both are really stopped when their call is cancelled (the model's ``toolCallCancellation``, the
call ending, the tool's ``timeout_s``): a coroutine at the ``await`` it is in, a sync function by
killing its worker process, so what it had not done yet never happens. A thread could not be
stopped (its side effect happened seconds after the record said "cancelled"), which is why sync
tools no longer run in one. What cannot be undone is what the tool had already done: a request
it had sent, a row it had committed. An async tool that hands work to a thread of its own
(``asyncio.to_thread``) cannot have that thread stopped: make such a tool sync instead.

A worker process costs a process start (the interpreter and the tool's module) once, off the
call's path: each toolbox with sync tools keeps one warm worker ready, a worker is reused call
after call, and one killed by a cancellation is replaced at once. Per call the worker adds a
JSON round trip over a pipe (README, Python tools, has the figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from agent.tools.base import ToolError

#: Threads that wait on worker processes' replies (a blocked read each), shared by every call of
#: the process. Their own pool, not the loop's default one (which SQL tools, the CRM and
#: aiohttp's DNS share).
_WAITERS: Final = ThreadPoolExecutor(max_workers=16, thread_name_prefix="tool-python")
#: Idle workers a toolbox keeps for its sync tools; more are started when calls overlap.
SPARE_WORKERS: Final = 1
MAX_IDLE_WORKERS: Final = 4
#: A worker unused this long is let go (the next call starts one): an agent replaced by a reload,
#: or not called for a while, does not keep processes for ever.
IDLE_RETIRE_S: Final = 600.0


def resolve_target(target: str) -> Callable[..., Any]:
    """The callable ``module:function`` names (``function`` may be dotted: ``Class.method``).

    Raises ``ValueError`` with a message fit for a configuration error.
    """
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"python target {target!r} must look like 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        raise ValueError(
            f"python target {target!r}: cannot import {module_name!r} ({type(exc).__name__}: {exc})"
        ) from exc
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise ValueError(
                f"python target {target!r}: {module_name} has no {attr_path}"
            ) from None
    if not callable(obj):
        raise ValueError(f"python target {target!r} is not callable")
    return obj  # type: ignore[no-any-return]


def check_signature(function: Callable[..., Any], parameters: Collection[str]) -> str | None:
    """Why ``function`` cannot be called with these keyword arguments, or None if it can.

    Only the names matter here; every argument is optional from the signature's point of view
    because the model may leave optional ones out.
    """
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some builtins have no signature: let the call decide
        return None
    accepts_any = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
    )
    if not accepts_any:
        keywords = {
            name
            for name, p in signature.parameters.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }
        unknown = sorted(set(parameters) - keywords)
        if unknown:
            return f"it takes no argument(s) named {', '.join(unknown)}"
    needed = sorted(
        name
        for name, p in signature.parameters.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and name not in parameters
    )
    if needed:
        return f"it needs argument(s) the tool does not declare: {', '.join(needed)}"
    return None


async def run_python(
    function: Callable[..., Any],
    arguments: Mapping[str, Any],
    *,
    workers: ToolWorkers | None = None,
    target: str | None = None,
) -> Any:
    """Call ``function(**arguments)``: awaited if it is a coroutine function, else in a worker
    process from ``workers`` as ``target`` (killed if this is cancelled)."""
    _check_call(function, arguments)
    if inspect.iscoroutinefunction(function):
        return await function(**arguments)
    if workers is None or target is None:
        raise ToolError("this tool cannot run here (no worker process for synchronous tools)")
    return await workers.call(target, arguments)


class WorkerCrashed(Exception):  # noqa: N818 (the toolbox maps it to its generic failure)
    """The tool raised something other than ``ToolError``, or its worker process died."""


class _Worker:
    """One worker process and its pipes. The process is started by the thread that first talks
    to it (starting one takes a fork and exec, not for the event loop to wait on); ``kill`` may
    come from the event loop at any moment, hence the lock."""

    def __init__(self, targets: Sequence[str]) -> None:
        self._targets = tuple(targets)
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self.killed = False
        self.idle_since = 0.0  # the event loop's time when it was last given back

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        with self._lock:
            if self._process is not None or self.killed:
                return
            # The worker must import what this process imports: the tools' modules may come
            # from a path added at run time (tests do), so pass ours on.
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
            self._process = subprocess.Popen(
                [sys.executable, "-m", "agent.tools.worker", *self._targets],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                env=env,
                # Its own process group, so a kill also stops what the tool started itself.
                start_new_session=True,
            )

    def exchange(self, request: str) -> dict[str, Any]:
        """Send one request line and read the reply (blocking: run in a waiter thread)."""
        self.start()
        process = self._process
        if process is None or process.stdin is None or process.stdout is None:
            raise WorkerCrashed("the worker process was stopped before the call")
        try:
            process.stdin.write(request)
            process.stdin.flush()
            line = process.stdout.readline()
        except (OSError, ValueError) as exc:  # a broken pipe, or pipes closed by kill()
            raise WorkerCrashed(f"the worker process is gone ({exc})") from exc
        if not line:
            raise WorkerCrashed(f"the worker process exited ({process.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def kill(self) -> None:
        """Stop the process now, mid-call or not: its tool does nothing more."""
        with self._lock:
            self.killed = True
            process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it exited in between
                os.killpg(process.pid, signal.SIGKILL)

    def reap(self) -> None:
        """Wait for a killed or finished process (blocking: a waiter thread), closing pipes."""
        process = self._process
        if process is None:
            return
        process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def close(self) -> None:
        """Let an idle worker go: closing its input ends it."""
        with self._lock:
            self.killed = True
            process = self._process
        if process is not None and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()


class ToolWorkers:
    """Worker processes for one toolbox's synchronous ``python`` tools.

    Each call takes an idle worker (or starts one), sends it the call, and waits for the reply
    in a waiter thread, so the event loop never blocks. A call that ends normally gives its
    worker back; a cancelled one (timeout, ``toolCallCancellation``, the call ending) kills it,
    which is what keeps the tool's side effect from happening, and starts a spare in its place.
    """

    def __init__(self, targets: Sequence[str]) -> None:
        self._targets = tuple(dict.fromkeys(targets))
        self._idle: list[_Worker] = []
        self._closed = False
        self.started = 0  # worker processes started, for tests and the log
        self.killed: list[int] = []  # pids of workers killed because their call was cancelled
        self.retired = 0  # idle workers let go after IDLE_RETIRE_S
        self._retire: asyncio.TimerHandle | None = None

    def warm_up(self) -> None:
        """Start the spare workers now, so the first call does not pay for a process start."""
        while len(self._idle) < SPARE_WORKERS and not self._closed:
            worker = self._new()
            _WAITERS.submit(worker.start)
            self._park(worker)

    def _park(self, worker: _Worker) -> None:
        """``worker`` is idle: keep it for the next call, until it has been idle too long."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside the event loop (a check, a test): no retirement
            self._idle.append(worker)
            return
        worker.idle_since = loop.time()
        self._idle.append(worker)
        if self._retire is None:
            self._retire = loop.call_later(IDLE_RETIRE_S, self._retire_idle)

    def _retire_idle(self) -> None:
        loop = asyncio.get_running_loop()
        self._retire = None
        now = loop.time()
        keep: list[_Worker] = []
        for worker in self._idle:
            if now - worker.idle_since >= IDLE_RETIRE_S:
                worker.close()
                _WAITERS.submit(worker.reap)
                self.retired += 1
            else:
                keep.append(worker)
        self._idle = keep
        if keep and not self._closed:
            oldest = min(w.idle_since for w in keep)
            self._retire = loop.call_later(oldest + IDLE_RETIRE_S - now, self._retire_idle)

    async def call(self, target: str, arguments: Mapping[str, Any]) -> Any:
        """``target(**arguments)`` in a worker: its JSON result, or ``ToolError`` with the
        tool's message, or :class:`WorkerCrashed`. Cancelling this kills the worker."""
        if self._closed:
            raise ToolError("the tool is shutting down")
        worker = self._idle.pop() if self._idle else self._new()
        request = json.dumps({"target": target, "arguments": dict(arguments)}) + "\n"
        loop = asyncio.get_running_loop()
        try:
            reply = await loop.run_in_executor(_WAITERS, worker.exchange, request)
        except BaseException:
            # Cancelled (or the worker died): kill it so its tool does nothing more, reap it
            # off the loop, and have a spare ready for the next call.
            worker.kill()
            if worker.pid is not None:
                self.killed.append(worker.pid)
            _WAITERS.submit(worker.reap)
            self.warm_up()
            raise
        if self._closed or len(self._idle) >= MAX_IDLE_WORKERS:
            worker.close()
            _WAITERS.submit(worker.reap)
        else:
            self._park(worker)
        if "result" in reply:
            return reply["result"]
        if "tool_error" in reply:
            raise ToolError(str(reply["tool_error"]))
        raise WorkerCrashed(str(reply.get("crash", "the worker sent no result")))

    async def close(self) -> None:
        """End every idle worker (a call still running kills its own when it is cancelled)."""
        self._closed = True
        if self._retire is not None:
            self._retire.cancel()
            self._retire = None
        idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()
        if idle:
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(_WAITERS, w.reap) for w in idle))

    def _new(self) -> _Worker:
        self.started += 1
        return _Worker(self._targets)


def _check_call(function: Callable[..., Any], arguments: Mapping[str, Any]) -> None:
    """Refuse a call whose arguments do not fit the signature (an optional argument the model
    left out that the function needs), before it runs: a TypeError from inside the function
    would be indistinguishable from a bug in it."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(**arguments)
    except TypeError as exc:
        raise ToolError(f"the tool cannot be called with these arguments ({exc})") from exc
