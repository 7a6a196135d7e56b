"""How a call behaves around the conversation: keypad input, time limits, idle callers.

Part of an agent's configuration; the session reads it, the model never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """Per-agent call lifecycle settings. ``None`` disables a limit."""

    dtmf_group_timeout_s: float = 2.0
    dtmf_message: str = "The caller typed on their keypad: {digits}"
    max_duration_s: float | None = 1800.0
    wrap_up_before_s: float = 30.0
    wrap_up_message: str = (
        "The call is about to reach its time limit. Wrap up politely now and say goodbye."
    )
    idle_timeout_s: float | None = 20.0
    idle_message: str = (
        "The caller has been silent for a while. Ask briefly whether they are still there."
    )
    preconnect_timeout_s: float = 30.0  # a pre-opened Live session waits this long for its stream
