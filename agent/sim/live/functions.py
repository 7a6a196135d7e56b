"""Which declared functions the emulated model calls for a turn's words, and with what arguments.

Without a scenario step for a turn, the emulator acts like a model given the ``setup``'s
``functionDeclarations``: when the caller's words (typed as ``realtimeInput.text`` or
``clientContent``, or heard and transcribed) *name* a function or match its *description*, it
calls it, with the arguments it can fill from those words. Blocking functions are called the
blocking way and ``behavior: NON_BLOCKING`` ones the non-blocking way: the model carries on with a
filler, and the core delivers the result as the response's ``scheduling`` asks (``INTERRUPT``,
``WHEN_IDLE``, ``SILENT``), as the Live API's tool-use guide describes
(https://ai.google.dev/gemini-api/docs/live-tools, "Asynchronous function calling").

The rules, kept simple enough to predict when writing a test:

- **By name**: every word of the function's name (``turn_on_the_lights``: turn, on, the, lights)
  is among the words, in any order and inflection ("Turn on the lights please").
- **By description**: the words share a content word with the description that few other
  declarations use. Each shared word counts ``1 / (number of declarations using it)``; a total of
  at least one matches ("put me through to a *person*" matches ``transfer_call`` described as
  "... when they ask for a person ..."). Text that speaks of "the caller" in the third person is an
  instruction to the model (the bridge's greeting, its idle and keypad prompts), not the caller's
  own request: it matches by name only.
- **Arguments**: every ``required`` parameter must be filled from the words or the function is
  not called (a model would ask first). A string with a ``pattern``, an ``enum``, an example in its
  description ("for example A1017") or an identifier's name (``order_id``) takes a token of that
  shape; spoken digits count ("A one zero one seven" is ``A1017``). Numbers and integers take a
  number. Any other string takes the caller's words.

Pure functions over plain data: no I/O, no clock. What the model says around the calls is a
:class:`~agent.sim.live.scenario.Step` like a scenario's, with text templates naming
``told.<function>`` (:func:`result_told`: the result in words).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from agent.sim.live.scenario import ScriptedCall, Speech, Step

__all__ = [
    "DeclaredFunction",
    "calls_for",
    "declared_functions",
    "result_told",
    "step_for_calls",
]

FILLER: Final = "One moment, please."
"""What the model says while non-blocking calls run."""

_STOP: Final = frozenset(
    """a about after all also am an and any are as at be been before being but by can could did do
    does for from had has have he her here him his how i if in into is it its just me more most my
    no not of or our out over own please she so some such than that the their them then there these
    they this those to too us very was we were what when where which while who why will with would
    you your yours i'd i'm i've it's that's don't can't let like want need hi hello hey thanks thank
    yes okay ok well must only once one use used uses""".split()  # noqa: SIM905 (a word list)
)
"""Words that say nothing about which function is meant (for description matching)."""

_NAME_STOP: Final = frozenset({"a", "an", "the"})
_DIGIT_WORDS: Final = {
    "zero": "0",
    "oh": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_WORD: Final = re.compile(r"[A-Za-z0-9+][A-Za-z0-9'+._-]*")
_CAMEL: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_EXAMPLE: Final = re.compile(
    r"(?:for example|for instance|e\.g\.|such as|like)[,:]?\s+([A-Za-z0-9+-]*\d[A-Za-z0-9+-]*)",
    re.IGNORECASE,
)
_IDENTIFIER_NAME: Final = re.compile(
    r"(?:^|_)(?:id|number|no|code|ref|reference|sku|zip)$|(?<=[a-z])(?:Id|Number|Code)$"
)
_THIRD_PERSON: Final = re.compile(r"\bthe caller\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class DeclaredFunction:
    """A function from the ``setup``'s ``functionDeclarations``, as the matcher needs it."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] | None = None
    """The parameters' JSON Schema (``parameters`` or ``parametersJsonSchema``), if any."""
    non_blocking: bool = False
    """``behavior: NON_BLOCKING``: the model does not wait for the result."""


