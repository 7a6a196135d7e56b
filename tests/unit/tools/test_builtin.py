"""The built-in tools' results and actions (``agent.tools.builtin``), with literal arguments."""

from __future__ import annotations

import pytest

from agent.config.tools import EndCallTool, PressKeysTool, TransferCallTool
from agent.tools.base import EndCall, PressKeys, ToolError, TransferCall
from agent.tools.builtin import run_builtin


def test_end_call_and_a_cold_transfer_are_as_before() -> None:
    assert run_builtin(EndCallTool(), {}) == ("ending the call", EndCall())
    _said, action = run_builtin(TransferCallTool("+15555550142", announce=False), {})
    assert action == TransferCall("+15555550142", announce=False)


def test_a_warm_transfer_carries_the_models_summary_on_one_line() -> None:
    kind = TransferCallTool("+15555550143", warm=True, ring_timeout_s=20)
    said, action = run_builtin(kind, {"summary": "Ada wants\n  a refund.  "})
    assert action == TransferCall(
        "+15555550143", warm=True, ring_timeout_s=20, summary="Ada wants a refund."
    )
    _, without = run_builtin(kind, {})
    assert isinstance(without, TransferCall)
    assert without.summary is None
    assert "hold" in said


def test_press_keys_normalises_and_refuses_what_no_keypad_has() -> None:
    assert run_builtin(PressKeysTool(), {"digits": "1 2-3#"}) == (
        "pressed 4 key(s)",
        PressKeys("123#"),
    )
    assert run_builtin(PressKeysTool(), {"digits": "abcd"})[1] == PressKeys("ABCD")
    for bad in ("", "12x", "1" * 33, 5):
        with pytest.raises(ToolError, match=r"keys|string"):
            run_builtin(PressKeysTool(), {"digits": bad})
