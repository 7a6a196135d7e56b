"""Agent test files: what ``agent test`` reads, as pydantic models validated once.

A test file is YAML: the agent under test, what the caller does, and what must (or must not)
happen::

    name: order status                    # default: the file's name
    agent: ../acme-support.yaml           # relative to this file; default: the bundled agent
    caller: "+15555550100"                # the number calling (default the simulator's)
    turns:                                # in order; each waits for the agent's reply
      - say: "Where is my order A one zero one seven?"
      - wav: goodbye                      # a bundled caller clip or a WAV path (8 kHz mono)
    expect:
      tools:
        - name: order_status
          args: {order_id: A1017}         # these arguments (others may be there too)
          bound: {phone: "+15555550100"}  # a bound parameter took this value from the call
      never_called: [book_appointment]
      said: [shipped]                     # phrases in what the agent said (any case)
      not_said: ["{result.status}"]
      hung_up: false

Every mistake is a :class:`~agent.errors.ConfigError` naming file, line and key, with a
suggestion for a misspelt key. :func:`agent_test_json_schema` is the schema ``agent schema --kind
test`` prints, for editors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.config.fields import describe, path_text, step_of
from agent.config.keylines import index_key_lines
from agent.errors import ConfigError

__all__ = [
    "CallerTurn",
    "EndReason",
    "Expectations",
    "KeyPresses",
    "TestFile",
    "ToolExpectation",
    "agent_test_json_schema",
    "load_test_file",
]


EndReason = Literal[
    "caller hung up",
    "agent ended",
    "transferred",
    "timed out",
    "error",
    "shutdown",
    "stream lost",
    "handed over",
]
"""How a call can end (``agent.call.session``'s reasons)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallerTurn(_Model):
    """One thing the caller says: a WAV, or text (spoken by the offline TTS when it is
    installed, else by a tone as long as the words; either way the emulator is told the words,
    as a perfect recogniser would hear them)."""

    say: Annotated[str | None, Field(min_length=1, description="What the caller says.")] = None
    wav: Annotated[
        str | None,
        Field(
            min_length=1,
            description="A bundled caller clip (order-status, interrupt, goodbye, transfer) or "
            "the path of a WAV (8 kHz mono PCM16), relative to the test file.",
        ),
    ] = None

    @model_validator(mode="after")
    def _one_of(self) -> CallerTurn:
        if (self.say is None) == (self.wav is None):
            raise ValueError("a turn is either say: TEXT or wav: FILE")
        return self


class KeyPresses(_Model):
    """Keys the caller presses on the keypad, one every 200 ms from ``at_ms``."""

    at_ms: Annotated[int, Field(ge=0, description="When the first key is pressed (call time).")]
    keys: Annotated[str, Field(pattern=r"^[0-9*#A-D]+$", description="The keys, e.g. 1017#.")]


class ToolExpectation(_Model):
    """A function the agent must have run during the call."""

    name: Annotated[str, Field(min_length=1, description="The tool's name in the agent file.")]
    args: Annotated[
        dict[str, Any],
        Field(description="Arguments it must have run with (a subset; values compared exactly)."),
    ] = {}
    bound: Annotated[
        dict[str, Any],
        Field(description="Bound parameters (`bind:`) and the value they must have had."),
    ] = {}


class Expectations(_Model):
    """What must be true of the call once it is over; every key is optional."""

    tools: Annotated[
        list[ToolExpectation], Field(description="Tools that must have run, in any order.")
    ] = []
    never_called: Annotated[
        list[str], Field(description="Tools that must not have been called at all.")
    ] = []
    said: Annotated[
        list[str],
        Field(description="Phrases the agent must have said (output transcription, any case)."),
    ] = []
    not_said: Annotated[
        list[str], Field(description="Phrases the agent must never have said (any case).")
    ] = []
    transferred_to: Annotated[
        str | None, Field(description="The number the call was transferred to.")
    ] = None
    hung_up: Annotated[
        bool | None,
        Field(description="true: the agent hung up (end_call); false: it did not."),
    ] = None
    ended: Annotated[
        EndReason | None,
        Field(description="The call's end reason, as `agent calls show` prints it."),
    ] = None
    first_audio_within_ms: Annotated[
        int | None,
        Field(
            ge=0,
            description="The agent's first audio reached the caller within this long "
            "after the stream's start.",
        ),
    ] = None
    no_caller_audio_lost: Annotated[
        bool,
        Field(description="Every 20 ms frame the caller sent reached the bridge."),
    ] = False


class TestFile(_Model):
    """One agent test: the agent, the caller's side of the call, and the expectations."""

    __test__ = False  # not a pytest class

    name: Annotated[str, Field(description="The test's name (default: the file's name).")] = ""
    agent: Annotated[
        str | None,
        Field(description="The agent file, relative to the test file (default: the bundled one)."),
    ] = None
    scenario: Annotated[
        str | None,
        Field(
            description="Script the emulated model with this scenario (a bundled name or a "
            "file relative to the test file); ignored with --live."
        ),
    ] = None
    caller: Annotated[
        str, Field(pattern=r"^\+[1-9][0-9]{6,14}$", description="The number calling (E.164).")
    ] = "+15555550100"
    to: Annotated[
        str | None,
        Field(
            pattern=r"^\+[1-9][0-9]{6,14}$",
            description="The number dialled (default: the agent's first number).",
        ),
    ] = None
    barge_in_ms: Annotated[
        int | None,
        Field(ge=0, description="The caller interrupts each reply this long after it starts."),
    ] = None
    keypad: Annotated[list[KeyPresses], Field(description="Keys pressed during the call.")] = []
    linger_ms: Annotated[
        int,
        Field(
            ge=0,
            description="After the last reply the caller stays on the line, silent, this long "
            "before hanging up (a late tool result, an idle prompt).",
        ),
    ] = 0
    turns: Annotated[list[CallerTurn], Field(min_length=1, description="The caller's turns.")]
    max_duration_s: Annotated[
        float, Field(gt=0, description="The caller hangs up after this long whatever happens.")
    ] = 120.0
    expect: Annotated[Expectations, Field(description="What must be true once it is over.")] = (
        Expectations()
    )


def agent_test_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a test file."""
    schema = TestFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "agent test file"
    return schema


def load_test_file(path: str | Path) -> TestFile:
    """The test at ``path``; a :class:`ConfigError` naming file, line and key if it is wrong."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the test file: {exc.strerror}", file=file) from exc
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            f"invalid YAML: {exc}", file=file, line=mark.line + 1 if mark else None
        ) from exc
    lines: dict[str, int] = {}
    if node is not None:
        index_key_lines(node, "", lines)
    if not isinstance(data, dict):
        raise ConfigError("a test file is a mapping (agent, turns, expect)", file=file, line=1)
    data.setdefault("name", Path(path).stem)
    try:
        return TestFile.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        step = step_of(TestFile, error)
        key = path_text(step.document)
        message = describe(error, step)
        more = len(exc.errors()) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ConfigError(message, file=file, line=_line_of(lines, key), key=key or None) from None


def _line_of(lines: dict[str, int], key: str) -> int | None:
    while key:
        if key in lines:
            return lines[key]
        key = key.rsplit(".", 1)[0] if "." in key else key.rsplit("[", 1)[0] if "[" in key else ""
    return lines.get("")
