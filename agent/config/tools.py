"""What a business configures for each tool an agent may call: validated, frozen data.

A :class:`ToolSpec` says what the model sees (name, description, JSON-schema parameters, blocking
or not) and how the bridge runs it (``kind``: an HTTP request, one SQL query, a Python function,
or a built-in such as hanging up). ``bind`` fills parameters from trusted call context (the
caller's number, the CallSid): those parameters are removed from the schema the model sees and
any value the model sends for them is ignored, so a caller cannot talk the model into looking up
someone else's account.

:class:`ToolEntry` is one entry of an agent file's ``tools`` list: the same fields, with the kind
given as one key (``http:``, ``sql:``, ``python:``, ``end_call:``, ``transfer_call:``,
``hand_off:``) and the
checks across fields (placeholders, bindings) a file needs. Executing a spec is
``agent.tools``' job; this module only describes and validates.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import BeforeValidator, Field, Strict, ValidationError, WrapValidator, model_validator
from pydantic_core import InitErrorDetails

from agent.config.fields import (
    AgentName,
    DatabaseUrl,
    Flag,
    FunctionName,
    HttpUrl,
    JsonObject,
    Loc,
    ParameterName,
    PhoneNumber,
    PythonTarget,
    SelectPath,
    Shown,
    Text,
    TextRule,
    config_model,
    json_schema_problems,
    refuse,
    with_problems,
)

Behavior = Literal["BLOCKING", "NON_BLOCKING"]
Scheduling = Literal["INTERRUPT", "WHEN_IDLE", "SILENT"]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
ContextKey = Literal[
    "agent", "call_sid", "called_number", "caller_number", "local_time", "local_date"
]
"""Trusted values a parameter may be bound to (see :attr:`ToolSpec.bind`)."""
CONTEXT_KEYS: Final = frozenset(get_args(ContextKey))
#: The keys of a tool entry that say what kind of tool it is; exactly one per tool.
TOOL_KINDS: Final = (
    "http",
    "sql",
    "python",
    "end_call",
    "transfer_call",
    "hand_off",
    "press_keys",
)


def _checked_schema(value: Any, handler: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """The schema (a private copy), after the JSON Schema meta-schema accepted it."""
    schema = handler(value)
    problems = json_schema_problems(schema)
    if problems:
        raise ValidationError.from_exception_data(
            "parameters",
            [InitErrorDetails(type=refuse(m), loc=loc, input=value) for loc, m in problems],
        )
    return schema


ParametersSchema = Annotated[JsonObject, WrapValidator(_checked_schema)]
ToolTimeout = Annotated[float, Strict(), Field(gt=0, le=600)]
Bindings = Mapping[ParameterName, ContextKey]


def _empty_parameters() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


@config_model("http")
class HttpTool:
    """One HTTP request. ``url`` and string values in ``headers``/``json_body`` are templates
    (``{order_id}``); arguments in the URL are URL-encoded. Only idempotent methods retry."""

    url: HttpUrl = Field(
        description="Request URL. `{param}` is replaced by the (URL-encoded) argument."
    )
    method: HttpMethod = Field(
        default="GET", description="HTTP method. Only idempotent methods are retried."
    )
    headers: Annotated[Mapping[str, Text], Shown(type="mapping of a header name to text")] = Field(
        default_factory=dict,
        json_schema_extra={"default": {}},
        description="Request headers; values are templates and may hold `${SECRET}` references.",
    )
    json_body: Annotated[JsonObject | None, Shown("no body", type="a mapping (the JSON body)")] = (
        Field(
            default=None,
            validation_alias="json",
            description="JSON request body; string values are templates (`{param}`).",
        )
    )
    retries: Annotated[int, Strict(), Field(ge=0, le=5)] = Field(
        default=0,
        description="Extra attempts after a connection error or 5xx (idempotent methods only).",
    )
    max_response_bytes: Annotated[int, Strict(), Field(ge=1, le=10 * 1024 * 1024)] = Field(
        default=64 * 1024,
        description="Larger responses are cut off: the model's context is precious.",
    )
    select: Annotated[SelectPath | None, Shown("the whole response")] = Field(
        default=None,
        description="Dotted path into the JSON response; only that part reaches the model.",
    )


@config_model("sql")
class SqlTool:
    """One parameterised query (``:name`` placeholders) against ``DATABASE_URL`` or the CRM."""

    query: Annotated[str, TextRule(hint="one SQL statement")] = Field(
        description="One statement with `:name` placeholders; each must be a parameter of the "
        "tool (or bound). Writes (INSERT ... RETURNING) are allowed."
    )
    max_rows: Annotated[int, Strict(), Field(ge=1, le=1000)] = Field(
        default=20, description="At most this many rows reach the model."
    )
    database_url: Annotated[DatabaseUrl | None, Shown("the embedded CRM")] = Field(
        default=None, description="Database to query; keep the password in `${ENV}`."
    )


@config_model("python")
class PythonTool:
    """``module:function``, sync (run in a worker process, killed if the call is cancelled) or
    async, called with the arguments."""

    target: PythonTarget


@config_model("end_call")
class EndCallTool:
    """Built-in: let the goodbye finish playing, then hang up through Twilio's REST API."""


