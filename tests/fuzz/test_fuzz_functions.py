"""The emulator's function matcher on any words and any declarations: calls or none, never an
exception (it reads what a client sends in ``setup`` and in its turns)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agent.sim.live.functions import calls_for, declared_functions

json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
schema = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["object", "OBJECT", "string"]),
        "properties": st.dictionaries(
            st.sampled_from(["order_id", "room", "n", "code", "subject"]),
            st.fixed_dictionaries(
                {"type": st.sampled_from(["string", "STRING", "integer", "NUMBER", "boolean"])},
                optional={
                    "enum": st.lists(st.text(max_size=8) | st.integers(), max_size=3),
                    "pattern": st.text(max_size=12),
                    "description": st.text(max_size=60) | st.just("for example A1017"),
                },
            ),
            max_size=3,
        ),
    },
    optional={"required": st.lists(st.text(max_size=8) | st.just("order_id"), max_size=3)},
)
declaration = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=30) | st.just("turn_on_the_lights")},
    optional={
        "description": st.text(max_size=80),
        "parameters": schema | json_value,
        "behavior": st.sampled_from(["NON_BLOCKING", "BLOCKING", "x"]),
    },
)


@given(
    st.lists(
        st.fixed_dictionaries({"functionDeclarations": st.lists(declaration, max_size=4)})
        | json_value,
        max_size=3,
    ),
    st.text(max_size=120) | st.just("Turn on the lights, order a one zero one seven"),
)
def test_the_matcher_answers_calls_or_none_whatever_it_is_given(tools: Any, words: str) -> None:
    functions = declared_functions(tools)
    calls = calls_for(words, functions)
    names = {function.name for function in functions}
    assert all(call.name in names for call in calls)
