"""Agents as YAML files: loading, validation, routing by number, prompt templating and reload.

A business describes each voice agent in one YAML file (``acme-support.yaml``) in a folder
(``AGENTS_PATH``; by default the bundled examples in ``agent/examples/``). :func:`load` reads every
``*.yaml`` / ``*.yml`` file there into frozen :class:`~agent.config.models.AgentConfig` objects
and an :class:`AgentRegistry` that picks the agent for each call by the number that was dialled.

Why it is built this way:

* **One table of fields.** ``AGENT_FIELDS`` / ``TOOL_FIELDS`` describe every YAML key once: its
  type, bounds, enum, default and description. The loader validates against them, ``agent schema``
  prints them as a JSON Schema and ``agent schema --format markdown`` as the README's table, so
  the three cannot drift apart.
* **Every problem at once, with file, line and key.** YAML is composed into nodes that keep
  their line numbers; a typo gets the closest valid key (``unknown key 'voise' (did you mean
  'voice'?)``), at every nesting level. Problems from all files are collected and raised together
  as one :class:`AgentFilesError`, so a business fixes its files in one pass, and ``agent check``
  lists them without starting anything.
* **Secrets stay out of files and logs.** ``${ENV_VAR}`` (or ``${ENV_VAR:-default}``) in any string
  value is replaced at load time; a missing variable is a problem naming file, line and key.
  :meth:`AgentRegistry.secrets` returns every substituted value so log redaction can mask it, and
  problem messages never echo a substituted value. ``$${`` writes a literal ``${``.
* **The default agent.** An agent file may say ``default: true``; at most one may. Without one,
  the only agent, or else the first by name, is the default: it answers every number no agent
  lists (and calls whose ``To`` is missing or not a phone number).
* **Prompts are templates, rendered per call** by :func:`render_for_call`: ``{caller_number}``,
  ``{called_number}``, ``{call_sid}``, ``{agent}``, ``{local_time}``, ``{local_date}``,
  ``{timezone}`` and, with ``prefetch_crm``, ``{customer.name}`` and the other ``CUSTOMER_FIELDS``.
  A missing value renders as ``unknown``. The renderer only substitutes names from a fixed set
  and looks customer fields up by key: no attribute access, no format specs, no recursion, so
  neither a prompt nor a CRM value can reach into Python objects.
* **Reload without dropping calls.** :class:`AgentRegistryHolder` swaps in a new registry on
  SIGHUP (:func:`install_reload_on_sighup`) or when the files change (:func:`watch_agent_files`);
  if anything is wrong it keeps the old one and logs the problems. A call keeps the immutable
  ``AgentConfig`` it started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import difflib
import json
import math
import os
import re
import signal
import string
import zoneinfo
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, cast, get_args

import jsonschema
import structlog
import yaml
from jsonschema import Draft202012Validator
from yaml.constructor import SafeConstructor

from agent.config.models import (
    DEFAULT_MODEL,
    ActivityHandling,
    AgentConfig,
    ApiVersion,
    Behavior,
    CallPolicy,
    ContextWindowCompressionConfig,
    EndSensitivity,
    FallbackConfig,
    FunctionDeclaration,
    HistoryConfig,
    MediaResolution,
    ProactivityConfig,
    ResponseModality,
    SessionResumptionConfig,
    SlidingWindow,
    StartSensitivity,
    ThinkingConfig,
    ThinkingLevel,
    ToolsConfig,
    TrustCallerId,
    TurnCoverage,
    VadConfig,
)
from agent.config.tools import (
    CONTEXT_KEYS,
    EndCallTool,
    HttpTool,
    PythonTool,
    Scheduling,
    SqlTool,
    ToolKind,
    ToolSpec,
    TransferCallTool,
)
from agent.errors import ConfigError
from agent.numbers import E164_RE, normalise_number
from agent.tools.sql_params import parse_query

log = structlog.get_logger("agent.agents")

#: The folder ``agent serve`` reads when ``AGENTS_PATH`` is not set.
BUNDLED_AGENTS: Final = Path(__file__).parents[1] / "examples"
#: What a missing template value renders as: honest to the model, never a crash.
UNKNOWN: Final = "unknown"
#: Columns of the CRM's ``customers`` table a prompt may use as ``{customer.<field>}``.
CUSTOMER_FIELDS: Final = ("id", "name", "phone", "email", "tier")
#: Call-context names a prompt may use (``{customer.*}`` comes on top).
TEMPLATE_KEYS: Final = (
    "caller_number",
    "called_number",
    "call_sid",
    "agent",
    "local_time",
    "local_date",
    "timezone",
)
#: The Live API's prebuilt voices; a near miss of one of these is reported as a typo.
KNOWN_VOICES: Final = (
    "Puck", "Charon", "Kore", "Fenrir", "Aoede", "Leda", "Orus", "Zephyr", "Achernar", "Achird",
    "Algenib", "Algieba", "Alnilam", "Autonoe", "Callirrhoe", "Despina", "Enceladus", "Erinome",
    "Gacrux", "Iapetus", "Laomedeia", "Pulcherrima", "Rasalgethi", "Sadachbia", "Sadaltager",
    "Schedar", "Sulafat", "Umbriel", "Vindemiatrix", "Zubenelgenubi",
)  # fmt: skip
AGENT_FILE_SUFFIXES: Final = (".yaml", ".yml")
# A template value is one line of at most this many characters: a CRM field cannot smuggle a
# page of instructions into the prompt.
_MAX_VALUE_CHARS: Final = 200


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
# The field table's types. Each reads one YAML node (collecting problems) and describes itself
# as JSON Schema and as a line of documentation.
# --------------------------------------------------------------------------------------------


class _Invalid:
    """Marks a value that had a problem (already reported); the key is left out."""


_INVALID: Final = _Invalid()
_NULL_TAG: Final = "tag:yaml.org,2002:null"
_BOOL_TAG: Final = "tag:yaml.org,2002:bool"
_INT_TAG: Final = "tag:yaml.org,2002:int"
_FLOAT_TAG: Final = "tag:yaml.org,2002:float"
_STR_TAG: Final = "tag:yaml.org,2002:str"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
# ${NAME} or ${NAME:-default}; $${ is a literal ${.
_ENV_RE: Final = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_FUNCTION_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
_LANGUAGE_RE: Final = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_PYTHON_TARGET_RE: Final = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_]\w*)*"
)
_SELECT_RE: Final = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_URL_RE: Final = re.compile(r"https?://\S+")
_DATABASE_URL_RE: Final = re.compile(r"(sqlite:///|postgresql://|postgres://)\S*")


def _env_pattern(regex: re.Pattern[str]) -> str:
    """A JSON Schema ``pattern`` for ``regex``, also letting an ``${ENV}`` reference through
    (the loader checks the value after substitution)."""
    return f"^(?:{regex.pattern})$|\\$\\{{"


ToolCheck = Callable[[Sequence[ToolSpec]], list[str]]
"""Extra checks for built tools (``agent.tools.validate_specs``: imports python targets, parses
SQL as the executor will); each returned problem is reported at the tool's line."""
AgentCheck = Callable[[AgentConfig], None]
"""An extra check of a whole agent that raises ConfigError (``lambda a: check_backend(a,
"gemini")``: Vertex-only fields), so a reload cannot bring in what start-up would refuse."""


@dataclass(slots=True)
class _Reader:
    """State of reading one file: where problems go and what was substituted."""

    file: str
    env: Mapping[str, str]
    check_tools: ToolCheck | None = None
    check_agent: AgentCheck | None = None
    problems: list[Problem] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    lines: dict[str, int] = field(default_factory=dict)  # key path -> line of its key
    constructor: SafeConstructor = field(default_factory=SafeConstructor)

    def problem(self, where: yaml.Node | int | None, key: str | None, message: str) -> None:
        line = where.start_mark.line + 1 if isinstance(where, yaml.Node) else where
        self.problems.append(Problem(self.file, line, key or None, message))

    def line(self, path: str) -> int | None:
        """The line of ``path``, or of its nearest parent that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rpartition(".")[0] if "." in path else path.rpartition("[")[0]
        return self.lines.get("")

    def substitute(self, node: yaml.Node, path: str, text: str) -> tuple[str, bool] | _Invalid:
        """``text`` with ``${VAR}`` references replaced; also says whether any was."""
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
                node, path, f"environment variable {name} is not set (referenced as ${{{name}}})"
            )
        if "${" in _ENV_RE.sub("", text):
            self.problem(
                node,
                path,
                "'${' starts an environment reference such as ${API_KEY} or ${API_KEY:-default}; "
                "write '$${' for a literal '${'",
            )
            return _INVALID
        return _INVALID if missing else (result, used)


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def _what(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == _NULL_TAG:
        return "nothing (null)"
    return repr(node.value)


def _plain_text(node: yaml.ScalarNode) -> str:
    """A scalar as the text the author typed: ``+15555550199`` and ``no`` stay strings (YAML 1.1
    would make them a number and false, the classic 'Norway problem')."""
    return str(node.value)


class _Spec:
    """One value's type in the field table."""

    nullable: bool = False

    def read(self, node: yaml.Node, path: str, r: _Reader) -> Any:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def doc(self) -> str:
        """The type for the README's table (Markdown)."""
        raise NotImplementedError

    def expected(self) -> str:
        """The type for a problem message (plain text)."""
        return self.doc()

    def _null(self, node: yaml.Node, path: str, r: _Reader) -> Any:
        """None if ``node`` is null and that is allowed; a problem if not allowed."""
        if self.nullable:
            return None
        r.problem(node, path, f"must be {self.expected()}, not null")
        return _INVALID

    def _nullable_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        if not self.nullable:
            return schema
        if "enum" in schema:
            return {**schema, "enum": [*schema["enum"], None]}
        kind = schema.get("type")
        if isinstance(kind, str):
            return {**schema, "type": [kind, "null"]}
        return {"anyOf": [schema, {"type": "null"}]}


