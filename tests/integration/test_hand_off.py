"""Another agent takes a call over (``hand_off``), and a reload reaches calls in progress.

Gemini 3.8 Live takes a ``contextUpdate`` mid-session; 2.5 native audio does not, so the call
reconnects with the new agent's setup and resumes the conversation. Either way the tools of the
agent that took over are the ones that run: here billing's ``finish`` (``end_call``) ends the
call, which the front desk's agent has no tool for.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.config.reload import AgentRegistryHolder
from agent.live.targets import DeveloperApiTarget
from agent.server.state import BACKGROUND, CALLS, METRICS, RECORDS
from agent.sim.carrier import CarrierOptions, place_call
from agent.sim.live.scenario import scenario_from_data
from agent.sim.live.server import EmulatorOptions, RunningEmulator, start_emulator

from .conftest import BridgeFactory, caller_clip

LIVE_38 = "gemini-3.8-live"
NATIVE_AUDIO_25 = "gemini-2.5-flash-native-audio-preview-12-2025"

FRONT = """
name: front
default: true
model: {model}
system_prompt: You answer the phone for Acme.
greeting: Say hello.
tools:
  - name: to_billing
    description: Hand the caller to billing.
    behavior: BLOCKING
    hand_off: {{agent: billing}}
"""
BILLING = """
name: billing
model: {model}
system_prompt: You take payments for Acme.
tools:
  - name: finish
    description: End the call.
    behavior: BLOCKING
    end_call: {{}}
"""

Emulator = Callable[[list[dict[str, Any]]], Awaitable[RunningEmulator]]


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    running: list[RunningEmulator] = []

    async def start(steps: list[dict[str, Any]]) -> RunningEmulator:
        scenario = scenario_from_data({"steps": steps})
        started = await start_emulator(EmulatorOptions(scenario=scenario))
        running.append(started)
        return started

    yield start
    for started in running:
        await started.close()


def agents(tmp_path: Path, model: str) -> Path:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "front.yaml").write_text(textwrap.dedent(FRONT.format(model=model)))
    (folder / "billing.yaml").write_text(textwrap.dedent(BILLING.format(model=model)))
    return folder


def instructions(setup_or_update: dict[str, Any]) -> str:
    return str(setup_or_update["systemInstruction"]["parts"][0]["text"])


def declared(tools: list[dict[str, Any]]) -> list[str]:
    return [d["name"] for tool in tools for d in tool.get("functionDeclarations", [])]


def changes(app: web.Application, reason: str, how: str) -> float | None:
    return app[METRICS].registry.get_sample_value(
        "agent_call_agent_changes_total", {"reason": reason, "how": how}
    )


HAND_OFF = {"calls": [{"name": "to_billing", "wait": True}], "say": "reply"}
FINISH = {"calls": [{"name": "finish", "wait": True}], "say": "reply"}


async def test_on_3_8_live_billing_takes_over_mid_session(
    tmp_path: Path, start_bridge: BridgeFactory, emulator: Emulator
) -> None:
    live = await emulator([{"say": "greeting"}, HAND_OFF, FINISH])
    bridge = await start_bridge(
        agents=AgentRegistryHolder(agents(tmp_path, LIVE_38)),
        live_target=DeveloperApiTarget(base_url=live.url),
    )
    report = await place_call(
        CarrierOptions(url=bridge.url), [caller_clip("transfer"), caller_clip("goodbye")]
    )
    call = await bridge.app[CALLS].wait_ended(report.call_sid)

    # One connection: billing's instructions and tools arrived as a contextUpdate, and its
    # finish tool ended the call.
    (session,) = live.sessions
    assert instructions(session.setup) == "You answer the phone for Acme."
    (update,) = session.context_updates
    assert instructions(update) == "You take payments for Acme."
    assert declared(update["tools"]["tools"]) == ["finish"]
    assert [r.name for r in session.tool_responses] == ["to_billing", "finish"]
    assert call.ended_reason == "agent ended"
    assert call.agent.name == "billing"
    store = bridge.app[RECORDS]
    await store.flush()
    record = store.get_call(report.call_sid)
    assert record is not None
    assert [t.name for t in record.tool_calls] == ["to_billing", "finish"]
    assert changes(bridge.app, "hand_off", "context_update") == 1


async def test_on_a_model_without_context_updates_the_call_reconnects_with_billings_setup(
    tmp_path: Path, start_bridge: BridgeFactory, emulator: Emulator
) -> None:
    # The hand-off's reconnection is a turn of its own: billing is told it has the caller.
    live = await emulator([{"say": "greeting"}, HAND_OFF, {"say": "reply"}, FINISH])
    bridge = await start_bridge(
        agents=AgentRegistryHolder(agents(tmp_path, NATIVE_AUDIO_25)),
        live_target=DeveloperApiTarget(base_url=live.url),
    )
    report = await place_call(
        CarrierOptions(url=bridge.url), [caller_clip("transfer"), caller_clip("goodbye")]
    )
    call = await bridge.app[CALLS].wait_ended(report.call_sid)

    first, second = live.sessions
    assert first.context_updates == []
    assert instructions(second.setup) == "You take payments for Acme."
    assert declared(second.setup["tools"]) == ["finish"]
    # The conversation went on: resumed, and billing was told what happened.
    assert second.resumed_from is not None
    assert any("taken this call over from the front agent" in h.text for h in second.history)
    assert [r.name for r in second.tool_responses] == ["finish"]
    assert call.ended_reason == "agent ended"
    assert changes(bridge.app, "hand_off", "reconnect") == 1


RELOADED_FRONT = """
name: front
default: true
model: {model}
system_prompt: You answer the phone for Acme, and you can now end calls.
greeting: Say hello.
on_reload: {on_reload}
tools:
  - name: finish
    description: End the call.
    behavior: BLOCKING
    end_call: {{}}
