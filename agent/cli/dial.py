"""``agent dial +E164 --agent NAME [--param k=v ...]``: place an outbound call through a running
bridge's ``POST /calls`` (with ``CALLS_API_TOKEN``), so the bridge that will hold the call's
media stream pre-connects its Live session while it rings."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from agent.errors import ConfigError, TelephonyError
from agent.settings import Settings, reveal
from agent.telephony.outbound import parse_params


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
