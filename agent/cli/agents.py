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
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from agent.config.loader import (
    AgentFilesError,
    EnvAllow,
    Problem,
    ToolCheck,
    _display,
    agent_files,
    load,
)
from agent.config.registry import AgentRegistry
from agent.config.schema import agent_json_schema, markdown_reference
from agent.live.models import check_model
from agent.live.protocol import Backend
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
    check.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: one document with every file and problem, for CI (see the README)",
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


@dataclass(frozen=True, slots=True)
class CheckProblem:
    """One finding of ``agent check``: where (file, line, key), what, and the fix when the
    checker knows it. ``severity`` "error" fails the check; "warning" (a tool this deployment
    cannot run, so it is not offered to the model) does not."""

    file: str | None
    line: int | None
    key: str | None
    message: str
    suggestion: str | None = None
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        prefix = f"{where}: " if where else ""
        label = "warning: " if self.severity == "warning" else ""
        suffix = f" (key {self.key!r})" if self.key else ""
        return f"{prefix}{label}{self.message}{suffix}"


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What ``agent check`` found: the files read, the agents they define (when all are valid),
    every problem. ``agent doctor`` runs the same check and reads this."""

    files: tuple[str, ...]
    problems: tuple[CheckProblem, ...]
    registry: AgentRegistry | None = None
    summary: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not any(p.severity == "error" for p in self.problems)

    def text(self) -> str:
        """What ``agent check`` prints: one line per agent, or every problem and a count."""
        errors = [p for p in self.problems if p.severity == "error"]
        warnings = [str(p) for p in self.problems if p.severity == "warning"]
        if not errors:
            return "\n".join([*self.summary, *warnings])
        files = {p.file for p in errors}
        count = len(errors)
        return "\n".join(
            [
                *(str(p) for p in errors),
                *warnings,
                f"{count} problem{'s' if count != 1 else ''} in {len(files)} "
                f"file{'s' if len(files) != 1 else ''}",
            ]
        )

    def as_json(self) -> dict[str, Any]:
        """The ``--format json`` document (the shape is documented in the README and stable):
        ``{"ok": bool, "files": [{"file", "agents", "problems"}], "problems": [{"file",
        "line", "key", "message", "suggestion", "severity"}]}``."""
        agents_by_file: dict[str, list[str]] = {}
        if self.registry is not None:
            for name in self.registry.agents:
                source = self.registry.source(name)
                if source:
                    agents_by_file.setdefault(source, []).append(name)
        return {
            "ok": self.ok,
            "files": [
                {
                    "file": file,
                    "agents": agents_by_file.get(file, []),
                    "problems": sum(1 for p in self.problems if p.file == file),
                }
                for file in self.files
            ],
            "problems": [
                {
                    "file": p.file,
                    "line": p.line,
                    "key": p.key,
                    "message": p.message,
                    "suggestion": p.suggestion,
                    "severity": p.severity,
                }
                for p in self.problems
            ],
        }


# "... (did you mean 'voice'?)": the loader's suggestion, lifted into its own field.
_DID_YOU_MEAN: Final = re.compile(r"\s*\(did you mean (.+?)\?\)")


def _problem(problem: Problem, secrets: Iterable[str] = ()) -> CheckProblem:
    message = redact_secrets(problem.message, secrets)
    match = _DID_YOU_MEAN.search(message)
    suggestion = match.group(1).strip("'\"") if match else None
    return CheckProblem(problem.file, problem.line, problem.key, message, suggestion)


def check_agents(
    path: str | None,
    *,
    env: Mapping[str, str] | None = None,
    check_tools: ToolCheck | None = None,
    prepare_sql: bool = False,
) -> CheckReport:
    """Validate the agent files at ``path`` as the server would load them (None: ``AGENTS_PATH``
    from ``env``, else the bundled examples; ``env`` None: the process's environment and
    ``.env``), then what needs the deployment: each model's capabilities on ``LIVE_BACKEND``
    (:mod:`agent.live.models`), with ``prepare_sql`` each ``sql`` tool compiled against its
    database (``CRM_DATABASE_URL``, ``database_url``), and the tools this deployment cannot run
    (warnings: they are not offered to the model)."""
    if path is None:
        path = agents_path_from_env(env)  # None: the environment, then .env, as the server
    prefix, names = agent_env_from_env(env)  # AGENT_ENV_PREFIX, AGENT_ENV_ALLOW, as the server
    settings_env = _settings_env(env)
    backend: Backend = (
        "vertex" if settings_env.get("LIVE_BACKEND", "").strip().lower() == "vertex" else "gemini"
    )
    env = os.environ if env is None else env
    try:
        files = tuple(_display(file) for file in agent_files(path))
    except OSError:
        files = ()
    try:
        registry = load(
            path,
            env=env,
            env_allow=EnvAllow(prefix, names),
            check_tools=check_tools,
            check_agent=lambda agent: check_model(agent, backend),
        )
    except AgentFilesError as exc:
        return CheckReport(files, tuple(_problem(p) for p in exc.problems))
    secrets = registry.secrets()
    problems: list[CheckProblem] = []
    if prepare_sql:
        problems.extend(_sql_problems(registry, settings_env, secrets))
    problems.extend(_availability_warnings(registry, settings_env))
    problems.extend(_model_warnings(registry, backend))
    # A transfer number or URL that came from ${ENV} is still a value the operator hid.
    summary = redact_secrets("\n".join(summary_lines(registry)), secrets).splitlines()
    return CheckReport(files, tuple(problems), registry, tuple(summary))


def _settings_env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    """The bridge's own variables ``check`` reads (LIVE_BACKEND, CRM_DATABASE_URL, Twilio's
    REST credentials): ``env``, or the process's environment over ``.env``."""
    if env is not None:
        return env
    from pydantic_settings import DotEnvSettingsSource

    from agent.settings import Settings

    from_file = {
        key.upper(): str(value)
        for key, value in DotEnvSettingsSource(Settings)().items()
        if value is not None
    }
    return {**from_file, **os.environ}