@config_model("transfer_call")
class TransferCallTool:
    """Built-in: move the call to ``number`` (a REST call update with ``<Dial>``)."""

    number: PhoneNumber = Field(description="E.164 number the call moves to.")
    announce: Flag = Field(
        default=True,
        description='Tell the caller before transferring: the bundled recording "Putting you '
        "through now. Please hold.\" plays once the model's turn has, before the call moves "
        "(even when the model calls the tool before saying anything).",
    )
    announcement: Annotated[Text | None, Shown("the bundled recording")] = Field(
        default=None,
        description="Say this instead (Twilio's text-to-speech, as the call moves: the bridge "
        "cannot speak your text itself). Ignored with `announce: false`.",
    )
    warm: Flag = Field(
        default=False,
        description="Warm transfer: the caller hears hold music while `number` is dialled; the "
        "person who answers hears the model's `summary` of the call, then the two are joined "
        "(a Twilio Conference). If nobody answers, the agent is back with the caller and says so.",
    )
    ring_timeout_s: Annotated[int, Strict(), Field(ge=5, le=120)] = Field(
        default=25,
        description="Warm transfer: how long `number` rings before it counts as unanswered.",
    )


@config_model("hand_off")
class HandOffTool:
    """Built-in: another agent takes the call over, in the same call: its instructions and
    tools replace these (a mid-session ``contextUpdate`` where the model takes one, else a
    reconnect that resumes the conversation). The call keeps its model, voice and call
    settings (timers, limits, fallback): those of the agent that answered."""

    agent: AgentName = Field(description="The agent (its `name`) that takes the call over.")


@config_model("press_keys")
class PressKeysTool:
    """Built-in: press keys on the line (an IVR's menu), as in-band DTMF tones in the audio the
    agent sends (see :mod:`agent.audio.dtmf` for why not through Twilio's REST API)."""


#: The parameters a ``press_keys`` tool takes when its entry declares none: the model says
#: which keys.
PRESS_KEYS_PARAMETERS: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "digits": {
            "type": "string",
            "description": "The keys to press, in order: 0-9, * and # (A-D on some systems).",
        }
    },
    "required": ["digits"],
}

#: The parameters a warm ``transfer_call`` takes when its entry declares none: the model's
#: summary, said to the person who answers before the caller is joined.
WARM_TRANSFER_PARAMETERS: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "summary": {
            "type": "string",
            "description": "For the colleague who takes the call, in a sentence or two: who is "
            "calling, what they want, and what you found out.",
        }
    },
    "required": ["summary"],
}

ToolKind = (
    HttpTool | SqlTool | PythonTool | EndCallTool | TransferCallTool | HandOffTool | PressKeysTool
)


@config_model("tool_specs")
class ToolSpec:
    """One function the model may call, and how to run it."""

    name: FunctionName
    description: Text
    kind: ToolKind
    parameters: ParametersSchema = dataclasses.field(default_factory=_empty_parameters)
    bind: Bindings = dataclasses.field(default_factory=dict)  # parameter -> context key
    behavior: Behavior | None = None  # None: the model's default
    scheduling: Scheduling = "WHEN_IDLE"  # how a NON_BLOCKING result is delivered
    timeout_s: ToolTimeout = 10.0

    def visible_parameters(self) -> dict[str, Any]:
        """The schema the model sees: bound parameters removed from properties and required."""
        visible = dict(self.parameters)
        properties = visible.get("properties", {})
        visible["properties"] = {k: v for k, v in properties.items() if k not in self.bind}
        if "required" in visible:
            required = [name for name in visible["required"] if name not in self.bind]
            if required:
                visible["required"] = required
            else:
                del visible["required"]
        return visible


# --------------------------------------------------------------------------------------------
# A tool as an agent file writes it
# --------------------------------------------------------------------------------------------

_HTTP_PARAM: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _switch_on(value: Any) -> Any:
    # ``end_call: null`` says "this kind" as well as ``end_call: {}``.
    return {} if value is None else value


def _given(value: Any) -> Any:
    # A kind's key is what makes the tool that kind: it needs its settings, not null.
    if value is None:
        raise refuse("must not be null: give its settings, or leave the key out")
    return value