@dataclass(frozen=True, kw_only=True)
class Text(_Spec):
    """A string. ``pattern`` (full match) and ``check`` (returns a problem or None) validate it
    after ``${ENV}`` substitution; ``hint`` says what is expected."""

    nullable: bool = False
    pattern: re.Pattern[str] | None = None
    hint: str = "text"
    check: Callable[[str], str | None] | None = None
    known: tuple[str, ...] = ()  # well-known values: near misses are typos (voices)

    def read(self, node: yaml.Node, path: str, r: _Reader) -> Any:
        if _is_null(node):
            return self._null(node, path, r)
        if not isinstance(node, yaml.ScalarNode):
            r.problem(node, path, f"must be {self.hint}, got {_what(node)}")
            return _INVALID
        substituted = r.substitute(node, path, _plain_text(node))
        if isinstance(substituted, _Invalid):
            return _INVALID
        text, secret = substituted
        shown = "the value from the environment" if secret else repr(text)
        if not text.strip():
            r.problem(node, path, f"must be {self.hint}, got an empty string")
            return _INVALID
        if self.check is not None:  # first: its message is the more helpful one
            message = self.check(text)
            if message is not None:
                # The message may quote the value: not when it came from the environment.
                r.problem(node, path, f"must be {self.hint}; {shown} is not" if secret else message)
                return _INVALID
        if self.pattern is not None and not self.pattern.fullmatch(text):
            r.problem(node, path, f"must be {self.hint}; {shown} is not")
            return _INVALID
        if self.known and text not in self.known:
            near = _near(text, self.known, cutoff=0.75)
            if near is not None:
                r.problem(node, path, f"{shown} is not a known value (did you mean {near!r}?)")
                return _INVALID
        return text

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "minLength": 1}
        if self.pattern is not None:
            schema["pattern"] = _env_pattern(self.pattern)
        if self.known:
            schema["examples"] = list(self.known)
        return self._nullable_schema(schema)

    def doc(self) -> str:
        return self.hint


@dataclass(frozen=True, kw_only=True)
class Choice(_Spec):
    """One of a fixed set of strings (an API enum)."""

    values: tuple[str, ...]
    nullable: bool = False

    def read(self, node: yaml.Node, path: str, r: _Reader) -> Any:
        if _is_null(node):
            return self._null(node, path, r)
        if not isinstance(node, yaml.ScalarNode):
            r.problem(node, path, f"must be one of {', '.join(self.values)}; got {_what(node)}")
            return _INVALID
        text = _plain_text(node)
        if text in self.values:
            return text
        near = _near(text, self.values, cutoff=0.5)
        hint = f" (did you mean {near!r}?)" if near else ""
        r.problem(node, path, f"must be one of {', '.join(self.values)}; got {text!r}{hint}")
        return _INVALID

    def schema(self) -> dict[str, Any]:
        return self._nullable_schema({"enum": list(self.values)})

    def doc(self) -> str:
        return "one of " + ", ".join(f"`{v}`" for v in self.values)

    def expected(self) -> str:
        return "one of " + ", ".join(self.values)


@dataclass(frozen=True, kw_only=True)
class Flag(_Spec):
    """true or false."""

    nullable: bool = False

    def read(self, node: yaml.Node, path: str, r: _Reader) -> Any:
        if _is_null(node):
            return self._null(node, path, r)
        if isinstance(node, yaml.ScalarNode) and node.tag == _BOOL_TAG:
            return bool(r.constructor.construct_object(node))
        r.problem(node, path, f"must be true or false, got {_what(node)}")
        return _INVALID

    def schema(self) -> dict[str, Any]:
        return self._nullable_schema({"type": "boolean"})

    def doc(self) -> str:
        return "true/false"

    def expected(self) -> str:
        return "true or false"


@dataclass(frozen=True, kw_only=True)
class Integer(_Spec):
    """A whole number within bounds."""

    minimum: int | None = None
    maximum: int | None = None
    nullable: bool = False

    def read(self, node: yaml.Node, path: str, r: _Reader) -> Any:
        if _is_null(node):
            return self._null(node, path, r)
        if not (isinstance(node, yaml.ScalarNode) and node.tag == _INT_TAG):
            r.problem(node, path, f"must be a whole number, got {_what(node)}")
            return _INVALID
        value = int(r.constructor.construct_object(node))
        if self.minimum is not None and value < self.minimum:
            r.problem(node, path, f"must be at least {self.minimum}, got {value}")
            return _INVALID
        if self.maximum is not None and value > self.maximum:
            r.problem(node, path, f"must be at most {self.maximum}, got {value}")
            return _INVALID
        return value

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return self._nullable_schema(schema)

    def doc(self) -> str:
        return _bounds("integer", self.minimum, self.maximum, exclusive=False)


