"""``agent doctor``'s report and exit code, from literal check results."""

from __future__ import annotations

import json
from pathlib import Path

from agent.cli.doctor import Check, database_check, exit_code, render
from agent.cli.main import _parser

CHECKS = [
    Check("settings", "pass", "the environment is valid"),
    Check("live api", "fail", "API key not valid", "set GEMINI_API_KEY to a valid key"),
    Check("twilio rest", "skip", "no TWILIO_ACCOUNT_SID", "set TWILIO_ACCOUNT_SID"),
]


def test_the_text_report_lists_each_check_and_the_fix_of_each_that_did_not_pass() -> None:
    assert render(CHECKS) == (
        "PASS  settings     the environment is valid\n"
        "FAIL  live api     API key not valid\n"
        "                   fix: set GEMINI_API_KEY to a valid key\n"
        "SKIP  twilio rest  no TWILIO_ACCOUNT_SID\n"
        "                   fix: set TWILIO_ACCOUNT_SID\n"
        "3 checks: 1 failed, see the fixes above"
    )


def test_a_failure_exits_1_warnings_and_skips_do_not() -> None:
    assert exit_code(CHECKS) == 1
    assert exit_code([Check("a", "warn", "x", "y"), Check("b", "skip", "x", "y")]) == 0


def test_the_json_report_carries_every_field() -> None:
    report = json.loads(render(CHECKS, "json"))
    assert report["ok"] is False
    assert report["checks"][1] == {
        "name": "live api",
        "status": "fail",
        "detail": "API key not valid",
        "fix": "set GEMINI_API_KEY to a valid key",
    }


def test_doctor_is_a_command_with_a_json_format() -> None:
    args = _parser().parse_args(["doctor", "--format", "json"])
    assert args.format == "json"


def test_a_database_check_never_creates_the_file_it_checks(tmp_path: Path) -> None:
    missing = tmp_path / "calls.db"
    check = database_check("call records", f"sqlite:///{missing}", "DATABASE_URL", {"calls": ()})
    assert check.status == "warn"
    assert not missing.exists()
