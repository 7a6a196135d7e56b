"""Local stand-ins for the services the bridge talks to, for offline development and tests.

:mod:`agent.sim.live.server` serves a faithful local Gemini Live API (its decisions live in the
sans-I/O :mod:`agent.sim.live.core`; what its model says and calls can be scripted with
:mod:`agent.sim.live.scenario`); the bundled speech it answers with is in ``assets/`` and example
scenarios are in ``scenarios/``. The product never imports these modules, except where the CLI
wires the embedded default.
"""

from agent.sim.live.options import Fault
from agent.sim.live.scenario import Scenario, ScriptedCall, Speech, Step, load_scenario
from agent.sim.live.server import (
    LIVE_PATH,
    EmulatedSessionRecord,
    EmulatorOptions,
    RunningEmulator,
    create_emulator_app,
    start_emulator,
    tls_server_context,
)

__all__ = [
    "LIVE_PATH",
    "EmulatedSessionRecord",
    "EmulatorOptions",
    "Fault",
    "RunningEmulator",
    "Scenario",
    "ScriptedCall",
    "Speech",
    "Step",
    "create_emulator_app",
    "load_scenario",
    "start_emulator",
    "tls_server_context",
]
