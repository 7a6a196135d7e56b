"""Function calls on a live call: non-blocking tasks, scheduling, cancellation, failures, the
CRM's safety rules, and hang-up / transfer through Twilio's REST API.

The emulator is scripted (a scenario per test) to call functions the way the model would; the
bridge runs real agents (YAML) and real tools; the carrier simulator is the caller.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from timing import scaled_timeout

from agent.audio.codec import ulaw_to_pcm16
from agent.call import session as session_module
from agent.call.session import CallSession
from agent.config.reload import AgentRegistryHolder
from agent.live.targets import DeveloperApiTarget
from agent.server.state import CALLS, RECORDS, TOOLS
from agent.sim.carrier import (
    ENDED_BY_REST_HANG_UP,
    CallReport,
    CarrierOptions,
    TwilioApiSimulator,
    place_call,
)
from agent.sim.live.scenario import scenario_from_data
from agent.sim.live.server import EmulatorOptions, Fault, RunningEmulator, start_emulator

from . import tool_fixtures
from .conftest import Bridge, BridgeFactory, caller_clip

ACCOUNT_SID = "AC" + "4" * 32
AUTH_TOKEN = "tool-test-auth-token-7e1f"
CALLER = "+15555550100"  # on file in the embedded CRM
OTHER_CUSTOMER = "+15555550102"  # someone else on file

ScriptedEmulator = Callable[[dict[str, Any]], Awaitable[RunningEmulator]]


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedEmulator]:
    """Start an emulator that follows a scenario (steps answer the conversation's turns)."""
    running: list[RunningEmulator] = []

    async def start(scenario: dict[str, Any]) -> RunningEmulator:
        emulator = await start_emulator(EmulatorOptions(scenario=scenario_from_data(scenario)))
        running.append(emulator)
        return emulator

    yield start
    for emulator in running:
        await emulator.close()


@pytest.fixture
def probe() -> tool_fixtures.Probe:
    tool_fixtures.PROBE = tool_fixtures.Probe(seconds=2.0)  # 100 frames of call time
    return tool_fixtures.PROBE


def agents_from_yaml(tmp_path: Path, text: str) -> AgentRegistryHolder:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "tester.yaml").write_text(textwrap.dedent(text))
    return AgentRegistryHolder(folder)


def python_tool(
    name: str,
    target: str,
    *,
    behavior: str,
    scheduling: str = "WHEN_IDLE",
    params: str = "{}",
    bind: str = "{}",
    timeout_s: float = 10,
) -> str:
    return f"""
      - name: {name}
        description: Test tool {name}.
        parameters: {{type: object, properties: {params}}}
        bind: {bind}
        behavior: {behavior}
        scheduling: {scheduling}
        timeout_s: {timeout_s}
        python: integration.tool_fixtures:{target}
    """


def responses(emulator: RunningEmulator) -> dict[str, Any]:
    """Tool responses the model received, by function name."""
    return {r.name: r for s in emulator.sessions for r in s.tool_responses}


async def test_a_slow_lookup_runs_while_caller_and_model_audio_keep_flowing(
    tmp_path: Path, start_bridge: BridgeFactory, scripted: ScriptedEmulator, probe: Any
) -> None:
    tool = python_tool(
        "order_status",
        "slow_order_status",
        behavior="NON_BLOCKING",
        params="{order_id: {type: string}, call_sid: {type: string}}",
        bind="{call_sid: call_sid}",
    )
    agents = agents_from_yaml(tmp_path, "name: tester\nsystem_prompt: Test.\ntools:" + tool)
    emulator = await scripted(
        {
            "steps": [
                {
                    "say": {"clip": "reply", "text": "Let me check that for you."},
                    "calls": [
                        {
                            "name": "order_status",
                            "args": {"order_id": "A1017"},
                            "wait": False,
                            "say": {"clip": "greeting", "text": "Your order is {result.status}."},
                        }
                    ],
                }
            ]
        }
    )
    bridge = await start_bridge(
        agents=agents, live_target=DeveloperApiTarget(base_url=emulator.url)
    )
    probe.emulator, probe.calls = emulator, bridge.app[CALLS]
    report = await place_call(
        CarrierOptions(url=bridge.url, linger_ms=3000), [caller_clip("order-status")]
    )

    # While the lookup ran (2 s of call time = 100 frames), neither direction paused: at most the
    # frame due at the very instant it started or ended counts on the other side of it.
    assert probe.seen["caller_frames_during"] >= 100 - 2
    assert probe.seen["model_frames_during"] >= 100 - 2
    # Its result went back with the tool's scheduling, and the model spoke it afterwards.
    result = responses(emulator)["order_status"]
    assert result.scheduling == "WHEN_IDLE"
    assert result.response == {
        "result": {"order_id": "A1017", "status": "shipped", "eta": "Friday"}
    }
    assert emulator.sessions[0].answers_completed == 2
    assert report.ended_by == "caller hung up"


