"""The process a synchronous ``python`` tool runs in (``python -m agent.tools.worker``).

A thread cannot be stopped from outside, so a sync tool run in a thread that is cancelled (the
model's ``toolCallCancellation``, the call ending, the tool's timeout) would still do its work
seconds later: book the appointment nobody is waiting for. A process can be stopped: the bridge
runs sync tools here and kills this process when their call is cancelled, so what the tool had
not done yet never happens.

The protocol is one JSON line each way per call, on private copies of stdin and stdout (the
tool's own ``print`` goes to stderr, with the bridge's logs, so it cannot corrupt a reply)::

    -> {"target": "package.module:function", "arguments": {...}}
    <- {"result": <JSON>} | {"tool_error": "message for the model"} | {"crash": "RuntimeError(...)"}

Targets are imported on first use and kept, so a warm worker answers in well under a
millisecond plus the tool's own time. The worker handles one call at a time and exits when
its input closes.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import sys
from collections.abc import Callable
from typing import IO, Any

from agent.tools.base import ToolError, json_safe
from agent.tools.python import resolve_target


def answer(request: object, functions: dict[str, Callable[..., Any]]) -> dict[str, Any]:
    """The reply to one request: the tool's result as plain JSON, or why there is none."""
    if not isinstance(request, dict) or not isinstance(request.get("arguments"), dict):
        return {"crash": f"malformed request {request!r:.200}"}
    target = str(request.get("target"))
    try:
        function = functions.get(target)
        if function is None:
            function = functions[target] = resolve_target(target)
        result = function(**request["arguments"])
        if inspect.isawaitable(result):  # a sync wrapper that returned a coroutine
            result = asyncio.run(_awaited(result))
        return {"result": json_safe(result)}
    except ToolError as exc:
        return {"tool_error": str(exc)}
    except Exception as exc:  # the tool's bug: the parent logs it, the model hears a generic line
        return {"crash": repr(exc)[:1000]}


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def serve(requests: IO[str], replies: IO[str]) -> None:
    """Answer requests until ``requests`` closes."""
    functions: dict[str, Callable[..., Any]] = {}
    for line in requests:
        try:
            request = json.loads(line)
        except ValueError:
            request = line
        replies.write(json.dumps(answer(request, functions), ensure_ascii=False) + "\n")
        replies.flush()


def main() -> None:
    # Keep the protocol's pipes to ourselves: the tool gets /dev/null for stdin and stderr for
    # stdout, so a stray print() or input() in a tool cannot break the exchange.
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for target in sys.argv[1:]:  # warm up: import the tools' modules before the first call
        try:
            resolve_target(target)
        except ValueError as exc:
            print(f"agent.tools.worker: {exc}", file=sys.stderr)
    serve(requests, replies)


if __name__ == "__main__":
    main()
