"""``agent check`` and ``agent schema``: exit codes, output, and a schema the example satisfies."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from agent.cli.agents import add_agents_subcommands, check_command, schema_command
from agent.config.loader import BUNDLED_AGENTS
from agent.config.schema import field_reference
from agent.config.tools import ToolEntry


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent")
    add_agents_subcommands(parser.add_subparsers(required=True))
    return parser


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_check_passes_the_bundled_example_with_one_line_per_agent() -> None:
    code, text = check_command(None, env={})
    assert code == 0
    (line,) = text.splitlines()
    assert line.startswith("ok  acme-support (default): +15555550199; ")
    assert "6 tools (lookup_caller, order_status, book_appointment, open_ticket, " in line
    assert line.endswith("acme-support.yaml")


def test_check_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "system_prompt: Hi.\nvoise: Puck\n")
    _write(tmp_path, "b.yaml", "system_prompt: Hi.\ntemperature: hot\n")
    code, text = check_command(str(tmp_path), env={})
    assert code == 1
    assert text.splitlines() == [
        f"{tmp_path / 'a.yaml'}:2: unknown key 'voise' (did you mean 'voice'?) (key 'voise')",
        f"{tmp_path / 'b.yaml'}:2: must be a number, got 'hot' (key 'temperature')",
        "2 problems in 2 files",
    ]


def test_check_reads_agents_path_from_the_environment(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "system_prompt: Hi.\n")
    _write(tmp_path, "b.yaml", "system_prompt: Hi.\n")
    code, text = check_command(None, env={"AGENTS_PATH": str(tmp_path)})
    assert code == 0
    assert [line.split(":")[0] for line in text.splitlines()] == [
        "ok  a (default",
        "ok  b",
    ]
    assert "(default: first by name)" in text


def test_check_never_prints_a_substituted_value(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "a.yaml",
        """
        system_prompt: Hi.
        phone_numbers: ["${AGENT_SHOP_NUMBER}"]
        """,
    )
    code, text = check_command(str(tmp_path), env={"AGENT_SHOP_NUMBER": "+15555550123"})
    assert code == 0
    assert "+15555550123" not in text
    assert "***" in text


def test_check_runs_the_tool_checks_it_is_given(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "a.yaml",
        """
        system_prompt: Hi.
        tools:
          - {name: bye, description: Bye., end_call: {}}
        """,
    )
    code, text = check_command(str(tmp_path), env={}, check_tools=lambda specs: ["no good"])
    assert code == 1
    assert text.splitlines()[0] == f"{tmp_path / 'a.yaml'}:3: no good (key 'tools[0]')"


def test_check_reads_sql_as_the_executor_does(tmp_path: Path) -> None:
    """Dollar-quoted text is not code: its ``:ref`` is no placeholder and its ``;`` ends no
    statement. The loader and the executor's checks use one scanner, so both agree."""
    from agent.tools import validate_specs
    from agent.tools.sql_params import parse_query

    query = "SELECT $$ see :ref; $$ AS note, name FROM t WHERE id = :id"
    _write(
        tmp_path,
        "a.yaml",
        """
        system_prompt: Hi.
        tools:
          - name: note
            description: A note.
            parameters: {type: object, properties: {id: {type: string}}}
            sql:
              query: "SELECT $$ see :ref; $$ AS note, name FROM t WHERE id = :id"
              database_url: postgresql://db/shop
        """,
    )
    code, text = check_command(str(tmp_path), env={}, check_tools=validate_specs)
    assert (code, text.split(":")[0]) == (0, "ok  a (default"), text
    assert parse_query(query).names == ("id",)
    # Without the parameter, :id (and only :id) is reported missing.
    _write(
        tmp_path,
        "a.yaml",
        """
        system_prompt: Hi.
        tools:
          - name: note
            description: A note.
            sql:
              query: "SELECT $$ see :ref; $$ AS note, name FROM t WHERE id = :id"
        """,
    )
    code, text = check_command(str(tmp_path), env={}, check_tools=validate_specs)
    assert code == 1
    assert text.splitlines() == [
        f"{tmp_path / 'a.yaml'}:6: placeholder :id not among the tool's parameters "
        "(key 'tools[0].sql.query')",
        "1 problem in 1 file",
    ]