@config_model(
    kw_only=True, json_schema_extra={"oneOf": [{"required": [kind]} for kind in TOOL_KINDS]}
)
class ToolEntry:
    """One entry of an agent file's ``tools``; :meth:`spec` is the :class:`ToolSpec` it means."""

    name: FunctionName = Field(
        description="Function name the model calls; unique within the agent."
    )
    description: Text = Field(
        description="What the tool does and when to use it: the model decides from this."
    )
    parameters: Annotated[ParametersSchema, Shown(type="a JSON Schema object (type: object)")] = (
        Field(
            default_factory=_empty_parameters,
            json_schema_extra={"default": _empty_parameters()},
            description="JSON Schema of the arguments. Bound parameters are listed here too; the "
            "model never sees them.",
        )
    )
    bind: Bindings = Field(
        default_factory=dict,
        json_schema_extra={"default": {}},
        description="Parameters filled from trusted call context instead of by the model "
        "(`phone: caller_number`): removed from the schema the model sees.",
    )
    behavior: Annotated[Behavior | None, Shown("the model's default")] = Field(
        default=None,
        description="`NON_BLOCKING` lets the conversation go on while the tool runs; some "
        "models accept only one of the two.",
    )
    scheduling: Scheduling = Field(
        default="WHEN_IDLE",
        description="How a NON_BLOCKING result is delivered: interrupt the model, wait until "
        "it is idle, or add it silently.",
    )
    timeout_s: ToolTimeout = Field(
        default=10.0, description="The model gets an error result after this many seconds."
    )
    http: Annotated[
        HttpTool | None, BeforeValidator(_given, json_schema_input_type=HttpTool), Shown("—")
    ] = Field(default=None, description="Kind: one HTTP request.")
    sql: Annotated[
        SqlTool | None, BeforeValidator(_given, json_schema_input_type=SqlTool), Shown("—")
    ] = Field(default=None, description="Kind: one parameterised SQL statement.")
    python: Annotated[
        PythonTarget | None,
        BeforeValidator(_given, json_schema_input_type=PythonTarget),
        Shown("—"),
    ] = Field(
        default=None,
        description="Kind: `package.module:function`, sync (run in a worker process, killed "
        "if the call is cancelled) or async, called with the arguments as keywords.",
    )
    end_call: Annotated[
        EndCallTool | None,
        BeforeValidator(_switch_on, json_schema_input_type=EndCallTool | None),
        Shown("—"),
    ] = Field(
        default=None, description="Kind: hang up once the goodbye has played. Write `end_call: {}`."
    )
    transfer_call: Annotated[
        TransferCallTool | None,
        BeforeValidator(_given, json_schema_input_type=TransferCallTool),
        Shown("—"),
    ] = Field(default=None, description="Kind: move the call to a human (`number`).")
    hand_off: Annotated[
        HandOffTool | None,
        BeforeValidator(_given, json_schema_input_type=HandOffTool),
        Shown("—"),
    ] = Field(
        default=None,
        description="Kind: another agent (`agent`) takes the call over, its instructions and "
        "tools replacing these, in the same call.",
    )
    press_keys: Annotated[
        PressKeysTool | None,
        BeforeValidator(_switch_on, json_schema_input_type=PressKeysTool | None),
        Shown("—"),
    ] = Field(
        default=None,
        description="Kind: press keys (DTMF tones) for an IVR menu; the model gives `digits`. "
        "Write `press_keys: {}`.",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _across_fields(cls, value: Any, handler: Callable[[Any], ToolEntry]) -> ToolEntry:
        return with_problems(handler, value, tool_problems(value))

    def spec(self) -> ToolSpec:
        """The executable tool this entry describes."""
        kind: ToolKind
        parameters = self.parameters
        if self.python is not None:
            kind = PythonTool(self.python)
        elif self.press_keys is not None:
            kind = self.press_keys
            if parameters == _empty_parameters():
                parameters = PRESS_KEYS_PARAMETERS
        elif self.transfer_call is not None and self.transfer_call.warm:
            kind = self.transfer_call
            if parameters == _empty_parameters():
                parameters = WARM_TRANSFER_PARAMETERS
        else:
            kind = self.http or self.sql or self.transfer_call or self.hand_off or EndCallTool()
        return ToolSpec(
            name=self.name,
            description=self.description,
            kind=kind,
            parameters=parameters,
            bind=self.bind,
            behavior=self.behavior,
            scheduling=self.scheduling,
            timeout_s=self.timeout_s,
        )


def tool_problems(tool: Any) -> list[tuple[Loc, str]]:
    """What is wrong across one tool entry's fields, read from the raw entry (so it is found
    whatever its fields' own problems): its kind, its parameter schema's shape, and bindings
    and placeholders that name no parameter."""
    if not isinstance(tool, Mapping):
        return []
    problems: list[tuple[Loc, str]] = []
    kinds = [kind for kind in TOOL_KINDS if kind in tool]
    if len(kinds) != 1:
        found = " and ".join(kinds) if kinds else "none"
        problems.append(((), f"needs exactly one of {', '.join(TOOL_KINDS)}; found {found}"))
    properties = _parameter_names(tool.get("parameters", _empty_parameters()), problems)
    bind = tool.get("bind")
    if isinstance(bind, Mapping) and properties is not None:
        for parameter in bind:
            if parameter not in properties:
                known = ", ".join(sorted(properties)) or "none"
                problems.append(
                    (
                        ("bind", parameter),
                        f"{parameter!r} is not a parameter of this tool (its parameters: "
                        f"{known}); list it under parameters.properties",
                    )
                )
    problems.extend(_placeholder_problems(tool, set(properties or ())))
    return problems


def _parameter_names(parameters: Any, problems: list[tuple[Loc, str]]) -> set[str] | None:
    """The schema's property names, or None after noting why it is not an object schema. A
    schema JSON Schema itself refuses is reported by the field; only its names are read."""
    if not isinstance(parameters, Mapping):
        return None
    properties = parameters.get("properties", {})
    readable = isinstance(properties, Mapping) and all(
        isinstance(v, Mapping) for v in properties.values()
    )
    if json_schema_problems(parameters):
        return set(properties) if readable else None
    if parameters.get("type") != "object":
        problems.append((("parameters",), "must be an object schema: add 'type: object'"))
        return None
    if not readable:
        problems.append(
            (("parameters", "properties"), "must map each parameter name to its schema")
        )
        return None
    required = parameters.get("required", [])
    if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
        problems.append((("parameters", "required"), "must be a list of parameter names"))
        return None
    for name in required:
        if name not in properties:
            problems.append(
                (("parameters", "required"), f"{name!r} is required but not in properties")
            )
    return set(properties)


def _placeholder_problems(tool: Mapping[str, Any], available: set[str]) -> list[tuple[Loc, str]]:
    """Placeholders in the kind's query or templates that are not among the parameters."""
    # Imported here: agent.tools imports this module, and the scanner is agent.tools' own.
    from agent.tools.sql_params import parse_query

    problems: list[tuple[Loc, str]] = []
    sql = tool.get("sql")
    if isinstance(sql, Mapping) and isinstance(sql.get("query"), str):
        # The executor's own scanner: what passes here is what it runs, with these parameters.
        parsed = parse_query(sql["query"])
        if parsed.statements != 1:
            problems.append((("sql", "query"), "must be a single SQL statement"))
        missing = sorted(set(parsed.names) - available)
        if missing:
            problems.append(
                (
                    ("sql", "query"),
                    f"placeholder{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(':' + m for m in missing)} not among the tool's parameters",
                )
            )
    http = tool.get("http")
    if isinstance(http, Mapping):
        templates: list[tuple[Loc, Any]] = [(("url",), http.get("url"))]
        headers = http.get("headers")
        if isinstance(headers, Mapping):
            templates += [(("headers", k), v) for k, v in headers.items()]
        templates += [(("json",), text) for text in _strings(http.get("json"))]
        for where, text in templates:
            if isinstance(text, str):
                for name in sorted(set(_HTTP_PARAM.findall(text)) - available):
                    problems.append(
                        (("http", *where), f"{{{name}}} is not one of the tool's parameters")
                    )
    return problems


def _strings(value: Any) -> list[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def tool_list_problems(tools: Any) -> list[tuple[Loc, str]]:
    """What is wrong across an agent's tools: a name used twice, more than one end_call."""
    problems: list[tuple[Loc, str]] = []
    names: dict[str, int] = {}
    end_call: str | None = None
    for index, tool in enumerate(tools if isinstance(tools, list | tuple) else ()):
        if not isinstance(tool, Mapping):
            continue
        name = tool.get("name")
        if isinstance(name, str):
            if name in names:
                problems.append(
                    ((index, "name"), f"tool {name!r} is already defined as tools[{names[name]}]")
                )
                continue
            names[name] = index
        if [kind for kind in TOOL_KINDS if kind in tool] == ["end_call"]:
            if end_call is not None:
                problems.append(
                    (
                        (index, "end_call"),
                        f"only one end_call tool per agent ({end_call!r} is one already)",
                    )
                )
                continue
            end_call = str(name)
    return problems


def _tool_list(value: Any, handler: Callable[[Any], Any]) -> Any:
    return with_problems(handler, value, tool_list_problems(value))


ToolEntries = Annotated[tuple[ToolEntry, ...], WrapValidator(_tool_list)]
