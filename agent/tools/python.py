"""``python`` tools: call ``module:function`` with the model's (checked) arguments.

The target is imported once, when the toolbox is built, so a typo is a start-up error rather
than a failed call. A coroutine function is awaited on the event loop; a plain function runs in
a worker thread (``asyncio.to_thread``, which also carries the call's logging context), so a slow
or blocking one never stalls the audio.

Cancelling a coroutine really cancels it. A thread cannot be stopped from outside: when a sync
tool is cancelled or times out, the call moves on at once and the thread's eventual result is
discarded. Tools that can take long should be ``async`` or bounded on their own.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from agent.tools.base import ToolError

#: Threads for synchronous Python tools, shared by every call of the process.
_THREADS: Final = ThreadPoolExecutor(max_workers=8, thread_name_prefix="tool-python")


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


async def run_python(function: Callable[..., Any], arguments: Mapping[str, Any]) -> Any:
    """Call ``function(**arguments)``: awaited if it is a coroutine function, else in a thread."""
    _check_call(function, arguments)
    if inspect.iscoroutinefunction(function):
        return await function(**arguments)
    # Their own threads (not the loop's default pool, which SQL tools, the CRM and aiohttp's DNS
    # share): a sync tool that hangs past its timeout keeps a thread, but only one of these.
    context = contextvars.copy_context()  # the thread logs with the call's context
    result = await asyncio.get_running_loop().run_in_executor(
        _THREADS, context.run, functools.partial(function, **arguments)
    )
    if inspect.isawaitable(result):  # a sync wrapper that returned a coroutine
        return await result
    return result


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
