"""Agents as YAML files: loading, validation, routing by number and reload.

A business describes each voice agent in one YAML file (``acme-support.yaml``) in a folder
(``AGENTS_PATH``; by default the bundled examples in ``agent/examples/``). :func:`load` reads every
``*.yaml`` / ``*.yml`` file there into frozen :class:`~agent.config.models.AgentConfig` objects
and an :class:`AgentRegistry` that picks the agent for each call by the number that was dialled.

Why it is built this way:

* **The models are the contract.** :class:`~agent.config.models.AgentFile` (pydantic) says every
  key an agent file may have: its type, bounds, choices, default and description. The loader
  validates against it, ``agent schema`` prints it as a JSON Schema and ``agent schema --format
  markdown`` as the README's table, so the three cannot drift apart.
* **Every problem at once, with file, line and key.** YAML is read into plain values while each
  key's line is remembered; pydantic's errors are mapped back to file, line and key, and a typo
  gets the closest valid key (``unknown key 'voise' (did you mean 'voice'?)``), at every nesting
  level. Problems from all files are collected and raised together as one
  :class:`AgentFilesError`, so a business fixes its files in one pass, and ``agent check`` lists
  them without starting anything.
* **What the author typed.** YAML 1.1 reads ``+15555550199`` as a number and ``no`` as false;
  where a model wants text, a plain scalar is taken as the text that was written (Norwegian is
  ``language: no``).
* **Secrets stay out of files and logs.** ``${ENV_VAR}`` (or ``${ENV_VAR:-default}``) in any string
  value is replaced at load time; a missing variable is a problem naming file, line and key.
  :meth:`AgentRegistry.secrets` returns every substituted value so log redaction can mask it, and
  problem messages never echo a substituted value. ``$${`` writes a literal ``${``.
* **The default agent.** An agent file may say ``default: true``; at most one may. Without one,
  the only agent, or else the first by name, is the default: it answers every number no agent
  lists (and calls whose ``To`` is missing or not a phone number).
* **Reload without dropping calls.** :class:`AgentRegistryHolder` swaps in a new registry on
  SIGHUP (:func:`install_reload_on_sighup`) or when the files change (:func:`watch_agent_files`);
  if anything is wrong it keeps the old one and logs the problems. A call keeps the immutable
  ``AgentConfig`` it started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import types
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

import structlog
import yaml
from pydantic import BeforeValidator, TypeAdapter, ValidationError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import ErrorDetails, core_schema
from yaml.constructor import SafeConstructor

from agent.config.fields import (
    ACROSS,
    Loc,
    Shown,
    Step,
    TextRule,
    describe,
    path_text,
    step_of,
)
from agent.config.models import AgentConfig, AgentFile
from agent.config.templates import (
    CUSTOMER_FIELDS,
    TEMPLATE_KEYS,
    UNKNOWN,
    CallContext,
    format_local_time,
    render_for_call,
    render_template,
    template_problems,
    template_values,
)
from agent.config.tools import ToolEntry, ToolSpec
from agent.errors import ConfigError
from agent.numbers import normalise_number

__all__ = [
    "CUSTOMER_FIELDS",
    "TEMPLATE_KEYS",
    "UNKNOWN",
    "CallContext",
    "format_local_time",
    "render_for_call",
    "render_template",
    "template_problems",
    "template_values",
]

log = structlog.get_logger("agent.agents")

#: The folder ``agent serve`` reads when ``AGENTS_PATH`` is not set.
BUNDLED_AGENTS: Final = Path(__file__).parents[1] / "examples"
AGENT_FILE_SUFFIXES: Final = (".yaml", ".yml")

ToolCheck = Callable[[Sequence[ToolSpec]], list[str]]
"""Extra checks for built tools (``agent.tools.validate_specs``: imports python targets, parses
SQL as the executor will); each returned problem is reported at the tool's line."""
AgentCheck = Callable[[AgentConfig], None]
"""An extra check of a whole agent that raises ConfigError (``lambda a: check_backend(a,
"gemini")``: Vertex-only fields), so a reload cannot bring in what start-up would refuse."""


# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in an agent file; ``str()`` reads ``file:line: message (key 'a.b')``."""

    file: str | None
    line: int | None
    key: str | None
    message: str

    def __str__(self) -> str:
        return str(ConfigError(self.message, file=self.file, line=self.line, key=self.key))


