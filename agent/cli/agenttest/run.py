"""Run agent test files: the real bridge, the Live API emulator and the carrier simulator, in
one process on one event loop, on simulated time.

Each test gets a fresh bridge (its own SQLite call records and embedded CRM in a temporary
folder), a fresh emulator and a Twilio REST simulator, so hang-ups and transfers happen the way
Twilio does them. The loop is ``looptime``'s, as in the integration tests: its clock stands still
while anything has work to do and jumps to the next timer when everything waits, so a two-minute
call takes a second or two and a busy machine makes a run slower, never different. Every timing
the test can assert (first audio) is read off that one clock.

With ``live=True`` the same test runs against the real Live API (``GEMINI_API_KEY``), on the
real clock: scenarios do not apply, and expectations about tools and phrases become an eval of
the real model.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from aiohttp import web

from agent.cli.agenttest.spec import TestFile, load_test_file
from agent.cli.agenttest.verdict import Observed, Outcome, SeenTool, check
from agent.config.reload import AgentRegistryHolder
from agent.errors import AgentError, AgentTestError, ConfigError
from agent.live.targets import DeveloperApiTarget
from agent.server.app import create_app
from agent.server.state import CALLS, RECORDS
from agent.settings import Settings
from agent.sim.carrier import (
    ENDED_BY_REST_HANG_UP,
    CarrierOptions,
    TwilioApiSimulator,
    load_caller_audio,
    place_call,
)
from agent.sim.live.options import CallerWords, EmulatorOptions
from agent.sim.live.scenario import load_scenario
from agent.sim.live.server import EmulatorSpeech, start_emulator
from agent.tools import validate_specs

__all__ = ["CallerUtterance", "caller_utterances", "run_files", "run_test"]

ACCOUNT_SID = "AC" + "7e57" * 8
AUTH_TOKEN = "agent-test-auth-token"  # the simulated Twilio account's; never a real one
DEFAULT_TO = "+15555550199"
SAMPLE_RATE = 8000
#: How long a word takes to say, for a text turn spoken without a TTS engine.
WORD_MS = 330
#: How long after the carrier simulator's call is over the bridge must have ended it too.
_ENDED_WITHIN_S = 30.0
#: The emulated model's "thinking" time, as the server's embedded emulator has it.
THINK_MS = 300


@dataclass(frozen=True, slots=True)
class CallerUtterance:
    """One caller turn ready to send: 8 kHz PCM16, and the words it says if the test knows them."""

    pcm: bytes
    words: str | None


def caller_utterances(
    test: TestFile, base_dir: Path, *, live: bool = False, voice: bool = True
) -> list[CallerUtterance]:
    """The test's turns as audio. Text is spoken by the offline TTS (``agent.sim.speech``) when
    it is installed, else it becomes a tone as long as the words would take to say: the emulator
    is told the words either way, so what it hears does not depend on a recogniser. The real
    model (``live``) hears only the audio, so there text needs the TTS. ``voice=False``: tones
    even with a TTS (quicker). Blocking (synthesis): call it before the call starts."""
    from agent.sim.speech import speak

    utterances = []
    for turn in test.turns:
        if turn.wav is not None:
            path = base_dir / turn.wav
            source = str(path) if path.is_file() else turn.wav
            try:
                pcm = load_caller_audio(source)
            except (FileNotFoundError, AgentError) as exc:
                raise ConfigError(str(exc), key="turns.wav") from exc
            utterances.append(CallerUtterance(pcm, None))
            continue
        assert turn.say is not None
        spoken = speak(turn.say, SAMPLE_RATE) if voice or live else None
        if spoken is None and live:
            raise ConfigError(
                "with --live, say: turns are spoken to the real model and need the offline "
                "TTS: pip install 'gemini-phone-agent[speech]' (or use wav: turns)",
                key="turns.say",
            )
        utterances.append(CallerUtterance(spoken or _stand_in(turn.say), turn.say))
    return utterances


def _stand_in(text: str) -> bytes:
    """A voice-level tone, as long as ``text`` takes to say: audio a VAD hears as one turn."""
    duration_ms = max(600, WORD_MS * len(text.split()))
    t = np.arange(SAMPLE_RATE * duration_ms // 1000) / SAMPLE_RATE
    tone = 3000 * np.sin(2 * np.pi * 220 * t) * np.minimum(1.0, np.minimum(t, t[-1] - t) * 50)
    pcm: bytes = tone.astype("<i2").tobytes()
    return pcm


def run_files(
    paths: Sequence[str | Path], *, live: bool = False, speech: bool = True
) -> list[Outcome]:
    """Run every test file in ``paths`` (files, or folders of ``*.yaml``), one after another.
    ``speech=False``: the emulator neither recognises nor synthesises (faster; its bundled clips
    and the ``[caller speech N s]`` placeholder)."""
    outcomes = []
    # The emulator hears WAV turns and speaks the agent's words with the offline engines, when
    # installed (loaded once: about half a second).
    engines = EmulatorSpeech.installed() if speech and not live else None
    for path in _test_files(paths):
        started = time.perf_counter()
        try:
            if live:
                _live_key()
            test = load_test_file(path)
            utterances = caller_utterances(test, path.parent, live=live, voice=speech)
            outcome = _run_on_loop(test, path, utterances, live=live, speech=engines)
        except AgentError as exc:
            outcome = Outcome(name=path.stem, file=str(path), error=str(exc))
        outcome.seconds = time.perf_counter() - started
        outcomes.append(outcome)
    return outcomes


def _live_key() -> str:
    key = os.environ.get("GEMINI_API_KEY", "")
    if not key:
        raise ConfigError(
            "--live runs the test against the real Live API and needs GEMINI_API_KEY; "
            "without it, run the test offline (no --live)",
            key="GEMINI_API_KEY",
        )
    return key


def _test_files(paths: Sequence[str | Path]) -> list[Path]:
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
        elif path.is_file():
            found.append(path)
        else:
            raise ConfigError(f"no test file or folder {str(path)!r}")
    return found


def _run_on_loop(
    test: TestFile,
    path: Path,
    utterances: list[CallerUtterance],
    *,
    live: bool,
    speech: EmulatorSpeech | None,
) -> Outcome:
    if live:
        loop = asyncio.new_event_loop()
    else:
        import looptime

        loop = looptime.new_event_loop(start=0.0)
    try:
        return loop.run_until_complete(run_test(test, path, utterances, live=live, speech=speech))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())  # the speech engines' threads
        loop.close()


async def run_test(
    test: TestFile,
    path: Path,
    utterances: list[CallerUtterance],
    *,
    live: bool = False,
    speech: EmulatorSpeech | None = None,
) -> Outcome:
    """One test file's call, start to end, and its verdict. ``path`` locates the files the test
    names (agent, scenario, WAVs); ``speech`` is what the emulator hears and speaks with."""
    base = path.parent
    # The tools' own checks too (`agent check` runs them): a broken tool is reported here, before
    # the call, not as a stream the bridge cannot serve.
    holder = AgentRegistryHolder(
        base / test.agent if test.agent else None, check_tools=validate_specs
    )
    key = _live_key() if live else ""
    words = CallerWords()
    for utterance in utterances:
        words.say(utterance.words)
    with tempfile.TemporaryDirectory(prefix="agent-test-") as scratch:
        emulator = None
        if not live:
            scenario = None
            if test.scenario is not None:
                file = base / test.scenario
                scenario = load_scenario(file if file.is_file() else test.scenario)
            emulator = await start_emulator(
                EmulatorOptions(think_ms=THINK_MS, scenario=scenario, caller_words=words),
                speech=speech,
            )
        try:
            async with TwilioApiSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
                observed = await _call(
                    test,
                    holder,
                    rest,
                    scratch,
                    utterances,
                    emulator_url=emulator.url if emulator is not None else None,
                    key=key,
                )
        finally:
            if emulator is not None:
                await emulator.close()
    outcome = Outcome(name=test.name, file=str(path), observed=observed)
    outcome.failures = check(test.expect, observed)
    return outcome


async def _call(
    test: TestFile,
    holder: AgentRegistryHolder,
    rest: TwilioApiSimulator,
    scratch: str,
    utterances: list[CallerUtterance],
    *,
    emulator_url: str | None,
    key: str,
) -> Observed:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        port=port,
        public_url=url,
        database_url=f"sqlite:///{scratch}/calls.db",
        crm_database_url=f"sqlite:///{scratch}/crm.db",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_url=rest.url,
        gemini_api_key=key or None,
    )
    target = DeveloperApiTarget(base_url=emulator_url) if emulator_url else None
    app = create_app(settings, live_target=target, agents=holder)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        keys = tuple(
            (press.at_ms + 200 * index, key_)
            for press in test.keypad
            for index, key_ in enumerate(press.keys)
        )
        options = CarrierOptions(
            url=url,
            auth_token=AUTH_TOKEN,
            from_number=test.caller,
            to_number=test.to or _dialled(holder),
            barge_in_ms=test.barge_in_ms,
            keypad=keys,
            linger_ms=test.linger_ms,
            max_duration_s=test.max_duration_s,
        )
        report = await place_call(options, [u.pcm for u in utterances], rest=rest)
        try:
            call = await app[CALLS].wait_ended(report.call_sid, timeout_s=_ENDED_WITHIN_S)
        except TimeoutError as exc:
            raise AgentTestError(
                f"the call ({report.ended_by}) never ended on the bridge within "
                f"{_ENDED_WITHIN_S:g} s: the bridge did not serve its media stream (see the log)"
            ) from exc
        await app[RECORDS].flush()
        record = app[RECORDS].get_call(report.call_sid)
    finally:
        await runner.cleanup()
    transcript = (
        [(turn.role, turn.said) for turn in record.turns]
        if record is not None
        else [(turn.role, turn.said) for turn in call.transcript.turns]
    )
    tools = [
        SeenTool(
            name=tool.name,
            arguments=tool.arguments if isinstance(tool.arguments, dict) else None,
            requested=tool.requested if isinstance(tool.requested, dict) else None,
            outcome=tool.outcome,
            result=tool.result,
        )
        for tool in (record.tool_calls if record is not None else ())
    ]
    observed = Observed(
        transcript=transcript,
        tools=tools,
        transferred_to=report.transferred_to,
        hung_up=report.ended_by == ENDED_BY_REST_HANG_UP,
        end_reason=call.ended_reason,
        first_audio_ms=call.stats.first_audio_ms,
        # One frame per 20 ms tick on the media stream; after a stream was replaced (<Connect
        # action>), the bridge's counters are the last stream's, so count from its start.
        frames_sent=len(report.heard) // 320
        - (report.stream_gaps[-1][1] if report.stream_gaps else 0),
        frames_received=call.stats.frames_in,
    )
    return observed


def _dialled(holder: AgentRegistryHolder) -> str:
    """The number that reaches the agent under test: the default agent's first, if it has one."""
    registry = holder.current
    agent = registry.default
    if agent is not None and agent.phone_numbers:
        return agent.phone_numbers[0]
    return DEFAULT_TO