async def test_each_scheduling_reaches_the_model_as_configured(
    tmp_path: Path, start_bridge: BridgeFactory, scripted: ScriptedEmulator, probe: Any
) -> None:
    params = "{label: {type: string}}"
    tools = "".join(
        python_tool(
            f"quick_{mode.lower()}",
            "quick",
            behavior="NON_BLOCKING",
            scheduling=mode,
            params=params,
        )
        for mode in ("INTERRUPT", "WHEN_IDLE", "SILENT")
    )
    agents = agents_from_yaml(tmp_path, "name: tester\nsystem_prompt: Test.\ntools:" + tools)
    calls = [
        {"name": f"quick_{mode}", "args": {"label": mode}, "wait": False}
        for mode in ("interrupt", "when_idle", "silent")
    ]
    emulator = await scripted({"steps": [{"say": "reply", "calls": calls}]})
    bridge = await start_bridge(
        agents=agents, live_target=DeveloperApiTarget(base_url=emulator.url)
    )
    await place_call(CarrierOptions(url=bridge.url, linger_ms=2000), [caller_clip("goodbye")])

    got = {name: r.scheduling for name, r in responses(emulator).items()}
    assert got == {
        "quick_interrupt": "INTERRUPT",
        "quick_when_idle": "WHEN_IDLE",
        "quick_silent": "SILENT",
    }
    assert responses(emulator)["quick_silent"].response == {"result": {"label": "silent"}}


async def test_a_cancelled_call_is_really_cancelled_and_answered_with_nothing(
    tmp_path: Path, start_bridge: BridgeFactory, scripted: ScriptedEmulator, probe: Any
) -> None:
    tool = python_tool(
        "check_stock",
        "never_finishes",
        behavior="NON_BLOCKING",
        params="{call_sid: {type: string}}",
        bind="{call_sid: call_sid}",
    )
    agents = agents_from_yaml(tmp_path, "name: tester\nsystem_prompt: Test.\ntools:" + tool)
    emulator = await scripted(
        {"steps": [{"say": "reply", "calls": [{"name": "check_stock", "wait": False}]}]}
    )
    bridge = await start_bridge(
        agents=agents, live_target=DeveloperApiTarget(base_url=emulator.url)
    )
    probe.emulator = emulator
    report = await place_call(
        CarrierOptions(url=bridge.url, barge_in_ms=1500),
        [caller_clip("order-status"), caller_clip("interrupt")],
    )
    call = await bridge.app[CALLS].wait_ended(report.call_sid)

    session = emulator.sessions[0]
    (called,) = session.tool_calls
    assert any(called.id in c.ids for c in session.tool_cancellations)
    assert probe.seen["cancelled"] == report.call_sid  # the task saw its cancellation
    # ...when the model cancelled it, mid-call: not merely when the call ended (500 ms of audio
    # went on arriving after it).
    total_chunks = sum(s.audio_chunks_received for s in emulator.sessions)
    assert total_chunks - probe.seen["chunks_at_cancel"] >= 25
    assert "check_stock" not in responses(emulator)  # and nothing was sent for it
    assert call.ended_reason == "caller hung up"