"""


@pytest.mark.parametrize(
    ("model", "on_reload", "how"),
    [
        (LIVE_38, "update", "context_update"),
        (NATIVE_AUDIO_25, "update", "reconnect"),
        (LIVE_38, "keep", None),
    ],
)
async def test_a_reload_reaches_a_call_in_progress_only_when_the_file_says_so(
    tmp_path: Path,
    start_bridge: BridgeFactory,
    emulator: Emulator,
    model: str,
    on_reload: str,
    how: str | None,
) -> None:
    # The reloaded agent can end the call (finish); the one the call started with cannot.
    live = await emulator([{"say": "greeting"}, FINISH])
    folder = agents(tmp_path, model)
    holder = AgentRegistryHolder(folder)
    bridge = await start_bridge(agents=holder, live_target=DeveloperApiTarget(base_url=live.url))
    calls = bridge.app[CALLS]
    placed = asyncio.create_task(
        place_call(CarrierOptions(url=bridge.url, linger_ms=3_000), [caller_clip("goodbye")])
    )
    await calls.wait_active()
    (session,) = calls.active.values()
    await session.turn_completed(1)  # the greeting: the caller has not spoken yet
    text = RELOADED_FRONT.format(model=model, on_reload=on_reload)
    (folder / "front.yaml").write_text(textwrap.dedent(text))
    assert holder.reload() == []
    await bridge.app[BACKGROUND].drain()  # the reload reaching the calls in progress
    report = await placed
    call = await calls.wait_ended(report.call_sid)

    instructions_now = [instructions(s.setup) for s in live.sessions]
    instructions_now += [instructions(u) for s in live.sessions for u in s.context_updates]
    if how is None:
        assert instructions_now == ["You answer the phone for Acme."]
        assert call.ended_reason == "caller hung up"  # finish was not the call's to use
        return
    assert instructions_now[-1] == "You answer the phone for Acme, and you can now end calls."
    assert len(live.sessions) == (2 if how == "reconnect" else 1)
    assert call.ended_reason == "agent ended"
    assert changes(bridge.app, "reload", how) == 1
