"""The Live preflight's schedule and what it reports, with literal times and results."""

from __future__ import annotations

import pytest

from agent.config.models import DEFAULT_AGENT, AgentConfig
from agent.live.preflight import PreflightSchedule, ProbeResult, models_to_probe

BAD_KEY = ProbeResult(
    "gemini-3.8-live",
    "acme-support",
    "auth",
    "Live API closed the connection during setup (code=1007, reason='API key not valid. "
    "Please pass a valid API key.')",
)
TIMEOUT = ProbeResult("gemini-3.8-live", "acme-support", "timeout", "no setupComplete within 10 s")
OK = ProbeResult("gemini-3.8-live", "acme-support")


def test_a_check_is_due_at_once_then_every_interval_while_it_passes() -> None:
    schedule = PreflightSchedule(300.0)
    assert schedule.due(0.0)
    assert schedule.status()["status"] == "pending"
    assert schedule.checked(1.0, [OK]) == (False, False)
    assert not schedule.due(300.9)
    assert schedule.next_deadline(2.0) == 301.0
    assert schedule.due(301.0)
    assert schedule.problems == []


def test_a_refusal_makes_the_instance_unready_with_the_reason_and_fix_and_is_retried_soon() -> None:
    schedule = PreflightSchedule(300.0)
    assert schedule.checked(10.0, [BAD_KEY]) == (True, False)
    assert schedule.next_deadline(10.0) == 40.0
    assert schedule.problems == [
        "Live API auth: model gemini-3.8-live (agent acme-support): Live API closed the "
        "connection during setup (code=1007, reason='API key not valid. Please pass a valid API "
        "key.'); fix: set GEMINI_API_KEY to a valid key from https://aistudio.google.com/apikey "
        "(Vertex AI: check the Application Default Credentials)"
    ]
    assert schedule.status()["status"] == "failing"
    # The key was fixed: the next check passes and the problem is gone.
    assert schedule.checked(40.0, [OK]) == (False, True)
    assert schedule.problems == []
    assert schedule.next_deadline(40.0) == 340.0


def test_a_passing_trouble_is_reported_but_does_not_make_the_instance_unready() -> None:
    schedule = PreflightSchedule(300.0)
    schedule.checked(0.0, [TIMEOUT])
    assert schedule.problems == []
    assert schedule.status() == {"status": "failing", "failures": [TIMEOUT.describe()]}


def test_the_retry_never_waits_longer_than_the_interval() -> None:
    schedule = PreflightSchedule(5.0)
    schedule.checked(0.0, [BAD_KEY])
    assert schedule.next_deadline(0.0) == 5.0
    with pytest.raises(ValueError, match="positive"):
        PreflightSchedule(0.0)


def test_one_probe_per_model_and_api_version() -> None:
    twin = AgentConfig(name="another")
    other = AgentConfig(name="zeta", model="gemini-other-live")
    chosen = models_to_probe([twin, other, DEFAULT_AGENT])
    assert [(a.name, a.model) for a in chosen] == [
        (min(DEFAULT_AGENT.name, "another"), DEFAULT_AGENT.model),
        ("zeta", "gemini-other-live"),
    ]