async def test_a_cancelled_sync_tool_is_stopped_and_its_booking_never_happens(
    tmp_path: Path, start_bridge: BridgeFactory, scripted: ScriptedEmulator
) -> None:
    """A sync tool runs in a worker process; the model's cancellation kills it, so the booking it
    would have made 30 s later never happens (a thread would have made it)."""
    tool = python_tool(
        "book",
        "book_slowly",
        behavior="NON_BLOCKING",
        params="{booked: {type: string}, started: {type: string}}",
    )
    agents = agents_from_yaml(tmp_path, "name: tester\nsystem_prompt: Test.\ntools:" + tool)
    booked, started = tmp_path / "booked", tmp_path / "started"
    args = {"booked": str(booked), "started": str(started)}
    emulator = await scripted(
        {"steps": [{"say": "reply", "calls": [{"name": "book", "args": args, "wait": False}]}]}
    )
    bridge = await start_bridge(
        agents=agents, live_target=DeveloperApiTarget(base_url=emulator.url)
    )
    report = await place_call(
        CarrierOptions(url=bridge.url, barge_in_ms=1500),
        [caller_clip("order-status"), caller_clip("interrupt")],
    )
    await bridge.app[CALLS].wait_ended(report.call_sid)

    session = emulator.sessions[0]
    (called,) = session.tool_calls
    assert any(called.id in c.ids for c in session.tool_cancellations)
    assert "book" not in responses(emulator)
    [[(_, toolbox)]] = bridge.app[TOOLS].toolboxes.values()
    assert toolbox.workers is not None
    [pid] = toolbox.workers.killed  # the worker that ran it was killed...
    assert await asyncio.to_thread(_exits, pid)  # ...and is gone
    assert not booked.exists()  # so the booking it was about to make never happens
    store = bridge.app[RECORDS]
    await store.flush()
    record = store.get_call(report.call_sid)
    assert record is not None
    [ran] = record.tool_calls
    assert (ran.name, ran.outcome) == ("book", "cancelled")


def _exits(pid: int) -> bool:
    """Whether process ``pid`` exits (is reaped, or is a zombie) within a real-time hang guard:
    a kill takes effect at once, but not in no time."""
    deadline = time.monotonic() + scaled_timeout(10)
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(") ", 1)[-1].startswith("Z"):
            return True
        time.sleep(0.005)
    return False


async def test_a_timeout_and_a_crash_become_error_results_and_the_call_goes_on(
    tmp_path: Path, start_bridge: BridgeFactory, scripted: ScriptedEmulator, probe: Any
) -> None:
    tools = python_tool("reserve", "crashes", behavior="BLOCKING") + python_tool(
        "quote", "too_slow", behavior="BLOCKING", timeout_s=0.3
    )
    agents = agents_from_yaml(tmp_path, "name: tester\nsystem_prompt: Test.\ntools:" + tools)
    emulator = await scripted(
        {
            "steps": [
                {
                    "calls": [{"name": "reserve", "wait": True}, {"name": "quote", "wait": True}],
                    "say": {"clip": "reply", "text": "Sorry, that did not work."},
                },
                {"say": "reply"},
            ]
        }
    )
    bridge = await start_bridge(
        agents=agents, live_target=DeveloperApiTarget(base_url=emulator.url)
    )
    report = await place_call(
        CarrierOptions(url=bridge.url),
        [caller_clip("order-status"), caller_clip("goodbye")],
    )

    got = responses(emulator)
    assert set(got) == {"reserve", "quote"}
    for result in got.values():
        assert "error" in result.response
        assert "exploded" not in json.dumps(result.response)  # no internals reach the model
    assert all(u.first_reply_ms is not None for u in report.utterances)
    assert report.ended_by == "caller hung up"


# -- the bundled example agent and its CRM ---------------------------------------------------


def crm_rows(bridge: Bridge) -> dict[str, int]:
    path = bridge.settings.crm_database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("customers", "orders", "appointments", "tickets")
        }


def customer_name(bridge: Bridge, phone: str) -> str:
    path = bridge.settings.crm_database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        name: str = db.execute("SELECT name FROM customers WHERE phone = ?", (phone,)).fetchone()[0]
    return name


def after_greeting(*steps: dict[str, Any]) -> dict[str, Any]:
    """The example agent greets first: the greeting request is the conversation's first turn."""
    return {"steps": [{"say": "greeting"}, *steps]}


