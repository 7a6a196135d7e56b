"""The bridge's Live parser knows every server message field the official ``google-genai`` SDK
knows: when a newer SDK (a newer protocol) adds one, this names it, so the parser gets an event
for it or an explicit decision to ignore it, rather than logging it as unknown on every call."""

from __future__ import annotations

import pytest
from google.genai import types
from pydantic import BaseModel

from agent.live import protocol
from agent.live.protocol import UnknownFields


def _wire_names(model: type[BaseModel]) -> list[str]:
    return sorted(field.alias or name for name, field in model.model_fields.items())


@pytest.mark.parametrize("name", _wire_names(types.LiveServerMessage))
def test_every_server_message_field_of_the_sdk_is_known(name: str) -> None:
    events = protocol.parse_server_message('{"' + name + '":{}}')
    assert not any(isinstance(event, UnknownFields) for event in events), events


@pytest.mark.parametrize("name", _wire_names(types.LiveServerContent))
def test_every_server_content_field_of_the_sdk_is_known(name: str) -> None:
    events = protocol.parse_server_message('{"serverContent":{"' + name + '":null}}')
    assert not any(isinstance(event, UnknownFields) for event in events), events
