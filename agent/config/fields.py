"""What the configuration models are built from: validated field types, the model decorator, and
pydantic's errors in the words the people who write agent files read.

Every model in :mod:`agent.config` is a frozen pydantic dataclass made with :func:`config_model`:

* **Strict values.** ``"yes"`` is not true and ``"5"`` is not a number (:data:`Flag` and the
  number types are strict; text is :class:`TextRule`'s). A section may be given as an instance
  of its class or as a mapping, which is validated into one.
* **Unknown keys are errors**, so a typo is reported rather than ignored.
* **Building one in code raises** :class:`~agent.errors.ConfigError` naming the key
  (``vad.silence_duration_ms``), never pydantic's ``ValidationError``: one exception tree.

Text fields use :class:`TextRule` (non-empty, then a check, a pattern or a list of well-known
values) so that every refusal says what was expected in plain words: "must be an E.164 phone
number such as '+15555550100' (write '+15555550123')". :func:`describe` turns any pydantic error
into such a message, for the loader and for :class:`ConfigError` alike.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import re
import string
import types
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import (
    Annotated,
    Any,
    Final,
    Literal,
    TypeVar,
    Union,
    cast,
    dataclass_transform,
    get_args,
    get_origin,
)

import jsonschema
import pydantic
from jsonschema import Draft202012Validator
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Strict,
    ValidationError,
    WrapValidator,
)
from pydantic.config import JsonDict
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError, core_schema

from agent.config.hours import CallingHours
from agent.errors import ConfigError
from agent.numbers import E164_RE, normalise_number

Loc = tuple[str | int, ...]
"""Where in a document (or a model) a value is: keys and list indices."""
T = TypeVar("T")

#: The settings every configuration model shares (see the module docstring).
MODEL_CONFIG: Final = ConfigDict(
    extra="forbid",
    allow_inf_nan=False,
    # Code uses the Python names; the loader asks for the YAML names alone (by_name=False), so
    # ``thinking_budget`` in a file is an unknown key with a suggestion, not a silent synonym.
    validate_by_name=True,
    validate_by_alias=True,
    loc_by_alias=False,
)


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, Field))
def config_model(
    key: str = "", *, kw_only: bool = False, json_schema_extra: JsonDict | None = None
) -> Callable[[type[T]], type[T]]:
    """Make ``cls`` a frozen, strict pydantic dataclass whose constructor raises ConfigError.

    ``key`` is where the model sits in an :class:`~agent.config.models.AgentConfig`
    (``"vad"``), so a mistake in ``VadConfig(...)`` names ``vad.silence_duration_ms``. Positional
    arguments (unless ``kw_only``), ``==`` and ``dataclasses.replace`` (which validates again)
    work as for any dataclass. ``json_schema_extra`` adds to the class's JSON Schema.
    """
    config = (
        MODEL_CONFIG
        if json_schema_extra is None
        else ConfigDict(**MODEL_CONFIG, json_schema_extra=json_schema_extra)
    )

    def decorate(cls: type[T]) -> type[T]:
        made: Any = pydantic.dataclasses.dataclass(
            frozen=True, slots=True, kw_only=kw_only, config=config
        )(cls)
        init = made.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
            try:
                init(self, *args, **kwargs)
            except ValidationError as exc:
                raise config_error(exc, made, key) from None

        made.__init__ = __init__
        return made  # type: ignore[no-any-return]

    return decorate


def config_error(exc: ValidationError, model: type, key: str = "") -> ConfigError:
    """The first of ``exc``'s errors as a ConfigError naming its key (Python names), and how
    many more there were."""
    errors = exc.errors()
    first = errors[0]
    step = step_of(model, first)
    where = join_path(key, path_text(step.python))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ConfigError(describe(first, step) + more, key=where or None)


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TextRule:
    """A text field's rule, in ``Annotated[str, TextRule(...)]``: non-empty, then ``check``
    (returns a problem or None: its message is the most helpful), then ``pattern`` (full match),
    then ``known`` (well-known values: a near miss of one is a typo, anything else is fine).
    ``hint`` says what is expected ("an E.164 phone number")."""

    hint: str = "text"
    pattern: re.Pattern[str] | None = None
    check: Callable[[str], str | None] | None = None
    known: tuple[str, ...] = ()

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self.validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        result: dict[str, Any] = {**handler(schema), "minLength": 1}
        if self.pattern is not None:
            # Also let an ${ENV} reference through: the loader checks the substituted value.
            result["pattern"] = f"^(?:{self.pattern.pattern})$|\\$\\{{"
        if self.known:
            result["examples"] = list(self.known)
        return result

    def validate(self, value: Any) -> str:
        """``value`` if it is text that follows the rule; else a pydantic error saying why."""
        if not isinstance(value, str):
            raise PydanticCustomError(
                "text_type", "must be {hint}, got {got}", {"hint": self.hint, "got": shown(value)}
            )
        if not value.strip():
            raise refuse(f"must be {self.hint}, got an empty string", hint=self.hint)
        if self.check is not None:
            message = self.check(value)
            if message is not None:
                raise refuse(message, hint=self.hint)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise refuse(f"must be {self.hint}; {value!r} is not", hint=self.hint)
        if self.known and value not in self.known:
            near = near_value(value, self.known, cutoff=0.75)
            if near is not None:
                raise refuse(f"{value!r} is not a known value (did you mean {near!r}?)")
        return value


@dataclasses.dataclass(frozen=True)
class Shown:
    """How the field reference (the README's table) states a field where its annotation and
    default do not say it well: ``Shown("not sent (service default)")`` for a default of None,
    ``Shown(type="mapping of a header name to text")``."""

    default: str | None = None
    type: str | None = None


#: The default of an optional Live API field: None is not sent, so the service decides.
NOT_SENT: Final = Shown("not sent (service default)")


def refuse(message: str, *, at: Loc = (), hint: str | None = None) -> PydanticCustomError:
    """The error a validator raises: ``message`` as written, ``at`` a sub-location of the value
    (the key the problem is about), ``hint`` what a text value should be (for messages about a
    value that came from the environment, which must not quote it)."""
    context: dict[str, Any] = {"message": message}
    if at:
        context["at"] = at
    if hint is not None:
        context["hint"] = hint
    return PydanticCustomError("config", "{message}", context)


# --------------------------------------------------------------------------------------------
# Checks and the types built from them
# --------------------------------------------------------------------------------------------


def _check_phone_number(text: str) -> str | None:
    if E164_RE.fullmatch(text):
        return None
    normalised = normalise_number(text)
    hint = f" (write {normalised!r})" if normalised else ""
    return f"must be an E.164 phone number such as '+15555550100'{hint}"


def _check_time_zone(name: str) -> str | None:
    # Checked here so a typo fails at start-up rather than when the first call renders its prompt.
    try:
        zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        near = near_value(name, sorted(zoneinfo.available_timezones()), cutoff=0.8)
        hint = f" (did you mean {near!r}?)" if near else ""
        return f"{name!r} is not an IANA time zone such as 'America/New_York'{hint}"
    return None


def _check_model_name(name: str) -> str | None:
    # The SDK refuses the same characters: they would change the meaning of the resource path.
    if any(c.isspace() for c in name) or any(bad in name for bad in ("..", "?", "&", "#")):
        return f"must be a model name such as 'gemini-3.8-live', got {name!r}"
    return None


def _check_function_name(name: str) -> str | None:
    # FunctionDeclaration.name as the API documents it.
    if _FUNCTION_NAME_RE.fullmatch(name):
        return None
    return (
        f"must start with a letter or underscore and contain only letters, digits, '_', '.', "
        f"':' or '-' (64 characters at most); {name!r} does not"
    )


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


_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_FUNCTION_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
_LANGUAGE_RE: Final = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_MODEL_RE: Final = re.compile(r"[^\s?&#]+")
_PARAMETER_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PYTHON_TARGET_RE: Final = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_]\w*)*"
)
_SELECT_RE: Final = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_URL_RE: Final = re.compile(r"https?://\S+")
_DATABASE_URL_RE: Final = re.compile(r"(sqlite:///|postgresql://|postgres://)\S*")

#: The Live API's prebuilt voices: the 30 of Google's speech-generation voice list, which the
#: native-audio Live models share ("30 HD voices", Chirp 3: HD). Sources:
#: https://ai.google.dev/gemini-api/docs/speech-generation#voices and
#: https://docs.cloud.google.com/vertex-ai/generative-ai/docs/models/gemini/2-5-flash-live-api
#: Another name is refused at load: the service would close the setup (a call with no agent).
KNOWN_VOICES: Final = (
    "Puck", "Charon", "Kore", "Fenrir", "Aoede", "Leda", "Orus", "Zephyr", "Achernar", "Achird",
    "Algenib", "Algieba", "Alnilam", "Autonoe", "Callirrhoe", "Despina", "Enceladus", "Erinome",
    "Gacrux", "Iapetus", "Laomedeia", "Pulcherrima", "Rasalgethi", "Sadachbia", "Sadaltager",
    "Schedar", "Sulafat", "Umbriel", "Vindemiatrix", "Zubenelgenubi",
)  # fmt: skip


def _check_voice(name: str) -> str | None:
    if name in KNOWN_VOICES:
        return None
    same = [voice for voice in KNOWN_VOICES if voice.lower() == name.lower()]
    near = same[0] if same else near_value(name, KNOWN_VOICES, cutoff=0.6)
    hint = f" (did you mean {near!r}?)" if near else f": one of {', '.join(sorted(KNOWN_VOICES))}"
    return f"{name!r} is not one of the Live API's voices{hint}"


def _check_calling_hours(text: str) -> str | None:
    try:
        CallingHours.parse(text)
    except ValueError as exc:
        return str(exc)
    return None


Text = Annotated[str, TextRule()]
CallingHoursText = Annotated[str, TextRule(hint="HH:MM-HH:MM", check=_check_calling_hours)]
AgentName = Annotated[str, TextRule(hint="a name (letters, digits, _ . -)", pattern=_NAME_RE)]
PhoneNumber = Annotated[
    str, TextRule(hint="an E.164 phone number", pattern=E164_RE, check=_check_phone_number)
]
TimeZone = Annotated[str, TextRule(hint="an IANA time zone", check=_check_time_zone)]
LanguageTag = Annotated[str, TextRule(hint="a BCP-47 tag such as en-US", pattern=_LANGUAGE_RE)]
ModelName = Annotated[
    str, TextRule(hint="a model name", pattern=_MODEL_RE, check=_check_model_name)
]
VoiceName = Annotated[str, TextRule(hint="a voice name", check=_check_voice, known=KNOWN_VOICES)]
FunctionName = Annotated[
    str,
    TextRule(
        hint="a function name (letters, digits, _ . : -)",
        pattern=_FUNCTION_NAME_RE,
        check=_check_function_name,
    ),
]
DigitsTemplate = Annotated[
    str, TextRule(hint="text containing {digits}", check=_check_dtmf_message)
]
ParameterName = Annotated[str, TextRule(hint="a parameter name", pattern=_PARAMETER_RE)]
PythonTarget = Annotated[str, TextRule(hint="module:function", pattern=_PYTHON_TARGET_RE)]
HttpUrl = Annotated[str, TextRule(hint="an http:// or https:// URL", pattern=_URL_RE)]
DatabaseUrl = Annotated[
    str, TextRule(hint="a sqlite:/// or postgresql:// URL", pattern=_DATABASE_URL_RE)
]
SelectPath = Annotated[str, TextRule(hint="a dotted path such as data.order", pattern=_SELECT_RE)]

Flag = Annotated[bool, Strict()]
Seconds = Annotated[float, Strict(), Field(ge=0)]
PositiveSeconds = Annotated[float, Strict(), Field(gt=0)]


def _unique(value: Any, handler: Callable[[Any], Any]) -> Any:
    """Validate a list, and refuse a repeated item: whether or not the other items are valid,
    so one pass reports both."""
    repeats = []
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if isinstance(item, str) and item in value[:index]:
                repeats.append(((index,), f"{item!r} is listed twice"))
    return with_problems(handler, value, repeats)


PhoneNumbers = Annotated[tuple[PhoneNumber, ...], WrapValidator(_unique)]


def _json_object(value: Any) -> dict[str, Any]:
    """A private deep copy of a JSON object: the frozen config cannot change behind our back,
    and a value JSON cannot carry fails here rather than when it is sent."""
    if not isinstance(value, Mapping):
        raise refuse(f"must be a JSON object (a mapping), got {shown(value)}")
    try:
        copy: dict[str, Any] = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise refuse(f"is not valid JSON: {exc}") from exc
    return copy


JsonObject = Annotated[dict[str, Any], BeforeValidator(_json_object)]


#: Values (keys, values, items) a tool's parameter schema may have. Checking a schema against the
#: meta-schema costs ~0.1 ms per value, and a model needs a few dozen, not thousands.
MAX_SCHEMA_VALUES: Final = 2_000


def _more_values_than(value: Any, limit: int) -> bool:
    """Whether ``value`` (JSON data) has more than ``limit`` values, stopping once it does."""
    count, pending = 0, [value]
    while pending:
        item = pending.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(item, Mapping):
            count += len(item)  # the keys
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return count > limit


def json_schema_problems(schema: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Why ``schema`` is not a valid JSON Schema (draft 2020-12), as (where inside it, message)
    pairs; empty if it is one. A tool's ``parameters`` are checked so at load, so
    ``type: strng`` or ``minimum: "five"`` is a problem in the file, not a surprise mid-call.

    ``check_schema`` decides; when it refuses, every error against the meta-schema is listed
    (it raises only the first), so a file is fixed in one pass. A schema of more than
    :data:`MAX_SCHEMA_VALUES` values is refused before any of that.
    """
    if _more_values_than(schema, MAX_SCHEMA_VALUES):
        return [((), f"has more than {MAX_SCHEMA_VALUES} values: too big for a tool's parameters")]
    try:
        Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError:
        pass
    else:
        return []
    meta = Draft202012Validator(
        Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    problems: list[tuple[Loc, str]] = []
    for error in meta.iter_errors(schema):
        error = _specific(error)
        message = error.message
        if error.validator == "enum" and isinstance(error.instance, str):
            allowed = [str(v) for v in cast(list[Any], error.validator_value)]
            near = near_value(error.instance, allowed, cutoff=0.6)
            hint = f" (did you mean {near!r}?)" if near else ""
            message = f"{error.instance!r} is not one of {', '.join(allowed)}{hint}"
        problems.append((tuple(error.absolute_path), f"not a valid JSON Schema: {message}"))
    return sorted(problems, key=lambda p: path_text(p[0]))


def _specific(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """The error that says what is wrong. ``type: strng`` fails an ``anyOf`` ("not valid under
    any of the given schemas"); inside it, the failed ``enum`` of type names is the useful part
    (for ``type: [string, nul]``, the one for the wrong item)."""
    enums = [e for e in error.context or () if e.validator == "enum"]
    named = [e for e in enums if isinstance(e.instance, str)]
    return named[-1] if named else error


# --------------------------------------------------------------------------------------------
# Problems found beside pydantic's own
# --------------------------------------------------------------------------------------------


#: The type of errors :func:`with_problems` adds: found across fields or items, so a document
#: lists them after the errors of the values themselves on the same line.
ACROSS: Final = "across"


def with_problems(
    handler: Callable[[Any], T], value: Any, problems: Sequence[tuple[Loc, str]]
) -> T:
    """``handler(value)`` (a wrap validator's own validation), with ``problems`` (found on the
    raw ``value``, at locations inside it) reported together with its errors: checks across
    items or fields then run even when some item is invalid, so every problem shows at once."""
    extra = [
        InitErrorDetails(type=PydanticCustomError(ACROSS, message), loc=loc, input=value)
        for loc, message in problems
    ]
    try:
        result = handler(value)
    except ValidationError as exc:
        if not extra:
            raise
        raise ValidationError.from_exception_data(exc.title, [*_details(exc), *extra]) from None
    if extra:
        raise ValidationError.from_exception_data("config", extra)
    return result


def _details(exc: ValidationError) -> list[InitErrorDetails]:
    """``exc``'s errors in the form a new ValidationError is built from, each keeping its type,
    message and context."""
    details = []
    for error in exc.errors():
        context = error.get("ctx")
        kind = PydanticCustomError(error["type"], error["msg"], context)
        details.append(InitErrorDetails(type=kind, loc=error["loc"], input=error["input"]))
    return details


# --------------------------------------------------------------------------------------------
# From a pydantic error to a message
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """Where an error's location leads in a model: the path in Python names and in the names a
    document uses (aliases), what is expected there, and the keys valid at the last level."""

    python: Loc
    document: Loc
    annotation: Any
    keys: tuple[str, ...]


def location(error: ErrorDetails) -> Loc:
    """The error's location, with the sub-location a validator named (``refuse(at=...)``)."""
    loc = tuple(p for p in error["loc"] if p != "[key]")  # a mapping key's own error: at the key
    at = (error.get("ctx") or {}).get("at")
    return loc + tuple(at) if at else loc


#: Errors whose location ends in a key as the input wrote it (not a field's Python name).
UNKNOWN_KEY_ERRORS: Final = frozenset({"extra_forbidden", "unexpected_keyword_argument"})


def step_of(model: Any, error: ErrorDetails) -> Step:
    """Where ``error`` is in ``model``."""
    return walk(model, location(error), unknown=error["type"] in UNKNOWN_KEY_ERRORS)


def walk(model: Any, loc: Loc, *, unknown: bool = False) -> Step:
    """Follow ``loc`` through ``model``'s fields (and lists, mappings, optional values and
    sections switched by true/false) as far as it goes. With ``unknown``, the last part is a
    key no field has (even if it is spelled like a field's Python name)."""
    annotation: Any = model
    python: list[str | int] = []
    document: list[str | int] = []
    keys: tuple[str, ...] = ()
    for index, part in enumerate(loc):
        annotation = _inner(annotation)
        fields: Mapping[str, FieldInfo] | None = getattr(annotation, "__pydantic_fields__", None)
        if fields is not None and isinstance(part, str):
            keys = tuple(_document_name(name, info) for name, info in fields.items())
            last = unknown and index == len(loc) - 1
            field = None if last else fields.get(part)
            if field is None:  # an unknown key: the path ends here
                python.append(part)
                document.append(part)
                return Step(tuple(python), tuple(document), None, keys)
            name = next(n for n, f in fields.items() if f is field)
            python.append(name)
            document.append(_document_name(name, field))
            annotation = field.annotation
            continue
        if fields is not None and isinstance(part, int) and part < len(fields):
            # A positional argument of a dataclass's constructor: its field, by position.
            name, field = list(fields.items())[part]
            python.append(name)
            document.append(_document_name(name, field))
            annotation = field.annotation
            continue
        python.append(part)
        document.append(part)
        args = get_args(annotation)
        origin = get_origin(annotation)
        if origin in (tuple, list) and args:
            annotation = args[0]
        elif origin in (dict, Mapping) and len(args) == 2:
            annotation = args[1]
        else:
            annotation = None
    return Step(tuple(python), tuple(document), annotation, keys)


def _document_name(name: str, info: FieldInfo) -> str:
    alias = info.validation_alias
    return alias if isinstance(alias, str) else name


def _inner(annotation: Any) -> Any:
    """``annotation`` without ``Annotated``, ``| None`` and a ``bool |`` switch."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(annotation) if a not in (type(None), bool)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def choices(annotation: Any) -> tuple[str, ...]:
    """The values of a ``Literal`` (possibly optional) annotation; empty for anything else."""
    inner = _inner(annotation)
    if get_origin(inner) is Literal:
        return tuple(str(v) for v in get_args(inner))
    return ()


_BOUNDS: Final = {
    "greater_than_equal": ("at least", "ge"),
    "less_than_equal": ("at most", "le"),
    "less_than": ("below", "lt"),
}


def describe(error: ErrorDetails, step: Step, *, raw: str | None = None) -> str:
    """A plain-words message for ``error`` (located by ``step``). ``raw`` is the value as the
    author typed it, when known: messages quote that rather than what YAML made of it."""
    kind = error["type"]
    context = error.get("ctx") or {}
    value = error["input"]
    got = repr(raw) if raw is not None else shown(value)
    key = step.document[-1] if step.document else ""
    if kind in ("config", "text_type", ACROSS):
        return str(error["msg"])
    if kind == "value_error":
        return str(context.get("error", error["msg"]))
    if kind in ("missing", "missing_argument", "missing_keyword_only_argument"):
        return f"missing required key {key!r}"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        near = did_you_mean(str(key), step.keys)
        return f"unknown key {key!r}" + (f" (did you mean {near!r}?)" if near else "")
    if kind == "literal_error":
        allowed = choices(step.annotation)
        text = raw if raw is not None else value
        near = near_value(text, allowed, cutoff=0.5) if isinstance(text, str) else None
        hint = f" (did you mean {near!r}?)" if near else ""
        return f"must be one of {', '.join(allowed)}; got {got}{hint}"
    if kind == "bool_type":
        return f"must be true or false, got {got}"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"must be a whole number, got {got}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, got {got}"
    if kind == "finite_number":
        return f"must be a finite number, got {got}"
    if kind in _BOUNDS:
        words, bound = _BOUNDS[kind]
        return f"must be {words} {context[bound]:g}, got {value:g}"
    if kind == "greater_than":
        return f"must be above {context['gt']:g}"
    if kind == "string_type":
        return f"must be text, got {got}"
    if kind in ("dict_type", "dataclass_type", "model_type", "mapping_type"):
        return f"must be a mapping, got {got}"
    if kind in ("tuple_type", "list_type"):
        return f"must be a list, got {got}"
    if kind in ("dataclass_exact_type", "is_instance_of", "model_attributes_type"):
        return f"has the wrong type: {type(value).__name__}"
    return str(error["msg"])


def shown(value: Any) -> str:
    """``value`` as a message shows what was given."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(value)


def path_text(loc: Iterable[str | int]) -> str:
    """A location as people write it: ``tools[0].http.headers.Authorization``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def join_path(path: str, key: str) -> str:
    """``path.key``, where either may be empty."""
    if not path or not key:
        return path or key
    return f"{path}{key}" if key.startswith("[") else f"{path}.{key}"


# --------------------------------------------------------------------------------------------
# Suggestions
# --------------------------------------------------------------------------------------------

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


def did_you_mean(word: str, options: Iterable[str]) -> str | None:
    """The valid key ``word`` most likely meant: a known alias, its snake_case spelling, a close
    spelling, or a key it ends with (``thinking_budget`` -> ``budget``)."""
    keys = list(options)
    snake = _snake(word)
    for candidate in (word, snake):
        if _ALIASES.get(candidate) in keys:
            return _ALIASES[candidate]
    if snake in keys:
        return snake
    close = difflib.get_close_matches(snake, keys, n=1, cutoff=0.6)
    if close:
        return close[0]
    for key in keys:
        if snake.endswith("_" + key):
            return key
    return None


def near_value(word: str, options: Sequence[str], *, cutoff: float) -> str | None:
    """A value ``word`` probably meant: same letters in another case, or a close spelling."""
    for option in options:
        if option.lower() == word.lower():
            return option
    by_upper = {o.upper(): o for o in options}
    close = difflib.get_close_matches(word.upper(), list(by_upper), n=1, cutoff=cutoff)
    return by_upper[close[0]] if close else None