async def test_sql_injection_in_a_model_argument_changes_nothing_and_reveals_nothing(
    start_bridge: BridgeFactory, scripted: ScriptedEmulator
) -> None:
    attacks = [
        "A1017' OR '1'='1",
        "'; DROP TABLE orders; --",
        "A1017' UNION SELECT id, name, email, tier, phone FROM customers --",
    ]
    calls = [{"name": "order_status", "args": {"order_id": a}, "wait": True} for a in attacks]
    emulator = await scripted(after_greeting({"calls": calls, "say": "reply"}))
    bridge = await start_bridge(
        agents=AgentRegistryHolder(None), live_target=DeveloperApiTarget(base_url=emulator.url)
    )
    before = crm_rows(bridge)
    await place_call(CarrierOptions(url=bridge.url), [caller_clip("order-status")])

    results = [r.response for s in emulator.sessions for r in s.tool_responses]
    assert len(results) == len(attacks)
    assert all(r == {"result": []} for r in results), results
    assert crm_rows(bridge) == before


async def test_a_bound_parameter_cannot_be_overridden_by_the_model(
    start_bridge: BridgeFactory, scripted: ScriptedEmulator
) -> None:
    steal = {"name": "lookup_caller", "args": {"phone": OTHER_CUSTOMER}, "wait": True}
    emulator = await scripted(after_greeting({"calls": [steal], "say": "reply"}))
    bridge = await start_bridge(
        agents=AgentRegistryHolder(None), live_target=DeveloperApiTarget(base_url=emulator.url)
    )
    await place_call(
        CarrierOptions(url=bridge.url, from_number=CALLER),
        [caller_clip("order-status")],
    )

    (result,) = [r.response for s in emulator.sessions for r in s.tool_responses]
    (row,) = result["result"]
    assert row["name"] == customer_name(bridge, CALLER)
    assert row["name"] != customer_name(bridge, OTHER_CUSTOMER)


@pytest.fixture
async def twilio_api() -> AsyncIterator[TwilioApiSimulator]:
    async with TwilioApiSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        yield rest


async def call_with_action(
    tool: str,
    clip: str,
    start_bridge: BridgeFactory,
    scripted: ScriptedEmulator,
    twilio_api: TwilioApiSimulator,
) -> tuple[CallReport, CallSession]:
    """A call to the bundled agent, whose model answers the caller by calling ``tool``, with
    Twilio's REST API served by the carrier simulator."""
    emulator = await scripted(
        after_greeting({"say": "reply", "calls": [{"name": tool, "wait": False}]})
    )
    bridge = await start_bridge(
        agents=AgentRegistryHolder(None),
        live_target=DeveloperApiTarget(base_url=emulator.url),
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_url=twilio_api.url,
    )
    report = await place_call(
        CarrierOptions(url=bridge.url, auth_token=AUTH_TOKEN, linger_ms=30_000),
        [caller_clip(clip)],
        rest=twilio_api,
    )
    return report, await bridge.app[CALLS].wait_ended(report.call_sid)


async def test_the_agent_hangs_up_through_twilio_after_its_goodbye(
    start_bridge: BridgeFactory, scripted: ScriptedEmulator, twilio_api: TwilioApiSimulator
) -> None:
    report, call = await call_with_action("end_call", "goodbye", start_bridge, scripted, twilio_api)
    assert report.ended_by == ENDED_BY_REST_HANG_UP
    assert call.ended_reason == "agent ended"
    # The goodbye (the 7.4 s reply clip) was heard to its end before the line went dead.
    assert call.playback.played_ms >= 7000 + 4500  # greeting + goodbye


async def test_the_agent_transfers_the_caller_to_a_person(
    start_bridge: BridgeFactory, scripted: ScriptedEmulator, twilio_api: TwilioApiSimulator
) -> None:
    report, call = await call_with_action(
        "transfer_call", "transfer", start_bridge, scripted, twilio_api
    )
    assert report.transferred_to == "+15555550142"
    assert call.ended_reason == "transferred"