def declared_functions(
    tools: Any, default_behavior: str = "BLOCKING"
) -> tuple[DeclaredFunction, ...]:
    """The functions declared in a ``setup.tools`` list (camelCase keys); others are skipped.
    A declaration without ``behavior`` runs the model's way, ``default_behavior`` (Gemini 3.8
    Live: NON_BLOCKING)."""
    found: list[DeclaredFunction] = []
    if not isinstance(tools, list):
        return ()
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        declarations = tool.get("functionDeclarations")
        if not isinstance(declarations, list):
            continue
        for declaration in declarations:
            if not isinstance(declaration, Mapping):
                continue
            name = declaration.get("name")
            if not isinstance(name, str) or not name:
                continue
            description = declaration.get("description")
            schema = declaration.get("parameters") or declaration.get("parametersJsonSchema")
            found.append(
                DeclaredFunction(
                    name=name,
                    description=description if isinstance(description, str) else "",
                    parameters=schema if isinstance(schema, Mapping) else None,
                    non_blocking=declaration.get("behavior", default_behavior) == "NON_BLOCKING",
                )
            )
    return tuple(found)


def calls_for(words: str, functions: Sequence[DeclaredFunction]) -> tuple[ScriptedCall, ...]:
    """The calls the model makes for ``words``, in declaration order (none: just answer)."""
    if not words.strip() or not functions:
        return ()
    heard = {_stem(word) for word in _words(words)}
    instruction = _THIRD_PERSON.search(words) is not None
    weights = _weights(functions)
    calls: list[ScriptedCall] = []
    for function in functions:
        named = _named(function.name, heard)
        if not named and (instruction or _description_score(function, heard, weights) < 1.0):
            continue
        args = fill_arguments(function.parameters, words)
        if args is None:
            continue
        calls.append(ScriptedCall(function.name, args, wait=not function.non_blocking))
    return tuple(calls)


def step_for_calls(calls: Sequence[ScriptedCall]) -> Step:
    """What the model does around ``calls``: says each result once it has it (blocking calls
    together, after all of them; each non-blocking one as its response's scheduling says), and
    fills the silence with :data:`FILLER` while only non-blocking calls run."""
    shaped = tuple(
        call if call.wait else ScriptedCall(call.name, call.args, wait=False, say=_told(call.name))
        for call in calls
    )
    blocking = [call.name for call in calls if call.wait]
    if blocking:
        text = " ".join(f"{{told.{name}}}" for name in blocking)
        return Step(say=Speech("reply", text), calls=shaped)
    return Step(say=Speech("reply", FILLER), calls=shaped)


def result_told(result: Any) -> str:
    """A function result in words, for the model to say: the values of a row (or of the first
    rows), a plain value as it is, nothing found said so."""
    if result is None or result == [] or result == {} or result == "":
        return "I could not find anything."
    if isinstance(result, list):
        rows = [_told_value(item) for item in result[:3]]
        more = f" and {len(result) - 3} more" if len(result) > 3 else ""
        return "I found " + "; ".join(rows) + more + "."
    if isinstance(result, Mapping):
        if set(result) == {"error"}:
            # The bridge's answer for a tool that failed or was refused.
            return f"Sorry, that did not work: {_told_value(result['error'])}."
        return "I found " + _told_value(result) + "."
    return f"Done: {_told_value(result)}."


def fill_arguments(schema: Mapping[str, Any] | None, words: str) -> dict[str, Any] | None:
    """Arguments for a function with parameters ``schema``, from ``words``; ``None`` when a
    required parameter cannot be filled."""
    if not schema:
        return {}
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    required = schema.get("required")
    needed = (
        {name for name in required if isinstance(name, str)}
        if isinstance(required, list)
        else set()
    )
    tokens = _tokens(words)
    args: dict[str, Any] = {}
    for name, prop in properties.items():
        value = _fill(str(name), prop if isinstance(prop, Mapping) else {}, words, tokens)
        if value is not None:
            args[str(name)] = value
        elif name in needed:
            return None
    return args


# -- words -------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return [match.group(0).strip("'._-").lower() for match in _WORD.finditer(text)]


def _stem(word: str) -> str:
    """A crude inflection-stripper: enough for "lights" to meet "light", "calling" "call"."""
    word = word.lower().removesuffix("'s")
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)] + keep
    return word


def _name_words(name: str) -> set[str]:
    parts = re.split(r"[_\-.\s]+", _CAMEL.sub("_", name))
    return {_stem(part) for part in parts if part and part.lower() not in _NAME_STOP}


