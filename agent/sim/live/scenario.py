"""Scripted conversations for the Live API emulator: what the emulated model says and calls.

Without a scenario the emulator calls the declared functions a turn's words ask for
(:mod:`agent.sim.live.functions`), else answers with a bundled clip (the greeting for a
``clientContent`` turn, the reply for anything else). A :class:`Scenario` replaces that with a
script: one :class:`Step` per *turn*, taken in order. A turn is every client input that asks the
model for an answer: a ``clientContent`` message with ``turnComplete``, a ``realtimeInput.text``,
or a stretch of caller speech (ended by the VAD, ``activityEnd`` or ``audioStreamEnd``). When the
steps run out the emulator falls back to its default answers.

A step says what the model does with its turn:

- ``say``: speak a clip (``greeting``, ``reply`` or a 24 kHz mono PCM16 WAV) whose transcript is
  ``text``, a template filled with the latest function result (``"Your order {result.status}."``);
- ``calls``: call functions. ``wait: true`` (a blocking call) sends ``toolCall`` and keeps the model
  silent until every waited-for ``toolResponse`` is in, then it speaks ``say``. ``wait: false``
  (``NON_BLOCKING``) sends ``toolCall``, speaks ``say`` at once as a filler, and acts on the result
  when it comes, following the response's ``scheduling``: ``INTERRUPT`` speaks the call's own
  ``say`` at once, ``WHEN_IDLE`` after the current answer, ``SILENT`` only adds it to the context.

Scenarios are plain data (YAML or JSON, see :func:`load_scenario` and ``agent/sim/scenarios/``)::

    name: order-status
    steps:
      - say: greeting                       # the bridge's greeting request
      - calls:                              # the caller asks where the order is
          - {name: order_status, args: {order_id: A1017}, wait: true}
        say: {clip: reply, text: "Your order is {result.0.status}."}

This module is pure data and parsing: :func:`load_scenario` reads files, nothing else does I/O.
It also holds :class:`Clip`, the audio unit the emulator speaks, so that scenarios can carry their
own recordings without importing the emulator.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from agent.audio.codec import read_wav
from agent.config.fields import describe, path_text, step_of
from agent.config.keylines import index_key_lines
from agent.errors import AudioError, ConfigError

__all__ = [
    "BUNDLED_CLIPS",
    "Clip",
    "Scenario",
    "ScriptedCall",
    "Speech",
    "Step",
    "bundled_scenarios",
    "load_scenario",
    "render_template",
    "scenario_from_data",
]

BUNDLED_CLIPS: Final = frozenset({"greeting", "reply"})
"""Clip names every emulator knows: its greeting and its reply."""
CLIP_RATE: Final = 24000
"""The Live API's output sample rate; a scenario's WAVs must already be at it."""
_SCENARIO_SUFFIXES: Final = (".yaml", ".yml", ".json")
_PLACEHOLDER: Final = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)\}")


@dataclass(frozen=True, slots=True)
class Clip:
    """A recording the emulated model speaks: mono PCM16 little-endian audio and what it says."""

    pcm: bytes
    rate: int
    transcript: str

    @property
    def duration_ms(self) -> float:
        return len(self.pcm) / 2 / self.rate * 1000


@dataclass(frozen=True, slots=True)
class Speech:
    """One thing the model says: which audio, and the words it stands for.

    ``clip`` is ``"greeting"``, ``"reply"`` or the path a WAV was loaded from (then ``audio``
    holds it). ``text`` is a template (:func:`render_template`) for the transcript (and for the
    text parts of a ``TEXT``-modality answer); ``None`` means the clip's own transcript. An
    emulator with a TTS voices such a text instead of playing the clip (a scenario WAV still
    plays as recorded); without one the clip's audio plays under the new words.
    """

    clip: str = "reply"
    text: str | None = None
    audio: Clip | None = None


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """A function the model calls in a step, as the ``toolCall`` message will carry it.

    ``wait`` is the model's side of the tool's behaviour: ``True`` for a blocking call (the model
    says nothing until the response arrives), ``False`` for ``NON_BLOCKING``. ``say`` is what the
    model says with a non-blocking call's result (``INTERRUPT`` or ``WHEN_IDLE``); ``None`` means
    the bundled reply.
    """

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    wait: bool = True
    say: Speech | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """What the model does with one turn: call functions and/or say something.

    With blocking calls ``say`` comes after their responses; otherwise at once. A step with
    neither is a turn the model completes in silence.
    """

    say: Speech | None = None
    calls: tuple[ScriptedCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Scenario:
    """A script for the emulated model: ``steps[n]`` answers the n-th turn of a conversation.

    The count runs across session resumptions (a resumed conversation goes on with the next
    step) and counts every turn that asks for an answer, see the module docstring.
    """

    steps: tuple[Step, ...] = ()
    name: str = ""
    description: str = ""

    def step(self, index: int) -> Step | None:
        """The step for the turn at ``index`` (0-based), or ``None`` once the script has run out."""
        return self.steps[index] if 0 <= index < len(self.steps) else None


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------


def render_template(template: str, context: Mapping[str, Any]) -> str:
    """``template`` with every ``{dotted.path}`` replaced by its value in ``context``.

    Objects and lists render as compact JSON, strings as they are, ``{{``/``}}`` as braces. A path
    that does not resolve is left as written, so a scenario author sees what did not match
    instead of a silent blank. The emulator's context names ``result`` (the function response's
    ``result`` member if it has one, else the whole response), ``response``, ``name``, ``args``
    and ``results`` (the latest result of each function, by name).
    """

    def substitute(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole in ("{{", "}}"):
            return whole[0]
        value: Any = context
        for part in match.group(1).split("."):
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return whole
        if isinstance(value, str):
            return value
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    return _PLACEHOLDER.sub(substitute, template)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def bundled_scenarios() -> list[str]:
    """The names of the example scenarios shipped in ``agent/sim/scenarios``."""
    folder = importlib.resources.files("agent.sim") / "scenarios"
    names = [
        item.name.rsplit(".", 1)[0]
        for item in folder.iterdir()
        if item.name.endswith(_SCENARIO_SUFFIXES)
    ]
    return sorted(names)


def load_scenario(source: str | os.PathLike[str]) -> Scenario:
    """A scenario from a YAML or JSON file, or a bundled one by name (``"order-status"``).

    WAV paths in it are resolved against the file's folder. Any mistake raises
    :class:`~agent.errors.ConfigError` naming the file, the line (YAML) and the key.
    """
    path = Path(source)
    if path.is_file():
        return _parse_file(path.read_text(encoding="utf-8"), str(path), path.suffix, path.parent)
    name = str(source)
    folder = importlib.resources.files("agent.sim") / "scenarios"
    for suffix in _SCENARIO_SUFFIXES:
        resource = folder / f"{name}{suffix}"
        if resource.is_file():
            with importlib.resources.as_file(resource) as real:
                return _parse_file(real.read_text(encoding="utf-8"), str(real), suffix, real.parent)
    known = ", ".join(bundled_scenarios()) or "none"
    raise ConfigError(f"no scenario file {name!r} and no bundled scenario of that name ({known})")


def scenario_from_data(
    data: Any, *, base_dir: str | os.PathLike[str] = ".", file: str | None = None
) -> Scenario:
    """A scenario from already-parsed data (the YAML/JSON document as dicts and lists)."""
    return _Parser(file, {}, Path(base_dir)).scenario(data)


def _parse_file(text: str, file: str, suffix: str, base_dir: Path) -> Scenario:
    lines: dict[str, int] = {}
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON: {exc.msg}", file=file, line=exc.lineno) from exc
    else:
        try:
            data = yaml.safe_load(text)
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            raise ConfigError(f"invalid YAML: {exc}", file=file, line=line) from exc
        if node is not None:
            index_key_lines(node, "", lines)
    return _Parser(file, lines, base_dir).scenario(data)


def _speech_shorthand(value: Any) -> Any:
    """``say: reply`` is short for ``say: {clip: reply}``."""
    return {"clip": value} if isinstance(value, str) else value


class _Doc(BaseModel):
    """A scenario document's parts: what a file may say, checked in one place (pydantic)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _SpeechDoc(_Doc):
    clip: Annotated[str, Field(min_length=1)] = "reply"
    text: str | None = None


