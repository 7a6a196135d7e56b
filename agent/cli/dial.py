"""``agent dial +E164 --agent NAME [--param k=v ...]``: place an outbound call through a running
bridge's ``POST /calls`` (with ``CALLS_API_TOKEN``), so the bridge that will hold the call's
media stream pre-connects its Live session while it rings."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import aiohttp

from agent.errors import ConfigError, TelephonyError
from agent.settings import Settings, reveal
from agent.telephony.outbound import parse_params

if TYPE_CHECKING:
    from agent.sim.carrier.callee import CalleeKind, DialledCall


def add_dial_subcommand(commands: Any) -> None:
    """Add ``dial`` to the ``agent`` command's subparsers."""
    dial = commands.add_parser(
        "dial",
        help="place an outbound call through a running bridge (POST /calls)",
        description="Ask the bridge at --url (default: PORT on this machine) to call NUMBER "
        "with the agent NAME; it needs CALLS_API_TOKEN, as the bridge does.",
    )
    dial.add_argument("number", help="the number to call, E.164 (+15555550100)")
    dial.add_argument("--agent", required=True, help="the agent that talks (its name)")
    dial.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a value for {param.NAME} in the agent's prompts (repeatable)",
    )
    dial.add_argument("--timezone", help="the callee's IANA time zone, for calling hours")
    dial.add_argument("--url", help="the bridge's base URL")
    dial.set_defaults(run=_dial)


def _dial(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    from agent.cli.main import default_bridge_url  # here: main imports this module

    try:
        params = parse_params(args.param)
    except ValueError as exc:
        raise ConfigError(str(exc), key="--param") from exc
    token = reveal(settings.calls_api_token)
    if token is None:
        raise ConfigError(
            "agent dial needs CALLS_API_TOKEN (the bridge's POST /calls token)",
            key="CALLS_API_TOKEN",
        )
    url = (args.url or default_bridge_url(settings)).rstrip("/")
    body: dict[str, Any] = {"to": args.number, "agent": args.agent, "params": params}
    if args.timezone:
        body["timezone"] = args.timezone
    status, answer = asyncio.run(post_call(url, token, body))
    if status == 201:
        print(f"calling {args.number}: {answer.get('call_sid')}")
        return 0
    raise TelephonyError(f"the bridge refused the call (HTTP {status}): {answer.get('error')}")


async def post_call(url: str, token: str, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """``POST {url}/calls``; the status and the JSON answer."""
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(
                f"{url}/calls", json=body, headers={"Authorization": f"Bearer {token}"}
            ) as response,
        ):
            text = await response.text()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TelephonyError(f"could not reach the bridge at {url}: {exc}") from exc
    try:
        answer = json.loads(text)
    except ValueError:
        answer = {"error": text[:200]}
    return status, answer if isinstance(answer, dict) else {"error": str(answer)[:200]}


# -- agent call --callee: the far end of the bridge's outbound calls, offline ----------------------


async def answer_one_dial(
    *,
    kind: str,
    utterances: Sequence[bytes],
    port: int,
    account_sid: str,
    auth_token: str | None,
    speed: float = 1.0,
) -> DialledCall:
    """Serve Twilio's REST API on ``127.0.0.1:port`` and be the far end (``kind``: a person
    saying ``utterances``, an answering machine whose greeting they are, a busy line, nobody)
    of the first call the bridge creates there; that call, once it has ended."""
    from agent.sim.carrier.callee import Callee, SimulatedCallees
    from agent.sim.carrier.rest import TwilioApiSimulator

    rest = TwilioApiSimulator(account_sid=account_sid, auth_token=auth_token, port=port)
    try:
        await rest.start()
    except OSError as exc:
        raise ConfigError(
            f"cannot serve the REST stand-in on 127.0.0.1:{port}: {exc.strerror or exc}",
            key="--rest-port",
        ) from exc
    try:
        callee = Callee(cast("CalleeKind", kind), tuple(utterances))
        callees = SimulatedCallees(rest, {}, auth_token=auth_token, speed=speed, default=callee)
        print(f"TWILIO_API_URL={rest.url} TWILIO_ACCOUNT_SID={rest.account_sid}", flush=True)
        print(
            f"waiting for the bridge to dial (agent dial NUMBER --agent NAME): {kind}", flush=True
        )
        (call,) = await callees.ended(1)
        return call
    finally:
        await rest.close()


def describe_dial(call: DialledCall) -> str:
    """What the far end of an outbound call saw, for ``agent call --callee``."""
    lines = [f"call {call.call_sid} to {call.create.get('To')}: {' -> '.join(call.statuses)}"]
    if call.answered_by is not None:
        lines.append(
            f"  answering-machine verdict sent: {call.answered_by} at {call.verdict_ms} ms"
        )
    lines.extend(f"  problem: {problem}" for problem in call.problems)
    if call.report is not None:
        lines.append(call.report.summary())
    return "\n".join(lines)