def _named(name: str, heard: set[str]) -> bool:
    wanted = _name_words(name)
    return bool(wanted) and wanted <= heard


def _content(text: str) -> set[str]:
    return {_stem(word) for word in _words(text) if word not in _STOP and len(word) > 2}


def _weights(functions: Iterable[DeclaredFunction]) -> dict[str, float]:
    """Per content word, 1 / how many declarations use it in their name or description."""
    counts: dict[str, int] = {}
    for function in functions:
        for word in _content(function.description) | _name_words(function.name):
            counts[word] = counts.get(word, 0) + 1
    return {word: 1.0 / count for word, count in counts.items()}


def _description_score(
    function: DeclaredFunction, heard: set[str], weights: Mapping[str, float]
) -> float:
    # The description's words only: a name half-said ("turn ... lights" of turn_off_the_lights)
    # is not a match.
    mine = _content(function.description)
    return sum(weights.get(word, 0.0) for word in mine & heard if word not in _STOP)


# -- arguments ---------------------------------------------------------------------------------


def _tokens(text: str) -> list[str]:
    """The words as candidate values: spoken digits joined ("one zero one seven" is "1017") and
    a single letter before digits joined to them ("A 1017", "a one zero one seven": "A1017")."""
    raw = [match.group(0).rstrip("'._-") for match in _WORD.finditer(text)]
    merged: list[str] = []
    in_digits = False  # the last token is a run of spoken digits
    for word in raw:
        digit = _DIGIT_WORDS.get(word.lower())
        if digit is None:
            merged.append(word)
            in_digits = False
        elif in_digits:
            merged[-1] += digit
        else:
            merged.append(digit)
            in_digits = True
    joined: list[str] = []
    for token in merged:
        letter = joined[-1] if joined else ""
        if len(letter) == 1 and letter.isalpha() and token.isdigit() and len(token) >= 2:
            joined[-1] = letter.upper() + token
        else:
            joined.append(token)
    return joined


def _fill(name: str, prop: Mapping[str, Any], words: str, tokens: Sequence[str]) -> Any:
    kind = str(prop.get("type", "string")).lower()
    enum = prop.get("enum")
    if isinstance(enum, list) and enum:
        heard = {_stem(word) for word in _words(words)}
        for option in enum:
            if isinstance(option, str) and _name_words(option) <= heard:
                return option
        return None
    if kind in ("integer", "number"):
        for token in tokens:
            try:
                return int(token) if kind == "integer" else float(token)
            except ValueError:
                continue
        return None
    if kind != "string":
        return None
    description = str(prop.get("description", ""))
    pattern = prop.get("pattern")
    if isinstance(pattern, str):
        try:
            compiled = re.compile(pattern)
        except re.error:
            return None
        return next((token for token in tokens if compiled.search(token)), None)
    example = _EXAMPLE.search(description)
    if example is not None:
        shape = re.compile(_shape(example.group(1)), re.IGNORECASE)
        found = next((token for token in tokens if shape.fullmatch(token)), None)
        if found is None:
            return None
        sample = example.group(1)
        return found.upper() if sample == sample.upper() else found
    if _IDENTIFIER_NAME.search(name) or prop.get("format"):
        return next((token for token in tokens if any(c.isdigit() for c in token)), None)
    return words.strip() or None


def _shape(example: str) -> str:
    """A regular expression for values shaped like ``example``: "A1017" gives [A-Za-z]\\d{4}."""
    parts: list[str] = []
    for group in re.finditer(r"[A-Za-z]+|\d+|[^A-Za-z\d]", example):
        text = group.group(0)
        if text.isalpha():
            parts.append(f"[A-Za-z]{{{len(text)}}}")
        elif text.isdigit():
            parts.append(f"\\d{{{len(text)}}}")
        else:
            parts.append(re.escape(text))
    return "".join(parts)


def _told(name: str) -> Speech:
    return Speech("reply", f"{{told.{name}}}")


def _told_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(
            f"{key.replace('_', ' ')} {_told_value(item)}" for key, item in value.items()
        )
    if isinstance(value, list):
        return ", ".join(_told_value(item) for item in value)
    if value is None:
        return "none"
    return str(value)
