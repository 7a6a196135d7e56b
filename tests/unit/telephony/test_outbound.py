"""Outbound calls without I/O (``agent.telephony.outbound``): the answering-machine gate, the
retry schedule, the plan every replica reads."""

from __future__ import annotations

import pytest

from agent.telephony.outbound import (
    AnswerGate,
    OutboundPlan,
    parse_params,
    retry_after,
)


def test_the_gate_waits_for_the_verdict_then_greets_a_person() -> None:
    gate = AnswerGate(opened_at=100.0, wait_s=35.0)
    assert gate.decision(101.0) is None
    gate.verdict("human")
    assert gate.decision(101.5) == "greet"


def test_an_unknown_verdict_or_none_within_the_bound_greets_rather_than_leave_silence() -> None:
    gate = AnswerGate(opened_at=100.0, wait_s=35.0)
    assert gate.decision(134.9) is None
    assert gate.deadline == 135.0
    assert gate.decision(135.0) == "greet"
    unknown = AnswerGate(opened_at=0.0, wait_s=35.0)
    unknown.verdict("unknown")
    assert unknown.decision(1.0) == "greet"


@pytest.mark.parametrize(
    "verdict", ["machine_end_beep", "machine_end_silence", "machine_end_other"]
)
def test_a_machine_whose_greeting_has_ended_gets_the_voicemail_if_the_agent_leaves_one(
    verdict: str,
) -> None:
    leaves = AnswerGate(opened_at=0.0, wait_s=35.0, on_machine="voicemail", has_voicemail=True)
    leaves.verdict(verdict)
    assert leaves.decision(20.0) == "voicemail"
    hangs_up = AnswerGate(opened_at=0.0, wait_s=35.0, on_machine="hang_up")
    hangs_up.verdict(verdict)
    assert hangs_up.decision(20.0) == "hang_up"


def test_a_fax_is_hung_up_on_and_the_first_verdict_counts() -> None:
    gate = AnswerGate(opened_at=0.0, wait_s=35.0, on_machine="voicemail", has_voicemail=True)
    gate.verdict("fax")
    gate.verdict("human")
    assert gate.answered_by == "fax"
    assert gate.decision(1.0) == "hang_up"


def test_machine_start_hangs_up_at_once_or_waits_for_the_beep_before_a_voicemail() -> None:
    hang_up = AnswerGate(opened_at=0.0, wait_s=35.0)
    hang_up.verdict("machine_start")
    assert hang_up.decision(1.0) == "hang_up"
    voicemail = AnswerGate(opened_at=0.0, wait_s=35.0, on_machine="voicemail", has_voicemail=True)
    voicemail.verdict("machine_start")
    assert voicemail.decision(1.0) is None


def test_busy_and_no_answer_are_retried_until_the_last_attempt_other_endings_never() -> None:
    assert retry_after("busy", 1, 3, 60.0) == 60.0
    assert retry_after("no-answer", 2, 3, 60.0) == 60.0
    assert retry_after("busy", 3, 3, 60.0) is None
    assert retry_after("failed", 1, 3, 60.0) is None
    assert retry_after("canceled", 1, 3, 60.0) is None
    assert retry_after("completed", 1, 3, 60.0) is None


def test_the_plan_round_trips_as_json_and_counts_its_attempts() -> None:
    plan = OutboundPlan("shop", "+15555550201", "+15555550123", 1, {"name": "Ada"})
    text = plan.to_json()
    assert text == (
        '{"agent":"shop","attempt":1,"from_number":"+15555550123","params":{"name":"Ada"},'
        '"to_number":"+15555550201"}'
    )
    assert OutboundPlan.from_json(text) == plan
    assert plan.next_attempt().attempt == 2


def test_params_are_name_value_pairs_with_plain_names() -> None:
    assert parse_params(["name=Ada", "order=A-17=x"]) == {"name": "Ada", "order": "A-17=x"}
    assert parse_params({"n": "1"}) == {"n": "1"}
    with pytest.raises(ValueError, match="name=value"):
        parse_params(["name"])
    with pytest.raises(ValueError, match="letters, digits"):
        parse_params(["first name=Ada"])