@pytest.mark.parametrize(
    ("verstat", "identified"),
    [(None, False), ("TN-Validation-Failed", False), ("TN-Validation-Passed-A", True)],
)
async def test_an_agent_can_trust_only_attested_caller_ids(
    tmp_path: Path,
    start_bridge: BridgeFactory,
    scripted: ScriptedEmulator,
    verstat: str | None,
    identified: bool,
) -> None:
    """Caller ID is easy to spoof: with trust_caller_id: verified, the number identifies the
    caller (tools bound to it, CRM prefetch) only with a passed STIR/SHAKEN attestation."""
    folder = tmp_path / "agents"
    folder.mkdir()
    bundled = (Path(__file__).parents[2] / "agent/examples/acme-support.yaml").read_text()
    assert "trust_caller_id: any" in bundled
    verified_only = bundled.replace("trust_caller_id: any", "trust_caller_id: verified")
    (folder / "acme.yaml").write_text(verified_only)
    lookup = {"name": "lookup_caller", "args": {}, "wait": True}
    emulator = await scripted(after_greeting({"calls": [lookup], "say": "reply"}))
    bridge = await start_bridge(
        agents=AgentRegistryHolder(folder), live_target=DeveloperApiTarget(base_url=emulator.url)
    )
    await place_call(
        CarrierOptions(url=bridge.url, from_number=CALLER, stir_verstat=verstat),
        [caller_clip("order-status")],
    )

    (result,) = [r.response for s in emulator.sessions for r in s.tool_responses]
    if identified:
        assert result["result"][0]["name"] == customer_name(bridge, CALLER)
    else:
        # No identity, no account: the model is told why, and can ask the caller to verify.
        assert result == {"error": "this call has no caller number, which the tool needs"}


@pytest.mark.parametrize(("tool_seconds", "holds"), [(5.0, 1), (2.0, 0)])
async def test_a_slow_blocking_tool_gets_the_caller_a_one_moment_please(
    tmp_path: Path,
    start_bridge: BridgeFactory,
    scripted: ScriptedEmulator,
    probe: Any,
    tool_seconds: float,
    holds: int,
) -> None:
    """The model says nothing while a blocking tool runs: past ``tool_hold_after_s`` (3 s) the
    caller hears "One moment, please." once, instead of silence; a quicker tool gets nothing."""
    probe.seconds = tool_seconds
    tool = python_tool(
        "order_status",
        "slow_order_status",
        behavior="BLOCKING",
        params="{order_id: {type: string}, call_sid: {type: string}}",
        bind="{call_sid: call_sid}",
    )
    agents = agents_from_yaml(tmp_path, "name: tester\nsystem_prompt: Test.\ntools:" + tool)
    lookup = {"name": "order_status", "args": {"order_id": "A1017"}, "wait": True}
    emulator = await scripted({"steps": [{"calls": [lookup], "say": "reply"}]})
    bridge = await start_bridge(
        agents=agents, live_target=DeveloperApiTarget(base_url=emulator.url)
    )
    probe.emulator, probe.calls = emulator, bridge.app[CALLS]
    report = await place_call(
        CarrierOptions(url=bridge.url, linger_ms=3000, reply_timeout_ms=15_000),
        [caller_clip("order-status")],
    )
    call = await bridge.app[CALLS].wait_ended(report.call_sid)
    assert call.stats.holds == holds
    # What reached the caller while the tool ran is the hold clip, whole, or nothing at all.
    hold_frames = len(session_module._hold_frames()) if holds else 0
    assert probe.seen["model_frames_during"] == hold_frames


async def test_the_record_keeps_what_ran_and_what_the_model_asked(
    tmp_path: Path, start_bridge: BridgeFactory, scripted: ScriptedEmulator, probe: Any
) -> None:
    tool = python_tool(
        "whose",
        "whose",
        behavior="BLOCKING",
        params="{label: {type: string}, call_sid: {type: string}}",
        bind="{call_sid: call_sid}",
    )
    agents = agents_from_yaml(tmp_path, "name: tester\nsystem_prompt: Test.\ntools:" + tool)
    forged = "CA" + "0" * 32
    calls = [
        {"name": "whose", "args": {"label": "mine", "call_sid": forged}, "wait": False},
        {"name": "drop_tables", "args": {"all": True}, "wait": False},
    ]
    emulator = await scripted({"steps": [{"say": "reply", "calls": calls}]})
    bridge = await start_bridge(
        agents=agents, live_target=DeveloperApiTarget(base_url=emulator.url)
    )
    await place_call(CarrierOptions(url=bridge.url, linger_ms=2000), [caller_clip("goodbye")])

    store = bridge.app[RECORDS]
    await store.flush()
    [row] = store.list_calls()
    call = store.get_call(row.call_sid)
    assert call is not None
    by_name = {tool.name: tool for tool in call.tool_calls}
    ran = by_name["whose"]
    assert ran.outcome == "ok"
    assert ran.arguments == {"label": "mine", "call_sid": row.call_sid}  # the call's own
    assert ran.requested == {"label": "mine", "call_sid": forged}  # ignored, but kept
    assert ran.result == {"result": {"label": "mine", "call_sid": row.call_sid}}
    invented = by_name["drop_tables"]
    assert (invented.outcome, invented.arguments) == ("refused", None)
    assert invented.requested == {"all": True}
    assert invented.result == {"error": "there is no tool called 'drop_tables'"}


