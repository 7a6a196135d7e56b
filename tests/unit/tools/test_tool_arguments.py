"""The model's arguments against a tool's schema: only declared ones pass, formats are checked."""

from __future__ import annotations

import pytest

from agent.tools.arguments import check_arguments
from agent.tools.base import ToolError


def test_a_schema_without_properties_takes_no_arguments_from_the_model() -> None:
    assert check_arguments({"type": "object"}, {"customer_id": 7, "admin": True}) == {}


def test_invented_arguments_are_dropped_and_declared_ones_kept() -> None:
    schema = {"type": "object", "properties": {"order_id": {"type": "string"}}}
    assert check_arguments(schema, {"order_id": "A1017", "admin": True}) == {"order_id": "A1017"}


def test_a_pattern_is_enforced_unanchored_as_json_schema_says() -> None:
    schema = {
        "type": "object",
        "properties": {"order_id": {"type": "string", "pattern": "^[A-Z][0-9]{4}$"}},
    }
    assert check_arguments(schema, {"order_id": "A1017"}) == {"order_id": "A1017"}
    with pytest.raises(ToolError, match="expected format"):
        check_arguments(schema, {"order_id": ".."})
    loose = {"type": "object", "properties": {"code": {"type": "string", "pattern": "[0-9]"}}}
    assert check_arguments(loose, {"code": "ab3"}) == {"code": "ab3"}
