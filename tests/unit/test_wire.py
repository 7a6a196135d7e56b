"""agent.wire: the per-message JSON and base64, and how they refuse what is not theirs."""

from __future__ import annotations

import binascii
import json
import os

import pytest

from agent import wire


@pytest.mark.parametrize("size", [0, 1, 2, 3, 160, 320, 1920])
def test_base64_round_trips_and_matches_the_standard_library(size: int) -> None:
    data = os.urandom(size)
    text = wire.b64encode(data)
    assert text == binascii.b2a_base64(data, newline=False).decode("ascii")
    assert wire.b64decode(text) == data
    assert wire.b64decode(text.encode()) == data


@pytest.mark.parametrize(
    "text",
    ["not base64!", "/w=", "/w", "/w==/w==", "/w\n==", "ÿÿÿÿ", "=/w=", "/w======"],
)
def test_base64_that_is_not_strictly_standard_is_a_binascii_error(text: str) -> None:
    with pytest.raises(binascii.Error):  # a ValueError, which the parsers catch
        wire.b64decode(text)


@pytest.mark.parametrize("text", ["", "{", "NaN", '{"a":Infinity}', '"\\ud800"', "[" * 100_000])
def test_json_that_is_not_json_is_a_json_decode_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):  # a ValueError, which the parsers catch
        wire.loads(text)


def test_json_reads_str_and_bytes_alike() -> None:
    message = '{"event":"media","media":{"payload":"/w=="},"n":[1,2.5,true,null]}'
    expected = {"event": "media", "media": {"payload": "/w=="}, "n": [1, 2.5, True, None]}
    assert wire.loads(message) == wire.loads(message.encode()) == expected
