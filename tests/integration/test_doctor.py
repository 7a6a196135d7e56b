"""``agent doctor`` against a running deployment, all offline: the bridge, the Live API emulator
(wanting a key) and the carrier simulator's REST stand-in. With everything right every check
passes; with a bad key, a wrong PUBLIC_URL or a bad Twilio token, the check that names it fails
with its fix, and the exit code says so."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.doctor import doctor_command
from agent.live.targets import DeveloperApiTarget
from agent.sim.carrier import TwilioApiSimulator
from agent.sim.live.server import EmulatorOptions, RunningEmulator, start_emulator

from .conftest import Bridge, BridgeFactory

KEY = "AIza-the-deployment-key"
ACCOUNT = "AC" + "d" * 32
TOKEN = "0123456789abcdef0123456789abcdef"
MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"  # the bundled acme-support's


@pytest.fixture
async def keyed_emulator() -> AsyncIterator[RunningEmulator]:
    running = await start_emulator(EmulatorOptions(api_key=KEY))
    yield running
    await running.close()


@pytest.fixture
async def twilio_api() -> AsyncIterator[TwilioApiSimulator]:
    async with TwilioApiSimulator(account_sid=ACCOUNT, auth_token=TOKEN) as running:
        yield running


@pytest.fixture
async def deployment(
    start_bridge: BridgeFactory,
    keyed_emulator: RunningEmulator,
    twilio_api: TwilioApiSimulator,
    tmp_path: Path,
) -> tuple[Bridge, dict[str, str]]:
    """A running bridge, and the environment it was deployed with (what doctor reads)."""
    bridge = await start_bridge(
        live_target=DeveloperApiTarget(base_url=keyed_emulator.url, api_key=KEY),
        agent=None,  # the bundled acme-support, as AGENTS_PATH unset gives the doctor
        twilio_auth_token=TOKEN,
        twilio_account_sid=ACCOUNT,
        twilio_api_url=twilio_api.url,
        shared_state_url=f"sqlite:///{tmp_path}/shared.db",
    )
    settings = bridge.settings
    env = {
        "PUBLIC_URL": settings.public_url,
        "PORT": str(settings.port),
        "LIVE_API_URL": keyed_emulator.url,
        "GEMINI_API_KEY": KEY,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_API_URL": twilio_api.url,
        "DATABASE_URL": settings.database_url,
        "SHARED_STATE_URL": str(settings.shared_state_url),
        "CRM_DATABASE_URL": settings.crm_database_url,
    }
    return bridge, env


async def doctor(env: dict[str, str]) -> tuple[int, dict[str, dict[str, Any]], str]:
    code, text = await doctor_command(env, fmt="json")
    report = json.loads(text)
    assert report["ok"] is (code == 0)
    _, plain = await doctor_command(env)
    return code, {check["name"]: check for check in report["checks"]}, plain


async def test_a_deployment_that_is_right_passes_every_check(
    deployment: tuple[Bridge, dict[str, str]],
) -> None:
    _bridge, env = deployment
    code, checks, plain = await doctor(env)
    assert code == 0, plain
    assert {name: check["status"] for name, check in checks.items()} == {
        "settings": "pass",
        "agent files": "pass",
        f"live {MODEL}": "pass",
        # Loopback works here; Twilio could not reach it: a warning, not a failure.
        "public url": "warn",
        "twilio webhooks": "pass",
        "twilio rest": "pass",
        "call records": "pass",
        "shared state": "pass",
        "crm": "pass",
    }
    assert checks["twilio rest"]["detail"] == (
        f"account Simulated account (active) at {env['TWILIO_API_URL']}"
    )
    # PUBLIC_URL leads to the very process on HOST:PORT: the instance ids match.
    assert checks["public url"]["detail"].startswith(
        f"GET {env['PUBLIC_URL']}/healthz: the bridge answers (instance "
    )
    assert f"the one on 127.0.0.1:{env['PORT']}, but on loopback" in checks["public url"]["detail"]
    assert plain.endswith("9 checks: 0 failed, all clear")
    assert KEY not in plain
    assert TOKEN not in plain


async def test_a_bad_key_fails_the_live_check_with_its_fix(
    deployment: tuple[Bridge, dict[str, str]],
) -> None:
    _, env = deployment
    code, checks, plain = await doctor(env | {"GEMINI_API_KEY": "AIza-revoked"})
    assert code == 1
    live = checks[f"live {MODEL}"]
    assert live["status"] == "fail"
    assert "API key not valid. Please pass a valid API key." in live["detail"]
    assert live["fix"].startswith("set GEMINI_API_KEY to a valid key")
    assert "AIza-revoked" not in plain
    assert [name for name, c in checks.items() if c["status"] == "fail"] == [f"live {MODEL}"]


@pytest.mark.parametrize(
    ("public_url", "says"),
    [
        pytest.param("http://127.0.0.1:9", "GET http://127.0.0.1:9/healthz failed", id="no_bridge"),
        pytest.param(
            None, "reaches a bridge whose PUBLIC_URL is http://127.0.0.1:", id="other_url"
        ),
    ],
)
async def test_a_wrong_public_url_fails_with_its_fix(
    deployment: tuple[Bridge, dict[str, str]], public_url: str | None, says: str
) -> None:
    bridge, env = deployment
    # None: the same bridge under another name than the one it was given (as behind a proxy
    # whose address is not the PUBLIC_URL the bridge checks signatures against).
    wrong = public_url or bridge.url.replace("127.0.0.1", "localhost")
    code, checks, _ = await doctor(env | {"PUBLIC_URL": wrong})
    assert code == 1
    check = checks["public url"]
    assert check["status"] == "fail"
    assert says in check["detail"]
    assert "PUBLIC_URL" in check["fix"]


async def test_a_public_url_leading_to_another_bridge_than_the_local_one_is_a_warning(
    deployment: tuple[Bridge, dict[str, str]], start_bridge: BridgeFactory
) -> None:
    bridge, env = deployment
    # Another bridge, given the same PUBLIC_URL (say, a replica behind the tunnel).
    other = await start_bridge(public_url=bridge.url)
    code, checks, _ = await doctor(env | {"PORT": str(other.settings.port)})
    assert code == 0
    check = checks["public url"]
    assert check["status"] == "warn"
    assert f"the bridge on 127.0.0.1:{other.settings.port} is instance" in check["detail"]
    assert check["detail"].endswith("PUBLIC_URL leads to another process")


async def test_a_bad_twilio_token_fails_the_rest_check_with_its_fix(
    deployment: tuple[Bridge, dict[str, str]],
) -> None:
    _, env = deployment
    wrong = "ffffffffffffffffffffffffffffffff"
    code, checks, plain = await doctor(env | {"TWILIO_AUTH_TOKEN": wrong})
    assert code == 1
    rest = checks["twilio rest"]
    assert rest["status"] == "fail"
    assert (
        rest["detail"] == "Twilio refused the account lookup (HTTP 401, error 20003): Authenticate"
    )
    assert "TWILIO_AUTH_TOKEN" in rest["fix"]
    assert wrong not in plain


async def test_an_unmigrated_database_fails_and_a_missing_one_is_a_warning(
    deployment: tuple[Bridge, dict[str, str]], tmp_path: Path
) -> None:
    import sqlite3

    _, env = deployment
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    code, checks, _ = await doctor(
        env
        | {
            "DATABASE_URL": f"sqlite:///{empty}",
            "CRM_DATABASE_URL": f"sqlite:///{tmp_path}/none.db",
        }
    )
    assert code == 1
    records = checks["call records"]
    assert records["status"] == "fail"
    assert records["detail"].startswith(f"{empty} lacks calls (call_sid); turns (call_sid)")
    assert records["fix"].startswith("start the bridge once against it")
    assert checks["crm"]["status"] == "warn"
