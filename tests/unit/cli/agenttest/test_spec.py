"""Agent test files: what they may say, and errors naming file, line and key."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import jsonschema
import pytest
import yaml

from agent.call import session
from agent.cli.agenttest.spec import EndReason, agent_test_json_schema, load_test_file
from agent.errors import ConfigError

EXAMPLE_TESTS = Path(__file__).resolve().parents[4] / "agent" / "examples" / "tests"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_minimal_test_takes_its_name_from_the_file_and_the_defaults(tmp_path: Path) -> None:
    test = load_test_file(write(tmp_path, "turns:\n  - say: Hello\n"))
    assert test.name == "t"
    assert test.agent is None
    assert test.caller == "+15555550100"
    assert test.turns[0].say == "Hello"
    assert test.expect.tools == []


def test_a_misspelt_key_is_named_with_its_line_and_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "turns:\n  - say: Hello\nexpect:\n  hangup: true\n")
    with pytest.raises(ConfigError) as error:
        load_test_file(path)
    assert str(error.value) == (
        f"{path}:4: unknown key 'hangup' (did you mean 'hung_up'?) (key 'expect.hangup')"
    )


def test_a_turn_is_either_text_or_a_wav(tmp_path: Path) -> None:
    path = write(tmp_path, "turns:\n  - say: Hello\n    wav: goodbye\n")
    with pytest.raises(ConfigError, match=r"t\.yaml:2: a turn is either say: TEXT or wav: FILE"):
        load_test_file(path)


def test_a_test_needs_turns_and_a_valid_number(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing required key 'turns'"):
        load_test_file(write(tmp_path, "name: x\n"))
    with pytest.raises(ConfigError, match=r":1: .*\(key 'caller'\)"):
        load_test_file(write(tmp_path, "caller: '5550100'\nturns: [{say: hi}]\n"))


def test_invalid_yaml_names_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"t\.yaml:2: invalid YAML"):
        load_test_file(write(tmp_path, "turns:\n  - say: hi: there\n"))


@pytest.mark.parametrize("path", sorted(EXAMPLE_TESTS.glob("*.yaml")), ids=lambda p: p.stem)
def test_the_bundled_tests_load_and_satisfy_the_published_schema(path: Path) -> None:
    load_test_file(path)
    jsonschema.validate(yaml.safe_load(path.read_text()), agent_test_json_schema())


def test_the_schema_refuses_what_the_loader_refuses() -> None:
    schema = agent_test_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"turns": [{"say": "hi"}], "expect": {"hangup": True}}, schema)


def test_the_end_reasons_are_the_call_sessions() -> None:
    reasons = {
        session.CALLER_HUNG_UP,
        session.AGENT_ENDED,
        session.TRANSFERRED,
        session.TIMED_OUT,
        session.ERROR,
        session.SHUTDOWN,
        session.STREAM_LOST,
        session.HANDED_OVER,
    }
    assert set(get_args(EndReason)) == reasons


def test_a_misspelt_end_reason_gets_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "turns: [{say: hi}]\nexpect:\n  ended: agent endd\n")
    with pytest.raises(ConfigError, match="did you mean 'agent ended'"):
        load_test_file(path)
