"""The ``agent`` command line: serve, emulate, call, calls, check, schema, test, bench.

agent serve [--port P]          the bridge; with no GEMINI_API_KEY / LIVE_API_URL it embeds the
                                local Live API emulator and says so; --workers N: N processes
agent emulate [--port P]        the Live API emulator on its own
agent call WAV [WAV ...]        the carrier simulator: place a call like Twilio and record it
agent dial +E164 --agent NAME   an outbound call through a running bridge (POST /calls)
agent calls list|show|purge     recorded calls (DATABASE_URL): what was said, heard, done
agent check [PATH]              validate agent YAML files without starting anything
agent doctor [--format json]    check a deployment (Live key and models, PUBLIC_URL, Twilio,
                                databases, agent files): pass/fail with the fix for each
agent schema [--kind test]      JSON Schema of an agent file (or a test file), for editors
agent test PATH [PATH ...]      run agent test files: conversations that pass or fail
agent bench [--only ...] [--json]  timing and CPU targets, measured
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence

import structlog
from aiohttp import web

from agent.bench.run import DESCRIPTION as BENCH_DESCRIPTION
from agent.bench.run import add_bench_arguments, run_bench
from agent.cli.agents import add_agents_subcommands
from agent.cli.agenttest import add_test_subcommand
from agent.cli.calls import add_calls_subcommands
from agent.cli.dial import add_dial_subcommand
from agent.cli.doctor import add_doctor_subcommand
from agent.errors import AgentError, ConfigError
from agent.observability.logging import configure_logging
from agent.settings import Settings, reveal

log = structlog.get_logger("agent.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agent`` console script and ``python -m agent``."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except AgentError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the bridge server")
    serve.add_argument("--host", default=None, help="bind address (default HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default PORT or 8080)")
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes on the one port, one core each (default WORKERS or 1)",
    )
    # Set by the --workers supervisor on each worker it starts: bind with SO_REUSEPORT.
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(run=_serve)

    emulate = commands.add_parser("emulate", help="run the local Live API emulator")
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument("--port", type=int, default=9090)
    emulate.add_argument("--speed", type=float, default=1.0, help="1.0 = real time")
    emulate.add_argument("--think-ms", type=int, default=0, help="delay before each answer")
    emulate.add_argument(
        "--tls-cert",
        metavar="PEM",
        default=None,
        help="serve wss:// with this certificate chain (PEM; may also hold the key)",
    )
    emulate.add_argument("--tls-key", metavar="PEM", default=None, help="key for --tls-cert")
    emulate.add_argument(
        "--scenario",
        metavar="FILE|NAME",
        default=None,
        help="script answers and function calls: a YAML/JSON file or a bundled name "
        "(order-status, ticket-confirmation, text-chat)",
    )
    emulate.add_argument("--connection-lifetime-s", type=float, default=600.0)
    emulate.add_argument("--go-away-before-s", type=float, default=50.0)
    emulate.add_argument("--session-limit-s", type=float, default=900.0)
    emulate.add_argument(
        "--no-speech",
        action="store_true",
        help="neither hear nor voice words: the '[caller speech N s]' placeholder and the "
        "bundled clips, as without the speech extra",
    )
    emulate.add_argument(
        "--api-key-env",
        metavar="VAR",
        default=None,
        help="require the key held in this environment variable (kept out of argv and logs); "
        "with --backend vertex, the bearer token",
    )
    emulate.add_argument(
        "--backend",
        choices=("gemini", "vertex"),
        default="gemini",
        help="speak the Developer API (default) or Vertex AI's Live API (its path, a bearer "
        "token, projects/.../models/M names, transparent resumption)",
    )
    emulate.add_argument(
        "--models",
        metavar="NAME[,NAME]",
        default=None,
        help="serve only these models; any other is refused 1008 as Google refuses an unknown one",
    )
    emulate.set_defaults(run=_emulate)

    call = commands.add_parser("call", help="place a simulated call into the bridge")
    call.add_argument(
        "wavs", nargs="+", metavar="WAV", help="caller utterances: WAV paths or bundled names"
    )
    call.add_argument(
        "--url",
        default=None,
        help="the bridge's base URL (default http://127.0.0.1:$PORT, where `agent serve` "
        "listens with the same environment; PORT defaults to 8080)",
    )
    call.add_argument("--out", default=None, help="write what the caller heard to this WAV")
    call.add_argument("--speed", type=float, default=1.0, help="1.0 = real time")
    call.add_argument("--barge-in-ms", type=int, default=None, help="interrupt each reply")
    call.add_argument("--from", dest="from_number", default="+15555550100")
    call.add_argument("--to", dest="to_number", default="+15555550199")
    call.add_argument(
        "--rest-port",
        type=int,
        default=None,
        metavar="PORT",
        help="also serve Twilio's REST API (call updates: hang up, transfer) on 127.0.0.1:PORT; "
        "start the bridge with TWILIO_API_URL=http://127.0.0.1:PORT and the same "
        "TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN",
    )
    call.add_argument(
        "--account-sid",
        default=None,
        help="the simulated account (default TWILIO_ACCOUNT_SID, else a random AC... SID)",
    )
    call.add_argument(
        "--callee",
        choices=("human", "machine", "busy", "no-answer"),
        default=None,
        help="instead of calling the bridge, be the far end of its next outbound call (agent "
        "dial) on --rest-port: the WAVs are what the person says, or the machine's greeting",
    )
    call.add_argument(
        "--carrier",
        choices=("twilio", "telnyx", "plivo"),
        default="twilio",
        help="whose webhook and media stream to speak (default twilio). plivo signs with "
        "PLIVO_AUTH_TOKEN; telnyx calls are unsigned (the bridge without TELNYX_PUBLIC_KEY)",
    )
    call.set_defaults(run=_call)

    add_calls_subcommands(commands)
    add_agents_subcommands(commands)
    add_doctor_subcommand(commands)
    add_dial_subcommand(commands)
    add_test_subcommand(commands)

    bench = commands.add_parser("bench", help=BENCH_DESCRIPTION, description=BENCH_DESCRIPTION)
    add_bench_arguments(bench)
    bench.set_defaults(run=run_bench)
    return parser


def _serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env(port=args.port, host=args.host)
    settings.check_exposure()
    configure_logging(
        settings.log_level,
        settings.log_format,
        secrets=settings.secrets(),
        mask_numbers=settings.mask_caller_numbers,
    )
    from agent.server.app import create_app

    workers = args.workers if args.workers is not None else settings.workers
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}", key="WORKERS")
    if workers > 1:
        return _supervise_workers(settings, workers)
    app = create_app(settings)  # loads AGENTS_PATH: every problem is reported before listening
    if settings.use_emulator:
        app.cleanup_ctx.append(_embedded_emulator)
    with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
        runner.run(_run_server(app, settings, reuse_port=args.reuse_port))
    return 0


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``EVENT_LOOP``: uvloop's loop when asked for and installed, else asyncio's (None)."""
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:  # a platform without its wheel: asyncio's loop serves as well
        return None
    return uvloop.new_event_loop


