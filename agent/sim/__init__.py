"""Local stand-ins for the services the bridge talks to, for offline development and tests.

:mod:`agent.sim.live_emulator` serves a faithful local Gemini Live API (its decisions live in the
sans-I/O :mod:`agent.sim.emulator_core`; what its model says and calls can be scripted with
:mod:`agent.sim.scenario`); the bundled speech it answers with is in ``assets/`` and example
scenarios are in ``scenarios/``. The product never imports these modules, except where the CLI
wires the embedded default.
"""

from agent.sim.emulator_core import Fault
from agent.sim.live_emulator import (
    LIVE_PATH,
    EmulatedSessionRecord,
    EmulatorOptions,
    RunningEmulator,
    create_emulator_app,
    start_emulator,
    tls_server_context,
)
from agent.sim.scenario import FunctionCall, Scenario, Speech, Step, load_scenario

__all__ = [
    "LIVE_PATH",
    "EmulatedSessionRecord",
    "EmulatorOptions",
    "Fault",
    "FunctionCall",
    "RunningEmulator",
    "Scenario",
    "Speech",
    "Step",
    "create_emulator_app",
    "load_scenario",
    "start_emulator",
    "tls_server_context",
]