def _heard_after_ms(report: CallReport, start_ms: int) -> int:
    """Milliseconds of agent audio the caller heard after ``start_ms`` of the call."""
    frame_bytes = 320  # 20 ms of PCM16 at 8 kHz
    heard = report.heard[start_ms // 20 * frame_bytes :]
    frames = [heard[i : i + frame_bytes] for i in range(0, len(heard), frame_bytes)]
    return 20 * sum(1 for frame in frames if frame.strip(b"\x00"))


@pytest.mark.parametrize("announce", ["recording", "text", "off"])
async def test_a_transfer_tells_the_caller_before_the_call_moves(
    tmp_path: Path,
    start_bridge: BridgeFactory,
    scripted: ScriptedEmulator,
    twilio_api: TwilioApiSimulator,
    announce: str,
) -> None:
    """The model calls transfer_call before saying a word (and says nothing after): before,
    the caller sat in silence until the new party answered. Now the bridge plays "Putting you
    through now. Please hold." over the media stream, and moves the call only once Twilio has
    played it. An ``announcement`` text is said by Twilio as the call moves (the bridge cannot
    speak text itself); ``announce: false`` keeps the old silence."""
    bundled = (Path(__file__).parents[2] / "agent/examples/acme-support.yaml").read_text()
    number = "      number: ${AGENT_ACME_HUMAN_NUMBER:-+15555550142}\n"
    assert number in bundled
    if announce == "off":
        bundled = bundled.replace(number, number + "      announce: false\n")
    elif announce == "text":
        bundled = bundled.replace(number, number + "      announcement: Connecting you.\n")
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "acme.yaml").write_text(bundled)
    emulator = await scripted(after_greeting({"calls": [{"name": "transfer_call", "wait": True}]}))
    bridge = await start_bridge(
        agents=AgentRegistryHolder(folder),
        live_target=DeveloperApiTarget(base_url=emulator.url),
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_url=twilio_api.url,
    )
    report = await place_call(
        CarrierOptions(url=bridge.url, auth_token=AUTH_TOKEN, linger_ms=30_000),
        [caller_clip("transfer")],
        rest=twilio_api,
    )
    call = await bridge.app[CALLS].wait_ended(report.call_sid)
    assert report.transferred_to == "+15555550142"
    assert call.ended_reason == "transferred"
    (utterance,) = report.utterances
    # Between the function call (made once the caller stopped) and the REST <Dial>, all the
    # caller can hear is the announcement, heard to its end (every one of its sounding
    # frames), or nothing.
    heard_ms = _heard_after_ms(report, utterance.end_ms)
    if announce == "recording":
        assert utterance.first_reply_ms is not None
        recording = [ulaw_to_pcm16(frame) for frame in session_module._transfer_frames()]
        assert heard_ms == 20 * sum(1 for frame in recording if frame.strip(b"\x00"))
        assert heard_ms > 1500
    else:
        assert heard_ms == 0
    assert report.twilio_said == (("Connecting you.",) if announce == "text" else ())


async def test_without_twilio_rest_transfer_call_is_not_offered_to_the_model(
    start_bridge: BridgeFactory, scripted: ScriptedEmulator
) -> None:
    """Before, the model was offered transfer_call and using it hung up on the caller with
    reason ``error``; without REST credentials the setup now leaves it out (end_call stays:
    closing the stream hangs up)."""
    emulator = await scripted(after_greeting({"say": "reply"}))
    bridge = await start_bridge(
        agents=AgentRegistryHolder(None), live_target=DeveloperApiTarget(base_url=emulator.url)
    )
    await place_call(CarrierOptions(url=bridge.url), [caller_clip("order-status")])
    (session, *_) = emulator.sessions
    (declarations,) = [
        tool["functionDeclarations"]
        for tool in session.setup["tools"]
        if "functionDeclarations" in tool
    ]
    names = [declaration["name"] for declaration in declarations]
    assert "transfer_call" not in names
    assert "end_call" in names


