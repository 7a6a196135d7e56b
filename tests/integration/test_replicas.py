"""Two replicas behind one URL: the voice webhook on one, the media stream on the other.

A balancer stand-in (``agent.sim.balancer``) splits the two requests of a call the way any load
balancer may; both replicas share one PostgreSQL database (call records and used stream tickets),
as they do on Kubernetes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from agent.config.reload import AgentRegistryHolder
from agent.records.store import RecordStore
from agent.server.state import CALLS, PRECONNECTS
from agent.sim.balancer import RunningBalancer, start_balancer
from agent.sim.carrier import CarrierOptions, place_call
from agent.sim.live.scenario import scenario_from_data
from agent.sim.live.server import EmulatorOptions, RunningEmulator, start_emulator
from agent.telephony.webhooks import compute_signature

from .conftest import Bridge, BridgeFactory, caller_clip, start_two_replicas

AUTH_TOKEN = "replica-test-auth-token-51c0"
CALLER = "+15555550100"  # on file in the embedded CRM
BUNDLED = Path(__file__).parents[2] / "agent/examples/acme-support.yaml"


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    """A model that greets, then looks the caller up (a tool bound to the caller's number)."""
    lookup = {"name": "lookup_caller", "args": {}, "wait": True}
    scenario = {"steps": [{"say": "greeting"}, {"calls": [lookup], "say": "reply"}]}
    running = await start_emulator(EmulatorOptions(scenario=scenario_from_data(scenario)))
    yield running
    await running.close()


@pytest.fixture
async def balancer() -> AsyncIterator[tuple[RunningBalancer, dict[str, str]]]:
    """A balancer that sends each path to the replica the test puts in ``routes``."""
    routes: dict[str, str] = {}
    running = await start_balancer(lambda request: routes[request.path])
    yield running, routes
    await running.close()


@pytest.fixture
def agents(tmp_path: Path) -> Callable[[], AgentRegistryHolder]:
    """The bundled agent, whose pre-connected session would wait ten minutes for its stream: so
    a released one was released because the other replica took the stream, not by its expiry."""
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "acme.yaml").write_text(BUNDLED.read_text() + "\npreconnect_timeout_s: 600\n")
    return lambda: AgentRegistryHolder(folder)


async def start_replicas(
    start_bridge: BridgeFactory,
    public_url: str,
    database: str,
    emulator: RunningEmulator,
    agents: Callable[[], AgentRegistryHolder],
) -> tuple[Bridge, Bridge]:
    return await start_two_replicas(
        start_bridge,
        public_url=public_url,
        database=database,
        emulator=emulator,
        auth_token=AUTH_TOKEN,
        agents=agents,
    )


async def test_a_stream_on_the_replica_that_never_saw_the_webhook_runs_the_whole_call(
    start_bridge: BridgeFactory,
    emulator: RunningEmulator,
    balancer: tuple[RunningBalancer, dict[str, str]],
    postgres_database: Callable[[], str],
    agents: Callable[[], AgentRegistryHolder],
) -> None:
    lb, routes = balancer
    database = postgres_database()
    a, b = await start_replicas(start_bridge, lb.url, database, emulator, agents)
    routes.update({"/twilio/voice": a.url, "/twilio/stream": b.url})

    report = await place_call(
        CarrierOptions(url=lb.url, auth_token=AUTH_TOKEN, from_number=CALLER),
        [caller_clip("order-status")],
    )

    assert lb.balancer.sent == [("/twilio/voice", a.url), ("/twilio/stream", b.url)]
    call = await b.app[CALLS].wait_ended(report.call_sid)
    # The tool bound to the caller's number got it from the ticket: B found the caller's account.
    (result,) = [r.response for s in emulator.sessions for r in s.tool_responses]
    (row,) = result["result"]
    assert row["name"]
    assert call.agent.name == "acme-support"
    # The prompt B rendered knows the caller (CRM prefetch by the number in the ticket).
    assert call.agent.system_instruction is not None
    assert row["name"] in call.agent.system_instruction
    # A released its pre-connected session as soon as it saw B take the stream.
    assert a.app[PRECONNECTS] == {}
    # One record of the call, with both numbers, in the database both replicas share.
    store = RecordStore.from_url(database)
    try:
        record = store.get_call(report.call_sid)
    finally:
        await store.close()
    assert record is not None
    assert (record.from_number, record.to_number) == (CALLER, "+15555550199")


async def test_a_ticket_used_on_one_replica_is_refused_by_the_other(
    start_bridge: BridgeFactory,
    emulator: RunningEmulator,
    balancer: tuple[RunningBalancer, dict[str, str]],
    postgres_database: Callable[[], str],
    agents: Callable[[], AgentRegistryHolder],
) -> None:
    lb, _ = balancer
    a, b = await start_replicas(start_bridge, lb.url, postgres_database(), emulator, agents)
    call_sid = "CA" + "7" * 32
    form = {"CallSid": call_sid, "From": CALLER, "To": "+15555550199"}
    signature = compute_signature(AUTH_TOKEN, f"{lb.url}/twilio/voice", form)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{a.url}/twilio/voice", data=form, headers={"X-Twilio-Signature": signature}
        ) as resp:
            assert resp.status == 200
            twiml = await resp.text()
        token = twiml.split('name="token" value="')[1].split('"')[0]
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": "MZ" + "1" * 32,
            "start": {
                "streamSid": "MZ" + "1" * 32,
                "accountSid": "AC" + "1" * 32,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": {"token": token},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
        connected = '{"event":"connected","protocol":"Call","version":"1.0.0"}'

        first = await http.ws_connect(f"{_ws(b.url)}/twilio/stream")
        await first.send_str(connected)
        await first.send_str(json.dumps(start))
        # B speaks (the greeting) only after it has accepted, and so used up, the ticket.
        greeting = await first.receive()
        assert json.loads(greeting.data)["event"] == "media"

        replay = await http.ws_connect(f"{_ws(a.url)}/twilio/stream")
        await replay.send_str(connected)
        await replay.send_str(json.dumps(start))  # the same start, replayed
        message = await replay.receive()
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert replay.close_code == 1008  # the ticket was used on B
        await first.close()


def _ws(url: str) -> str:
    return url.replace("http", "ws", 1)


async def test_a_replayed_webhook_gets_the_same_answer_on_either_replica_and_no_second_call(
    start_bridge: BridgeFactory,
    emulator: RunningEmulator,
    balancer: tuple[RunningBalancer, dict[str, str]],
    postgres_database: Callable[[], str],
    agents: Callable[[], AgentRegistryHolder],
) -> None:
    """Twilio's signature has no timestamp: a captured webhook can be replayed. The replay gets
    the first answer (the same single-use ticket), not a fresh ticket, pre-connect or CRM lookup."""
    lb, _ = balancer
    a, b = await start_replicas(start_bridge, lb.url, postgres_database(), emulator, agents)
    form = {"CallSid": "CA" + "8" * 32, "From": CALLER, "To": "+15555550199"}
    signature = compute_signature(AUTH_TOKEN, f"{lb.url}/twilio/voice", form)
    answers = []
    async with aiohttp.ClientSession() as http:
        for replica in (a, a, b):
            async with http.post(
                f"{replica.url}/twilio/voice", data=form, headers={"X-Twilio-Signature": signature}
            ) as resp:
                assert resp.status == 200
                answers.append(await resp.text())
    assert answers[0] == answers[1] == answers[2]
    assert len(a.app[PRECONNECTS]) == 1  # the first answer's pre-connect, and no other
    assert b.app[PRECONNECTS] == {}
