"""A call's verdict against a test's expectations, and the reports: literal observations."""

from __future__ import annotations

from agent.cli.agenttest.spec import Expectations, ToolExpectation
from agent.cli.agenttest.verdict import (
    Failure,
    Observed,
    Outcome,
    SeenTool,
    check,
    junit_xml,
    report,
)

LOOKUP = SeenTool(
    "order_status",
    {"order_id": "A1017", "phone": "+15555550100"},
    {"order_id": "A1017"},
    "ok",
    {"result": [{"status": "shipped"}]},
)
CALL = Observed(
    transcript=(
        ("agent", "Hello, Acme here."),
        ("caller", "Where is A1017?"),
        ("agent", "It has SHIPPED."),
    ),
    tools=(LOOKUP,),
    end_reason="caller hung up",
    first_audio_ms=300.0,
    frames_sent=500,
    frames_received=500,
)


def test_a_call_that_did_everything_expected_has_no_failures() -> None:
    expect = Expectations(
        tools=[
            ToolExpectation(
                name="order_status", args={"order_id": "A1017"}, bound={"phone": "+15555550100"}
            )
        ],
        never_called=["transfer_call"],
        said=["it has shipped"],
        not_said=["{result"],
        hung_up=False,
        ended="caller hung up",
        first_audio_within_ms=300,
        no_caller_audio_lost=True,
    )
    assert check(expect, CALL) == []


def test_each_unmet_expectation_says_what_was_expected_and_what_was_seen() -> None:
    expect = Expectations(
        tools=[ToolExpectation(name="order_status", args={"order_id": "A1018"})],
        never_called=["order_status"],
        not_said=["shipped"],
        transferred_to="+15555550142",
        hung_up=True,
        first_audio_within_ms=200,
    )
    assert check(expect, CALL) == [
        Failure(
            "tool order_status",
            'order_status(order_id="A1018")',
            'order_status(order_id="A1017", phone="+15555550100")',
        ),
        Failure(
            "never called order_status",
            "no call",
            'order_status(order_id="A1017", phone="+15555550100")',
        ),
        Failure("not said", "never 'shipped'", "'It has SHIPPED.'"),
        Failure("transferred_to", "+15555550142", "no transfer"),
        Failure("hung_up", "the agent hangs up", "ended: caller hung up"),
        Failure("first_audio_within_ms", "<= 200 ms", "300 ms"),
    ]


def test_lost_caller_audio_is_counted() -> None:
    lossy = Observed(frames_sent=500, frames_received=480)
    assert check(Expectations(no_caller_audio_lost=True), lossy) == [
        Failure("no_caller_audio_lost", "500 frames received", "480 of 500 (20 lost)")
    ]


def test_a_bound_value_is_checked_on_what_ran_not_on_what_the_model_asked() -> None:
    wanted = Expectations(tools=[ToolExpectation(name="order_status", bound={"phone": "+1999"})])
    (failure,) = check(wanted, CALL)
    assert failure.expected == 'order_status(phone="+1999")'


def test_the_failure_report_shows_the_transcript_and_tools() -> None:
    outcome = Outcome(
        name="order", file="t.yaml", observed=CALL, failures=[Failure("said", "'x'", "'y'")]
    )
    assert report(outcome).splitlines() == [
        "FAIL  order  (t.yaml)",
        "  said:",
        "    expected: 'x'",
        "    seen:     'y'",
        "  transcript:",
        "     agent: Hello, Acme here.",
        "    caller: Where is A1017?",
        "     agent: It has SHIPPED.",
        '      tool: order_status(order_id="A1017", phone="+15555550100") -> '
        '{"result": [{"status": "shipped"}]}',
        "     ended: caller hung up",
    ]
    assert report(Outcome(name="ok", file="t.yaml", observed=CALL)) == "PASS  ok  (t.yaml)"


def test_junit_xml_counts_failures_and_errors() -> None:
    outcomes = [
        Outcome(name="a", file="a.yaml"),
        Outcome(name="b", file="b.yaml", failures=[Failure("said", "'x'", "'y'")]),
        Outcome(name="c", file="c.yaml", error="c.yaml:1: unknown key"),
    ]
    xml = junit_xml(outcomes)
    assert '<testsuite name="agent test" tests="3" failures="1" errors="1"' in xml
    assert '<failure message="said">' in xml
    assert '<error message="c.yaml:1: unknown key">' in xml