def _sql_problems(
    registry: AgentRegistry, env: Mapping[str, str], secrets: Iterable[str]
) -> list[CheckProblem]:
    # Imported here: the executors pull in database drivers only this check needs.
    from agent.config.tools import SqlTool
    from agent.crm import crm_path
    from agent.errors import ConfigError
    from agent.tools.sql import prepare_sql

    try:
        crm: Path | None = crm_path(env.get("CRM_DATABASE_URL") or None)
    except ConfigError:
        crm = None
    problems = []
    for name, agent in registry.agents.items():
        for index, spec in enumerate(agent.tool_specs):
            if not isinstance(spec.kind, SqlTool):
                continue
            refused = prepare_sql(spec.kind, crm)
            if refused is not None:
                key = f"tools[{index}].sql.query"
                problems.append(
                    CheckProblem(
                        registry.source(name),
                        registry.line(name, key),
                        key,
                        redact_secrets(f"tool {spec.name!r}: {refused}", secrets),
                    )
                )
    return problems


def _availability_warnings(registry: AgentRegistry, env: Mapping[str, str]) -> list[CheckProblem]:
    from agent.tools.availability import rest_configured, unavailable_tools

    rest = rest_configured(env)
    warnings = []
    for name, agent in registry.agents.items():
        for tool in unavailable_tools(agent, rest=rest):
            key = f"tools[{tool.index}]"
            warnings.append(
                CheckProblem(
                    registry.source(name),
                    registry.line(name, key),
                    key,
                    tool.message,
                    suggestion=f"set {tool.missing}",
                    severity="warning",
                )
            )
    return warnings


def _model_warnings(registry: AgentRegistry, backend: Backend) -> list[CheckProblem]:
    from agent.live.models import model_warnings

    return [
        CheckProblem(
            registry.source(name),
            registry.line(name, warning.key),
            warning.key,
            warning.message,
            severity="warning",
        )
        for name, agent in registry.agents.items()
        for warning in model_warnings(agent, backend)
    ]


def check_command(
    path: str | None,
    *,
    env: Mapping[str, str] | None = None,
    check_tools: ToolCheck | None = None,
    fmt: str = "text",
    prepare_sql: bool = False,
) -> tuple[int, str]:
    """Validate the agent files at ``path`` (see :func:`check_agents`). Returns the exit code
    (1 if there is any error) and the text to print (``fmt`` "json": the JSON document)."""
    report = check_agents(path, env=env, check_tools=check_tools, prepare_sql=prepare_sql)
    text = json.dumps(report.as_json(), indent=2) if fmt == "json" else report.text()
    return (0 if report.ok else 1), text


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
    code, text = check_command(
        args.path, check_tools=_tool_check(), fmt=args.format, prepare_sql=True
    )
    print(text)
    return code


def _schema(args: argparse.Namespace) -> int:
    print(schema_command(args.format, args.kind))
    return 0