async def _call_with_a_model_deaf_to_results(
    tmp_path: Path, start_bridge: BridgeFactory, behavior: str
) -> tuple[RunningEmulator, list[MutableMapping[str, Any]], CallSession]:
    """A call whose caller asks for a lookup; the emulator's model, on its first connection,
    takes the result and never speaks of it (``ignore_results``: "a model that never resumes
    after a tool", as users of Live bridges report)."""
    tool = python_tool("quick_lookup", "quick", behavior=behavior, params="{label: {type: string}}")
    agents = agents_from_yaml(
        tmp_path, "name: tester\nsystem_prompt: Test.\nstall_after_s: 2\ntools:" + tool
    )
    lookup = {"name": "quick_lookup", "args": {"label": "x"}, "wait": behavior == "BLOCKING"}
    steps = [
        # The caller asks; the model calls the tool, with a filler or, blocking, after it.
        {"calls": [lookup], "say": "reply"},
        {"say": {"clip": "reply", "text": "Here it is."}},  # the nudge's answer
    ]
    emulator = await start_emulator(
        EmulatorOptions(
            scenario=scenario_from_data({"steps": steps}),
            faults=(Fault.ignore_results(connection=0),),
        )
    )
    try:
        bridge = await start_bridge(
            agents=agents, live_target=DeveloperApiTarget(base_url=emulator.url)
        )
        with capture_logs() as logs:
            report = await place_call(
                CarrierOptions(url=bridge.url, linger_ms=15_000, reply_timeout_ms=15_000),
                [caller_clip("goodbye")],
            )
            call = await bridge.app[CALLS].wait_ended(report.call_sid)
    finally:
        await emulator.close()
    assert "ignore_results" in emulator.sessions[0].faults
    return emulator, [line for line in logs if line["event"] == "model.stalled"], call


async def test_a_non_blocking_result_never_spoken_of_gets_the_model_nudged(
    tmp_path: Path, start_bridge: BridgeFactory
) -> None:
    # The result came (WHEN_IDLE) while the filler played: the answer it owes is due after it.
    emulator, stalls, call = await _call_with_a_model_deaf_to_results(
        tmp_path, start_bridge, "NON_BLOCKING"
    )
    assert [(s["cause"], s["action"]) for s in stalls] == [("tool", "nudge")]
    assert call.stats.stalls == 1
    (session,) = emulator.sessions
    # The nudge was answered: the caller heard the agent again.
    assert [h.text for h in session.history if h.role == "model"][-1:] == ["Here it is."]


async def test_a_blocking_result_never_answered_gets_a_new_connection(
    tmp_path: Path, start_bridge: BridgeFactory
) -> None:
    # The model waits on its blocking call's result and so cannot take the nudge either: the
    # call moves to a new connection, where the turn is asked for again and answered.
    emulator, stalls, call = await _call_with_a_model_deaf_to_results(
        tmp_path, start_bridge, "BLOCKING"
    )
    assert call.stats.reconnects == 1
    assert [(s["cause"], s["action"]) for s in stalls][:2] == [
        ("tool", "nudge"),
        ("prompt", "reconnect"),  # the nudge, itself unanswered
    ]
    _, second = emulator.sessions
    assert second.tool_responses  # the tool ran again for the new connection's model
    assert second.answers_completed >= 1


async def test_calls_to_one_agent_share_one_toolbox(
    start_bridge: BridgeFactory, scripted: ScriptedEmulator
) -> None:
    """Each call's agent is rendered afresh; its toolbox (query plans, worker pool, database
    connections) is still the agent's one, not one per call kept for ever."""
    emulator = await scripted(after_greeting({"say": "reply"}))
    bridge = await start_bridge(
        agents=AgentRegistryHolder(None), live_target=DeveloperApiTarget(base_url=emulator.url)
    )
    for _ in range(3):
        await place_call(CarrierOptions(url=bridge.url), [caller_clip("goodbye")])
    [versions] = bridge.app[TOOLS].toolboxes.values()
    assert len(versions) == 1
