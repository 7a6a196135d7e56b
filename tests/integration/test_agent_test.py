"""``agent test`` end to end: the bundled agent's own tests, one per bundled emulator scenario,
and what a failing test reports. Each test file runs on its own simulated-time loop (the runner
makes it), so these tests are plain functions."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import looptime
import pytest
import structlog
import yaml

from agent.cli.agenttest import agent_test_command
from agent.cli.agenttest.run import caller_utterances, run_files, run_test
from agent.cli.agenttest.spec import load_test_file
from agent.sim.live.scenario import bundled_scenarios
from agent.sim.live.server import EmulatorSpeech

EXAMPLE_TESTS = Path(__file__).resolve().parents[2] / "agent" / "examples" / "tests"
TEST_FILES = sorted(EXAMPLE_TESTS.glob("*.yaml"))


def test_every_bundled_scenario_has_a_test_against_the_bundled_agent() -> None:
    covered = {yaml.safe_load(path.read_text()).get("scenario") for path in TEST_FILES}
    assert set(bundled_scenarios()) <= covered


def test_the_bundled_agent_ships_tests_for_what_a_support_line_must_do() -> None:
    names = {path.stem for path in TEST_FILES}
    assert {"order-status", "transfer", "hang-up", "someone-elses-order"} <= names


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda path: path.stem)
def test_a_bundled_agent_test_passes(path: Path) -> None:
    (outcome,) = run_files([path])
    assert outcome.passed, outcome.failures or outcome.error


def test_a_failing_test_exits_1_with_expected_vs_seen_and_junit_xml(tmp_path: Path) -> None:
    test = tmp_path / "wrong.yaml"
    test.write_text(
        f"agent: {EXAMPLE_TESTS.parent / 'acme-support.yaml'}\n"
        'caller: "+15555550102"\n'
        "turns:\n"
        '  - say: "What is the status of order A one zero one seven?"\n'
        "expect:\n"
        "  said: [shipped]\n"
        '  transferred_to: "+15555550142"\n'
    )
    junit = tmp_path / "junit.xml"
    code, text = agent_test_command([test], junit_xml=junit)
    assert code == 1
    assert "FAIL  wrong" in text
    assert "  said:\n    expected: 'shipped'\n" in text
    assert "  transferred_to:\n    expected: +15555550142\n    seen:     no transfer" in text
    assert "    caller: What is the status of order A one zero one seven?" in text
    assert "0 of 1 test passed" in text
    suite = ElementTree.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("1", "1")
    failure = suite.find("testcase/failure")
    assert failure is not None
    assert failure.get("message") == "said; transferred_to"


def test_live_without_a_key_says_what_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    (outcome,) = run_files([EXAMPLE_TESTS / "transfer.yaml"], live=True)
    assert not outcome.passed
    assert outcome.error is not None
    assert "--live runs the test against the real Live API and needs GEMINI_API_KEY" in (
        outcome.error
    )


def test_keypad_presses_and_barge_in_timing_reach_the_call(tmp_path: Path) -> None:
    test = tmp_path / "keys.yaml"
    test.write_text(
        "turns:\n"
        '  - say: "I would like to check the status of my order A one zero one seven"\n'
        '  - say: "Thank you"\n'
        "keypad: [{at_ms: 1000, keys: '42#'}]\n"
        "barge_in_ms: 1000\n"
        "expect:\n"
        "  tools: [{name: order_status, args: {order_id: A1017}}]\n"
    )
    with structlog.testing.capture_logs() as logs:
        (outcome,) = run_files([test])
    assert outcome.passed, outcome.failures or outcome.error
    assert [e["digit"] for e in logs if e["event"] == "caller.dtmf"] == ["4", "2", "#"]
    assert any(e["event"] == "caller.barge_in" for e in logs), {e["event"] for e in logs}


def test_without_the_speech_engines_the_bundled_order_test_still_passes() -> None:
    (outcome,) = run_files([EXAMPLE_TESTS / "order-status.yaml"], speech=False)
    assert outcome.passed, outcome.failures or outcome.error
    assert outcome.observed is not None
    assert (
        "caller",
        "Hi, I would like to check the status of my order, A one zero one seven.",
    ) in (outcome.observed.transcript)


def test_a_tool_its_executor_refuses_is_reported_before_any_call(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text(
        "name: broken\n"
        "system_prompt: You answer the phone.\n"
        "tools:\n"
        "  - name: lookup\n"
        "    description: Look something up.\n"
        '    python: "json:dumps"\n'
    )
    (tmp_path / "t.yaml").write_text("agent: agent.yaml\nturns: [{say: hello}]\n")
    (outcome,) = run_files([tmp_path / "t.yaml"], speech=False)
    assert outcome.observed is None
    assert outcome.error is not None
    assert f"{tmp_path / 'agent.yaml'}:4: tool 'lookup': python target 'json:dumps'" in (
        outcome.error
    )


def test_words_the_emulator_hears_in_a_recording_make_it_call_the_tool(tmp_path: Path) -> None:
    """A WAV turn goes through the emulator's recogniser (here a stand-in that always hears the
    same words): the heard words reach the function matcher, and the bridge runs the tool."""
    test_path = tmp_path / "heard.yaml"
    test_path.write_text(
        "turns: [{wav: order-status}]\n"
        "expect:\n"
        "  tools: [{name: order_status, args: {order_id: A1017}}]\n"
        "  said: [shipped]\n"
    )
    test = load_test_file(test_path)
    heard: list[int] = []

    def recogniser(pcm: bytes, rate: int, language: str) -> str:
        heard.append(len(pcm) // (rate * 2 // 1000))  # milliseconds of the caller's audio
        return "i would like to check the status of order a one zero one seven"

    speech = EmulatorSpeech(transcribe=recogniser)
    loop = looptime.new_event_loop(start=0.0)
    try:
        utterances = caller_utterances(test, tmp_path, voice=False)
        outcome = loop.run_until_complete(run_test(test, test_path, utterances, speech=speech))
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    assert outcome.passed, outcome.failures
    assert len(heard) == 1
    assert heard[0] > 1000  # more than a second of the caller's audio
