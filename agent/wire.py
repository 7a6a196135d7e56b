"""JSON and base64 for the per-message path: orjson and pybase64, in C (SIMD for base64).

Every caller frame is a JSON message with a base64 payload in and another out, 50 times a second
per call, and every model chunk a 2.6 KB JSON message whose base64 is most of it. With the
standard library's ``json`` and ``binascii`` those were the largest costs after the resampler,
in instructions counted by callgrind (``python -m agent.bench.perframe``): parsing a 40 ms model
chunk ~145,000 -> ~70,000, a Twilio media message ~57,000 -> ~43,000, building a media message of
40 ms ~23,000 -> ~9,000. Both libraries are well kept, with wheels for every platform CPython has.

Where they differ from the standard library: orjson refuses ``NaN`` and ``Infinity`` (JavaScript,
not JSON), lone surrogates and numbers beyond a double's range, and reads an integer beyond 64
bits as a float (none of which Twilio or the Live API send); pybase64 refuses padding beyond what
is needed. The callers turn a refusal into a protocol error, as before.
"""

from __future__ import annotations

import orjson
import pybase64

__all__ = ["b64decode", "b64encode", "loads"]

loads = orjson.loads
"""Parse JSON (str or bytes); raises ``orjson.JSONDecodeError``, a ``json.JSONDecodeError`` and
so a ``ValueError``, for anything that is not valid JSON."""

b64encode = pybase64.b64encode_as_string
"""Standard base64 with padding, as a ``str`` (no newline)."""


def b64decode(text: str | bytes) -> bytes:
    """Strict standard base64: anything outside the alphabet, or padding that is missing or
    misplaced, raises ``binascii.Error`` (a ``ValueError``); non-ASCII text ``ValueError``."""
    return pybase64.b64decode(text, validate=True)