def test_the_subcommands_print_and_return_their_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path, "a.yaml", "system_prompt: [\n")
    args = _parser().parse_args(["check", str(tmp_path)])
    assert args.run(args) == 1
    assert "not valid YAML" in capsys.readouterr().out
    args = _parser().parse_args(["check"])
    assert args.run(args) == 0
    assert capsys.readouterr().out.startswith("ok  acme-support")
    args = _parser().parse_args(["schema"])
    assert args.run(args) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Voice agent"
    args = _parser().parse_args(["schema", "--format", "markdown"])
    assert args.run(args) == 0
    assert "| `vad.silence_duration_ms` |" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# The JSON Schema
# --------------------------------------------------------------------------------------------


def _validator() -> Any:
    schema = json.loads(schema_command())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_schema_is_draft_2020_12_and_covers_the_field_table() -> None:
    schema = json.loads(schema_command())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert list(schema["properties"]) == [r.key for r in field_reference() if "." not in r.key]
    assert schema["required"] == ["system_prompt"]
    assert schema["additionalProperties"] is False
    tool = schema["properties"]["tools"]["items"]
    assert list(tool["properties"]) == [
        r.key for r in field_reference(ToolEntry) if "." not in r.key
    ]
    assert tool["oneOf"] == [
        {"required": [kind]} for kind in ("http", "sql", "python", "end_call", "transfer_call")
    ]
    assert schema["properties"]["activity_handling"]["enum"] == [
        "START_OF_ACTIVITY_INTERRUPTS",
        "NO_INTERRUPTION",
        None,
    ]
    assert all(p.get("description") for p in schema["properties"].values())
    _validator()


def test_the_bundled_example_validates_against_the_schema() -> None:
    validator = _validator()
    for path in sorted(BUNDLED_AGENTS.glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert list(validator.iter_errors(document)) == [], path.name


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ({"system_prompt": "Hi.", "voise": "Puck"}, "Additional properties"),
        ({"voice": "Puck"}, "'system_prompt' is a required property"),
        ({"system_prompt": "Hi.", "api_version": "v2"}, "is not one of"),
        ({"system_prompt": "Hi.", "phone_numbers": ["555-0100"]}, "does not match"),
        ({"system_prompt": "Hi.", "vad": {"silence_duration_ms": -1}}, "less than the minimum"),
        (
            {"system_prompt": "Hi.", "tools": [{"name": "x", "description": "X."}]},
            "is not valid under any of the given schemas",
        ),
        (
            {
                "system_prompt": "Hi.",
                "tools": [{"name": "x", "description": "X.", "end_call": {}, "python": "a:b"}],
            },
            "is valid under each of",
        ),
    ],
)
def test_the_schema_catches_what_the_loader_catches(
    document: dict[str, Any], complaint: str
) -> None:
    errors = [error.message for error in _validator().iter_errors(document)]
    assert any(complaint in message for message in errors), errors


def test_the_schema_accepts_env_references_and_feature_switches() -> None:
    document = {
        "system_prompt": "Hi.",
        "phone_numbers": ["${AGENT_SHOP_NUMBER}"],
        "compression": False,
        "session_resumption": {"transparent": True},
        "voice": None,
        "tools": [{"name": "bye", "description": "Bye.", "end_call": None}],
    }
    assert list(_validator().iter_errors(document)) == []


def test_schema_kind_test_prints_the_agent_test_files_schema() -> None:
    args = _parser().parse_args(["schema", "--kind", "test"])
    assert args.kind == "test"
    schema = json.loads(schema_command("json", "test"))
    assert schema["title"] == "agent test file"
    assert {"agent", "turns", "expect"} <= set(schema["properties"])
