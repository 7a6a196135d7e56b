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


_REST = {"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "test-token"}


def test_check_passes_the_bundled_example_with_one_line_per_agent() -> None:
    code, text = check_command(None, env=_REST)
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
        {"required": [kind]}
        for kind in (
            "http",
            "sql",
            "python",
            "end_call",
            "transfer_call",
            "hand_off",
            "press_keys",
        )
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


# -- what fails on a call, found by check (issue 15, point 3) ----------------------------------


def test_check_prepares_sql_against_the_crm_schema_and_names_the_missing_column(
    tmp_path: Path,
) -> None:
    """``orders`` has no ``phone`` column: before, the call heard "the query failed"."""
    _write(
        tmp_path,
        "a.yaml",
        """
        system_prompt: Hi.
        tools:
          - name: find_order
            description: An order.
            parameters: {type: object, properties: {order_id: {type: string}}}
            sql:
              query: SELECT status FROM orders WHERE id = :order_id AND phone = :order_id
        """,
    )
    env = {**_REST, "CRM_DATABASE_URL": f"sqlite:///{tmp_path / 'absent-crm.db'}"}
    code, text = check_command(str(tmp_path), env=env, prepare_sql=True)
    assert code == 1
    assert text.splitlines() == [
        f"{tmp_path / 'a.yaml'}:7: tool 'find_order': the database refuses the query: no such "
        "column: phone (key 'tools[0].sql.query')",
        "1 problem in 1 file",
    ]
    # The bundled example's queries all compile against the same schema.
    assert check_command(None, env=env, prepare_sql=True)[0] == 0


def test_check_prepares_sql_against_an_sqlite_database_url_without_running_it(
    tmp_path: Path,
) -> None:
    import sqlite3

    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE bookings (id INTEGER PRIMARY KEY, day TEXT)")
    _write(
        tmp_path,
        "a.yaml",
        f"""
        system_prompt: Hi.
        tools:
          - name: book
            description: Book today.
            parameters: {{type: object, properties: {{today: {{type: string}}}}}}
            bind: {{today: local_date}}
            sql:
              query: INSERT INTO bookings (day) VALUES (:today)
              database_url: sqlite:///{database}
          - name: typo
            description: A typo in a table name.
            sql:
              query: SELECT * FROM bookngs
              database_url: sqlite:///{database}
        """,
    )
    code, text = check_command(str(tmp_path), env=_REST, prepare_sql=True)
    assert code == 1
    assert "no such table: bookngs (key 'tools[1].sql.query')" in text
    assert "tools[0]" not in text
    with sqlite3.connect(database) as connection:  # compiled, never run
        assert connection.execute("SELECT count(*) FROM bookings").fetchone() == (0,)


def test_check_prepares_sql_against_postgresql(tmp_path: Path, postgres_database: Any) -> None:
    import psycopg

    url = postgres_database()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE customers (id serial PRIMARY KEY, mobile text)")
    _write(
        tmp_path,
        "a.yaml",
        f"""
        system_prompt: Hi.
        tools:
          - name: who
            description: The caller.
            parameters: {{type: object, properties: {{phone: {{type: string}}}}}}
            bind: {{phone: caller_number}}
            sql:
              query: SELECT id FROM customers WHERE phone = :phone
              database_url: "{url}"
          - name: fine
            description: Fine, with a literal percent and a cast.
            parameters: {{type: object, properties: {{phone: {{type: string}}}}}}
            sql:
              query: SELECT id FROM customers WHERE mobile LIKE '%5' || :phone::text
              database_url: "{url}"
        """,
    )
    code, text = check_command(str(tmp_path), env=_REST, prepare_sql=True)
    assert code == 1
    (problem, count) = text.splitlines()
    assert 'column "phone" does not exist' in problem
    assert problem.endswith("(key 'tools[0].sql.query')")
    assert count == "1 problem in 1 file"


def test_check_refuses_settings_the_model_does_not_accept(tmp_path: Path) -> None:
    """gemini-3.1-flash-live-preview has no affective dialog, takes thinking.level only and
    calls functions synchronously: each was a setup the service refused, mid-call."""
    _write(
        tmp_path,
        "a.yaml",
        """
        system_prompt: Hi.
        model: gemini-3.1-flash-live-preview
        affective_dialog: true
        thinking: {budget: 0}
        tools:
          - name: note
            description: A note.
            behavior: NON_BLOCKING
            end_call: {}
        """,
    )
    code, text = check_command(str(tmp_path), env=_REST)
    assert code == 1
    where = (
        "model 'gemini-3.1-flash-live-preview' on the Developer API (see "
        "https://ai.google.dev/gemini-api/docs/models/gemini-3.1-flash-live-preview)"
    )
    assert text.splitlines() == [
        f"{tmp_path / 'a.yaml'}:3: {where} has no affective dialog: remove affective_dialog "
        "(key 'affective_dialog')",
        f"{tmp_path / 'a.yaml'}:4: {where} takes thinking.level, not thinking.budget "
        "(key 'thinking')",
        f"{tmp_path / 'a.yaml'}:8: {where} calls functions synchronously only: remove "
        "behavior: NON_BLOCKING from tool 'note' (key 'tools[0].behavior')",
        "3 problems in 1 file",
    ]


def test_check_refuses_a_vertex_model_on_the_developer_api(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "system_prompt: Hi.\nmodel: gemini-live-2.5-flash-native-audio\n")
    code, text = check_command(str(tmp_path), env=_REST)
    assert code == 1
    assert "is served by Vertex AI, not the Developer API: set LIVE_BACKEND=vertex" in text
    code, _ = check_command(
        str(tmp_path), env={**_REST, "LIVE_BACKEND": "vertex", "VERTEX_PROJECT": "p"}
    )
    assert code == 0


def test_check_tool_schema_and_voice_problems_name_the_fix(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "a.yaml",
        """
        system_prompt: Hi.
        voice: Koree
        tools:
          - name: find
            description: Find.
            parameters:
              type: object
              properties:
                a: {type: strng}
                b: {type: integer, minimum: "five"}
            end_call: {}
        """,
    )
    code, text = check_command(str(tmp_path), env=_REST)
    file = tmp_path / "a.yaml"
    assert code == 1
    assert text.splitlines() == [
        f"{file}:2: 'Koree' is not one of the Live API's voices (did you mean 'Kore'?) "
        "(key 'voice')",
        f"{file}:9: not a valid JSON Schema: 'strng' is not one of array, boolean, integer, "
        "null, number, object, string (did you mean 'string'?) "
        "(key 'tools[0].parameters.properties.a.type')",
        f"{file}:10: not a valid JSON Schema: 'five' is not of type 'number' "
        "(key 'tools[0].parameters.properties.b.minimum')",
        "3 problems in 1 file",
    ]


def test_check_format_json_is_one_document_for_ci(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "system_prompt: Hi.\nvoise: Puck\n")
    _write(tmp_path, "b.yaml", "system_prompt: Hi.\n")
    code, text = check_command(str(tmp_path), env=_REST, fmt="json")
    assert code == 1
    assert json.loads(text) == {
        "ok": False,
        "files": [
            {"file": str(tmp_path / "a.yaml"), "agents": [], "problems": 1},
            {"file": str(tmp_path / "b.yaml"), "agents": [], "problems": 0},
        ],
        "problems": [
            {
                "file": str(tmp_path / "a.yaml"),
                "line": 2,
                "key": "voise",
                "message": "unknown key 'voise' (did you mean 'voice'?)",
                "suggestion": "voice",
                "severity": "error",
            }
        ],
    }
    code, text = check_command(None, env={}, fmt="json")
    document = json.loads(text)
    assert code == 0
    assert document["ok"] is True
    (file,) = document["files"]
    assert file["agents"] == ["acme-support"]
    assert file["file"].endswith("acme-support.yaml")


def test_check_warns_that_transfer_is_not_offered_without_twilio_rest() -> None:
    """The bundled example's transfer_call cannot work without REST credentials: check says
    which tool and which settings, and still passes (the agent works without it)."""
    code, text = check_command(None, env={})
    assert code == 0
    (summary, warning) = text.splitlines()
    assert summary.startswith("ok  acme-support")
    assert warning.endswith(
        "warning: tool 'transfer_call' is not offered to the model: transfer_call needs "
        "Twilio's REST API, and TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or TWILIO_API_KEY_SID "
        "and TWILIO_API_KEY_SECRET) are not set (key 'tools[4]')"
    )


def test_the_command_line_takes_format_json() -> None:
    args = _parser().parse_args(["check", "--format", "json", "agents"])
    assert (args.path, args.format) == ("agents", "json")
