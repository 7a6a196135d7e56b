"""Agent files: reading YAML with its line numbers, ``${ENV}`` substitution, and problems.

A business describes each voice agent in one YAML file (``acme-support.yaml``) in a folder
(``AGENTS_PATH``; by default the bundled examples in ``agent/examples/``). :func:`load` reads every
``*.yaml`` / ``*.yml`` file there into frozen :class:`~agent.config.models.AgentConfig` objects
and an :class:`~agent.config.registry.AgentRegistry` that picks the agent for each call.

Why it is built this way:

* **The models are the contract.** :class:`~agent.config.models.AgentFile` says every key an agent
  file may have; this module only turns YAML into plain values and pydantic's answer into
  problems. ``agent schema`` prints the same models as a JSON Schema and as the README's table
  (:mod:`agent.config.schema`), so the three cannot drift apart.
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
  Only variables :class:`EnvAllow` allows are read (``AGENT_…``, or listed in ``AGENT_ENV_ALLOW``),
  never the bridge's own (``${TWILIO_AUTH_TOKEN}`` is a problem, its value is never read).
* **Hostile files fail fast.** :mod:`agent.config.limits` caps a file's size, and the nodes and
  nesting of the document with its aliases expanded, while composing: an alias bomb is one
  problem at its line, not a process that never finishes.
  :meth:`~agent.config.registry.AgentRegistry.secrets` returns every substituted value so log
  redaction can mask it, and problem messages never echo a substituted value. ``$${`` writes a
  literal ``${``.
* **The default agent.** An agent file may say ``default: true``; at most one may. Without one,
  the only agent, or else the first by name, is the default: it answers every number no agent
  lists (and calls whose ``To`` is missing or not a phone number).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from yaml.constructor import SafeConstructor

from agent.config.fields import ACROSS, Loc, Step, describe, path_text, step_of
from agent.config.limits import MAX_FILE_BYTES, LimitError, compose
from agent.config.models import AgentConfig, AgentFile
from agent.config.registry import AgentRegistry
from agent.config.tools import ToolSpec
from agent.errors import ConfigError, GroupedConfigError
from agent.observability.privacy import redact_secrets
from agent.settings import bridge_variables

#: The folder ``agent serve`` reads when ``AGENTS_PATH`` is not set.
BUNDLED_AGENTS: Final = Path(__file__).parents[1] / "examples"
AGENT_FILE_SUFFIXES: Final = (".yaml", ".yml")

DEFAULT_ENV_PREFIX: Final = "AGENT_"


@dataclass(frozen=True, slots=True)
class EnvAllow:
    """Which environment variables ``${VAR}`` in an agent file may read: those starting with
    ``prefix`` (``AGENT_ENV_PREFIX``) and those in ``names`` (``AGENT_ENV_ALLOW``), but never
    one of the bridge's own (:func:`~agent.settings.bridge_variables`: its credentials
    and settings), whatever the prefix or the list says."""

    prefix: str = DEFAULT_ENV_PREFIX
    names: frozenset[str] = frozenset()

    def refusal(self, name: str) -> str | None:
        """Why ``${name}`` may not be read, or None if it may."""
        if name in bridge_variables():
            return (
                f"${{{name}}} is one of the bridge's own variables: agent files may never read "
                "it (put what the agent needs in a variable of its own, such as "
                f"{self.prefix}{name.removeprefix(self.prefix)})"
            )
        if (self.prefix and name.startswith(self.prefix)) or name in self.names:
            return None
        return (
            f"${{{name}}} is not a variable agent files may read: rename it "
            f"{self.prefix}{name}, or list it in AGENT_ENV_ALLOW"
        )


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
    env_allow: EnvAllow = field(default_factory=EnvAllow)
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
        refused: list[str] = []
        used = False

        def replace(match: re.Match[str]) -> str:
            nonlocal used
            name, default = match.groups()
            if name is None:  # $${
                return "${"
            refusal = self.env_allow.refusal(name)
            if refusal is not None:  # not even read: its value is in no message and no prompt
                refused.append(refusal)
                return ""
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
        for message in refused:
            self.problem(line, path, message)
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
        if missing or refused:
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
    env_allow: EnvAllow,
    check_tools: ToolCheck | None,
    check_agent: AgentCheck | None,
) -> tuple[_AgentFile | None, _Document]:
    doc = _Document(file=_display(path), env=env, env_allow=env_allow)
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            doc.problem(
                None,
                None,
                f"the file is bigger than {MAX_FILE_BYTES // 1024} KiB, the most an agent file "
                "may be: it was not read",
            )
            return None, doc
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        doc.problem(None, None, f"cannot read the file: {exc}")
        return None, doc
    try:
        root = compose(text)
    except LimitError as exc:
        mark = exc.problem_mark
        doc.problem(mark.line + 1 if mark else None, exc.key, f"refused: {exc.problem}")
        return None, doc
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
        except GroupedConfigError as group:
            for error in group.errors:
                _report_agent_error(doc, error)
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
    env_allow: EnvAllow | None = None,
    check_tools: ToolCheck | None = None,
    check_agent: AgentCheck | None = None,
) -> AgentRegistry:
    """Read and validate every agent file at ``path`` (a folder or one file; None: the bundled
    examples), substituting ``${VAR}`` from ``env`` (default: the process environment) for the
    variables ``env_allow`` allows (default: those starting with ``AGENT_``).
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
        agent_file, doc = _read_file(file, env, env_allow or EnvAllow(), check_tools, check_agent)
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
        lines={a.config.name: a.lines for a in loaded},
    )


def _scrub(problem: Problem, secrets: Iterable[str]) -> Problem:
    return dataclasses.replace(problem, message=redact_secrets(problem.message, secrets))


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
    problems.extend(_hand_off_problems(loaded, names))
    return problems


def _hand_off_problems(
    loaded: Sequence[_AgentFile], names: Mapping[str, _AgentFile]
) -> list[Problem]:
    """A ``hand_off`` must name another agent of these files, on the same model: a call keeps
    its Live session (and so its model) when another agent takes it over."""
    from agent.config.tools import HandOffTool

    problems: list[Problem] = []
    for agent in loaded:
        for index, spec in enumerate(agent.config.tool_specs):
            if not isinstance(spec.kind, HandOffTool):
                continue
            key = f"tools[{index}].hand_off.agent"
            target = names.get(spec.kind.agent)
            message = None
            if target is None:
                known = ", ".join(sorted(names)) or "none"
                message = (
                    f"hand_off names agent {spec.kind.agent!r}, which no file defines "
                    f"(agents: {known})"
                )
            elif target.config.name == agent.config.name:
                message = "hand_off names this agent itself: name another one"
            elif target.config.model != agent.config.model:
                message = (
                    f"hand_off to {spec.kind.agent!r}, which uses model {target.config.model!r}: "
                    f"a call keeps its model ({agent.config.model!r}); use the same one"
                )
            if message is not None:
                problems.append(
                    Problem(
                        agent.file,
                        agent.lines.get(key, agent.lines.get(f"tools[{index}]")),
                        key,
                        message,
                    )
                )
    return problems
