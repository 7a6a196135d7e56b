"""The official ``google-genai`` SDK in Vertex AI mode against the emulator's Vertex mode.

The SDK is pointed at the emulator as at an API gateway (the protocol reference's "Vertex proxy
path"): ``vertexai=True`` with the full WebSocket URL as ``base_url``, the bearer token in
``headers`` and no project or location, so it uses the URL as given and speaks Vertex's payload
format. TLS as in ``conftest.py`` (the SDK hands ``async_client_args["ssl"]`` to websockets).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google import genai
from google.genai import types
from websockets.exceptions import InvalidStatus

from agent.live.targets import VERTEX_PATH
from agent.sim.live.server import EmulatorOptions, RunningEmulator, start_emulator

from .conftest import LiveTls

TOKEN = "ya29.conformance-token"
MODEL = (
    "projects/acme-test/locations/us-central1/publishers/google/models/"
    "gemini-live-2.5-flash-native-audio"
)
SILENCE_20MS = b"\x00" * 640  # 20 ms of PCM16 at 16 kHz


@pytest.fixture(autouse=True)
def _no_sdk_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a project and location the SDK would build Google's URL and fetch ADC: keep them out."""
    for name in (
        "GOOGLE_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
        "GOOGLE_GENAI_USE_VERTEXAI",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def vertex_emulator(live_tls: LiveTls) -> AsyncIterator[RunningEmulator]:
    running = await start_emulator(
        EmulatorOptions(backend="vertex", access_token=TOKEN, speed=20.0),
        ssl_context=live_tls.server,
    )
    yield running
    await running.close()


def vertex_client(emulator: RunningEmulator, live_tls: LiveTls, token: str = TOKEN) -> genai.Client:
    return genai.Client(
        vertexai=True,
        http_options=types.HttpOptions(
            base_url=emulator.url + VERTEX_PATH.format(version="v1beta1"),
            headers={"Authorization": f"Bearer {token}"},
            async_client_args={"ssl": live_tls.client},
        ),
    )


async def test_transparent_updates_reach_the_sdk_with_the_consumed_index(
    vertex_emulator: RunningEmulator, live_tls: LiveTls
) -> None:
    client = vertex_client(vertex_emulator, live_tls)
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        session_resumption=types.SessionResumptionConfig(transparent=True),
    )
    updates: list[types.LiveServerSessionResumptionUpdate] = []
    try:
        async with client.aio.live.connect(model=MODEL, config=config) as session:
            async for message in session.receive():
                if message.session_resumption_update:
                    updates.append(message.session_resumption_update)
                    break
            for _ in range(25):
                await session.send_realtime_input(
                    audio=types.Blob(data=SILENCE_20MS, mime_type="audio/pcm;rate=16000")
                )
            async for message in session.receive():
                if message.session_resumption_update:
                    updates.append(message.session_resumption_update)
                    break
    finally:
        await client.aio.aclose()
    # The SDK's type parses the int64 string: setup was message 0, the 25th chunk message 25.
    assert [u.last_consumed_client_message_index for u in updates] == [0, 25]
    assert all(u.resumable and u.new_handle for u in updates)
    setup = vertex_emulator.sessions[0].setup
    assert setup["model"] == MODEL
    assert setup["sessionResumption"] == {"transparent": True}


async def test_a_wrong_token_is_refused_at_the_handshake(
    vertex_emulator: RunningEmulator, live_tls: LiveTls
) -> None:
    client = vertex_client(vertex_emulator, live_tls, token="expired")
    try:
        with pytest.raises(InvalidStatus) as refused:
            async with client.aio.live.connect(model=MODEL, config=types.LiveConnectConfig()):
                pass
    finally:
        await client.aio.aclose()
    assert refused.value.response.status_code == 401
    assert vertex_emulator.sessions == []
