"""Whether a call met a test's expectations, and the report that says why not: pure functions.

:class:`Observed` is what the runner saw of one call (from the call record, the bridge's call
session and the carrier simulator's report); :func:`check` compares it with the test's
:class:`~agent.cli.agenttest.spec.Expectations` and lists each unmet one as expected vs seen;
:func:`report` prints that with the transcript, and :func:`junit_xml` writes it for CI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

from agent.cli.agenttest.spec import Expectations, ToolExpectation

__all__ = ["Failure", "Observed", "Outcome", "SeenTool", "check", "junit_xml", "report"]


@dataclass(frozen=True, slots=True)
class SeenTool:
    """A tool call as the call record keeps it: what ran (bound values applied) and what the
    model asked for."""

    name: str
    arguments: Mapping[str, Any] | None
    requested: Mapping[str, Any] | None
    outcome: str
    result: Any = None


@dataclass(frozen=True, slots=True)
class Observed:
    """What happened on one call, as far as a test can check it."""

    transcript: Sequence[tuple[str, str]] = ()
    """``(role, text)`` per turn: ``agent`` (what it said) or ``caller`` (what was heard)."""
    tools: Sequence[SeenTool] = ()
    transferred_to: str | None = None
    hung_up: bool = False
    """The agent ended the call (through Twilio's REST API)."""
    end_reason: str | None = None
    first_audio_ms: float | None = None
    frames_sent: int = 0
    """20 ms frames the caller's phone sent on the (last) media stream."""
    frames_received: int = 0
    """Frames the bridge received on it."""


@dataclass(frozen=True, slots=True)
class Failure:
    """One unmet expectation: which, what the test wanted, what the call did."""

    expectation: str
    expected: str
    seen: str


@dataclass(slots=True)
class Outcome:
    """One test's result: its failures (none: passed), or the error that stopped it."""

    name: str
    file: str
    observed: Observed | None = None
    failures: list[Failure] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures


def check(expect: Expectations, seen: Observed) -> list[Failure]:
    """Every expectation ``seen`` does not meet, in the order the test lists them."""
    failures: list[Failure] = []
    for wanted in expect.tools:
        if not any(_tool_matches(wanted, tool) for tool in seen.tools):
            failures.append(
                Failure(f"tool {wanted.name}", _wanted_tool(wanted), _seen_tools(seen.tools))
            )
    for name in expect.never_called:
        calls = [tool for tool in seen.tools if tool.name == name]
        if calls:
            failures.append(Failure(f"never called {name}", "no call", _seen_tools(calls)))
    said = " ".join(text for role, text in seen.transcript if role == "agent")
    folded = _fold(said)
    for phrase in expect.said:
        if _fold(phrase) not in folded:
            failures.append(Failure("said", repr(phrase), repr(said) if said else "nothing said"))
    for phrase in expect.not_said:
        if _fold(phrase) in folded:
            # The turn that said it (or, across turns, everything said).
            turn = next(
                (t for r, t in seen.transcript if r == "agent" and _fold(phrase) in _fold(t)), said
            )
            failures.append(Failure("not said", f"never {phrase!r}", repr(turn)))
    if expect.transferred_to is not None and seen.transferred_to != expect.transferred_to:
        failures.append(
            Failure("transferred_to", expect.transferred_to, seen.transferred_to or "no transfer")
        )
    if expect.hung_up is not None and seen.hung_up != expect.hung_up:
        failures.append(
            Failure(
                "hung_up",
                "the agent hangs up" if expect.hung_up else "the agent does not hang up",
                f"ended: {seen.end_reason or 'unknown'}",
            )
        )
    if expect.ended is not None and seen.end_reason != expect.ended:
        failures.append(Failure("ended", expect.ended, seen.end_reason or "no end reason"))
    if expect.first_audio_within_ms is not None and (
        seen.first_audio_ms is None or seen.first_audio_ms > expect.first_audio_within_ms
    ):
        failures.append(
            Failure(
                "first_audio_within_ms",
                f"<= {expect.first_audio_within_ms} ms",
                "no audio" if seen.first_audio_ms is None else f"{seen.first_audio_ms:g} ms",
            )
        )
    if expect.no_caller_audio_lost and seen.frames_received < seen.frames_sent:
        failures.append(
            Failure(
                "no_caller_audio_lost",
                f"{seen.frames_sent} frames received",
                f"{seen.frames_received} of {seen.frames_sent} "
                f"({seen.frames_sent - seen.frames_received} lost)",
            )
        )
    return failures


def report(outcome: Outcome, *, verbose: bool = False) -> str:
    """One line for a pass; for a failure, each unmet expectation and the transcript."""
    head = f"{'PASS' if outcome.passed else 'FAIL'}  {outcome.name}  ({outcome.file})"
    if outcome.passed and not verbose:
        return head
    lines = [head]
    if outcome.error is not None:
        lines.append(f"  error: {outcome.error}")
    for failure in outcome.failures:
        lines.append(f"  {failure.expectation}:")
        lines.append(f"    expected: {failure.expected}")
        lines.append(f"    seen:     {failure.seen}")
    if outcome.observed is not None:
        lines.append("  transcript:")
        for role, text in outcome.observed.transcript:
            lines.append(f"    {role:>6}: {text}")
        for tool in outcome.observed.tools:
            lines.append(f"    {'tool':>6}: {_seen_tool(tool)} -> {_short(tool.result)}")
        lines.append(f"    {'ended':>6}: {outcome.observed.end_reason or 'unknown'}")
    return "\n".join(lines)


def junit_xml(outcomes: Sequence[Outcome]) -> str:
    """The outcomes as a JUnit XML report (one ``testsuite``, a ``testcase`` per test)."""
    failed = sum(1 for o in outcomes if o.failures and o.error is None)
    errors = sum(1 for o in outcomes if o.error is not None)
    suite = ElementTree.Element(
        "testsuite",
        name="agent test",
        tests=str(len(outcomes)),
        failures=str(failed),
        errors=str(errors),
        time=f"{sum(o.seconds for o in outcomes):.3f}",
    )
    for outcome in outcomes:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=outcome.file,
            name=outcome.name,
            time=f"{outcome.seconds:.3f}",
        )
        if outcome.error is not None:
            element = ElementTree.SubElement(case, "error", message=outcome.error)
            element.text = report(outcome)
        elif outcome.failures:
            summary = "; ".join(f.expectation for f in outcome.failures)
            element = ElementTree.SubElement(case, "failure", message=summary)
            element.text = report(outcome)
    ElementTree.indent(suite)
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _tool_matches(wanted: ToolExpectation, tool: SeenTool) -> bool:
    if tool.name != wanted.name or tool.arguments is None:
        return False
    ran = tool.arguments
    return all(_same(ran.get(k), v) for k, v in {**wanted.args, **wanted.bound}.items())


def _same(seen: Any, wanted: Any) -> bool:
    # YAML may read 1017 as a number where the model sent "1017": compare as the JSON text.
    return seen == wanted or (seen is not None and str(seen) == str(wanted))


def _wanted_tool(wanted: ToolExpectation) -> str:
    return f"{wanted.name}({_args({**wanted.args, **wanted.bound})})"


def _seen_tools(tools: Sequence[SeenTool]) -> str:
    return "; ".join(_seen_tool(tool) for tool in tools) if tools else "no tool calls"


def _seen_tool(tool: SeenTool) -> str:
    text = f"{tool.name}({_args(tool.arguments or tool.requested or {})})"
    return text if tool.outcome == "ok" else f"{text} [{tool.outcome}]"


def _args(args: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items())


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())
