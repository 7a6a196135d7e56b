"""Running the model's function calls: HTTP requests, SQL queries, Python functions, built-ins.

The call session builds one :class:`CallContext` per call and, for each function call the model
makes, starts ``toolbox.run(name, args, context)`` as its own task; the :class:`ToolOutcome`'s
``response`` goes back to the model and its ``action`` (hang up, transfer) is the session's to
carry out, through its call control (Twilio's REST API), once the goodbye has played.

Modules: :mod:`~agent.tools.toolbox` (the :class:`Toolbox`, :func:`validate_specs`),
:mod:`~agent.tools.base` (shared types), :mod:`~agent.tools.arguments` (schema checks),
and one per kind of tool: :mod:`~agent.tools.http`, :mod:`~agent.tools.sql`,
:mod:`~agent.tools.python`, :mod:`~agent.tools.builtin`.
"""

from typing import TYPE_CHECKING, Any

from agent.tools.base import (
    Action,
    CallContext,
    EndCall,
    HandOff,
    PressKeys,
    ToolError,
    ToolOutcome,
    TransferCall,
)

if TYPE_CHECKING:
    from agent.tools.toolbox import GENERIC_FAILURE, Toolbox, validate_specs

# The toolbox (aiohttp, the SQL drivers, pydantic: about a second to import on a busy machine) is
# imported on first use, not with the package: a sync tool's worker process, and a tool module's
# ``from agent.tools import ToolError``, need only ``base``.
_FROM_TOOLBOX = frozenset({"GENERIC_FAILURE", "Toolbox", "validate_specs"})


def __getattr__(name: str) -> Any:
    if name in _FROM_TOOLBOX:
        from agent.tools import toolbox

        return getattr(toolbox, name)
    raise AttributeError(f"module 'agent.tools' has no attribute {name!r}")


__all__ = [
    "GENERIC_FAILURE",
    "Action",
    "CallContext",
    "EndCall",
    "HandOff",
    "PressKeys",
    "ToolError",
    "ToolOutcome",
    "Toolbox",
    "TransferCall",
    "validate_specs",
]
