"""DTMF out: the agent's ``press_keys`` tool sends the keys as in-band tones in its audio, and
the far end (the carrier simulator's Goertzel detector, as an IVR would) hears each one."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config.reload import AgentRegistryHolder
from agent.live.targets import DeveloperApiTarget
from agent.server.state import CALLS
from agent.sim.carrier import CallReport, CarrierOptions, place_call
from agent.sim.live.scenario import scenario_from_data
from agent.sim.live.server import EmulatorOptions, RunningEmulator, start_emulator

from .conftest import Bridge, BridgeFactory, caller_clip

AGENT = """
name: ivr-caller
default: true
system_prompt: You navigate phone menus.
greeting: Say hello.
tools:
  - name: press
    description: Press keys in a phone menu.
    press_keys: {}
"""


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[dict[str, Any]], Awaitable[RunningEmulator]]]:
    running: list[RunningEmulator] = []

    async def start(scenario: dict[str, Any]) -> RunningEmulator:
        emulator = await start_emulator(EmulatorOptions(scenario=scenario_from_data(scenario)))
        running.append(emulator)
        return emulator

    yield start
    for emulator in running:
        await emulator.close()


async def _press(
    digits: str,
    tmp_path: Path,
    start_bridge: BridgeFactory,
    scripted: Callable[[dict[str, Any]], Awaitable[RunningEmulator]],
    *,
    linger_ms: int = 0,
) -> tuple[CallReport, RunningEmulator, Bridge]:
    """A call whose model, answering the caller, presses ``digits``; the far end listens."""
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "ivr-caller.yaml").write_text(textwrap.dedent(AGENT))
    emulator = await scripted(
        {
            "steps": [
                {"say": "greeting"},
                {"calls": [{"name": "press", "args": {"digits": digits}, "wait": True}]},
            ]
        }
    )
    bridge = await start_bridge(
        agents=AgentRegistryHolder(folder), live_target=DeveloperApiTarget(base_url=emulator.url)
    )
    report = await place_call(
        CarrierOptions(url=bridge.url, detect_keys=True, linger_ms=linger_ms),
        [caller_clip("order-status")],
    )
    return report, emulator, bridge


async def test_pressed_keys_reach_the_far_end_as_tones_and_the_call_goes_on(
    tmp_path: Path,
    start_bridge: BridgeFactory,
    scripted: Callable[[dict[str, Any]], Awaitable[RunningEmulator]],
) -> None:
    report, emulator, bridge = await _press("12#", tmp_path, start_bridge, scripted, linger_ms=3000)
    assert report.keys_heard == "12#"
    [response] = [r for s in emulator.sessions for r in s.tool_responses]
    assert response.response == {"result": "pressed 3 key(s)"}
    call = await bridge.app[CALLS].wait_ended(report.call_sid)
    assert call.ended_reason == "caller hung up"  # pressing keys ended nothing


async def test_keys_a_keypad_does_not_have_are_an_error_for_the_model(
    tmp_path: Path,
    start_bridge: BridgeFactory,
    scripted: Callable[[dict[str, Any]], Awaitable[RunningEmulator]],
) -> None:
    report, emulator, _ = await _press("12x", tmp_path, start_bridge, scripted)
    assert report.keys_heard == ""
    [response] = [r for s in emulator.sessions for r in s.tool_responses]
    assert "0-9" in response.response["error"]