_Say = Annotated[_SpeechDoc | None, BeforeValidator(_speech_shorthand)]


class _CallDoc(_Doc):
    name: Annotated[str, Field(min_length=1)]
    args: dict[str, Any] = {}
    wait: bool = True
    say: _Say = None


class _StepDoc(_Doc):
    say: _Say = None
    calls: list[_CallDoc] = []


class _ScenarioDoc(_Doc):
    name: str = ""
    description: str = ""
    steps: list[_StepDoc | None] = []


@dataclass(slots=True)
class _Parser:
    """Turns a parsed document into a :class:`Scenario`, naming file, line and key on errors."""

    file: str | None
    lines: Mapping[str, int]
    base_dir: Path

    def fail(self, message: str, key: str) -> ConfigError:
        return ConfigError(message, file=self.file, line=self.lines.get(key), key=key or None)

    def scenario(self, data: Any) -> Scenario:
        if not isinstance(data, Mapping):
            raise self.fail("a scenario must be a mapping (name, description, steps)", "")
        try:
            document = _ScenarioDoc.model_validate(data)
        except ValidationError as exc:
            raise self._problems(exc) from None
        return Scenario(
            steps=tuple(
                self.step(step, f"steps[{index}]") for index, step in enumerate(document.steps)
            ),
            name=document.name,
            description=document.description,
        )

    def _problems(self, exc: ValidationError) -> ConfigError:
        """Every problem in the document, the first one's line and key on the error."""
        found = []
        for error in exc.errors():
            step = step_of(_ScenarioDoc, error)
            found.append((path_text(step.document), describe(error, step)))
        key, message = found[0]
        if len(found) > 1:
            message += "".join(f"\n  {k}: {m}" for k, m in found[1:])
        return self.fail(message, key)

    def step(self, doc: _StepDoc | None, key: str) -> Step:
        if doc is None:
            return Step()
        return Step(
            say=self.speech(doc.say, f"{key}.say") if doc.say is not None else None,
            calls=tuple(self.call(call, f"{key}.calls[{i}]") for i, call in enumerate(doc.calls)),
        )

    def call(self, doc: _CallDoc, key: str) -> ScriptedCall:
        return ScriptedCall(
            name=doc.name,
            # YAML reads 2026-01-31 as a date: arguments go out as JSON, so make them JSON now.
            args=json.loads(json.dumps(doc.args, default=str)),
            wait=doc.wait,
            say=self.speech(doc.say, f"{key}.say") if doc.say is not None else None,
        )

    def speech(self, doc: _SpeechDoc, key: str) -> Speech:
        return self.clip(doc.clip, doc.text, key)

    def clip(self, name: str, text: str | None, key: str) -> Speech:
        if name in BUNDLED_CLIPS:
            return Speech(clip=name, text=text)
        if not name.lower().endswith(".wav"):
            raise self.fail(
                f"{name!r} is neither a bundled clip ({', '.join(sorted(BUNDLED_CLIPS))}) "
                "nor a .wav path",
                key,
            )
        path = Path(name) if Path(name).is_absolute() else self.base_dir / name
        try:
            pcm, rate = read_wav(path)
        except (OSError, AudioError) as exc:
            raise self.fail(f"cannot read {name}: {exc}", key) from exc
        if rate != CLIP_RATE:
            raise self.fail(f"{name}: expected mono PCM16 at {CLIP_RATE} Hz", key)
        return Speech(clip=name, text=text, audio=Clip(pcm, CLIP_RATE, text or ""))
