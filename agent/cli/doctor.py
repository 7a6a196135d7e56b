"""``agent doctor``: check what a deployment needs, with the fix for each thing that is wrong.

agent doctor [--format text|json]   run every check against the environment (and ``.env``) the
                                    server would read; exit 0 when none fails, 1 otherwise

The checks, in order (a failure does not stop the others, except for unreadable settings):

* **settings**: the environment validates as :class:`~agent.settings.Settings` does at start-up;
* **agent files**: ``agent check``'s own validation of ``AGENTS_PATH``;
* **live api**: the Live preflight (:mod:`agent.live.preflight`): a Live session opens with the
  server's key for each model the agents use;
* **public url**: ``GET $PUBLIC_URL/healthz`` answers, from a bridge given the same
  ``PUBLIC_URL`` (it checks Twilio's signatures against it) and, when the doctor runs beside a
  bridge on ``HOST:PORT``, from that same process (the instance ids ``/healthz`` reports match;
  with replicas behind a balancer they may not: a warning); a loopback one is a warning, since
  Twilio cannot reach it;
* **twilio**: ``TWILIO_AUTH_TOKEN`` is set (webhooks verified) and the REST credentials are
  valid: ``GET /2010-04-01/Accounts/{Sid}.json`` on ``TWILIO_API_URL`` (Twilio's, or the carrier
  simulator's stand-in from ``agent call --rest-port``);
* **databases**: call records (``DATABASE_URL``), ``SHARED_STATE_URL`` and the demo CRM
  (``CRM_DATABASE_URL``) answer and hold the tables the server creates. The doctor reads only:
  it never creates a file or a table (a missing SQLite file is a warning: the server creates it).

Each result is ``pass``, ``warn`` (works, but look), ``skip`` (not configured) or ``fail``, with
a fix for the last three. No secret is printed: the checks' messages come from code that never
holds one in its text (and are masked by the same redaction as the logs).

Everything works offline against the emulator (``LIVE_API_URL=ws://127.0.0.1:9090``, with
``agent emulate --api-key-env``) and the simulator's REST stand-in.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp

from agent.cli.agents import check_command
from agent.config.loader import EnvAllow, load
from agent.config.models import AgentConfig
from agent.errors import AgentError, ConfigError
from agent.live.failures import FIXES
from agent.live.preflight import models_to_probe, probe
from agent.live.targets import settings_endpoint
from agent.observability.privacy import redact_secrets
from agent.records.backends import backend_from_url
from agent.settings import Settings, reveal
from agent.telephony.public_url import is_loopback_host

Status = Literal["pass", "warn", "skip", "fail"]

#: How long each network check may take.
TIMEOUT_S = 10.0

# The tables (and columns added since) each database must hold once the server has started
# against it: agent.records.store, agent.cluster.state and agent.crm.seed create them.
RECORD_TABLES: dict[str, tuple[str, ...]] = {
    "calls": ("call_sid",),
    "turns": ("call_sid",),
    "tool_calls": ("call_sid", "requested"),
    "call_usage": ("call_sid",),
}
SHARED_TABLES: dict[str, tuple[str, ...]] = {
    "stream_tickets": ("nonce",),
    "webhook_answers": ("key",),
    "calls_in_progress": ("call_sid",),
}
CRM_TABLES: dict[str, tuple[str, ...]] = {
    "customers": ("id", "phone"),
    "orders": ("id", "customer_id"),
    "appointments": ("id", "customer_id"),
    "tickets": ("id", "customer_id"),
}
_MIGRATE_FIX = (
    "start the bridge once against it (agent serve creates and upgrades its tables), or point "
    "{key} at the bridge's database"
)


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def add_doctor_subcommand(commands: Any) -> None:
    """Add ``doctor`` to the ``agent`` command's subparsers."""
    doctor = commands.add_parser(
        "doctor",
        help="check a deployment: Live key and models, PUBLIC_URL, Twilio, databases, agents",
        description="Check what a deployment needs and print pass/fail with the fix for each; "
        "exit 0 when nothing fails.",
    )
    doctor.add_argument("--format", choices=("text", "json"), default="text")
    doctor.set_defaults(run=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    code, text = asyncio.run(doctor_command(None, fmt=args.format))
    print(text)
    return code


async def doctor_command(env: Mapping[str, str] | None, *, fmt: str = "text") -> tuple[int, str]:
    """Run every check with ``env`` (None: the process's environment and ``.env``); the exit
    code and the report."""
    checks = await run_checks(env)
    return exit_code(checks), render(checks, fmt)


def exit_code(checks: Sequence[Check]) -> int:
    return 1 if any(check.status == "fail" for check in checks) else 0


def render(checks: Sequence[Check], fmt: str = "text") -> str:
    """The report: a line per check and its fix, or JSON (``{"ok": ..., "checks": [...]}``)."""
    if fmt == "json":
        body = {"ok": exit_code(checks) == 0, "checks": [asdict(check) for check in checks]}
        return json.dumps(body, indent=2)
    lines = []
    # Aligned on the usual names; a long one (``live <model>``) just pushes its own line.
    width = min(max((len(check.name) for check in checks), default=0), 15)
    for check in checks:
        lines.append(f"{check.status.upper():<4}  {check.name:<{width}}  {check.detail}")
        if check.fix and check.status != "pass":
            lines.append(f"{'':<4}  {'':<{width}}  fix: {check.fix}")
    failed = sum(check.status == "fail" for check in checks)
    lines.append(
        f"{len(checks)} checks: {failed} failed"
        + (", all clear" if not failed else ", see the fixes above")
    )
    return "\n".join(lines)


async def run_checks(env: Mapping[str, str] | None) -> list[Check]:
    """Every check, in report order."""
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        return [Check("settings", "fail", str(exc), "correct the variable it names")]
    secrets = settings.secrets()
    checks = [Check("settings", "pass", "the environment is valid")]
    agents_check, agents = _agents(settings, env)
    checks.append(agents_check)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as http:
        steps: list[Callable[[], Awaitable[list[Check]]]] = [
            lambda: _live(settings, agents),
            lambda: _public_url(settings, http),
            lambda: _twilio(settings, http),
            lambda: _databases(settings),
        ]
        for step in steps:
            checks.extend(await step())
    return [Check(c.name, c.status, redact_secrets(c.detail, secrets), c.fix) for c in checks]


def _agents(settings: Settings, env: Mapping[str, str] | None) -> tuple[Check, list[AgentConfig]]:
    from agent.tools import validate_specs  # imports the tool executors: only when checking

    code, text = check_command(settings.agents_path, env=env, check_tools=validate_specs)
    if code != 0:
        return Check("agent files", "fail", text, "run agent check and fix each line"), []
    registry = load(
        settings.agents_path,
        env=os.environ if env is None else env,
        env_allow=EnvAllow(settings.agent_env_prefix, settings.agent_env_allow),
        check_tools=validate_specs,
    )
    names = ", ".join(sorted(registry.agents))
    detail = f"{len(registry.agents)} agent{'s' if len(registry.agents) != 1 else ''}: {names}"
    return Check("agent files", "pass", detail), list(registry.agents.values())


async def _live(settings: Settings, agents: Sequence[AgentConfig]) -> list[Check]:
    if settings.use_emulator:
        return [
            Check(
                "live api",
                "warn",
                "no GEMINI_API_KEY and no LIVE_API_URL: calls are answered by the embedded "
                "Live API emulator",
                "set GEMINI_API_KEY for calls on Google's Live API",
            )
        ]
    if not agents:
        return [Check("live api", "skip", "no valid agent files to take the models from")]
    try:
        target = settings_endpoint(settings)
    except ConfigError as exc:
        return [Check("live api", "fail", str(exc), "install or configure what it names")]
    checks = []
    for agent in models_to_probe(agents):
        try:
            result = await probe(target, agent, timeout_s=TIMEOUT_S)
        except AgentError as exc:  # a field the backend lacks, credentials that cannot load
            checks.append(Check(f"live {agent.model}", "fail", str(exc), FIXES["protocol"]))
            continue
        if result.ok:
            detail = (
                f"a Live session opens for agent {agent.name} ({target.url(agent.api_version)})"
            )
            checks.append(Check(f"live {agent.model}", "pass", detail))
        else:
            checks.append(Check(f"live {agent.model}", "fail", result.error, result.fix))
    return checks


async def _public_url(settings: Settings, http: aiohttp.ClientSession) -> list[Check]:
    url = settings.public_url
    health = f"{url}/healthz"
    try:
        async with http.get(health, allow_redirects=False) as response:
            status = response.status
            body: Any = await response.json(content_type=None) if status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        what = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        return [
            Check(
                "public url",
                "fail",
                f"GET {health} failed: {what}",
                "set PUBLIC_URL to the URL Twilio reaches the bridge at (the tunnel's or load "
                "balancer's https:// address), and check that the bridge is running behind it",
            )
        ]
    if status != 200 or not isinstance(body, dict) or body.get("status") != "ok":
        return [
            Check(
                "public url",
                "fail",
                f"GET {health} answered HTTP {status}, not the bridge's health check",
                "PUBLIC_URL must lead to this bridge (check the proxy's or tunnel's target)",
            )
        ]
    told = body.get("public_url")
    if told != url:
        return [
            Check(
                "public url",
                "fail",
                f"{url} reaches a bridge whose PUBLIC_URL is {told}: it checks Twilio's "
                "signatures against that URL and points streams at it",
                f"give the bridge and this check the same PUBLIC_URL ({url} if that is what "
                "Twilio requests)",
            )
        ]
    instance = body.get("instance")
    detail = f"GET {health}: the bridge answers (instance {instance})"
    local = await _local_instance(settings, http)
    if local is not None and local != instance and settings.workers == 1:
        return [
            Check(
                "public url",
                "warn",
                f"{detail}, but the bridge on {_local_address(settings)} is instance {local}: "
                "PUBLIC_URL leads to another process",
                "fine behind a load balancer with several replicas; otherwise point PUBLIC_URL "
                "(the tunnel or proxy) at this bridge",
            )
        ]
    if local is not None and local == instance:
        detail += f", the one on {_local_address(settings)}"
    if is_loopback_host(_host_of(url)):
        return [
            Check(
                "public url",
                "warn",
                detail + ", but on loopback: Twilio cannot reach it",
                "for real calls, expose the bridge (a tunnel or a load balancer) and set "
                "PUBLIC_URL to that https:// URL",
            )
        ]
    return [Check("public url", "pass", detail)]


def _local_address(settings: Settings) -> str:
    host = settings.host if settings.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    return f"{host}:{settings.port}"


async def _local_instance(settings: Settings, http: aiohttp.ClientSession) -> str | None:
    """The instance id of the bridge on HOST:PORT, when the doctor runs beside it (else None:
    nothing to compare, which is no problem: the doctor may run elsewhere)."""
    try:
        async with http.get(f"http://{_local_address(settings)}/healthz") as response:
            body: Any = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    instance = body.get("instance") if isinstance(body, dict) else None
    return instance if isinstance(instance, str) else None


def _host_of(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


async def _twilio(settings: Settings, http: aiohttp.ClientSession) -> list[Check]:
    from agent.telephony.rest import TwilioApiError, TwilioRest

    checks = []
    if settings.twilio_auth_token:
        checks.append(Check("twilio webhooks", "pass", "TWILIO_AUTH_TOKEN set: webhooks verified"))
    else:
        checks.append(
            Check(
                "twilio webhooks",
                "warn",
                "no TWILIO_AUTH_TOKEN: webhooks and streams are not verified",
                "set TWILIO_AUTH_TOKEN to the account's auth token (development only without)",
            )
        )
    account = settings.twilio_account_sid
    if not account or not (settings.twilio_auth_token or settings.twilio_api_key_sid):
        checks.append(
            Check(
                "twilio rest",
                "skip",
                "no TWILIO_ACCOUNT_SID and credentials: end_call closes the stream, "
                "transfer_call is unavailable",
                "set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or TWILIO_API_KEY_SID and "
                "TWILIO_API_KEY_SECRET)",
            )
        )
        return checks
    try:
        client = TwilioRest(
            http,
            account_sid=account,
            auth_token=None if settings.twilio_api_key_sid else reveal(settings.twilio_auth_token),
            api_key_sid=settings.twilio_api_key_sid,
            api_key_secret=reveal(settings.twilio_api_key_secret),
            base_url=settings.twilio_api_url,
            timeout_s=TIMEOUT_S,
        )
        info = await client.fetch_account()
    except ConfigError as exc:
        checks.append(Check("twilio rest", "fail", str(exc), "correct the variable it names"))
        return checks
    except TwilioApiError as exc:
        fix = (
            "copy the account's primary auth token (or a valid API key and secret) from "
            "Twilio's console into TWILIO_AUTH_TOKEN, for TWILIO_ACCOUNT_SID"
            if exc.status == 401
            else f"check TWILIO_API_URL ({settings.twilio_api_url}) and the network path to it"
        )
        checks.append(Check("twilio rest", "fail", str(exc), fix))
        return checks
    status = info.get("status", "unknown")
    detail = f"account {info.get('friendly_name', account)} ({status}) at {settings.twilio_api_url}"
    if status != "active":
        checks.append(
            Check("twilio rest", "fail", detail, "reactivate the account in Twilio's console")
        )
    else:
        checks.append(Check("twilio rest", "pass", detail))
    return checks


async def _databases(settings: Settings) -> list[Check]:
    databases = [("call records", settings.database_url, "DATABASE_URL", RECORD_TABLES)]
    if settings.shared_state_url:
        databases.append(
            ("shared state", settings.shared_state_url, "SHARED_STATE_URL", SHARED_TABLES)
        )
    databases.append(("crm", settings.crm_database_url, "CRM_DATABASE_URL", CRM_TABLES))
    checks = [
        await asyncio.to_thread(database_check, name, url, key, tables)
        for name, url, key, tables in databases
    ]
    if not settings.shared_state_url:
        checks.insert(
            1,
            Check(
                "shared state",
                "skip",
                "no SHARED_STATE_URL: used stream tickets are kept in this process only",
                "set SHARED_STATE_URL (PostgreSQL) when running more than one replica",
            ),
        )
    return checks


def database_check(name: str, url: str, key: str, tables: Mapping[str, tuple[str, ...]]) -> Check:
    """Read-only: the database answers, passes its integrity check and holds ``tables`` with
    their columns. Blocking (the caller runs it in a thread)."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if path.name and not path.exists():
            return Check(
                name,
                "warn",
                f"{path} does not exist yet",
                f"the bridge creates it at start-up; if it should exist, check {key}",
            )
    try:
        backend = backend_from_url(url, create=False, key=key)
    except ConfigError as exc:
        return Check(name, "fail", str(exc), f"correct {key}")
    failures: tuple[type[Exception], ...] = (*backend.errors, OSError)
    try:
        conn = backend.connect()
    except failures as exc:
        return Check(name, "fail", f"cannot connect to {backend.location}: {exc}", f"check {key}")
    try:
        problem = backend.check(conn)
        if problem is not None:
            return Check(
                name,
                "fail",
                f"{backend.location} failed its check: {problem}",
                "restore it from a backup, or move it aside to start with an empty one",
            )
        missing = []
        for table, columns in tables.items():
            try:
                conn.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE 1 = 0").fetchall()
            except backend.errors:
                missing.append(f"{table} ({', '.join(columns)})")
        if missing:
            return Check(
                name,
                "fail",
                f"{backend.location} lacks {'; '.join(missing)}",
                _MIGRATE_FIX.format(key=key),
            )
    finally:
        conn.close()
    return Check(name, "pass", f"{backend.location}: reachable, tables in place")
