"""The built-in tools: hang up, transfer, hand off to another agent, press keys.

They do nothing themselves. Ending or moving the call now would cut off the goodbye the model is
about to say, so they return an :data:`~agent.tools.base.Action` for the session, which waits for
the audio in flight to play and then performs it (a Twilio REST update, through its
:class:`~agent.call.control.CallControl`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from agent.config.tools import EndCallTool, HandOffTool, PressKeysTool, TransferCallTool
from agent.tools.base import Action, EndCall, HandOff, PressKeys, ToolError, TransferCall

#: Keys a ``press_keys`` call may name (what a keypad has); spaces and dashes are ignored.
_KEYS: Final = frozenset("0123456789*#ABCD")
_MAX_KEYS: Final = 32
# The summary is said by Twilio's text-to-speech: a few sentences, not the model's essay.
_MAX_SUMMARY: Final = 600


Builtin = EndCallTool | TransferCallTool | HandOffTool | PressKeysTool


def run_builtin(kind: Builtin, arguments: Mapping[str, Any]) -> tuple[Any, Action]:
    """The result the model hears about, and the action the session is to carry out.
    ``ToolError`` (an error result for the model) for keys a keypad does not have."""
    if isinstance(kind, EndCallTool):
        return "ending the call", EndCall()
    if isinstance(kind, HandOffTool):
        # Heard by the agent taking over (its instructions are in place by then): carry on.
        return f"you are now the {kind.agent} agent and have the caller: carry on", HandOff(
            kind.agent
        )
    if isinstance(kind, PressKeysTool):
        raw = arguments.get("digits")
        if not isinstance(raw, str):
            raise ToolError("give the keys to press as a string, such as '1' or '1234#'")
        digits = "".join(raw.upper().replace(" ", "").replace("-", "").split())
        if not digits or len(digits) > _MAX_KEYS or set(digits) - _KEYS:
            raise ToolError(f"keys must be 1 to {_MAX_KEYS} of 0-9, * and # (A-D on some systems)")
        # The keys themselves are not repeated: they may be a PIN.
        return f"pressed {len(digits)} key(s)", PressKeys(digits)
    if kind.warm:
        summary = arguments.get("summary")
        text = " ".join(summary.split())[:_MAX_SUMMARY] if isinstance(summary, str) else ""
        action = TransferCall(
            kind.number, warm=True, ring_timeout_s=kind.ring_timeout_s, summary=text or None
        )
        return "calling a colleague; the caller is on hold, say nothing more", action
    action = TransferCall(kind.number, kind.announce, kind.announcement)
    if not kind.announce:
        return "transferring the call", action
    # The caller is told by the bridge, whatever the model does: it need not say it again.
    return "transferring the call; the caller is told to hold, say nothing more", action
