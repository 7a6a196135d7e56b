"""Wire details of the Live API as Google serves it: close codes and reasons, field names in both
cases, base64 in both alphabets, token counting.

Part of the emulator's sans-I/O core (see :mod:`agent.sim.live.core`)."""

from __future__ import annotations

import math
import re
from typing import Any, Final

from agent.live.protocol import decode_b64
from agent.sim.live.options import (
    JsonObject,
)

INVALID_ARGUMENT: Final = "Request contains an invalid argument."
INVALID_API_KEY: Final = "API key not valid. Please pass a valid API key."
INTERNAL_ERROR: Final = "Internal error occurred."
DEADLINE_EXPIRED: Final = "Deadline expired before operation could complete."
EXPLICIT_ACTIVITY_WITH_VAD: Final = (
    "Explicit activity control is not supported when automatic activity detection is enabled."
)
CLOSE_INVALID: Final = 1007
CLOSE_POLICY: Final = 1008
CLOSE_GOING_AWAY: Final = 1001
CLOSE_INTERNAL: Final = 1011
# The doc records no close for the 15-minute session limit; the closest observed close for a
# time limit is the connection cap's, so the limit closes the same way.
SESSION_LIMIT_CODE: Final = CLOSE_INTERNAL
SESSION_LIMIT_REASON: Final = DEADLINE_EXPIRED
# A close frame's reason is at most 123 bytes of UTF-8 (RFC 6455 §5.5).
_MAX_REASON_BYTES: Final = 123
HANDLE_VALIDITY_S: Final = 2 * 60 * 60
"""Resumption handles are valid for two hours (emulated time)."""

# contextUpdate is sent by recent SDKs; it is accepted and ignored here.
CLIENT_MESSAGE_FIELDS: Final = frozenset(
    {"setup", "clientContent", "realtimeInput", "toolResponse", "contextUpdate"}
)
# Models Google has shut down: they fail like any unknown model.
RETIRED_MODELS: Final = frozenset(
    {"models/gemini-2.0-flash-live-001", "models/gemini-2.0-flash-exp", "models/gemini-pro"}
)
SCHEDULING_VALUES: Final = frozenset({"SCHEDULING_UNSPECIFIED", "SILENT", "WHEN_IDLE", "INTERRUPT"})
MODALITIES: Final = frozenset({"MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO"})

# Values that are protobuf Struct/Value (function args and responses, JSON schemas): their keys are
# the user's data, not field names, so they pass through untouched.
_VERBATIM_KEYS: Final = frozenset(
    {"args", "response", "parametersJsonSchema", "responseJsonSchema", "default", "example"}
)
# Maps from user-chosen names to messages: keep the names, normalise the messages.
_NAME_MAP_KEYS: Final = frozenset({"properties"})

_RATE_RE: Final = re.compile(r"rate\s*=\s*(\d+)")
_CAPITAL: Final = re.compile(r"(?<!^)(?=[A-Z])")
DEFAULT_INPUT_RATE: Final = 16000
OUTPUT_MIME_TYPE: Final = "audio/pcm;rate=24000"
# Gemini counts audio at about 25 tokens per second, in and out; text at about 4 characters a token.
AUDIO_TOKENS_PER_SECOND: Final = 25
CHARS_PER_TEXT_TOKEN: Final = 4
# A TEXT-modality answer streams this many words per modelTurn chunk.
WORDS_PER_TEXT_CHUNK: Final = 3


def camel_case(name: str) -> str:
    """``automatic_activity_detection`` -> ``automaticActivityDetection``; camelCase stays."""
    if "_" not in name.strip("_"):
        return name
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def snake_case(name: str) -> str:
    """``generationConfig`` -> ``generation_config``: how Google's errors spell field paths."""
    return _CAPITAL.sub("_", name).lower()


def normalise_keys(value: Any) -> Any:
    """A copy of a JSON value with every field name in camelCase, as the proto JSON parser reads it.

    Google's parser accepts both spellings at every level; normalising once on receipt lets the rest
    of the core look fields up by one name. User data (function arguments and responses, JSON
    schemas, the names in a schema's ``properties``) is left as sent.
    """
    if isinstance(value, list):
        return [normalise_keys(item) for item in value]
    if not isinstance(value, dict):
        return value
    result: JsonObject = {}
    for key, item in value.items():
        name = camel_case(key)
        if name in _VERBATIM_KEYS:
            result[name] = item
        elif name in _NAME_MAP_KEYS and isinstance(item, dict):
            result[name] = {prop: normalise_keys(schema) for prop, schema in item.items()}
        else:
            result[name] = normalise_keys(item)
    return result


def decode_base64(data: str) -> bytes:
    """Bytes from base64 in the standard or URL-safe alphabet, padded or not.

    Raises ``ValueError`` on anything else (the caller turns it into a 1007 close).
    """
    return decode_b64(data.strip())  # binascii.Error is a ValueError


def pcm_rate(mime_type: object) -> int:
    """The sample rate named by ``audio/pcm;rate=N`` (16 kHz when absent, as the service does)."""
    if isinstance(mime_type, str):
        match = _RATE_RE.search(mime_type)
        if match and int(match.group(1)) > 0:
            return int(match.group(1))
    return DEFAULT_INPUT_RATE


def truncate_reason(reason: str) -> str:
    """``reason`` cut to the 123 UTF-8 bytes a close frame can carry (never mid-character)."""
    encoded = reason.encode()
    if len(encoded) <= _MAX_REASON_BYTES:
        return reason
    return encoded[:_MAX_REASON_BYTES].decode(errors="ignore")


def text_tokens(text: str) -> int:
    """A rough Gemini token count for ``text``."""
    return math.ceil(len(text) / CHARS_PER_TEXT_TOKEN) if text else 0


def audio_tokens(duration_ms: float) -> int:
    """A rough Gemini token count for ``duration_ms`` of audio."""
    return math.ceil(duration_ms / 1000 * AUDIO_TOKENS_PER_SECOND) if duration_ms > 0 else 0


def duration_string(seconds: float) -> str:
    """A proto3 JSON ``Duration``: ``"50s"``, ``"0.500s"`` (0, 3, 6 or 9 fractional digits)."""
    nanos = round(seconds * 1_000_000_000)
    whole, fraction = divmod(abs(nanos), 1_000_000_000)
    sign = "-" if nanos < 0 else ""
    if fraction == 0:
        return f"{sign}{whole}s"
    digits = f"{fraction:09d}"
    for width in (3, 6):
        if digits[width:] == "0" * (9 - width):
            digits = digits[:width]
            break
    return f"{sign}{whole}.{digits}s"


class RequestRejectedError(Exception):
    """A client message the real service would close the connection for."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