@dataclass(frozen=True, kw_only=True)
class Number(_Spec):
    """A finite number within bounds; ``exclusive`` makes the minimum exclusive (``> 0``)."""

    minimum: float | None = None
    maximum: float | None = None
    exclusive: bool = False
    nullable: bool = False

    def read(self, node: yaml.Node, path: str, r: _Reader) -> Any:
        if _is_null(node):
            return self._null(node, path, r)
        if not (isinstance(node, yaml.ScalarNode) and node.tag in (_INT_TAG, _FLOAT_TAG)):
            r.problem(node, path, f"must be a number, got {_what(node)}")
            return _INVALID
        value = r.constructor.construct_object(node)
        if not math.isfinite(value):
            r.problem(node, path, f"must be a finite number, got {node.value!r}")
            return _INVALID
        low = self.minimum
        if low is not None and (value <= low if self.exclusive else value < low):
            r.problem(node, path, f"must be {'above' if self.exclusive else 'at least'} {low:g}")
            return _INVALID
        if self.maximum is not None and value > self.maximum:
            r.problem(node, path, f"must be at most {self.maximum:g}, got {value:g}")
            return _INVALID
        return float(value)  # 900 and 900.0 are the same number of seconds: one type

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "number"}
        if self.minimum is not None:
            schema["exclusiveMinimum" if self.exclusive else "minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return self._nullable_schema(schema)

    def doc(self) -> str:
        return _bounds("number", self.minimum, self.maximum, exclusive=self.exclusive)


@dataclass(frozen=True, kw_only=True)
class ListOf(_Spec):
    """A list of ``item``; ``unique`` refuses repeats. With ``positions``, an invalid item
    stays in the list as None, so later checks can still name items by their index."""

    item: _Spec
    unique: bool = False
    positions: bool = False
    nullable: bool = False

    def read(self, node: yaml.Node, path: str, r: _Reader) -> Any:
        if _is_null(node):
            return self._null(node, path, r)
        if not isinstance(node, yaml.SequenceNode):
            r.problem(node, path, f"must be a list, got {_what(node)}")
            return _INVALID
        values: list[Any] = []
        for index, child in enumerate(node.value):
            sub = f"{path}[{index}]"
            r.lines[sub] = child.start_mark.line + 1
            value = self.item.read(child, sub, r)
            if isinstance(value, _Invalid):
                if self.positions:
                    values.append(None)
                continue
            if self.unique and value in values:
                r.problem(child, sub, f"{value!r} is listed twice")
                continue
            values.append(value)
        return values

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array", "items": self.item.schema()}
        if self.unique:
            schema["uniqueItems"] = True
        return self._nullable_schema(schema)

    def doc(self) -> str:
        return f"list, each {self.item.doc()}"

    def expected(self) -> str:
        return "a list"


@dataclass(frozen=True, kw_only=True)
class MapOf(_Spec):
    """A mapping from string keys (matching ``keys``) to ``value``."""

    value: _Spec
    keys: re.Pattern[str] | None = None
    key_hint: str = "a name"
    nullable: bool = False

    def read(self, node: yaml.Node, path: str, r: _Reader) -> Any:
        if _is_null(node):
            return self._null(node, path, r)
        if not isinstance(node, yaml.MappingNode):
            r.problem(node, path, f"must be a mapping, got {_what(node)}")
            return _INVALID
        result: dict[str, Any] = {}
        for key_node, value_node in _pairs(node, path, r):
            key = _plain_text(key_node)
            sub = _join(path, key)
            if self.keys is not None and not self.keys.fullmatch(key):
                r.problem(key_node, sub, f"{key!r} is not {self.key_hint}")
                continue
            value = self.value.read(value_node, sub, r)
            if not isinstance(value, _Invalid):
                result[key] = value
        return result

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object", "additionalProperties": self.value.schema()}
        if self.keys is not None:
            schema["propertyNames"] = {"pattern": f"^(?:{self.keys.pattern})$"}
        return self._nullable_schema(schema)

    def doc(self) -> str:
        return f"mapping of {self.key_hint} to {self.value.doc()}"

    def expected(self) -> str:
        return "a mapping"


@dataclass(frozen=True, kw_only=True)
class Json(_Spec):
    """Free-form JSON (a tool's parameter schema, a request body): a mapping, kept as data.
    String values still get ``${ENV}`` substitution."""

    hint: str = "a mapping"
    properties: Mapping[str, Any] = field(default_factory=dict)  # for the JSON Schema only
    nullable: bool = False

    def read(self, node: yaml.Node, path: str, r: _Reader) -> Any:
        if _is_null(node):
            return self._null(node, path, r)
        if not isinstance(node, yaml.MappingNode):
            r.problem(node, path, f"must be {self.hint}, got {_what(node)}")
            return _INVALID
        return _json_value(node, path, r)

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object"}
        if self.properties:
            schema["properties"] = dict(self.properties)
        return self._nullable_schema(schema)

    def doc(self) -> str:
        return self.hint


@dataclass(frozen=True, kw_only=True)
class Section(_Spec):
    """A mapping with known keys (``fields``). ``booleans`` also accepts true/false (a feature
    switched on with its defaults, or off); ``one_of`` names keys of which exactly one must be
    present (a tool's kind)."""

    fields: tuple[Field, ...]
    booleans: bool = False
    one_of: tuple[str, ...] = ()
    nullable: bool = False
    hint: str = "a mapping"

    def read(self, node: yaml.Node, path: str, r: _Reader) -> Any:
        if _is_null(node):
            return self._null(node, path, r)
        if self.booleans and isinstance(node, yaml.ScalarNode) and node.tag == _BOOL_TAG:
            return bool(r.constructor.construct_object(node))
        if not isinstance(node, yaml.MappingNode):
            also = " or true/false" if self.booleans else ""
            r.problem(node, path, f"must be {self.hint}{also}, got {_what(node)}")
            return _INVALID
        by_key = {f.key: f for f in self.fields}
        result: dict[str, Any] = {}
        seen: set[str] = set()
        for key_node, value_node in _pairs(node, path, r):
            key = _plain_text(key_node)
            sub = _join(path, key)
            spec = by_key.get(key)
            if spec is None:
                near = _did_you_mean(key, by_key)
                hint = f" (did you mean {near!r}?)" if near else ""
                r.problem(key_node, sub, f"unknown key {key!r}{hint}")
                continue
            seen.add(key)
            r.lines[sub] = key_node.start_mark.line + 1
            value = spec.spec.read(value_node, sub, r)
            if not isinstance(value, _Invalid):
                result[key] = value
        missing = [spec.key for spec in self.fields if spec.required and spec.key not in seen]
        for key in missing:  # at the line that opens the section: "sql:", not its first key
            r.problem(
                r.lines.get(path, node.start_mark.line + 1),
                _join(path, key),
                f"missing required key {key!r}",
            )
        # Without a required value the section means nothing: leave it out as a whole (its
        # problems are reported), so later checks can rely on required keys being there.
        if any(spec.required and spec.key not in result for spec in self.fields):
            return _INVALID
        if self.one_of:
            present = [k for k in self.one_of if k in seen]
            if len(present) != 1:
                found = " and ".join(present) if present else "none"
                r.problem(
                    node, path, f"needs exactly one of {', '.join(self.one_of)}; found {found}"
                )
                return _INVALID
        return result

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {f.key: f.schema() for f in self.fields},
            "additionalProperties": False,
        }
        required = [f.key for f in self.fields if f.required]
        if required:
            schema["required"] = required
        if self.one_of:
            schema["oneOf"] = [{"required": [key]} for key in self.one_of]
        if self.booleans:
            schema = {"anyOf": [{"type": "boolean"}, schema]}
        return self._nullable_schema(schema)

    def doc(self) -> str:
        if not self.fields:
            return "`{}`"
        return f"{self.hint} (below){' or true/false' if self.booleans else ''}"

    def expected(self) -> str:
        return f"{self.hint}{' or true/false' if self.booleans else ''}"


_NO_DEFAULT: Final = object()


@dataclass(frozen=True, kw_only=True)
class Field:
    """One YAML key: its type, whether it must be there, its default and what it means.

    ``default`` is the effective default as JSON (for the schema and the docs); ``default_doc``
    says it in words where JSON cannot (``null`` meaning "not sent: the service's default").
    """

    key: str
    spec: _Spec
    description: str
    required: bool = False
    default: Any = _NO_DEFAULT
    default_doc: str | None = None

    def schema(self) -> dict[str, Any]:
        schema = {**self.spec.schema(), "description": self.description}
        if self.default is not _NO_DEFAULT:
            schema["default"] = self.default
        return schema

    def default_text(self) -> str:
        if self.default_doc is not None:
            return self.default_doc
        if self.required:
            return "required"
        if self.default is _NO_DEFAULT:
            return "—"
        return f"`{json.dumps(self.default)}`"


