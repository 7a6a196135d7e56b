"""Local stand-ins for the services the bridge talks to, for offline development and tests.

:mod:`agent.sim.live_emulator` serves a faithful local Gemini Live API (its decisions live in the
sans-I/O :mod:`agent.sim.emulator_core`); the bundled speech it answers with is in ``assets/``.
The product never imports these modules, except where the CLI wires the embedded default.
"""

from agent.sim.live_emulator import (
    LIVE_PATH,
    EmulatedSessionRecord,
    EmulatorOptions,
    RunningEmulator,
    create_emulator_app,
    start_emulator,
)

__all__ = [
    "LIVE_PATH",
    "EmulatedSessionRecord",
    "EmulatorOptions",
    "RunningEmulator",
    "create_emulator_app",
    "start_emulator",
]
