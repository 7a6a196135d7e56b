"""The built-in tools: hang up, transfer, and hand off to another agent.

They do nothing themselves. Ending or moving the call now would cut off the goodbye the model is
about to say, so they return an :data:`~agent.tools.base.Action` for the session, which waits for
the audio in flight to play and then performs it (a Twilio REST update, through its
:class:`~agent.call.control.CallControl`).
"""

from __future__ import annotations

from typing import Any

from agent.config.tools import EndCallTool, HandOffTool, TransferCallTool
from agent.tools.base import Action, EndCall, HandOff, TransferCall

Builtin = EndCallTool | TransferCallTool | HandOffTool


def run_builtin(kind: Builtin) -> tuple[Any, Action]:
    """The result the model hears about, and the action the session is to carry out."""
    if isinstance(kind, EndCallTool):
        return "ending the call", EndCall()
    if isinstance(kind, HandOffTool):
        # Heard by the agent taking over (its instructions are in place by then): carry on.
        return f"you are now the {kind.agent} agent and have the caller: carry on", HandOff(
            kind.agent
        )
    action = TransferCall(kind.number, kind.announce, kind.announcement)
    if not kind.announce:
        return "transferring the call", action
    # The caller is told by the bridge, whatever the model does: it need not say it again.
    return "transferring the call; the caller is told to hold, say nothing more", action