def _bounds(kind: str, low: float | None, high: float | None, *, exclusive: bool) -> str:
    def show(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    if low is not None and high is not None and not exclusive:
        return f"{kind} {show(low)} to {show(high)}"
    parts = [kind]
    if low is not None:
        parts.append(f"{'>' if exclusive else '≥'} {show(low)}")
    if high is not None:
        parts.append(f"≤ {show(high)}")
    return " ".join(parts)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _pairs(
    node: yaml.MappingNode, path: str, r: _Reader
) -> Iterable[tuple[yaml.ScalarNode, yaml.Node]]:
    """A mapping's (key, value) nodes: its own keys (a repeated one is reported), then keys
    merged in with ``<<: *anchor`` that it does not set itself."""
    seen: dict[str, int] = {}
    merged: list[tuple[yaml.ScalarNode, yaml.Node]] = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            merged.extend(_merged(value_node, path, r))
            continue
        if not isinstance(key_node, yaml.ScalarNode) or _is_null(key_node):
            r.problem(key_node, path, "keys must be plain names")
            continue
        key = _plain_text(key_node)
        if key in seen:
            r.problem(
                key_node,
                _join(path, key),
                f"key {key!r} appears twice (first on line {seen[key]})",
            )
            continue
        seen[key] = key_node.start_mark.line + 1
        yield key_node, value_node
    for key_node, value_node in merged:
        key = _plain_text(key_node)
        if key not in seen:  # the mapping's own keys win; of several merges, the first
            seen[key] = key_node.start_mark.line + 1
            yield key_node, value_node


def _merged(node: yaml.Node, path: str, r: _Reader) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
    """The pairs ``<<`` brings in: from one mapping or a list of them, merges included."""
    sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
    pairs: list[tuple[yaml.ScalarNode, yaml.Node]] = []
    for source in sources:
        if not isinstance(source, yaml.MappingNode):
            r.problem(source, path, "'<<' must merge a mapping (<<: *anchor)")
            continue
        for key_node, value_node in source.value:
            if key_node.tag == _MERGE_TAG:
                pairs.extend(_merged(value_node, path, r))
            elif isinstance(key_node, yaml.ScalarNode) and not _is_null(key_node):
                pairs.append((key_node, value_node))
    return pairs


def _json_value(node: yaml.Node, path: str, r: _Reader) -> Any:
    """Free-form YAML as JSON data: mappings with string keys, lists, scalars."""
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in _pairs(node, path, r):
            key = _plain_text(key_node)
            sub = _join(path, key)
            r.lines[sub] = key_node.start_mark.line + 1  # for problems found inside the data
            value = _json_value(value_node, sub, r)
            if not isinstance(value, _Invalid):
                result[key] = value
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, child in enumerate(node.value):
            r.lines[f"{path}[{index}]"] = child.start_mark.line + 1
            items.append(_json_value(child, f"{path}[{index}]", r))
        return [item for item in items if not isinstance(item, _Invalid)]
    assert isinstance(node, yaml.ScalarNode)
    if node.tag == _STR_TAG:
        substituted = r.substitute(node, path, str(node.value))
        return substituted if isinstance(substituted, _Invalid) else substituted[0]
    if node.tag in (_NULL_TAG, _BOOL_TAG, _INT_TAG, _FLOAT_TAG):
        value = r.constructor.construct_object(node)
        if isinstance(value, float) and not math.isfinite(value):
            r.problem(node, path, f"{node.value!r} is not a JSON number")
            return _INVALID
        return value
    # Timestamps, binary and custom tags have no JSON form: say so rather than guess.
    r.problem(node, path, f"{node.value!r} is not a JSON value (quote it to make it a string)")
    return _INVALID


# Names from the Live API, the SDK or AgentConfig that people will type, and the YAML key they
# mean. Used only for suggestions, and only when the target is a key where the typo is.
_ALIASES: Final = {
    "system_instruction": "system_prompt",
    "instructions": "system_prompt",
    "prompt": "system_prompt",
    "thinking_config": "thinking",
    "thinking_budget": "budget",
    "thinking_level": "level",
    "context_window_compression": "compression",
    "sliding_window": "target_tokens",
    "enable_affective_dialog": "affective_dialog",
    "proactivity": "proactive_audio",
    "input_transcription": "transcription",
    "output_transcription": "transcription",
    "input_audio_transcription": "transcription",
    "output_audio_transcription": "transcription",
    "history_config": "initial_history_in_client_content",
    "realtime_input_config": "vad",
    "automatic_activity_detection": "vad",
    "start_of_speech_sensitivity": "start_sensitivity",
    "end_of_speech_sensitivity": "end_sensitivity",
    "speech_config": "voice",
    "voice_name": "voice",
    "language_code": "language",
    "response_modalities": "response_modality",
    "max_duration_s": "max_call_duration_s",
    "numbers": "phone_numbers",
    "phone_number": "phone_numbers",
    "parameters_json_schema": "parameters",
    "json_body": "json",
    "body": "json",
    "time_zone": "timezone",
    "tz": "timezone",
    "dtmf_message": "dtmf",
    "dtmf_group_timeout_s": "dtmf",
    "declarations": "tools",
    "function_declarations": "tools",
}


def _snake(word: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", word).replace("-", "_").lower()


def _did_you_mean(word: str, options: Iterable[str]) -> str | None:
    """The valid key ``word`` most likely meant: a known alias, its snake_case spelling, a close
    spelling, or a key it ends with (``thinking_budget`` -> ``budget``)."""
    choices = list(options)
    snake = _snake(word)
    for candidate in (word, snake):
        if _ALIASES.get(candidate) in choices:
            return _ALIASES[candidate]
    if snake in choices:
        return snake
    close = difflib.get_close_matches(snake, choices, n=1, cutoff=0.6)
    if close:
        return close[0]
    for choice in choices:
        if snake.endswith("_" + choice):
            return choice
    return None


def _near(word: str, options: Sequence[str], *, cutoff: float) -> str | None:
    """A value ``word`` probably meant: same letters in another case, or a close spelling."""
    for option in options:
        if option.lower() == word.lower():
            return option
    by_upper = {o.upper(): o for o in options}
    close = difflib.get_close_matches(word.upper(), list(by_upper), n=1, cutoff=cutoff)
    return by_upper[close[0]] if close else None


# --------------------------------------------------------------------------------------------
# Extra checks the field table uses
# --------------------------------------------------------------------------------------------


def _check_time_zone(name: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        near = _near(name, sorted(zoneinfo.available_timezones()), cutoff=0.8)
        hint = f" (did you mean {near!r}?)" if near else ""
        return f"{name!r} is not an IANA time zone such as 'America/New_York'{hint}"
    return None


def _check_phone_number(text: str) -> str | None:
    if E164_RE.fullmatch(text):
        return None
    normalised = normalise_number(text)
    hint = f" (write {normalised!r})" if normalised else ""
    return f"must be an E.164 phone number such as '+15555550100'{hint}"


def _check_dtmf_message(text: str) -> str | None:
    # The session fills it with str.format(digits=...): any other field would fail mid-call.
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        return f"is not a valid template ({exc}); write {{{{ and }}}} for literal braces"
    if "digits" not in names:
        return "must contain {digits}"
    if names != {"digits"}:
        others = ", ".join(sorted(f"{{{n}}}" for n in names - {"digits"}))
        return f"may contain no placeholder but {{digits}} (found {others}); write {{{{ for a brace"
    return None


def _defaults(cls: Any) -> dict[str, Any]:
    """A dataclass's field defaults, so documented defaults are the code's."""
    result: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            result[f.name] = f.default
    return result


_AGENT_DEFAULTS: Final = _defaults(AgentConfig)
_CALL_DEFAULTS: Final = _defaults(CallPolicy)
_HTTP_DEFAULTS: Final = _defaults(HttpTool)
_SQL_DEFAULTS: Final = _defaults(SqlTool)
_TOOL_DEFAULTS: Final = _defaults(ToolSpec)
_NOT_SENT: Final = "not sent (service default)"
_PHONE = Text(pattern=E164_RE, hint="an E.164 phone number", check=_check_phone_number)


# --------------------------------------------------------------------------------------------
# The field tables: every key of an agent file.
# --------------------------------------------------------------------------------------------

HTTP_FIELDS: Final = (
    Field(
        key="url",
        spec=Text(pattern=_URL_RE, hint="an http:// or https:// URL"),
        required=True,
        description="Request URL. `{param}` is replaced by the (URL-encoded) argument.",
    ),
    Field(
        key="method",
        spec=Choice(values=("GET", "POST", "PUT", "PATCH", "DELETE")),
        default=_HTTP_DEFAULTS["method"],
        description="HTTP method. Only idempotent methods are retried.",
    ),
    Field(
        key="headers",
        spec=MapOf(value=Text(hint="text"), key_hint="a header name"),
        default={},
        description="Request headers; values are templates and may hold `${SECRET}` references.",
    ),
    Field(
        key="json",
        spec=Json(hint="a mapping (the JSON body)"),
        default_doc="no body",
        description="JSON request body; string values are templates (`{param}`).",
    ),
    Field(
        key="retries",
        spec=Integer(minimum=0, maximum=5),
        default=_HTTP_DEFAULTS["retries"],
        description="Extra attempts after a connection error or 5xx (idempotent methods only).",
    ),
    Field(
        key="max_response_bytes",
        spec=Integer(minimum=1, maximum=10 * 1024 * 1024),
        default=_HTTP_DEFAULTS["max_response_bytes"],
        description="Larger responses are cut off: the model's context is precious.",
    ),
    Field(
        key="select",
        spec=Text(pattern=_SELECT_RE, hint="a dotted path such as data.order", nullable=True),
        default_doc="the whole response",
        description="Dotted path into the JSON response; only that part reaches the model.",
    ),
)

SQL_FIELDS: Final = (
    Field(
        key="query",
        spec=Text(hint="one SQL statement"),
        required=True,
        description="One statement with `:name` placeholders; each must be a parameter of the "
        "tool (or bound). Writes (INSERT ... RETURNING) are allowed.",
    ),
    Field(
        key="max_rows",
        spec=Integer(minimum=1, maximum=1000),
        default=_SQL_DEFAULTS["max_rows"],
        description="At most this many rows reach the model.",
    ),
    Field(
        key="database_url",
        spec=Text(
            pattern=_DATABASE_URL_RE,
            hint="a sqlite:/// or postgresql:// URL",
            nullable=True,
        ),
        default_doc="the embedded CRM",
        description="Database to query; keep the password in `${ENV}`.",
    ),
)

TOOL_KINDS: Final = ("http", "sql", "python", "end_call", "transfer_call")

TOOL_FIELDS: Final = (
    Field(
        key="name",
        spec=Text(pattern=_FUNCTION_NAME_RE, hint="a function name (letters, digits, _ . : -)"),
        required=True,
        description="Function name the model calls; unique within the agent.",
    ),
    Field(
        key="description",
        spec=Text(hint="text"),
        required=True,
        description="What the tool does and when to use it: the model decides from this.",
    ),
    Field(
        key="parameters",
        spec=Json(
            hint="a JSON Schema object (type: object)",
            properties={
                "type": {"const": "object"},
                "properties": {"type": "object"},
                "required": {"type": "array", "items": {"type": "string"}},
            },
        ),
        default={"type": "object", "properties": {}},
        description="JSON Schema of the arguments. Bound parameters are listed here too; the "
        "model never sees them.",
    ),
    Field(
        key="bind",
        spec=MapOf(
            value=Choice(values=tuple(sorted(CONTEXT_KEYS))),
            keys=re.compile(r"[A-Za-z_][A-Za-z0-9_]*"),
            key_hint="a parameter name",
        ),
        default={},
        description="Parameters filled from trusted call context instead of by the model "
        "(`phone: caller_number`): removed from the schema the model sees.",
    ),
    Field(
        key="behavior",
        spec=Choice(values=get_args(Behavior), nullable=True),
        default_doc="the model's default",
        description="`NON_BLOCKING` lets the conversation go on while the tool runs; some "
        "models accept only one of the two.",
    ),
    Field(
        key="scheduling",
        spec=Choice(values=get_args(Scheduling)),
        default=_TOOL_DEFAULTS["scheduling"],
        description="How a NON_BLOCKING result is delivered: interrupt the model, wait until "
        "it is idle, or add it silently.",
    ),
    Field(
        key="timeout_s",
        spec=Number(minimum=0, exclusive=True, maximum=600),
        default=_TOOL_DEFAULTS["timeout_s"],
        description="The model gets an error result after this many seconds.",
    ),
    Field(
        key="http",
        spec=Section(fields=HTTP_FIELDS, hint="a mapping"),
        default_doc="—",
        description="Kind: one HTTP request.",
    ),
    Field(
        key="sql",
        spec=Section(fields=SQL_FIELDS, hint="a mapping"),
        default_doc="—",
        description="Kind: one parameterised SQL statement.",
    ),
    Field(
        key="python",
        spec=Text(pattern=_PYTHON_TARGET_RE, hint="module:function"),
        default_doc="—",
        description="Kind: `package.module:function`, sync (run in a thread) or async, called "
        "with the arguments as keywords.",
    ),
    Field(
        key="end_call",
        spec=Section(fields=(), nullable=True, hint="{}"),
        default_doc="—",
        description="Kind: hang up once the goodbye has played. Write `end_call: {}`.",
    ),
    Field(
        key="transfer_call",
        spec=Section(
            fields=(
                Field(
                    key="number",
                    spec=_PHONE,
                    required=True,
                    description="E.164 number the call moves to.",
                ),
            ),
        ),
        default_doc="—",
        description="Kind: move the call to a human (`number`).",
    ),
)

AGENT_FIELDS: Final = (
    Field(
        key="name",
        spec=Text(pattern=_NAME_RE, hint="a name (letters, digits, _ . -)"),
        default_doc="the file name without `.yaml`",
        description="Agent name, in logs, metrics, call records and the stream's `agent` "
        "parameter. Unique across files.",
    ),
    Field(
        key="default",
        spec=Flag(),
        default=False,
        description="Answer calls to numbers no agent lists. At most one agent; without one, "
        "the only agent or else the first by name.",
    ),
    Field(
        key="phone_numbers",
        spec=ListOf(item=_PHONE, unique=True),
        default=[],
        description="E.164 numbers this agent answers (matched against the webhook's `To`).",
    ),
    Field(
        key="model",
        spec=Text(pattern=re.compile(r"[^\s?&#]+"), hint="a model name"),
        default=DEFAULT_MODEL,
        description="Live API model (`models/` or the Vertex path is added on connect).",
    ),
    Field(
        key="api_version",
        spec=Choice(values=get_args(ApiVersion)),
        default=_AGENT_DEFAULTS["api_version"],
        description="Developer API version; some preview fields need `v1alpha`.",
    ),
    Field(
        key="response_modality",
        spec=Choice(values=get_args(ResponseModality)),
        default=_AGENT_DEFAULTS["response_modality"],
        description="`generationConfig.responseModalities`: what the model answers with.",
    ),
    Field(
        key="voice",
        spec=Text(hint="a voice name", nullable=True, known=KNOWN_VOICES),
        default=_AGENT_DEFAULTS["voice"],
        description="Prebuilt voice (`speechConfig.voiceConfig`); `null`: the service's.",
    ),
    Field(
        key="language",
        spec=Text(pattern=_LANGUAGE_RE, hint="a BCP-47 tag such as en-US", nullable=True),
        default_doc=_NOT_SENT,
        description="`speechConfig.languageCode`: the language the agent speaks.",
    ),
    Field(
        key="timezone",
        spec=Text(hint="an IANA time zone", check=_check_time_zone),
        default=_AGENT_DEFAULTS["timezone"],
        description="The business's time zone, for `{local_time}` in prompts and tools.",
    ),
    Field(
        key="system_prompt",
        spec=Text(hint="text"),
        required=True,
        description="`systemInstruction`, a template rendered for each call (placeholders below).",
    ),
    Field(
        key="greeting",
        spec=Text(hint="text", nullable=True),
        default_doc="none: the caller speaks first",
        description="Sent as the first user turn so the agent speaks first; a template too.",
    ),
    Field(
        key="prefetch_crm",
        spec=Flag(),
        default=False,
        description="Look the caller's number up in the CRM before the call, for "
        "`{customer.*}` placeholders.",
    ),
    Field(
        key="trust_caller_id",
        spec=Choice(values=get_args(TrustCallerId)),
        default="any",
        description="`verified`: the caller's number identifies them (CRM prefetch, tools "
        "bound to `caller_number`) only when Twilio's `StirVerstat` reports a passed "
        "STIR/SHAKEN attestation (`TN-Validation-Passed-A/B/C`); caller ID is easy to spoof.",
    ),
    Field(
        key="temperature",
        spec=Number(minimum=0.0, maximum=2.0, nullable=True),
        default_doc=_NOT_SENT,
        description="`generationConfig.temperature`.",
    ),
    Field(
        key="top_p",
        spec=Number(minimum=0.0, maximum=1.0, nullable=True),
        default_doc=_NOT_SENT,
        description="`generationConfig.topP`.",
    ),
    Field(
        key="top_k",
        spec=Integer(minimum=1, nullable=True),
        default_doc=_NOT_SENT,
        description="`generationConfig.topK`.",
    ),
    Field(
        key="max_output_tokens",
        spec=Integer(minimum=1, nullable=True),
        default_doc=_NOT_SENT,
        description="`generationConfig.maxOutputTokens`.",
    ),
    Field(
        key="seed",
        spec=Integer(minimum=-(2**31), maximum=2**31 - 1, nullable=True),
        default_doc=_NOT_SENT,
        description="`generationConfig.seed`.",
    ),
    Field(
        key="media_resolution",
        spec=Choice(values=get_args(MediaResolution), nullable=True),
        default_doc=_NOT_SENT,
        description="`generationConfig.mediaResolution`.",
    ),
    Field(
        key="thinking",
        spec=Section(
            fields=(
                Field(
                    key="budget",
                    spec=Integer(minimum=-1, nullable=True),
                    default_doc=_NOT_SENT,
                    description="`thinkingBudget` in tokens: 0 off, -1 the model decides.",
                ),
                Field(
                    key="level",
                    spec=Choice(values=get_args(ThinkingLevel), nullable=True),
                    default_doc=_NOT_SENT,
                    description="`thinkingLevel`; not together with `budget`.",
                ),
                Field(
                    key="include_thoughts",
                    spec=Flag(nullable=True),
                    default_doc=_NOT_SENT,
                    description="`includeThoughts` (never spoken to the caller).",
                ),
            ),
            nullable=True,
        ),
        default_doc=_NOT_SENT,
        description="`generationConfig.thinkingConfig`.",
    ),
    Field(
        key="affective_dialog",
        spec=Flag(nullable=True),
        default_doc=_NOT_SENT,
        description="`generationConfig.enableAffectiveDialog`: adapt tone to the caller's.",
    ),
    Field(
        key="proactive_audio",
        spec=Flag(nullable=True),
        default_doc=_NOT_SENT,
        description="`proactivity.proactiveAudio`: the model may stay silent when speech is "
        "not meant for it.",
    ),
    Field(
        key="vad",
        spec=Section(
            fields=(
                Field(
                    key="disabled",
                    spec=Flag(),
                    default=False,
                    description="true: the bridge marks caller turns itself "
                    "(`activityStart`/`activityEnd`).",
                ),
                Field(
                    key="start_sensitivity",
                    spec=Choice(values=get_args(StartSensitivity), nullable=True),
                    default_doc=_NOT_SENT,
                    description="`startOfSpeechSensitivity`.",
                ),
                Field(
                    key="end_sensitivity",
                    spec=Choice(values=get_args(EndSensitivity), nullable=True),
                    default_doc=_NOT_SENT,
                    description="`endOfSpeechSensitivity`.",
                ),
                Field(
                    key="prefix_padding_ms",
                    spec=Integer(minimum=0, nullable=True),
                    default_doc=_NOT_SENT,
                    description="`prefixPaddingMs`: speech needed before a turn starts.",
                ),
                Field(
                    key="silence_duration_ms",
                    spec=Integer(minimum=0, nullable=True),
                    default_doc=_NOT_SENT,
                    description="`silenceDurationMs`: silence that ends the caller's turn.",
                ),
            ),
        ),
        default_doc="service's automatic detection",
        description="`realtimeInputConfig.automaticActivityDetection` (server-side VAD).",
    ),
    Field(
        key="activity_handling",
        spec=Choice(values=get_args(ActivityHandling), nullable=True),
        default_doc=_NOT_SENT,
        description="`realtimeInputConfig.activityHandling`: may the caller barge in.",
    ),
    Field(
        key="turn_coverage",
        spec=Choice(values=get_args(TurnCoverage), nullable=True),
        default_doc=_NOT_SENT,
        description="`realtimeInputConfig.turnCoverage`.",
    ),
    Field(
        key="explicit_vad_signal",
        spec=Flag(nullable=True),
        default_doc=_NOT_SENT,
        description="`explicitVadSignal` (Vertex AI only).",
    ),
    Field(
        key="transcription",
        spec=Section(
            fields=(
                Field(
                    key="input",
                    spec=Flag(),
                    default=True,
                    description="`inputAudioTranscription`: what the caller said, as text.",
                ),
                Field(
                    key="output",
                    spec=Flag(),
                    default=True,
                    description="`outputAudioTranscription`: what the agent said, as text.",
                ),
            ),
        ),
        default_doc="both on",
        description="Transcripts for call records and logs.",
    ),
    Field(
        key="compression",
        spec=Section(
            fields=(
                Field(
                    key="trigger_tokens",
                    spec=Integer(minimum=1, nullable=True),
                    default_doc="service default (80% of the context)",
                    description="`contextWindowCompression.triggerTokens`.",
                ),
                Field(
                    key="target_tokens",
                    spec=Integer(minimum=1, nullable=True),
                    default_doc="service default (half the trigger)",
                    description="`slidingWindow.targetTokens`; below `trigger_tokens`.",
                ),
            ),
            booleans=True,
        ),
        default=True,
        description="`contextWindowCompression`; `false` turns it off (an audio session then "
        "ends after 15 minutes).",
    ),
    Field(
        key="session_resumption",
        spec=Section(
            fields=(
                Field(
                    key="transparent",
                    spec=Flag(nullable=True),
                    default_doc=_NOT_SENT,
                    description="`sessionResumption.transparent` (Vertex AI only).",
                ),
            ),
            booleans=True,
        ),
        default=True,
        description="`sessionResumption`: reconnect mid-call without the caller noticing.",
    ),
    Field(
        key="initial_history_in_client_content",
        spec=Flag(nullable=True),
        default_doc=_NOT_SENT,
        description="`historyConfig.initialHistoryInClientContent`.",
    ),
    Field(
        key="google_search",
        spec=Flag(),
        default=False,
        description="Built-in tool `googleSearch`.",
    ),
    Field(
        key="code_execution",
        spec=Flag(),
        default=False,
        description="Built-in tool `codeExecution`.",
    ),
    Field(
        key="url_context",
        spec=Flag(),
        default=False,
        description="Built-in tool `urlContext`.",
    ),
    Field(
        key="max_call_duration_s",
        spec=Number(minimum=0, exclusive=True, nullable=True),
        default=_CALL_DEFAULTS["max_duration_s"],
        description="The call ends after this long; `null`: no limit.",
    ),
    Field(
        key="wrap_up_before_s",
        spec=Number(minimum=0),
        default=_CALL_DEFAULTS["wrap_up_before_s"],
        description="This long before the limit, the model is told to wrap up.",
    ),
    Field(
        key="wrap_up_message",
        spec=Text(hint="text"),
        default=_CALL_DEFAULTS["wrap_up_message"],
        description="What the model is told then.",
    ),
    Field(
        key="idle_timeout_s",
        spec=Number(minimum=0, exclusive=True, nullable=True),
        default=_CALL_DEFAULTS["idle_timeout_s"],
        description="After this much caller silence the model is prompted; after as much "
        "again the call ends. `null`: never.",
    ),
    Field(
        key="idle_message",
        spec=Text(hint="text"),
        default=_CALL_DEFAULTS["idle_message"],
        description="What the model is told when the caller is silent.",
    ),
    Field(
        key="preconnect_timeout_s",
        spec=Number(minimum=0),
        default=_CALL_DEFAULTS["preconnect_timeout_s"],
        description="How long a Live session opened at the webhook waits for the media stream.",
    ),
    Field(
        key="dtmf",
        spec=Section(
            fields=(
                Field(
                    key="group_timeout_s",
                    spec=Number(minimum=0),
                    default=_CALL_DEFAULTS["dtmf_group_timeout_s"],
                    description="Keypad digits this close together are sent as one message.",
                ),
                Field(
                    key="message",
                    spec=Text(hint="text containing {digits}", check=_check_dtmf_message),
                    default=_CALL_DEFAULTS["dtmf_message"],
                    description="How typed digits reach the model; `{digits}` is replaced.",
                ),
            ),
        ),
        default_doc="see its keys",
        description="Keypad input.",
    ),
    Field(
        key="fallback",
        spec=Section(
            fields=(
                Field(
                    key="message",
                    spec=Text(hint="text", nullable=True),
                    default_doc="the bundled apology recording",
                    description="Spoken to the caller when the model cannot be reached.",
                ),
                Field(
                    key="transfer_to",
                    spec=Text(
                        pattern=E164_RE,
                        hint="an E.164 phone number",
                        check=_check_phone_number,
                        nullable=True,
                    ),
                    default_doc="hang up",
                    description="Then move the call to this number.",
                ),
            ),
        ),
        default_doc="apology, then hang up",
        description="What happens when the Live API is unreachable.",
    ),
    Field(
        key="tools",
        spec=ListOf(
            item=Section(fields=TOOL_FIELDS, one_of=TOOL_KINDS, hint="a tool mapping"),
            positions=True,
        ),
        default=[],
        description="Functions the model may call (next table).",
    ),
)

_AGENT_SECTION: Final = Section(fields=AGENT_FIELDS, hint="a mapping of agent settings")


# --------------------------------------------------------------------------------------------
# From validated data to AgentConfig
# --------------------------------------------------------------------------------------------

# Where an AgentConfig key lives in the YAML, for errors raised by the config objects.
_CONFIG_KEYS: Final = {
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
_HTTP_PARAM: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _attempt(r: _Reader, path: str, build: Callable[[], Any]) -> Any:
    """``build()``, or a problem at ``path`` if a config object refuses its values."""
    try:
        return build()
    except ConfigError as exc:
        message = str(exc)
        suffix = f" (key {exc.key!r})" if exc.key else ""
        if suffix and message.endswith(suffix):
            message = message[: -len(suffix)]
        key = path
        if exc.key:
            key = _CONFIG_KEYS.get(exc.key) or exc.key.removeprefix("call.")
            if key not in r.lines:
                key = path
        r.problem(r.line(key), key, redact(message, r.secrets))
        return _INVALID


def _given(doc: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments for the YAML keys present in ``doc`` (``mapping``: YAML -> config)."""
    return {target: doc[key] for key, target in mapping.items() if key in doc}


def _build_agent(doc: Mapping[str, Any], r: _Reader, name: str) -> AgentConfig | None:
    """The AgentConfig for one file's validated data; None (problems reported) if it has any."""
    kwargs: dict[str, Any] = _given(
        doc,
        {
            "model": "model",
            "api_version": "api_version",
            "response_modality": "response_modality",
            "voice": "voice",
            "language": "language",
            "timezone": "timezone",
            "system_prompt": "system_instruction",
            "greeting": "greeting",
            "prefetch_crm": "prefetch_crm",
            "trust_caller_id": "trust_caller_id",
            "temperature": "temperature",
            "top_p": "top_p",
            "top_k": "top_k",
            "max_output_tokens": "max_output_tokens",
            "seed": "seed",
            "media_resolution": "media_resolution",
            "affective_dialog": "enable_affective_dialog",
            "activity_handling": "activity_handling",
            "turn_coverage": "turn_coverage",
            "explicit_vad_signal": "explicit_vad_signal",
        },
    )
    kwargs["name"] = name
    kwargs["phone_numbers"] = tuple(doc.get("phone_numbers", ()))
    prefetch = bool(doc.get("prefetch_crm", False))
    for key in ("system_prompt", "greeting"):
        if isinstance(doc.get(key), str):
            for message in template_problems(doc[key], prefetch_crm=prefetch):
                r.problem(r.line(key), key, message)
    if (thinking := doc.get("thinking")) is not None:
        kwargs["thinking_config"] = _attempt(
            r,
            "thinking",
            lambda: ThinkingConfig(
                thinking_budget=thinking.get("budget"),
                include_thoughts=thinking.get("include_thoughts"),
                thinking_level=thinking.get("level"),
            ),
        )
    if "proactive_audio" in doc:
        value = doc["proactive_audio"]
        kwargs["proactivity"] = None if value is None else ProactivityConfig(value)
    if "initial_history_in_client_content" in doc:
        value = doc["initial_history_in_client_content"]
        kwargs["history_config"] = None if value is None else HistoryConfig(value)
    if "vad" in doc:
        kwargs["vad"] = _attempt(r, "vad", lambda: VadConfig(**doc["vad"]))
    transcription = doc.get("transcription", {})
    kwargs["input_transcription"] = transcription.get("input", True)
    kwargs["output_transcription"] = transcription.get("output", True)
    if "compression" in doc:
        kwargs["context_window_compression"] = _attempt(
            r, "compression", lambda: _compression(doc["compression"])
        )
    if "session_resumption" in doc:
        resumption = doc["session_resumption"]
        kwargs["session_resumption"] = (
            None
            if resumption is False
            else SessionResumptionConfig()
            if resumption is True
            else SessionResumptionConfig(**resumption)
        )
    kwargs["call"] = _attempt(r, "", lambda: _call_policy(doc))
    if "fallback" in doc:
        kwargs["fallback"] = _attempt(r, "fallback", lambda: FallbackConfig(**doc["fallback"]))
    specs = _build_tools(doc.get("tools", []), r)
    kwargs["tool_specs"] = tuple(spec for spec, _ in specs)
    kwargs["tools"] = _attempt(
        r,
        "tools",
        lambda: ToolsConfig(
            function_declarations=tuple(declaration for _, declaration in specs),
            google_search=doc.get("google_search", False),
            code_execution=doc.get("code_execution", False),
            url_context=doc.get("url_context", False),
        ),
    )
    if r.problems or any(isinstance(v, _Invalid) for v in kwargs.values()):
        return None
    agent = _attempt(r, "", lambda: AgentConfig(**kwargs))
    return None if isinstance(agent, _Invalid) else cast(AgentConfig, agent)


def _compression(value: bool | Mapping[str, Any]) -> ContextWindowCompressionConfig | None:
    if value is False:
        return None
    if value is True:
        return ContextWindowCompressionConfig()
    return ContextWindowCompressionConfig(
        trigger_tokens=value.get("trigger_tokens"),
        sliding_window=SlidingWindow(target_tokens=value.get("target_tokens")),
    )


def _call_policy(doc: Mapping[str, Any]) -> CallPolicy:
    kwargs = _given(
        doc,
        {
            "max_call_duration_s": "max_duration_s",
            "wrap_up_before_s": "wrap_up_before_s",
            "wrap_up_message": "wrap_up_message",
            "idle_timeout_s": "idle_timeout_s",
            "idle_message": "idle_message",
            "preconnect_timeout_s": "preconnect_timeout_s",
        },
    )
    kwargs.update(
        _given(doc.get("dtmf", {}), {"group_timeout_s": "dtmf_group_timeout_s",
                                     "message": "dtmf_message"})
    )  # fmt: skip
    return CallPolicy(**kwargs)


def _build_tools(
    tools: Sequence[Mapping[str, Any] | None], r: _Reader
) -> list[tuple[ToolSpec, FunctionDeclaration]]:
    """Each valid tool's ToolSpec and the declaration the model sees; problems for the rest."""
    built: list[tuple[ToolSpec, FunctionDeclaration]] = []
    names: dict[str, str] = {}
    end_call: str | None = None
    for index, tool in enumerate(tools):
        path = f"tools[{index}]"
        if tool is None:  # its problems are reported already
            continue
        name = tool["name"]
        if name in names:
            r.problem(
                r.line(f"{path}.name"), f"{path}.name", f"tool {name!r} is already {names[name]}"
            )
            continue
        names[name] = f"defined as {path}"
        if "end_call" in tool:
            if end_call is not None:
                r.problem(
                    r.line(f"{path}.end_call"),
                    f"{path}.end_call",
                    f"only one end_call tool per agent ({end_call!r} is one already)",
                )
                continue
            end_call = name
        result = _build_tool(tool, path, r)
        if result is not None:
            built.append(result)
    return built


def _build_tool(
    tool: Mapping[str, Any], path: str, r: _Reader
) -> tuple[ToolSpec, FunctionDeclaration] | None:
    before = len(r.problems)
    parameters = tool.get("parameters", {"type": "object", "properties": {}})
    properties = _check_parameters(parameters, f"{path}.parameters", r)
    bind: dict[str, str] = dict(tool.get("bind", {}))
    for parameter in bind:
        if properties is not None and parameter not in properties:
            known = ", ".join(sorted(properties)) or "none"
            r.problem(
                r.line(f"{path}.bind.{parameter}"),
                f"{path}.bind.{parameter}",
                f"{parameter!r} is not a parameter of this tool (its parameters: {known}); "
                "list it under parameters.properties",
            )
    kind = _tool_kind(tool, path, r, available=set(properties or ()))
    if kind is None or len(r.problems) > before or properties is None:
        return None
    visible = _without_bound(parameters, bind)
    spec = ToolSpec(
        name=tool["name"],
        description=tool["description"],
        kind=kind,
        parameters=copy.deepcopy(parameters),
        bind=bind,
        behavior=tool.get("behavior"),
        scheduling=tool.get("scheduling", _TOOL_DEFAULTS["scheduling"]),
        timeout_s=float(tool.get("timeout_s", _TOOL_DEFAULTS["timeout_s"])),
    )
    declaration = _attempt(
        r,
        f"{path}.name",
        lambda: FunctionDeclaration(
            name=spec.name,
            description=spec.description,
            parameters_json_schema=visible,
            behavior=spec.behavior,
        ),
    )
    if isinstance(declaration, _Invalid):
        return None
    if r.check_tools is not None:
        for message in r.check_tools([spec]):
            r.problem(r.line(path), path, message)
        if len(r.problems) > before:
            return None
    return spec, declaration


def _check_parameters(parameters: Any, path: str, r: _Reader) -> dict[str, Any] | None:
    """The schema's properties, or None after reporting why it is not an object schema."""
    mistakes = json_schema_problems(parameters)
    for where, message in mistakes:
        key = path + where
        r.problem(r.line(key), key, f"not a valid JSON Schema: {message}")
    if mistakes:
        # Reported; the parameter names still serve the placeholder checks, if readable.
        properties = parameters.get("properties")
        readable = isinstance(properties, dict) and all(
            isinstance(v, dict) for v in properties.values()
        )
        return properties if readable else None
    line = r.line(path)
    if parameters.get("type") != "object":
        r.problem(line, path, "must be an object schema: add 'type: object'")
        return None
    properties = parameters.get("properties", {})
    if not isinstance(properties, dict) or not all(
        isinstance(v, dict) for v in properties.values()
    ):
        r.problem(line, f"{path}.properties", "must map each parameter name to its schema")
        return None
    required = parameters.get("required", [])
    if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
        r.problem(line, f"{path}.required", "must be a list of parameter names")
        return None
    for name in required:
        if name not in properties:
            r.problem(line, f"{path}.required", f"{name!r} is required but not in properties")
    return properties


def json_schema_problems(schema: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Why ``schema`` is not a valid JSON Schema (draft 2020-12), as (path inside it, message)
    pairs; empty if it is one. A tool's ``parameters`` are checked here, at load, so
    ``type: strng`` or ``minimum: "five"`` is a problem in the file, not a surprise mid-call.

    ``check_schema`` decides; when it refuses, every error against the meta-schema is listed
    (it raises only the first), so a file is fixed in one pass.
    """
    try:
        Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError:
        pass
    else:
        return []
    meta = Draft202012Validator(
        Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    problems: list[tuple[str, str]] = []
    for error in meta.iter_errors(schema):
        error = _specific(error)
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        message = error.message
        if error.validator == "enum" and isinstance(error.instance, str):
            allowed = [str(v) for v in cast(Sequence[Any], error.validator_value)]
            near = _near(error.instance, allowed, cutoff=0.6)
            hint = f" (did you mean {near!r}?)" if near else ""
            message = f"{error.instance!r} is not one of {', '.join(allowed)}{hint}"
        problems.append((where, message))
    return sorted(problems)


def _specific(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """The error that says what is wrong. ``type: strng`` fails an ``anyOf`` ("not valid under
    any of the given schemas"); inside it, the failed ``enum`` of type names is the useful part
    (for ``type: [string, nul]``, the one for the wrong item)."""
    enums = [e for e in error.context or () if e.validator == "enum"]
    named = [e for e in enums if isinstance(e.instance, str)]
    return named[-1] if named else error


def _without_bound(parameters: Mapping[str, Any], bind: Mapping[str, str]) -> dict[str, Any]:
    """The schema the model sees: bound parameters removed from properties and required."""
    visible = copy.deepcopy(dict(parameters))
    visible["properties"] = {
        name: schema for name, schema in visible.get("properties", {}).items() if name not in bind
    }
    if "required" in visible:
        required = [name for name in visible["required"] if name not in bind]
        if required:
            visible["required"] = required
        else:
            del visible["required"]
    return visible


def _tool_kind(
    tool: Mapping[str, Any], path: str, r: _Reader, *, available: set[str]
) -> ToolKind | None:
    """The tool's kind object, after checking that every placeholder is a parameter."""
    if "sql" in tool:
        sql = tool["sql"]
        key = f"{path}.sql.query"
        # The executor's own scanner: what passes here is what it runs, with these parameters.
        parsed = parse_query(sql["query"])
        if parsed.statements != 1:
            r.problem(r.line(key), key, "must be a single SQL statement")
        missing = sorted(set(parsed.names) - available)
        if missing:
            r.problem(
                r.line(key),
                key,
                f"placeholder{'s' if len(missing) > 1 else ''} "
                f"{', '.join(':' + m for m in missing)} not among the tool's parameters",
            )
        return SqlTool(
            query=sql["query"],
            max_rows=sql.get("max_rows", _SQL_DEFAULTS["max_rows"]),
            database_url=sql.get("database_url"),
        )
    if "http" in tool:
        http = tool["http"]
        templates = [("url", http["url"])]
        templates += [(f"headers.{k}", v) for k, v in http.get("headers", {}).items()]
        templates += [("json", v) for v in _strings(http.get("json"))]
        for where, text in templates:
            key = f"{path}.http.{where}"
            for name in sorted(set(_HTTP_PARAM.findall(text)) - available):
                r.problem(r.line(key), key, f"{{{name}}} is not one of the tool's parameters")
        return HttpTool(
            url=http["url"],
            method=http.get("method", _HTTP_DEFAULTS["method"]),
            headers=dict(http.get("headers", {})),
            json_body=http.get("json"),
            retries=http.get("retries", _HTTP_DEFAULTS["retries"]),
            max_response_bytes=http.get("max_response_bytes", _HTTP_DEFAULTS["max_response_bytes"]),
            select=http.get("select"),
        )
    if "python" in tool:
        return PythonTool(target=tool["python"])
    if "end_call" in tool:
        return EndCallTool()
    if "transfer_call" in tool:
        return TransferCallTool(number=tool["transfer_call"]["number"])
    return None  # the field table already reported "needs exactly one of"


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------

_Loader: Final[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
) -> tuple[_AgentFile | None, _Reader]:
    r = _Reader(file=_display(path), env=env, check_tools=check_tools, check_agent=check_agent)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        r.problem(None, None, f"cannot read the file: {exc}")
        return None, r
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        r.problem(mark.line + 1 if mark else None, None, f"not valid YAML: {detail}")
        return None, r
    except yaml.YAMLError as exc:
        r.problem(None, None, f"not valid YAML: {exc}")
        return None, r
    if root is None:
        r.problem(1, None, "the file is empty (an agent needs at least a system_prompt)")
        return None, r
    r.lines[""] = root.start_mark.line + 1
    doc = _AGENT_SECTION.read(root, "", r)
    if isinstance(doc, _Invalid) or doc is None:
        if not r.problems:
            r.problem(root, None, "an agent file must be a mapping of settings")
        return None, r
    name = doc.get("name", path.stem)
    if "name" not in r.lines and not _NAME_RE.fullmatch(name):
        r.problem(root, "name", f"file name {path.stem!r} is not a valid agent name: set 'name'")
        return None, r
    agent = _build_agent(doc, r, name)
    if agent is None:
        return None, r
    if check_agent is not None and isinstance(
        _attempt(r, "", lambda: check_agent(agent)), _Invalid
    ):
        return None, r
    return _AgentFile(agent, r.file, bool(doc.get("default", False)), dict(r.lines)), r


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
        agent_file, reader = _read_file(file, env, check_tools, check_agent)
        problems.extend(reader.problems)
        secrets |= reader.secrets
        if agent_file is not None:
            loaded.append(agent_file)
    problems.extend(_cross_file_problems(loaded))
    if problems:
        # In reading order: file by file, top to bottom (sort is stable for one line).
        order = {_display(file): index for index, file in enumerate(files)}
        problems.sort(key=lambda p: (order.get(p.file or "", -1), p.line or 0))
        # A substituted value may have slipped into a message through a config object's error.
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
# Prompt templates
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallContext:
    """What is known about a call when its agent is rendered (all optional: missing values
    render as ``unknown``). ``customer`` is the CRM's row for the caller, if prefetched."""

    caller_number: str | None = None
    called_number: str | None = None
    call_sid: str | None = None
    now: datetime | None = None  # None: the current time; naive times are taken as UTC
    customer: Mapping[str, Any] | None = None


# {{ and }} are literal braces; {name} or {customer.field} a placeholder; any other {...} text.
_TEMPLATE_RE: Final = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_PLACEHOLDER_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?")
_FORMAT_SPEC_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.\[\]]*\s*[!:\[]")


def template_problems(template: str, *, prefetch_crm: bool) -> list[str]:
    """Why ``template`` would not render as its author expects (unknown placeholders, format
    specs, ``{customer.*}`` without ``prefetch_crm``); empty if it is fine."""
    problems: list[str] = []
    known = [*TEMPLATE_KEYS, *(f"customer.{f}" for f in CUSTOMER_FIELDS)]
    for match in _TEMPLATE_RE.finditer(template):
        inner = match.group(1)
        if inner is None:
            continue
        if _PLACEHOLDER_RE.fullmatch(inner):
            if inner not in known:
                near = difflib.get_close_matches(inner, known, n=1, cutoff=0.6)
                hint = f" (did you mean {{{near[0]}}}?)" if near else ""
                problems.append(
                    f"unknown placeholder {{{inner}}}{hint}; known: "
                    f"{', '.join('{' + k + '}' for k in TEMPLATE_KEYS)}, {{customer.<field>}} "
                    f"with fields {', '.join(CUSTOMER_FIELDS)}; write {{{{ and }}}} for a brace"
                )
            elif inner.startswith("customer.") and not prefetch_crm:
                problems.append(
                    f"{{{inner}}} needs 'prefetch_crm: true' (otherwise it is always {UNKNOWN!r})"
                )
        elif _FORMAT_SPEC_RE.match(inner):
            problems.append(
                f"{{{inner}}}: format specs, conversions and indexing are not supported; write "
                "{{ and }} for literal braces"
            )
    return problems


def format_local_time(now: datetime, timezone: str) -> str:
    """``now`` in ``timezone`` as people say it: ``Tuesday 14 May 2024, 15:05 EDT
    (America/New_York)``. Naive datetimes are taken as UTC."""
    zone = zoneinfo.ZoneInfo(timezone)
    local = (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(zone)
    abbreviation = local.tzname() or timezone
    place = "" if abbreviation == timezone else f" ({timezone})"
    return f"{local:%A} {local.day} {local:%B %Y, %H:%M} {abbreviation}{place}"


def template_values(agent: AgentConfig, context: CallContext) -> dict[str, str]:
    """The values of ``TEMPLATE_KEYS`` for one call (``unknown`` where not known). The keys in
    ``agent.config.tools.CONTEXT_KEYS`` are the same values tools can be bound to."""
    now = context.now or datetime.now(UTC)
    zone = zoneinfo.ZoneInfo(agent.timezone)
    local = (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(zone)
    return {
        "caller_number": _value(context.caller_number),
        "called_number": _value(context.called_number),
        "call_sid": _value(context.call_sid),
        "agent": agent.name,
        "local_time": format_local_time(now, agent.timezone),
        "local_date": local.date().isoformat(),
        "timezone": agent.timezone,
    }


def render_template(
    template: str, values: Mapping[str, str], customer: Mapping[str, Any] | None = None
) -> str:
    """``template`` with each ``{name}`` from ``values`` and each ``{customer.field}`` from
    ``customer`` (by key, never by attribute). Unknown or missing values render as ``unknown``;
    text in braces that is not a placeholder (JSON, ``{x:>9}``) is left as written. Never raises.
    """

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        inner = match.group(1)
        if not _PLACEHOLDER_RE.fullmatch(inner):
            return token
        root, _, leaf = inner.partition(".")
        if not leaf:
            return values.get(root, UNKNOWN)
        if root == "customer" and customer is not None:
            return _value(customer.get(leaf))
        return UNKNOWN

    return _TEMPLATE_RE.sub(replace, template)


def render_for_call(agent: AgentConfig, context: CallContext) -> AgentConfig:
    """A copy of ``agent`` whose system instruction and greeting are rendered for this call.
    The copy is what the call uses from then on; the registry's agent stays a template."""
    values = template_values(agent, context)
    system = agent.system_instruction
    greeting = agent.greeting
    rendered_system = None if system is None else render_template(system, values, context.customer)
    rendered_greeting = (
        None if greeting is None else render_template(greeting, values, context.customer)
    )
    if rendered_system == system and rendered_greeting == greeting:
        return agent
    return dataclasses.replace(
        agent, system_instruction=rendered_system, greeting=rendered_greeting
    )


def _value(raw: object) -> str:
    """A call or CRM value as one short line of prompt text; ``unknown`` if missing or not a
    plain value (objects are never turned into text: their ``str`` is not ours to call)."""
    if raw is True or raw is False:
        return "yes" if raw else "no"
    if type(raw) not in (str, int, float):  # exact types: a subclass could override __str__
        return UNKNOWN
    text = " ".join(str(raw).split())[:_MAX_VALUE_CHARS]
    return text or UNKNOWN


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
# JSON Schema and the documentation table, from the same field table
# --------------------------------------------------------------------------------------------


def agent_json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of an agent file, for editors (``agent schema``)."""
    schema = _AGENT_SECTION.schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Voice agent",
        "description": "One voice agent of the Twilio <-> Gemini Live bridge (one YAML file). "
        "String values may use ${ENV_VAR} or ${ENV_VAR:-default}.",
        **schema,
    }


@dataclass(frozen=True, slots=True)
class FieldDoc:
    """One row of the README's field table."""

    key: str
    type: str
    default: str
    description: str


def field_reference(fields: Sequence[Field] = AGENT_FIELDS, prefix: str = "") -> list[FieldDoc]:
    """Every key of ``fields`` and their sections' keys (``vad.silence_duration_ms``), in
    table order; tools' keys are listed by :data:`TOOL_FIELDS` with ``prefix='tools[].'``."""
    rows: list[FieldDoc] = []
    for f in fields:
        key = prefix + f.key
        kind = f.spec.doc() + (" or `null`" if f.spec.nullable else "")
        rows.append(FieldDoc(key, kind, f.default_text(), f.description))
        if isinstance(f.spec, Section) and f.spec.fields:
            rows.extend(field_reference(f.spec.fields, key + "."))
    return rows


def markdown_reference() -> str:
    """The README's field tables (agent keys, then tool keys) as Markdown."""
    out: list[str] = []
    for title, rows in (
        ("Agent file", field_reference()),
        ("Each entry of `tools`", field_reference(TOOL_FIELDS, "")),
    ):
        out.append(f"#### {title}\n")
        out.append("| key | type | default | meaning |")
        out.append("|-----|------|---------|---------|")
        for row in rows:
            cells = (f"`{row.key}`", row.type, row.default, row.description)
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out)
