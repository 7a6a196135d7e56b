"""The model's arguments, checked against the tool's JSON schema before anything runs.

Deliberately minimal (no dependency): required keys, the basic JSON types, ``enum``, string
length, and the same one level down for array items and object properties. That catches what a
model actually gets wrong (a missing argument, a number as a string) and gives it an error it can
correct; full JSON Schema would buy little here.

Two things go beyond checking, both for safety:

* arguments the schema does not declare are dropped, so nothing the model invents can reach a
  SQL placeholder, a URL or a Python keyword it was not meant to;
* ``null`` for an optional argument counts as "not given".

Types are read in either spelling the agent configuration allows: JSON Schema (``string``) or the
Live API's OpenAPI subset (``STRING``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from agent.tools.base import ToolError

_TYPE_NAMES = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "null",
}


def check_arguments(
    schema: Mapping[str, Any], args: Mapping[str, Any], *, bound: Collection[str] = ()
) -> dict[str, Any]:
    """The declared arguments of ``args``, checked and lightly normalised; ``ToolError`` if wrong.

    ``bound`` parameters are filled from the call context afterwards: they are neither required
    from the model nor taken from ``args``. Normalisation: a whole float for an ``integer``
    becomes an int (the Live API sends numbers as doubles), an int for a ``string`` becomes its
    decimal text (an order number said as digits).
    """
    properties = schema.get("properties")
    declared: Mapping[str, Any] = properties if isinstance(properties, Mapping) else {}
    required = [name for name in _strings(schema.get("required")) if name not in bound]
    # ``properties`` lists every argument there is; a schema without it takes none from the model
    # (anything else would let invented arguments reach a query string or a Python keyword).
    known = {*declared, *required}
    checked: dict[str, Any] = {}
    for name, value in args.items():
        if name in bound:
            continue
        if name not in known:
            continue  # invented by the model: never passed on
        if value is None and not _allows_null(declared.get(name)):
            continue
        sub = declared.get(name)
        checked[name] = _check(value, sub if isinstance(sub, Mapping) else {}, name)
    missing = [name for name in required if name not in checked]
    if missing:
        raise ToolError(f"missing required argument(s): {', '.join(missing)}")
    return checked


def _check(value: Any, schema: Mapping[str, Any], where: str) -> Any:
    types = _types(schema)
    if types:
        value = _check_type(value, types, where)
    enum = schema.get("enum")
    if isinstance(enum, Sequence) and not isinstance(enum, str) and enum and value not in enum:
        choices = ", ".join(repr(choice) for choice in enum[:10])
        raise ToolError(f"{where} must be one of {choices}")
    if isinstance(value, str):
        _check_length(value, schema, where)
        _check_pattern(value, schema, where)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            value = [_check(item, items, f"{where}[{i}]") for i, item in enumerate(value)]
    elif isinstance(value, Mapping):
        value = _check_object(value, schema, where)
    return value


def _check_object(value: Mapping[str, Any], schema: Mapping[str, Any], where: str) -> Any:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return dict(value)
    out = {}
    for key, item in value.items():
        sub = properties.get(key)
        if isinstance(sub, Mapping):
            out[key] = _check(item, sub, f"{where}.{key}")
    missing = [k for k in _strings(schema.get("required")) if k not in out]
    if missing:
        raise ToolError(f"{where} is missing {', '.join(missing)}")
    return out


def _check_type(value: Any, types: Sequence[str], where: str) -> Any:
    for kind in types:
        ok, converted = _as_type(value, kind)
        if ok:
            return converted
    expected = " or ".join(_TYPE_NAMES.get(kind, kind) for kind in types)
    raise ToolError(f"{where} must be {expected}")


def _as_type(value: Any, kind: str) -> tuple[bool, Any]:
    """Whether ``value`` is of JSON type ``kind``, and the value to use."""
    # bool is an int in Python, but true is never a count or an amount.
    is_bool = isinstance(value, bool)
    if kind == "string":
        if isinstance(value, str):
            return True, value
        if isinstance(value, int) and not is_bool:
            return True, str(value)
    elif kind == "integer":
        if isinstance(value, int) and not is_bool:
            return True, value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return True, int(value)
    elif kind == "number":
        if isinstance(value, int | float) and not is_bool:
            return (math.isfinite(value), value)
    elif kind == "boolean":
        return is_bool, value
    elif kind == "array":
        if isinstance(value, list | tuple):
            return True, list(value)
    elif kind == "object":
        return isinstance(value, Mapping), value
    elif kind == "null":
        return value is None, value
    else:  # a type this checker does not know: let the tool decide
        return True, value
    return False, value


def _check_length(value: str, schema: Mapping[str, Any], where: str) -> None:
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(value) < low:
        raise ToolError(f"{where} must be at least {low} characters")
    if isinstance(high, int) and len(value) > high:
        raise ToolError(f"{where} must be at most {high} characters")


def _check_pattern(value: str, schema: Mapping[str, Any], where: str) -> None:
    pattern = schema.get("pattern")
    if not isinstance(pattern, str):
        return
    try:
        matched = re.search(pattern, value) is not None  # JSON Schema patterns are not anchored
    except re.error as exc:
        raise ToolError(f"the tool's pattern for {where} is not a valid expression") from exc
    if not matched:
        raise ToolError(f"{where} does not have the expected format")


def _types(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind.lower()]
    if isinstance(kind, list):
        return [k.lower() for k in kind if isinstance(k, str)]
    return []


def _allows_null(schema: object) -> bool:
    if not isinstance(schema, Mapping):
        return False
    return "null" in _types(schema) or schema.get("nullable") is True


def _strings(value: object) -> list[str]:
    if isinstance(value, list | tuple):
        return [item for item in value if isinstance(item, str)]
    return []
