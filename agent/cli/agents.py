"""``agent check`` and ``agent schema``: agent files, validated and described without a server.

agent check [PATH]                     validate every agent file in PATH (a folder or one file;
                                       default AGENTS_PATH, else the bundled examples): exit 0
                                       and one line per agent, or exit 1 and every problem as
                                       file:line: message (key '...')
agent schema [--format json|markdown]  the agent file's JSON Schema (draft 2020-12) for editors,
                                       or the field reference as Markdown tables
agent schema --kind test               the JSON Schema of an ``agent test`` file

``check`` reads ``${ENV}`` references from the environment like the server does, so run it with
the same variables (a missing one is a problem). It also runs the tool executors' checks, which
import ``python`` tools' modules. It never prints a substituted value.

The command functions return text and an exit code, so tests call them without a process.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from typing import Any

from agent.config.loader import AgentFilesError, EnvAllow, ToolCheck, load
from agent.config.registry import AgentRegistry
from agent.config.schema import agent_json_schema, markdown_reference
from agent.observability.privacy import redact_secrets
from agent.settings import agent_env_from_env, agents_path_from_env


def add_agents_subcommands(commands: Any) -> None:
    """Add ``check`` and ``schema`` to the ``agent`` command's subparsers."""
    check = commands.add_parser(
        "check",
        help="validate agent files without starting anything",
        description="Validate agent YAML files: exit 0 with one line per agent, or 1 with "
        "every problem (file:line: message).",
    )
    check.add_argument(
        "path",
        nargs="?",
        default=None,
        metavar="PATH",
        help="a folder of agent files or one file (default AGENTS_PATH, else the bundled examples)",
    )
    check.set_defaults(run=_check)
    schema = commands.add_parser(
        "schema",
        help="print the agent file's JSON Schema (for editors)",
        description="Print the JSON Schema (draft 2020-12) of an agent file, generated from "
        "the loader's own field table; --format markdown prints the field reference instead.",
    )
    schema.add_argument("--format", choices=("json", "markdown"), default="json")
    schema.add_argument(
        "--kind",
        choices=("agent", "test"),
        default="agent",
        help="which file: an agent file (default) or an `agent test` file (JSON only)",
    )
    schema.set_defaults(run=_schema)


def check_command(
    path: str | None,
    *,
    env: Mapping[str, str] | None = None,
    check_tools: ToolCheck | None = None,
) -> tuple[int, str]:
    """Validate the agent files at ``path`` (None: ``AGENTS_PATH`` from ``env``, else the
    bundled examples; ``env`` None: the process's environment and ``.env``). Returns the exit
    code and the text to print."""
    if path is None:
        path = agents_path_from_env(env)  # None: the environment, then .env, as the server
    prefix, names = agent_env_from_env(env)  # AGENT_ENV_PREFIX, AGENT_ENV_ALLOW, as the server
    env = os.environ if env is None else env
    try:
        registry = load(path, env=env, env_allow=EnvAllow(prefix, names), check_tools=check_tools)
    except AgentFilesError as exc:
        files = {p.file for p in exc.problems}
        count = len(exc.problems)
        lines = [str(p) for p in exc.problems]
        lines.append(
            f"{count} problem{'s' if count != 1 else ''} in {len(files)} "
            f"file{'s' if len(files) != 1 else ''}"
        )
        return 1, "\n".join(lines)
    # A transfer number or URL that came from ${ENV} is still a value the operator hid.
    return 0, redact_secrets("\n".join(summary_lines(registry)), registry.secrets())


def summary_lines(registry: AgentRegistry) -> list[str]:
    """One line per agent: name, how it is reached, model and voice, tools, file."""
    lines = []
    for name, agent in registry.agents.items():
        if agent is registry.default:
            role = " (default)" if registry.default_is_explicit else " (default: first by name)"
        else:
            role = ""
        numbers = ", ".join(agent.phone_numbers) or "no numbers"
        speech = ", ".join(x for x in (agent.voice and f"voice {agent.voice}", agent.language) if x)
        tools = ", ".join(spec.name for spec in agent.tool_specs) or "none"
        source = registry.source(name)
        lines.append(
            f"ok  {name}{role}: {numbers}; {agent.model}"
            f"{'; ' + speech if speech else ''}; {agent.timezone}; "
            f"{len(agent.tool_specs)} tools ({tools})"
            f"{'; ' + source if source else ''}"
        )
    return lines


def schema_command(fmt: str = "json", kind: str = "agent") -> str:
    """The agent file's JSON Schema, or the Markdown field reference; ``kind="test"``: the
    schema of an ``agent test`` file."""
    if kind == "test":
        from agent.cli.agenttest.spec import agent_test_json_schema

        return json.dumps(agent_test_json_schema(), indent=2, ensure_ascii=False)
    if fmt == "markdown":
        return markdown_reference()
    return json.dumps(agent_json_schema(), indent=2, ensure_ascii=False)


def _tool_check() -> ToolCheck:
    # Imported here: the executors pull in aiohttp and database drivers, which only ``check``
    # of the agent commands needs.
    from agent.tools import validate_specs

    return validate_specs


def _check(args: argparse.Namespace) -> int:
    code, text = check_command(args.path, check_tools=_tool_check())
    print(text)
    return code


def _schema(args: argparse.Namespace) -> int:
    print(schema_command(args.format, args.kind))
    return 0
