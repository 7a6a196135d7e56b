"""The agent file described: a JSON Schema for editors and the README's field tables, both
generated from the models (:class:`~agent.config.models.AgentFile`,
:class:`~agent.config.tools.ToolEntry`), so they cannot drift from what the loader accepts.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BeforeValidator, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from agent.config.fields import Shown, TextRule
from agent.config.models import AgentFile
from agent.config.tools import ToolEntry


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
    generated = TypeAdapter(AgentFile).json_schema(by_alias=True, schema_generator=_EditorSchema)
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