def _supervise_workers(settings: Settings, count: int) -> int:
    from agent.records.store import CRASH_HORIZON_S
    from agent.server.app import create_app
    from agent.server.workers import supervise, worker_command

    create_app(settings)  # the same checks as one process: a bad agent file fails here, once
    env = dict(os.environ)
    # Workers share the records: one restarting must not close its siblings' calls.
    env.setdefault("RECORDS_CRASH_HORIZON_S", str(CRASH_HORIZON_S))
    if settings.shared_state_url is None:
        # Workers must share used stream tickets; beside the SQLite records unless told otherwise.
        env["SHARED_STATE_URL"] = _beside(settings.database_url, "shared-state.db")
    log.info("server.workers", workers=count, port=settings.port)
    return supervise(count, worker_command(settings.host, settings.port), env)


def _beside(database_url: str, name: str) -> str:
    """A SQLite URL for ``name`` in the folder of a SQLite ``database_url`` (else the cwd)."""
    if database_url.startswith("sqlite:///"):
        folder = os.path.dirname(database_url.removeprefix("sqlite:///")) or "."
        return f"sqlite:///{os.path.join(folder, name)}"
    return f"sqlite:///./{name}"


async def _run_server(
    app: web.Application, settings: Settings, *, reuse_port: bool = False
) -> None:
    """Serve until SIGTERM or SIGINT, then drain: no new calls; the ones in progress move to
    other replicas at a quiet moment (DRAIN_MODE=handover, within HANDOVER_TIMEOUT_S) or finish
    here (DRAIN_MODE=wait, up to DRAIN_TIMEOUT_S); a second signal stops at once."""
    from agent.server.app import drain, hand_over
    from agent.server.listen import bind_port, listen, make_runner

    # Bound before the app starts (and logs server.started): a busy port is one line, exit 1.
    sock = bind_port(settings.host, settings.port, reuse_port=reuse_port)

    # Read timeouts and the connection cap (HTTP_READ_TIMEOUT_S, MAX_CONNECTIONS) are set in
    # agent.server.listen. %Tf: each request's duration (the stream's: the call's) becomes
    # server.access duration_ms.
    runner = make_runner(
        app, handle_signals=False, access_log_format='%a "%r" %s %b %Tf "%{User-Agent}i"'
    )
    try:
        await runner.setup()
    except BaseException:
        sock.close()
        raise
    try:
        await listen(runner, sock=sock)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        draining = asyncio.ensure_future(
            hand_over(app, settings.handover_timeout_s)
            if settings.drain_mode == "handover"
            else drain(app, settings.drain_timeout_s)
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, draining.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await draining
    finally:
        await runner.cleanup()


async def _embedded_emulator(app: web.Application) -> AsyncIterator[None]:
    """Start the local Live API emulator in-process and point the bridge at it."""
    from agent.live.targets import DeveloperApiTarget
    from agent.server.state import LIVE_BACKEND
    from agent.sim.live.server import EmulatorOptions, start_emulator

    # No speech engines here: each worker would load a recogniser (~0.5 s, ~40 MB) and run it on
    # every caller turn; `agent emulate` hears and speaks (README, Offline speech).
    emulator = await start_emulator(EmulatorOptions(speed=1.0, think_ms=300))
    app[LIVE_BACKEND].target = DeveloperApiTarget(base_url=emulator.url)
    log.warning(
        "live.emulator_in_use",
        message="neither GEMINI_API_KEY nor LIVE_API_URL is set: calls are answered by the "
        "local Live API emulator",
        emulator_url=emulator.url,
    )
    yield
    await emulator.close()


def _emulate(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    configure_logging(settings.log_level, settings.log_format, secrets=[api_key or ""])
    from agent.sim.live.server import (
        EmulatorOptions,
        EmulatorSpeech,
        create_emulator_app,
        load_scenario,
        tls_server_context,
    )

    if args.tls_key and not args.tls_cert:
        raise ConfigError("--tls-key needs --tls-cert")
    ssl_context = tls_server_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    options = EmulatorOptions(
        speed=args.speed,
        think_ms=args.think_ms,
        api_key=api_key if args.backend == "gemini" else None,
        access_token=api_key if args.backend == "vertex" else None,
        backend=args.backend,
        scenario=load_scenario(args.scenario) if args.scenario else None,
        connection_lifetime_s=args.connection_lifetime_s,
        go_away_before_s=args.go_away_before_s,
        session_limit_s=args.session_limit_s,
        models=frozenset(m.strip() for m in args.models.split(",") if m.strip())
        if args.models
        else None,
    )
    speech = EmulatorSpeech() if args.no_speech else EmulatorSpeech.installed()
    scheme = "wss" if ssl_context else "ws"
    log.info(
        "emulator.started",
        url=f"{scheme}://{args.host}:{args.port}",
        backend=args.backend,
        scenario=args.scenario,
        hears=speech.transcribe is not None,
        speaks=speech.speak is not None,
    )
    web.run_app(
        create_emulator_app(options, speech=speech),
        host=args.host,
        port=args.port,
        ssl_context=ssl_context,
        print=None,
    )
    return 0


def _call(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    configure_logging("warning", settings.log_format, secrets=settings.secrets())
    from agent.audio.codec import write_wav
    from agent.sim.carrier import (
        CallReport,
        CarrierOptions,
        TwilioApiSimulator,
        load_caller_audio,
        new_sid,
        place_call,
    )

    try:
        utterances = [load_caller_audio(name) for name in args.wavs]
    except OSError as exc:  # a mistyped clip name or path: one line, not a traceback
        raise ConfigError(str(exc).strip('"')) from exc
    if args.callee is not None:
        if args.carrier != "twilio":
            raise ConfigError("--callee answers Twilio's outbound calls only", key="--callee")
        return _answer_dial(args, settings, utterances)
    options = CarrierOptions(
        url=(args.url or default_bridge_url(settings)).rstrip("/"),
        speed=args.speed,
        auth_token=reveal(
            settings.plivo_auth_token if args.carrier == "plivo" else settings.twilio_auth_token
        ),
        from_number=args.from_number,
        to_number=args.to_number,
        barge_in_ms=args.barge_in_ms,
        carrier=args.carrier,
    )
    if args.rest_port is not None and args.carrier != "twilio":
        raise ConfigError("--rest-port simulates Twilio's REST API only", key="--rest-port")

    async def run() -> CallReport:
        if args.rest_port is None:
            return await place_call(options, utterances)
        account_sid = args.account_sid or settings.twilio_account_sid or new_sid("AC")
        try:
            rest_api = TwilioApiSimulator(
                account_sid=account_sid,
                auth_token=reveal(settings.twilio_auth_token),
                port=args.rest_port,
            )
            await rest_api.__aenter__()
        except OSError as exc:
            raise ConfigError(
                f"cannot serve the REST stand-in on 127.0.0.1:{args.rest_port}: "
                f"{exc.strerror or exc}",
                key="--rest-port",
            ) from exc
        try:
            print(
                f"TWILIO_API_URL={rest_api.url} TWILIO_ACCOUNT_SID={rest_api.account_sid}",
                flush=True,
            )
            return await place_call(options, utterances, rest=rest_api)
        finally:
            await rest_api.__aexit__(None, None, None)

    report = asyncio.run(run())
    if args.out:
        write_wav(args.out, report.heard, 8000)
    print(report.summary())
    print(_conversation(report.call_sid, settings.database_url))
    if args.out:
        print(f"wrote what the caller heard to {args.out}")
    return 0


def _answer_dial(args: argparse.Namespace, settings: Settings, utterances: list[bytes]) -> int:
    """``agent call --callee KIND``: the far end of the bridge's next outbound call."""
    from agent.audio.codec import write_wav
    from agent.cli.dial import answer_one_dial, describe_dial
    from agent.sim.carrier import new_sid

    if args.rest_port is None:
        raise ConfigError("--callee answers on the REST stand-in: give --rest-port", key="--callee")
    call = asyncio.run(
        answer_one_dial(
            kind=args.callee,
            utterances=utterances,
            port=args.rest_port,
            account_sid=args.account_sid or settings.twilio_account_sid or new_sid("AC"),
            auth_token=reveal(settings.twilio_auth_token),
            speed=args.speed,
        )
    )
    print(describe_dial(call))
    if args.out and call.report is not None:
        write_wav(args.out, call.report.heard, 8000)
        print(f"wrote what the callee heard to {args.out}")
    return 0


def default_bridge_url(settings: Settings) -> str:
    """Where ``agent serve`` listens with these settings: ``PORT`` on this machine (a wildcard
    ``HOST`` is reached on loopback)."""
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{host}:{settings.port}"


def _conversation(call_sid: str, database_url: str, *, wait_s: float = 5.0) -> str:
    """The call as text, from the bridge's call record (``DATABASE_URL``, as the server's):
    it is written as the call goes, so its ending may land a moment after the hang-up."""
    import time

    from agent.cli.calls import conversation_lines
    from agent.records.store import RecordStore

    try:
        store = RecordStore.from_url(database_url, create=False)
    except ConfigError:
        return (
            f"conversation: no call records at {database_url} (is the bridge using another "
            "DATABASE_URL?)"
        )
    deadline = time.monotonic() + wait_s
    while True:
        call = store.get_call(call_sid)
        if (call is not None and call.ended_at is not None) or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # a command line's wait for another process's write, not a test's
    if call is None:
        return f"conversation: call {call_sid} is not recorded in {store.location}"
    return "\n".join(["conversation", *conversation_lines(call)])


if __name__ == "__main__":
    raise SystemExit(main())
