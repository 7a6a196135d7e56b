"""``agent test``: conversation tests that pass or fail, offline in CI or against the real model.

agent test PATH [PATH ...]      run test files (YAML; folders: every *.yaml in them) against the
                                bundled Live API emulator and carrier simulator, on simulated
                                time; exit 0 when every test passes, 1 otherwise
  --junit-xml FILE              also write the results as JUnit XML (for CI)
  --live                        against the real Live API instead (needs GEMINI_API_KEY)
  --no-speech                   the emulator neither recognises WAV turns nor voices the
                                agent's words (faster: bundled clips, placeholder transcripts)
  -v / --verbose                print the transcript of passing tests too

A test file names the agent, the caller's turns and what must happen (tools called with given
arguments, phrases said or never said, a transfer, a hang-up, how the call ended, first audio
within N ms, no caller audio lost): see :mod:`agent.cli.agenttest.spec` and the README's
"Agent tests". ``agent schema --kind test`` prints its JSON Schema.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_test_subcommand", "agent_test_command"]


def add_test_subcommand(commands: Any) -> None:
    """Add ``test`` to the ``agent`` command's subparsers."""
    parser = commands.add_parser(
        "test",
        help="run agent test files (conversations that pass or fail)",
        description="Run agent test files against the emulator and the carrier simulator "
        "(or the real Live API with --live): exit 0 when all pass, 1 otherwise.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="test files or folders of them")
    parser.add_argument("--junit-xml", metavar="FILE", default=None, help="write JUnit XML here")
    parser.add_argument(
        "--live", action="store_true", help="use the real Live API (GEMINI_API_KEY)"
    )
    parser.add_argument(
        "--no-speech",
        action="store_true",
        help="no offline recogniser or TTS in the emulator (faster)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="transcripts of passes too")
    parser.set_defaults(run=_test)


def agent_test_command(
    paths: Sequence[str | Path],
    *,
    live: bool = False,
    junit_xml: str | Path | None = None,
    verbose: bool = False,
    speech: bool = True,
) -> tuple[int, str]:
    """Run the tests at ``paths``; the exit code and the report to print."""
    # Imported here: the runner pulls in the server and both simulators.
    from agent.cli.agenttest.run import run_files
    from agent.cli.agenttest.verdict import junit_xml as to_junit
    from agent.cli.agenttest.verdict import report

    outcomes = run_files(paths, live=live, speech=speech)
    if junit_xml is not None:
        Path(junit_xml).write_text(to_junit(outcomes), encoding="utf-8")
    passed = sum(outcome.passed for outcome in outcomes)
    lines = [report(outcome, verbose=verbose) for outcome in outcomes]
    lines.append(f"{passed} of {len(outcomes)} test{'s' if len(outcomes) != 1 else ''} passed")
    return (0 if passed == len(outcomes) else 1), "\n".join(lines)


def _test(args: argparse.Namespace) -> int:
    from agent.observability.logging import configure_logging
    from agent.settings import Settings

    settings = Settings.from_env()
    # The calls' own log lines would drown the report: warnings and errors only.
    configure_logging("warning", settings.log_format, secrets=settings.secrets())
    code, text = agent_test_command(
        args.paths,
        live=args.live,
        junit_xml=args.junit_xml,
        verbose=args.verbose,
        speech=not args.no_speech,
    )
    print(text)
    return code