class AgentFilesError(ConfigError):
    """Every problem found in the agent files, one per line of the message (``.problems``)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in agent files:\n{lines}")


# --------------------------------------------------------------------------------------------
# YAML as plain values, remembering lines
# --------------------------------------------------------------------------------------------

_NULL_TAG: Final = "tag:yaml.org,2002:null"
_BOOL_TAG: Final = "tag:yaml.org,2002:bool"
_INT_TAG: Final = "tag:yaml.org,2002:int"
_FLOAT_TAG: Final = "tag:yaml.org,2002:float"
_STR_TAG: Final = "tag:yaml.org,2002:str"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
# ${NAME} or ${NAME:-default}; $${ is a literal ${.
_ENV_RE: Final = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_Loader: Final[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_AGENT_FILE: Final = TypeAdapter(AgentFile)
# Errors where a model wanted text: a plain scalar YAML read as something else is retried as the
# text it was written as.
_WANTS_TEXT: Final = frozenset({"text_type", "string_type", "literal_error"})
# Where an AgentConfig key lives in the YAML, for errors raised by checks of the whole agent.
_FILE_KEYS: Final = {
    "system_instruction": "system_prompt",
    "thinking_config": "thinking",
    "enable_affective_dialog": "affective_dialog",
    "proactivity.proactive_audio": "proactive_audio",
    "input_transcription": "transcription.input",
    "output_transcription": "transcription.output",
    "context_window_compression.trigger_tokens": "compression.trigger_tokens",
    "context_window_compression.sliding_window.target_tokens": "compression.target_tokens",
    "context_window_compression": "compression",
    "history_config.initial_history_in_client_content": "initial_history_in_client_content",
    "call.max_duration_s": "max_call_duration_s",
    "call.dtmf_message": "dtmf.message",
    "call.dtmf_group_timeout_s": "dtmf.group_timeout_s",
}


class _Dropped:
    """A value with a problem (already reported): its key is left out of the document."""


_DROPPED: Final = _Dropped()


@dataclass(slots=True)
class _Document:
    """One file read into plain values, and what the messages about it need."""

    file: str
    env: Mapping[str, str]
    problems: list[Problem] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    lines: dict[str, int] = field(default_factory=dict)  # key path -> line of its key or item
    columns: dict[str, int] = field(default_factory=dict)  # key path -> column, for ordering
    typed: dict[str, str] = field(default_factory=dict)  # path -> text of a non-text plain scalar
    from_env: set[str] = field(default_factory=set)  # paths whose value had ${VAR} in it
    reported: set[str] = field(default_factory=set)  # paths dropped after a problem
    constructor: SafeConstructor = field(default_factory=SafeConstructor)

    def problem(self, line: int | None, key: str | None, message: str) -> None:
        self.problems.append(Problem(self.file, line, key or None, message))

    def line(self, path: str) -> int | None:
        """The line of ``path``, or of its nearest parent that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rpartition(".")[0] if "." in path else path.rpartition("[")[0]
        return self.lines.get("")

    def value(self, node: yaml.Node, path: str) -> Any:
        """``node`` as plain data (mappings with string keys, lists, scalars)."""
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in self._pairs(node, path):
                key = str(key_node.value)
                sub = _join(path, key)
                self.lines[sub] = key_node.start_mark.line + 1
                self.columns[sub] = key_node.start_mark.column
                value = self.value(value_node, sub)
                if not isinstance(value, _Dropped):
                    result[key] = value
            return result
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, child in enumerate(node.value):
                sub = f"{path}[{index}]"
                self.lines[sub] = child.start_mark.line + 1
                self.columns[sub] = child.start_mark.column
                items.append(self.value(child, sub))
            return [item for item in items if not isinstance(item, _Dropped)]
        assert isinstance(node, yaml.ScalarNode)
        if node.tag == _STR_TAG:
            return self._substitute(node, path)
        if node.tag in (_NULL_TAG, _BOOL_TAG, _INT_TAG, _FLOAT_TAG):
            value = self.constructor.construct_object(node)
            if node.tag == _NULL_TAG or (isinstance(value, float) and not math.isfinite(value)):
                return None if node.tag == _NULL_TAG else str(node.value)  # .inf: no JSON number
            if not node.style:  # plain: +15555550199 and no may have been meant as text
                self.typed[path] = str(node.value)
            return value
        # Timestamps, binary and custom tags have no JSON form: the text as written.
        return str(node.value)

    def _substitute(self, node: yaml.ScalarNode, path: str) -> str | _Dropped:
        """The scalar's text with ``${VAR}`` references replaced."""
        text = str(node.value)
        line = node.start_mark.line + 1
        missing: list[str] = []
        used = False

        def replace(match: re.Match[str]) -> str:
            nonlocal used
            name, default = match.groups()
            if name is None:  # $${
                return "${"
            value = self.env.get(name) or None  # an empty variable counts as unset
            if value is None:
                if default is not None:
                    return default
                missing.append(name)
                return ""
            used = True
            self.secrets.add(value)
            return value

        result = _ENV_RE.sub(replace, text)
        for name in missing:
            self.problem(
                line, path, f"environment variable {name} is not set (referenced as ${{{name}}})"
            )
        if "${" in _ENV_RE.sub("", text):
            self.problem(
                line,
                path,
                "'${' starts an environment reference such as ${API_KEY} or ${API_KEY:-default}; "
                "write '$${' for a literal '${'",
            )
            missing.append("")
        if missing:
            self.reported.add(path)
            return _DROPPED
        if used:
            self.from_env.add(path)
        return result

    def _pairs(
        self, node: yaml.MappingNode, path: str
    ) -> Iterable[tuple[yaml.ScalarNode, yaml.Node]]:
        """A mapping's (key, value) nodes: its own keys (a repeated one is reported), then keys
        merged in with ``<<: *anchor`` that it does not set itself."""
        seen: dict[str, int] = {}
        merged: list[tuple[yaml.ScalarNode, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.extend(self._merged(value_node, path))
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _NULL_TAG:
                self.problem(line, path, "keys must be plain names")
                continue
            key = str(key_node.value)
            if key in seen:
                self.problem(
                    line, _join(path, key), f"key {key!r} appears twice (first on line {seen[key]})"
                )
                continue
            seen[key] = line
            yield key_node, value_node
        for key_node, value_node in merged:
            key = str(key_node.value)
            if key not in seen:  # the mapping's own keys win; of several merges, the first
                seen[key] = key_node.start_mark.line + 1
                yield key_node, value_node

    def _merged(self, node: yaml.Node, path: str) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
        """The pairs ``<<`` brings in: from one mapping or a list of them, merges included."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        pairs: list[tuple[yaml.ScalarNode, yaml.Node]] = []
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self.problem(source.start_mark.line + 1, path, "'<<' must merge a mapping")
                continue
            for key_node, value_node in source.value:
                if key_node.tag == _MERGE_TAG:
                    pairs.extend(self._merged(value_node, path))
                elif isinstance(key_node, yaml.ScalarNode) and key_node.tag != _NULL_TAG:
                    pairs.append((key_node, value_node))
        return pairs

    def validate(self, data: Any) -> AgentFile | None:
        """The file's :class:`AgentFile`; None after reporting every problem pydantic found."""
        for retry in (True, False):
            try:
                # YAML names only: Python names (thinking_budget) are unknown keys here.
                return _AGENT_FILE.validate_python(data, by_alias=True, by_name=False)
            except ValidationError as exc:
                errors = exc.errors()
            texts = [
                (step.document, self.typed[where])
                for error in errors
                if error["type"] in _WANTS_TEXT
                and (where := path_text((step := step_of(AgentFile, error)).document)) in self.typed
            ]
            if not (retry and texts):
                break
            for loc, text in texts:
                _put(data, loc, text)
                self.typed.pop(path_text(loc))
        found = []
        for error in errors:
            step = step_of(AgentFile, error)
            path = path_text(step.document)
            if any(path == p or path.startswith((p + ".", p + "[")) for p in self.reported):
                continue  # its value was dropped after a problem of its own
            # A missing key is reported where its section starts ("sql:"), not at its first key.
            missing = error["type"] in ("missing", "missing_argument")
            where = _parent(path) if missing else path
            # Reading order: by line; on one line, the values' own problems before those found
            # across fields, each in the order the keys are written.
            order = (self.line(where) or 0, error["type"] == ACROSS, self._column(where))
            found.append((order, where, path, self._message(error, step, path)))
        for _, where, path, message in sorted(found, key=lambda item: item[0]):
            self.problem(self.line(where), path, message)
        return None

    def _message(self, error: ErrorDetails, step: Step, path: str) -> str:
        hint = (error.get("ctx") or {}).get("hint")
        if path in self.from_env and hint is not None:
            return f"must be {hint}; the value from the environment is not"
        return describe(error, step, raw=self.typed.get(path))

    def _column(self, path: str) -> int:
        while path and path not in self.columns:
            path = _parent(path)
        return self.columns.get(path, 0)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _parent(path: str) -> str:
    """``tools[0].sql`` for ``tools[0].sql.query``, ``phone_numbers`` for ``phone_numbers[1]``."""
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


def _put(data: Any, loc: Loc, value: Any) -> None:
    """Set the value at ``loc`` inside ``data`` (which has it)."""
    for part in loc[:-1]:
        data = data[part]
    data[loc[-1]] = value


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _AgentFile:
    """One file's agent, with what the cross-file checks need."""

    config: AgentConfig
    file: str
    default: bool
    lines: Mapping[str, int]


def _display(path: Path) -> str:
    """A path as people want it in messages: relative to the working directory if inside it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if relative.startswith("..") else relative


def agent_files(path: str | os.PathLike[str] | None = None) -> list[Path]:
    """The agent files at ``path`` (a folder or one file; None: the bundled examples), sorted.
    Hidden files are skipped (editors' swap files). Raises OSError if ``path`` does not exist."""
    root = BUNDLED_AGENTS if path is None else Path(path)
    if root.is_dir():
        return sorted(
            p
            for p in root.iterdir()
            if p.suffix in AGENT_FILE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        )
    if root.exists():
        return [root]
    raise FileNotFoundError(f"no such file or folder: {root}")


def _read_file(
    path: Path,
    env: Mapping[str, str],
    check_tools: ToolCheck | None,
    check_agent: AgentCheck | None,
) -> tuple[_AgentFile | None, _Document]:
    doc = _Document(file=_display(path), env=env)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        doc.problem(None, None, f"cannot read the file: {exc}")
        return None, doc
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        doc.problem(mark.line + 1 if mark else None, None, f"not valid YAML: {detail}")
        return None, doc
    except yaml.YAMLError as exc:
        doc.problem(None, None, f"not valid YAML: {exc}")
        return None, doc
    if root is None:
        doc.problem(1, None, "the file is empty (an agent needs at least a system_prompt)")
        return None, doc
    doc.lines[""] = root.start_mark.line + 1
    agent_file = doc.validate(doc.value(root, ""))
    if agent_file is None or doc.problems:
        return None, doc
    name = agent_file.name or path.stem
    if not agent_file.name and not _NAME_RE.fullmatch(name):
        doc.problem(
            doc.lines[""], "name", f"file name {name!r} is not a valid agent name: set 'name'"
        )
        return None, doc
    try:
        agent = agent_file.agent_config(name)
    except ConfigError as exc:  # the file's values make no agent: a bug between the models
        doc.problem(doc.lines[""], None, str(exc))
        return None, doc
    if check_tools is not None:
        for index, spec in enumerate(agent.tool_specs):
            for message in check_tools([spec]):
                doc.problem(doc.line(f"tools[{index}]"), f"tools[{index}]", message)
    if check_agent is not None:
        try:
            check_agent(agent)
        except ConfigError as exc:
            _report_agent_error(doc, exc)
    if doc.problems:
        return None, doc
    return _AgentFile(agent, doc.file, agent_file.default, dict(doc.lines)), doc


def _report_agent_error(doc: _Document, exc: ConfigError) -> None:
    """A check of the whole agent refused it: at the YAML key its ConfigError names."""
    message = str(exc)
    suffix = f" (key {exc.key!r})" if exc.key else ""
    if suffix and message.endswith(suffix):
        message = message[: -len(suffix)]
    key = ""
    if exc.key:
        key = _FILE_KEYS.get(exc.key) or exc.key.removeprefix("call.")
        if key not in doc.lines:
            key = ""
    doc.problem(doc.line(key), key, message)


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    check_tools: ToolCheck | None = None,
    check_agent: AgentCheck | None = None,
) -> AgentRegistry:
    """Read and validate every agent file at ``path`` (a folder or one file; None: the bundled
    examples), substituting ``${VAR}`` from ``env`` (default: the process environment).
    ``check_tools`` and ``check_agent`` add checks from the layers above (see :data:`ToolCheck`,
    :data:`AgentCheck`); their problems are reported like the loader's own.

    Raises :class:`AgentFilesError` (a ConfigError) listing every problem in every file.
    """
    env = os.environ if env is None else env
    problems: list[Problem] = []
    where = _display(BUNDLED_AGENTS if path is None else Path(path))
    try:
        files = agent_files(path)
    except OSError as exc:
        raise AgentFilesError([Problem(where, None, None, f"cannot read agents: {exc}")]) from exc
    if not files:
        raise AgentFilesError([Problem(where, None, None, "no agent files (*.yaml, *.yml) here")])
    loaded: list[_AgentFile] = []
    secrets: set[str] = set()
    for file in files:
        agent_file, doc = _read_file(file, env, check_tools, check_agent)
        problems.extend(doc.problems)
        secrets |= doc.secrets
        if agent_file is not None:
            loaded.append(agent_file)
    problems.extend(_cross_file_problems(loaded))
    if problems:
        # In reading order: file by file, top to bottom (sort is stable for one line).
        order = {_display(file): index for index, file in enumerate(files)}
        problems.sort(key=lambda p: (order.get(p.file or "", -1), p.line or 0))
        # A substituted value may have slipped into a message (a refused value is quoted).
        scrubbed = [_scrub(p, secrets) for p in problems]
        raise AgentFilesError(scrubbed)
    defaults = [a.config.name for a in loaded if a.default]
    return AgentRegistry(
        [a.config for a in loaded],
        default=defaults[0] if defaults else None,
        sources={a.config.name: a.file for a in loaded},
        secrets=secrets,
        path=where,
    )


def _scrub(problem: Problem, secrets: Iterable[str]) -> Problem:
    return dataclasses.replace(problem, message=redact(problem.message, secrets))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***`` (longest first, so a secret containing
    another is masked whole). Values under 4 characters are left alone: masking every "1" or
    "v2" in a message would hide more than it protects."""
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _cross_file_problems(loaded: Sequence[_AgentFile]) -> list[Problem]:
    problems: list[Problem] = []
    names: dict[str, _AgentFile] = {}
    numbers: dict[str, tuple[str, _AgentFile]] = {}
    first_default: _AgentFile | None = None
    for agent in loaded:
        name = agent.config.name
        if name in names:
            problems.append(
                Problem(
                    agent.file,
                    agent.lines.get("name", agent.lines.get("")),
                    "name",
                    f"agent name {name!r} is already used by {names[name].file}",
                )
            )
        names.setdefault(name, agent)
        for index, number in enumerate(agent.config.phone_numbers):
            if number in numbers:
                other, other_file = numbers[number]
                problems.append(
                    Problem(
                        agent.file,
                        agent.lines.get(f"phone_numbers[{index}]"),
                        f"phone_numbers[{index}]",
                        f"{number} is already answered by agent {other!r} ({other_file.file})",
                    )
                )
            numbers.setdefault(number, (name, agent))
        if agent.default:
            if first_default is not None:
                problems.append(
                    Problem(
                        agent.file,
                        agent.lines.get("default"),
                        "default",
                        f"only one agent may be the default; {first_default.config.name!r} "
                        f"({first_default.file}) already is",
                    )
                )
            else:
                first_default = agent
    return problems


# --------------------------------------------------------------------------------------------
# The registry: which agent answers which number
# --------------------------------------------------------------------------------------------


class AgentRegistry:
    """Every loaded agent, by name and by the numbers they answer. Immutable: a reload builds a
    new registry, so a call holds on to the AgentConfig it started with."""

    def __init__(
        self,
        agents: Sequence[AgentConfig],
        *,
        default: str | None = None,
        sources: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        path: str | None = None,
    ) -> None:
        """``default`` names the default agent; None: the only agent, or the first by name.
        Raises ConfigError for no agents, a repeated name or number, or an unknown default."""
        if not agents:
            raise ConfigError("there must be at least one agent")
        by_name: dict[str, AgentConfig] = {}
        numbers: dict[str, AgentConfig] = {}
        for agent in sorted(agents, key=lambda a: a.name):
            if agent.name in by_name:
                raise ConfigError(f"agent name {agent.name!r} is used twice", key="name")
            by_name[agent.name] = agent
            for number in agent.phone_numbers:
                if number in numbers:
                    raise ConfigError(
                        f"{number} is answered by both {numbers[number].name!r} and {agent.name!r}",
                        key="phone_numbers",
                    )
                numbers[number] = agent
        if default is not None and default not in by_name:
            raise ConfigError(f"the default agent {default!r} is not loaded", key="default")
        self._agents = MappingProxyType(by_name)
        self._numbers = MappingProxyType(numbers)
        self._default = by_name[default] if default is not None else next(iter(by_name.values()))
        self._default_chosen = default is not None
        self._sources = MappingProxyType(dict(sources or {}))
        self._secrets = frozenset(s for s in secrets if s)
        self.path = path
        """Where the agents were loaded from, for messages (None if built in code)."""

    @classmethod
    def of(cls, *agents: AgentConfig, default: str | None = None) -> AgentRegistry:
        """A registry of agents built in code (tests, ``create_app(agent=...)``)."""
        return cls(agents, default=default)

    @property
    def agents(self) -> Mapping[str, AgentConfig]:
        """Every agent by name, sorted by name."""
        return self._agents

    @property
    def default(self) -> AgentConfig:
        """The agent for numbers no agent lists."""
        return self._default

    @property
    def default_is_explicit(self) -> bool:
        """True if an agent file said ``default: true`` (else the rule chose it)."""
        return self._default_chosen

    @property
    def numbers(self) -> Mapping[str, AgentConfig]:
        """Every configured E.164 number and the agent answering it."""
        return self._numbers

    def for_number(self, to: str | None) -> AgentConfig:
        """The agent answering ``to`` (the voice webhook's ``To``, in any usual notation); the
        default agent for an unlisted, missing or unreadable number."""
        number = normalise_number(to)
        if number is None:
            return self._default
        return self._numbers.get(number, self._default)

    def by_name(self, name: str | None) -> AgentConfig | None:
        """The agent called ``name``, or None."""
        return self._agents.get(name) if name else None

    def source(self, name: str) -> str | None:
        """The file agent ``name`` came from (None if built in code)."""
        return self._sources.get(name)

    def secrets(self) -> frozenset[str]:
        """Every value substituted from ``${VAR}``: for log redaction, never for logging."""
        return self._secrets

    def __repr__(self) -> str:  # no secrets, no prompts: just what is loaded
        return f"AgentRegistry(agents={list(self._agents)}, default={self._default.name!r})"


# --------------------------------------------------------------------------------------------
# Reload
# --------------------------------------------------------------------------------------------

Fingerprint = tuple[tuple[str, int, int], ...]


def files_fingerprint(path: str | os.PathLike[str] | None) -> Fingerprint:
    """Names, modification times and sizes of the agent files: cheap to compare every few
    seconds. A missing folder has an empty fingerprint (its return is a change)."""
    try:
        files = agent_files(path)
    except OSError:
        return ()
    result = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        result.append((str(file), stat.st_mtime_ns, stat.st_size))
    return tuple(result)


class AgentRegistryHolder:
    """The current registry, replaced by :meth:`reload` only when the new files are all valid.

    Readers take ``holder.current`` once per call and keep what it returns; a reload never
    changes a registry, it swaps in another one.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        registry: AgentRegistry | None = None,
        *,
        env: Mapping[str, str] | None = None,
        check_tools: ToolCheck | None = None,
        check_agent: AgentCheck | None = None,
        on_change: Callable[[AgentRegistry], None] | None = None,
        logger: Any = None,
    ) -> None:
        """Loads ``path`` now unless ``registry`` is given (raising AgentFilesError if invalid).
        ``on_change`` runs after each successful reload (e.g. to add new secrets to the log
        redaction); ``env`` defaults to the process environment at each reload."""
        self.path = path
        self._reloadable = True
        self._env = env
        self._check_tools = check_tools
        self._check_agent = check_agent
        self._on_change = on_change
        self._log = logger if logger is not None else log
        self._fingerprint = files_fingerprint(path)
        self._current = registry if registry is not None else self._load()
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, registry: AgentRegistry) -> AgentRegistryHolder:
        """A holder of agents built in code (tests, ``create_app(agent=...)``): there are no
        files, so a reload changes nothing and says so."""
        holder = cls(registry.path, registry)
        holder._reloadable = False
        return holder

    @property
    def current(self) -> AgentRegistry:
        """The registry new calls use."""
        return self._current

    def reload(self) -> list[str]:
        """Load the files again; swap the registry in if they are valid. Returns the problems
        (empty on success); on any problem the old registry stays. Logs either way."""
        if not self._reloadable:
            return self._not_reloadable()
        fingerprint = files_fingerprint(self.path)
        try:
            registry = self._load()
        except AgentFilesError as exc:
            self._fingerprint = fingerprint
            return self._failed(exc)
        self._fingerprint = fingerprint
        self._swap(registry)
        return []

    async def reload_async(self) -> list[str]:
        """:meth:`reload` with the file reading in a thread, so the event loop (and every
        call's audio) never waits for it; concurrent requests run one after the other."""
        if not self._reloadable:
            return self._not_reloadable()
        async with self._lock:
            fingerprint = await asyncio.to_thread(files_fingerprint, self.path)
            try:
                registry = await asyncio.to_thread(self._load)
            except AgentFilesError as exc:
                self._fingerprint = fingerprint
                return self._failed(exc)
            self._fingerprint = fingerprint
            self._swap(registry)
            return []

    async def reload_if_changed(self) -> bool:
        """Reload if a file was added, removed or modified since the last (attempted) load."""
        if not self._reloadable:
            return False
        fingerprint = await asyncio.to_thread(files_fingerprint, self.path)
        if fingerprint == self._fingerprint:
            return False
        await self.reload_async()
        return True

    def _not_reloadable(self) -> list[str]:
        problem = "the agents were configured in code, not loaded from files: nothing to reload"
        self._log.warning(
            "agents.reload_failed", problems=[problem], kept=sorted(self._current.agents)
        )
        return [problem]

    def _load(self) -> AgentRegistry:
        return load(
            self.path, env=self._env, check_tools=self._check_tools, check_agent=self._check_agent
        )

    def _failed(self, exc: AgentFilesError) -> list[str]:
        problems = [str(p) for p in exc.problems]
        self._log.error(
            "agents.reload_failed",
            path=self._current.path,
            problems=problems,
            kept=sorted(self._current.agents),
        )
        return problems

    def _swap(self, registry: AgentRegistry) -> None:
        old = self._current
        self._current = registry
        self._log.info(
            "agents.reloaded",
            path=registry.path,
            agents=sorted(registry.agents),
            default=registry.default.name,
            added=sorted(set(registry.agents) - set(old.agents)),
            removed=sorted(set(old.agents) - set(registry.agents)),
            changed=sorted(
                name
                for name, agent in registry.agents.items()
                if name in old.agents and old.agents[name] != agent
            ),
        )
        if self._on_change is not None:
            self._on_change(registry)


def install_reload_on_sighup(
    loop: asyncio.AbstractEventLoop, holder: AgentRegistryHolder, logger: Any = None
) -> Callable[[], None]:
    """Reload the agents whenever the process gets SIGHUP (``kill -HUP <pid>``). Returns a
    function that removes the handler and restores the previous one. Where the loop cannot
    handle signals (Windows), logs that and does nothing."""
    logger = logger if logger is not None else log
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is None:
        logger.warning("agents.sighup_unavailable", reason="no SIGHUP on this platform")
        return lambda: None
    previous = signal.getsignal(hangup)
    tasks: set[asyncio.Task[list[str]]] = set()

    def on_hangup() -> None:
        logger.info("agents.reload_requested", signal="SIGHUP")
        task = loop.create_task(holder.reload_async())
        tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(hangup, on_hangup)
    except (NotImplementedError, RuntimeError) as exc:
        logger.warning("agents.sighup_unavailable", reason=str(exc))
        return lambda: None

    def uninstall() -> None:
        loop.remove_signal_handler(hangup)
        if previous is not None:
            signal.signal(hangup, previous)
        for task in tasks:
            task.cancel()

    return uninstall


async def watch_agent_files(holder: AgentRegistryHolder, interval_s: float) -> None:
    """Poll the agent files every ``interval_s`` seconds and reload when they change; runs
    until cancelled. Polling (not inotify) because it works the same on every platform and on
    mounted config volumes."""
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    while True:
        await asyncio.sleep(interval_s)
        await holder.reload_if_changed()


@contextlib.asynccontextmanager
async def reloading(
    holder: AgentRegistryHolder, *, interval_s: float = 0.0, logger: Any = None
) -> AsyncIterator[AgentRegistryHolder]:
    """SIGHUP reload, plus polling if ``interval_s`` > 0, for as long as the block runs (the
    server's lifetime: wrap it in an aiohttp ``cleanup_ctx``)."""
    uninstall = install_reload_on_sighup(asyncio.get_running_loop(), holder, logger)
    watcher = (
        asyncio.create_task(watch_agent_files(holder, interval_s), name="agents.watch")
        if interval_s > 0
        else None
    )
    try:
        yield holder
    finally:
        uninstall()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


# --------------------------------------------------------------------------------------------
# JSON Schema and the documentation table, from the models
# --------------------------------------------------------------------------------------------


class _EditorSchema(GenerateJsonSchema):
    """pydantic's JSON Schema, as editors read it best: no titles, and a nullable value as one
    schema that also allows null (``"type": ["integer", "null"]``, an enum with null) where
    that can be said without ``anyOf``."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        inner = self.generate_inner(schema["schema"])
        kind = inner.get("type")
        if "enum" in inner:
            nullable = {**inner, "enum": [*inner["enum"], None]}
            if isinstance(kind, str):
                nullable["type"] = [kind, "null"]
            return nullable
        if isinstance(kind, str) and "$ref" not in inner:
            return {**inner, "type": [kind, "null"]}
        return {"anyOf": [inner, {"type": "null"}]}


def _inline(schema: Any, definitions: Mapping[str, Any]) -> Any:
    """``schema`` with every ``$ref`` replaced by its definition (there is no recursion), and
    no titles or class docstrings: the fields' descriptions are the documentation."""
    if isinstance(schema, list):
        return [_inline(item, definitions) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result: dict[str, Any] = {}
    if "$ref" in schema:
        body = definitions[schema["$ref"].rpartition("/")[2]]
        result.update({k: v for k, v in _inline(body, definitions).items() if k != "description"})
    for key, value in schema.items():
        if key in ("$ref", "title"):
            continue
        if key == "properties":
            result[key] = {name: _inline(sub, definitions) for name, sub in value.items()}
        else:
            result[key] = _inline(value, definitions)
    return result


def agent_json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of an agent file, for editors (``agent schema``)."""
    generated = _AGENT_FILE.json_schema(by_alias=True, schema_generator=_EditorSchema)
    definitions = generated.pop("$defs", {})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Voice agent",
        "description": "One voice agent of the Twilio <-> Gemini Live bridge (one YAML file). "
        "String values may use ${ENV_VAR} or ${ENV_VAR:-default}.",
        **_inline(generated, definitions),
    }


@dataclass(frozen=True, slots=True)
class FieldDoc:
    """One row of the README's field table."""

    key: str
    type: str
    default: str
    description: str


def field_reference(model: Any = AgentFile, prefix: str = "") -> list[FieldDoc]:
    """Every key of ``model`` and their sections' keys (``vad.silence_duration_ms``), in
    table order; tools' keys are listed by ``field_reference(ToolEntry)``."""
    generated = TypeAdapter(model).json_schema(by_alias=True, schema_generator=_EditorSchema)
    return _rows(model, _inline(generated, generated.get("$defs", {})), prefix)


def _rows(model: Any, schema: Mapping[str, Any], prefix: str) -> list[FieldDoc]:
    rows: list[FieldDoc] = []
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    for name, info in model.__pydantic_fields__.items():
        key = info.validation_alias if isinstance(info.validation_alias, str) else name
        annotation = _input_type(info)
        kind = _type_doc(annotation, tuple(info.metadata))
        shown_default = next((m.default for m in _markers(annotation, info) if m.default), None)
        field_schema = properties.get(key, {})
        if shown_default is not None:
            default = shown_default
        elif key in required:
            default = "required"
        elif "default" in field_schema:
            default = f"`{json.dumps(field_schema['default'])}`"
        else:
            default = "—"
        rows.append(FieldDoc(prefix + key, kind, default, info.description or ""))
        section = _section(annotation)
        if section is not None and section.__pydantic_fields__ and key != "tools":
            rows.extend(_rows(section, _object_schema(field_schema), f"{prefix}{key}."))
    return rows


def _input_type(info: Any) -> Any:
    """What a field accepts as written in a file: a validator's declared input type if it has
    one (``compression: true``), else its annotation."""
    for meta in info.metadata:
        if isinstance(meta, BeforeValidator) and meta.json_schema_input_type is not Any:
            return meta.json_schema_input_type
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _markers(annotation: Any, info: Any) -> list[Shown]:
    found = [m for m in info.metadata if isinstance(m, Shown)]
    return found + [m for m in _metadata(annotation) if isinstance(m, Shown)]


def _metadata(annotation: Any) -> list[Any]:
    """Every ``Annotated`` marker on ``annotation``, also inside ``X | None``."""
    found: list[Any] = []
    while get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        found.extend(extra)
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            if arg is not type(None):
                found.extend(_metadata(arg))
    return found


def _section(annotation: Any) -> Any:
    """The section class a field holds (a pydantic dataclass), if any."""
    base = _strip(annotation)
    if get_origin(base) in (Union, types.UnionType):
        sections = [a for a in get_args(base) if hasattr(_strip(a), "__pydantic_fields__")]
        return _strip(sections[0]) if len(sections) == 1 else None
    return base if hasattr(base, "__pydantic_fields__") else None


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _object_schema(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object among a field schema's alternatives (``anyOf: [boolean, object]``)."""
    if "properties" in schema:
        return schema
    for alternative in schema.get("anyOf", ()):
        if "properties" in alternative:
            return dict(alternative)
    return {}


def _type_doc(annotation: Any, metadata: tuple[Any, ...] = ()) -> str:
    """A value's type as the README's table says it: "integer ≥ 1 or `null`"."""
    markers = [*metadata, *_metadata(annotation)]
    for marker in markers:
        if isinstance(marker, Shown) and marker.type:
            return marker.type
    base = _strip(annotation)
    if get_origin(base) in (Union, types.UnionType):
        args = [a for a in get_args(base) if a is not type(None)]
        switch = any(_strip(a) is bool for a in args) and len(args) > 1
        rest = [a for a in args if _strip(a) is not bool] if switch else args
        text = (
            _type_doc(rest[0], tuple(metadata))
            if len(rest) == 1
            else " or ".join(_type_doc(a) for a in rest)
        )
        if switch:
            text += " or true/false"
        if len(args) < len(get_args(base)):
            text += " or `null`"
        return text
    rule = next((m for m in markers if isinstance(m, TextRule)), None)
    if rule is not None:
        return rule.hint
    if get_origin(base) is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(base))
    if base is bool:
        return "true/false"
    if base in (int, float):
        return _bounds("integer" if base is int else "number", markers)
    if get_origin(base) in (tuple, list):
        return f"list, each {_type_doc(get_args(base)[0])}"
    if get_origin(base) in (dict, Mapping):
        key, value = get_args(base)
        key_rule = next((m for m in _metadata(key) if isinstance(m, TextRule)), None)
        if value is Any:
            return "a mapping"
        return f"mapping of {key_rule.hint if key_rule else 'a name'} to {_type_doc(value)}"
    if hasattr(base, "__pydantic_fields__"):
        return "a mapping (below)" if base.__pydantic_fields__ else "`{}`"
    return getattr(base, "__name__", str(base))


def _bounds(kind: str, markers: Sequence[Any]) -> str:
    """ "integer 1 to 1000", "number > 0 ≤ 600", "integer ≥ -1"."""
    constraints: dict[str, float] = {}
    for marker in markers:
        for item in (marker, *getattr(marker, "metadata", ())):
            for name in ("ge", "gt", "le"):
                if getattr(item, name, None) is not None and not isinstance(item, Shown):
                    constraints[name] = getattr(item, name)

    def show(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    low, high, exclusive = (
        constraints.get("ge", constraints.get("gt")),
        constraints.get("le"),
        ("gt" in constraints),
    )
    if low is not None and high is not None and not exclusive:
        return f"{kind} {show(low)} to {show(high)}"
    parts = [kind]
    if low is not None:
        parts.append(f"{'>' if exclusive else '≥'} {show(low)}")
    if high is not None:
        parts.append(f"≤ {show(high)}")
    return " ".join(parts)


def markdown_reference() -> str:
    """The README's field tables (agent keys, then tool keys) as Markdown."""
    out: list[str] = []
    for title, rows in (
        ("Agent file", field_reference()),
        ("Each entry of `tools`", field_reference(ToolEntry)),
    ):
        out.append(f"#### {title}\n")
        out.append("| key | type | default | meaning |")
        out.append("|-----|------|---------|---------|")
        for row in rows:
            cells = (f"`{row.key}`", row.type, row.default, row.description)
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out)
