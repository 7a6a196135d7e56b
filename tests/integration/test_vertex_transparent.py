"""The bridge on Vertex AI with transparent resumption, end to end against the emulator's Vertex
mode: a call survives a goAway, a 1011 and a dropped socket with every caller frame in the
session's state exactly once.

With the Developer API the bridge cannot know what the server read before a connection failed,
so it sends its last 200 ms again (test_reconnection.py: those frames arrive twice). With
``sessionResumption.transparent`` every ``sessionResumptionUpdate`` names the last client message
its state includes (``lastConsumedClientMessageIndex``); the bridge keeps what came after and
sends exactly that again on the next connection. The emulator's handles name snapshots at a
message index, so the resumed session holds exactly the messages up to it.

Also here: the emulator's Vertex handshake (a bearer token, or HTTP 401; the other backend's path
is 404) and the Developer API mode still refusing ``transparent``. Simulated clock (conftest.py).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agent.config.models import AgentConfig, SessionResumptionConfig
from agent.live.protocol import LIVE_PATH
from agent.live.targets import VERTEX_PATH, VertexTarget
from agent.server.state import CALLS
from agent.sim.carrier import CarrierOptions, place_call
from agent.sim.live.server import EmulatorOptions, Fault, RunningEmulator, start_emulator

from .conftest import BridgeFactory, caller_clip

# 20 ms of caller audio as the Live API receives it, at the agent's input rate (8 kHz by default).
PCM16_BYTES_PER_FRAME_IN = AgentConfig().input_sample_rate // 50 * 2
PCM16_BYTES_PER_TICK_8K = 320  # what the carrier's timeline holds per 20 ms
TOKEN = "ya29.emulator-test-token"
MODEL = "gemini-live-2.5-flash-native-audio"
RESOURCE = f"projects/acme-test/locations/us-central1/publishers/google/models/{MODEL}"
TIMEOUT = 60.0  # simulated seconds: generous costs nothing


@dataclass(frozen=True)
class FixedToken:
    """Credentials that always hand out one token (no google-auth, no network)."""

    token: str = TOKEN

    async def access_token(self) -> str:
        return self.token

    @property
    def quota_project_id(self) -> str | None:
        return None


def vertex_target(emulator: RunningEmulator, token: str = TOKEN) -> VertexTarget:
    return VertexTarget(
        project="acme-test",
        location="us-central1",
        credentials_provider=FixedToken(token),
        base_url=emulator.url,
    )


@pytest.fixture
async def vertex_emulator() -> AsyncIterator[RunningEmulator]:
    faults = (
        Fault.go_away(after_s=6.0, time_left_s=20.0, connection=0),
        Fault.close(after_s=6.0, code=1011, reason="Internal error occurred.", connection=1),
        Fault.abort(after_s=6.0, connection=2),
    )
    running = await start_emulator(
        EmulatorOptions(backend="vertex", access_token=TOKEN, faults=faults)
    )
    yield running
    await running.close()


async def test_transparent_resumption_loses_no_caller_frame_and_repeats_none(
    vertex_emulator: RunningEmulator, start_bridge: BridgeFactory
) -> None:
    agent = AgentConfig(model=MODEL, session_resumption=SessionResumptionConfig(transparent=True))
    bridge = await start_bridge(agent=agent, live_target=vertex_target(vertex_emulator))
    utterances = [
        caller_clip(name)
        for name in ("order-status", "librivox-0880", "cards-005", "goforward", "goodbye")
    ]
    report = await place_call(CarrierOptions(url=bridge.url), utterances)
    call = await bridge.app[CALLS].wait_ended(report.call_sid)

    sessions = vertex_emulator.sessions
    assert len(sessions) == 4, [s.faults for s in sessions]
    assert [s.faults for s in sessions[:3]] == [["go_away"], ["close"], ["abort"]]
    assert call.stats.reconnects == 3
    assert all(s.setup["model"] == RESOURCE for s in sessions)
    assert all(s.setup["sessionResumption"]["transparent"] is True for s in sessions)

    replayed_audio = 0
    for i, (old, new) in enumerate(itertools.pairwise(sessions), start=1):
        # Each connection resumed with the newest handle issued before it...
        issued_before = [h for earlier in sessions[:i] for h in earlier.resumption_handles]
        assert new.resumed_from == issued_before[-1], i
        assert new.resumed_from in old.resumption_handles, i
        index = old.consumed_indices[old.resumption_handles.index(new.resumed_from)]
        assert new.resumed_at_index == index
        # ...and the first messages on it are exactly those the old one took after that index
        # (message_digests starts at message 1: setup is 0), in order.
        unconsumed = old.message_digests[index:]
        assert new.message_digests[: len(unconsumed)] == unconsumed, i
        # client_messages has setup at 0: the kinds of the same messages.
        replayed_audio += sum(
            kind == "realtimeInput.audio" for kind in old.client_messages[index + 1 :]
        )

    # Every caller frame is in the final session's state once: none lost, none taken twice.
    frames_sent = len(report.heard) // PCM16_BYTES_PER_TICK_8K
    assert sessions[-1].session_audio_bytes == frames_sent * PCM16_BYTES_PER_FRAME_IN
    # What crossed the wire more than once is exactly what the bridge replayed: the caller audio
    # among the unconsumed messages, not a fixed 200 ms window.
    received = sum(s.audio_bytes_received for s in sessions) // PCM16_BYTES_PER_FRAME_IN
    assert call.live_replayed_frames == replayed_audio > 0
    assert received == frames_sent + call.live_replayed_frames
    # The conversation went on: every utterance was answered, and the call ended normally.
    assert all(u.first_reply_ms is not None for u in report.utterances)
    assert call.ended_reason == "caller hung up"


# -- the handshake and the Developer API mode -----------------------------------------------


async def test_the_vertex_path_wants_a_bearer_token_before_the_upgrade() -> None:
    emulator = await start_emulator(EmulatorOptions(backend="vertex", access_token=TOKEN))
    url = emulator.url + VERTEX_PATH.format(version="v1")
    try:
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"Authorization": "Bearer another-token"}):
                async with http.get(url, headers=headers) as response:
                    assert response.status == 401
                    body = await response.json()
                    assert body["error"]["status"] == "UNAUTHENTICATED"
            # The Developer API's path is not served in Vertex mode.
            async with http.get(emulator.url + LIVE_PATH.format(version="v1beta")) as response:
                assert response.status == 404
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, open_timeout=TIMEOUT):
                pass
        assert refused.value.response.status_code == 401
        # With the token, both of Vertex's versions are served.
        for version in ("v1", "v1beta1"):
            async with connect(
                emulator.url + VERTEX_PATH.format(version=version),
                additional_headers={"Authorization": f"Bearer {TOKEN}"},
                open_timeout=TIMEOUT,
            ) as ws:
                await ws.send(json.dumps({"setup": {"model": RESOURCE}}))
                assert json.loads(await ws.recv()) == {"setupComplete": {}}
        assert len(emulator.sessions) == 2  # a refused handshake is no session
    finally:
        await emulator.close()


async def test_the_developer_api_mode_still_refuses_transparent() -> None:
    emulator = await start_emulator(EmulatorOptions())
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(emulator.url + VERTEX_PATH.format(version="v1")) as response,
        ):
            assert response.status == 404
        async with connect(
            emulator.url + LIVE_PATH.format(version="v1beta"), open_timeout=TIMEOUT
        ) as ws:
            setup = {"model": f"models/{MODEL}", "sessionResumption": {"transparent": True}}
            await ws.send(json.dumps({"setup": setup}))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1007
        assert closed.value.rcvd.reason == (
            'Invalid JSON payload received. Unknown name "transparent" at '
            "'setup.session_resumption': Cannot find field."
        )
    finally:
        await emulator.close()
