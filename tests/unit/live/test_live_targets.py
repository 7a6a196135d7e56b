"""Live API targets: URLs, auth headers, model paths, token refresh, and what goes on the wire.

Vertex AI is tested with fake google-auth credentials (no network) and a local WebSocket server
that records the path, headers and ``setup`` the bridge actually sends.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from agent.config.models import AgentConfig, SessionResumptionConfig
from agent.errors import ConfigError, LiveConnectError
from agent.live.connection import LiveConnection
from agent.live.protocol import SetupComplete
from agent.live.targets import (
    DeveloperApiTarget,
    GoogleAuthCredentials,
    LiveEndpoint,
    VertexTarget,
    live_endpoint,
)
from agent.settings import Settings

NOW = datetime(2026, 10, 1, 12, 0, 0)


def clock() -> datetime:
    return NOW


@dataclass
class FakeGoogleCredentials:
    """Quacks like ``google.auth.credentials.Credentials``: token, expiry, refresh(request)."""

    token: str | None = None
    expiry: datetime | None = None
    quota_project_id: str | None = None
    lifetime: timedelta = timedelta(hours=1)
    fail_with: Exception | None = None
    refresh_delay_s: float = 0.0
    refreshes: int = 0
    requests: list[object] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)

    def refresh(self, request: Any) -> None:
        self.threads.append(threading.get_ident())
        self.requests.append(request)
        if self.refresh_delay_s:
            threading.Event().wait(self.refresh_delay_s)
        self.refreshes += 1
        if self.fail_with is not None:
            raise self.fail_with
        self.token = f"ya29.token-{self.refreshes}"
        self.expiry = NOW + self.lifetime


@dataclass
class FixedTokens:
    """A CredentialsProvider with a fixed token, for target-level tests."""

    token: str = "ya29.fixed"
    quota_project_id: str | None = None

    async def access_token(self) -> str:
        return self.token


TRANSPORT = object()  # stands in for google.auth.transport.requests.Request()


def google_credentials(creds: FakeGoogleCredentials, **kwargs: Any) -> GoogleAuthCredentials:
    return GoogleAuthCredentials(creds, request=TRANSPORT, clock=clock, **kwargs)


# --------------------------------------------------------------------------------------------
# Developer API
# --------------------------------------------------------------------------------------------


async def test_developer_target_sends_the_key_in_a_header() -> None:
    target = DeveloperApiTarget(
        base_url="wss://generativelanguage.googleapis.com/", api_key="AIza-k"
    )
    assert isinstance(target, DeveloperApiTarget)
    assert target.backend == "gemini"
    assert target.url("v1") == (
        "wss://generativelanguage.googleapis.com/ws/"
        "google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent"
    )
    assert await target.headers() == {"x-goog-api-key": "AIza-k"}
    assert target.model_path("gemini-3.8-live") == "models/gemini-3.8-live"
    assert "AIza-k" not in repr(target)


async def test_developer_target_without_a_key_sends_no_credentials() -> None:
    assert await DeveloperApiTarget(base_url="ws://127.0.0.1:9").headers() == {}


async def test_ephemeral_tokens_use_the_constrained_method_and_token_auth() -> None:
    target = DeveloperApiTarget(api_key="auth_tokens/abc123")
    assert target.url("v1alpha") == (
        "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1alpha."
        "GenerativeService.BidiGenerateContentConstrained"
    )
    assert await target.headers() == {"Authorization": "Token auth_tokens/abc123"}


# --------------------------------------------------------------------------------------------
# Vertex AI target
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "base_url", "url"),
    [
        (
            "us-central1",
            None,
            "wss://us-central1-aiplatform.googleapis.com/ws/"
            "google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent",
        ),
        (
            "global",
            None,
            "wss://aiplatform.googleapis.com/ws/"
            "google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent",
        ),
        (
            "europe-west4",
            "ws://127.0.0.1:8765/",
            "ws://127.0.0.1:8765/ws/"
            "google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent",
        ),
    ],
)
def test_vertex_url(location: str, base_url: str | None, url: str) -> None:
    target = VertexTarget("acme-prod", location, FixedTokens(), base_url=base_url)
    assert target.backend == "vertex"
    # The agent's Developer API version does not apply: Vertex versions its service itself.
    assert target.url("v1alpha") == url


def test_vertex_api_version_can_be_v1() -> None:
    target = VertexTarget("acme-prod", "us-central1", FixedTokens(), api_version="v1")
    assert target.url("v1beta").endswith(
        "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent"
    )


@pytest.mark.parametrize(
    ("model", "path"),
    [
        (
            "gemini-live-2.5-flash-native-audio",
            "projects/acme-prod/locations/us-central1/publishers/google/models/"
            "gemini-live-2.5-flash-native-audio",
        ),
        (
            "models/gemini-3.8-live",
            "projects/acme-prod/locations/us-central1/publishers/google/models/gemini-3.8-live",
        ),
        (
            "publishers/google/models/gemini-3.8-live",
            "projects/acme-prod/locations/us-central1/publishers/google/models/gemini-3.8-live",
        ),
        (
            "meta/llama-live",
            "projects/acme-prod/locations/us-central1/publishers/meta/models/llama-live",
        ),
        (
            "projects/other/locations/global/publishers/google/models/m",
            "projects/other/locations/global/publishers/google/models/m",
        ),
    ],
)
def test_vertex_model_path(model: str, path: str) -> None:
    assert VertexTarget("acme-prod", "us-central1", FixedTokens()).model_path(model) == path


async def test_vertex_headers_carry_the_bearer_token_and_quota_project() -> None:
    target = VertexTarget("acme-prod", "us-central1", FixedTokens("ya29.a", "billing-proj"))
    assert await target.headers() == {
        "Authorization": "Bearer ya29.a",
        "x-goog-user-project": "billing-proj",
    }
    assert "ya29" not in repr(target)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"project": "", "location": "us-central1"}, "VERTEX_PROJECT"),
        ({"project": "a/b", "location": "us-central1"}, "VERTEX_PROJECT"),
        ({"project": "acme-prod", "location": "US Central"}, "VERTEX_LOCATION"),
        (
            {"project": "acme-prod", "location": "us-central1", "base_url": "https://x"},
            "LIVE_API_URL",
        ),
        (
            {"project": "acme-prod", "location": "us-central1", "api_version": "v1beta"},
            "api_version",
        ),
    ],
)
def test_vertex_target_validates(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        VertexTarget(credentials_provider=FixedTokens(), **kwargs)
    assert caught.value.key == key


# --------------------------------------------------------------------------------------------
# google-auth credentials: refreshed in a thread, before expiry, once at a time
# --------------------------------------------------------------------------------------------


async def test_a_missing_token_is_fetched_in_a_worker_thread() -> None:
    creds = FakeGoogleCredentials()
    tokens = google_credentials(creds)
    assert await tokens.access_token() == "ya29.token-1"
    assert creds.requests == [TRANSPORT]
    assert len(creds.threads) == 1
    assert creds.threads[0] != threading.get_ident()


async def test_a_fresh_token_is_reused() -> None:
    creds = FakeGoogleCredentials(token="ya29.cached", expiry=NOW + timedelta(minutes=30))
    tokens = google_credentials(creds)
    assert await tokens.access_token() == "ya29.cached"
    assert await tokens.access_token() == "ya29.cached"
    assert creds.refreshes == 0


@pytest.mark.parametrize(
    "expiry",
    [
        NOW + timedelta(minutes=4),  # inside the 5-minute margin: refresh before it expires
        NOW - timedelta(seconds=1),
        (NOW + timedelta(minutes=4)).replace(tzinfo=UTC),
        # 14:04 at UTC+2 is 12:04 UTC: four minutes left, so refresh.
        (NOW + timedelta(hours=2, minutes=4)).replace(tzinfo=timezone(timedelta(hours=2))),
    ],
)
async def test_a_token_near_expiry_is_refreshed(expiry: datetime) -> None:
    creds = FakeGoogleCredentials(token="ya29.old", expiry=expiry)
    assert await google_credentials(creds).access_token() == "ya29.token-1"


async def test_the_refresh_margin_is_configurable() -> None:
    creds = FakeGoogleCredentials(token="ya29.old", expiry=NOW + timedelta(minutes=4))
    tokens = google_credentials(creds, refresh_margin_s=60)
    assert await tokens.access_token() == "ya29.old"


async def test_credentials_without_expiry_are_never_refreshed() -> None:
    creds = FakeGoogleCredentials(token="ya29.forever", expiry=None)
    assert await google_credentials(creds).access_token() == "ya29.forever"
    assert creds.refreshes == 0


async def test_concurrent_connects_share_one_refresh() -> None:
    creds = FakeGoogleCredentials(refresh_delay_s=0.05)
    tokens = google_credentials(creds)
    results = await asyncio.gather(*(tokens.access_token() for _ in range(5)))
    assert results == ["ya29.token-1"] * 5
    assert creds.refreshes == 1


async def test_a_cancelled_connect_does_not_abandon_the_refresh() -> None:
    creds = FakeGoogleCredentials(refresh_delay_s=0.1)
    tokens = google_credentials(creds)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await tokens.access_token()
    assert await tokens.access_token() == "ya29.token-1"
    assert creds.refreshes == 1


async def test_a_failed_refresh_is_a_connect_error_and_the_next_connect_retries() -> None:
    creds = FakeGoogleCredentials(fail_with=RuntimeError("invalid_grant: Bad Request"))
    tokens = google_credentials(creds)
    with pytest.raises(LiveConnectError, match="invalid_grant"):
        await tokens.access_token()
    creds.fail_with = None
    assert await tokens.access_token() == "ya29.token-2"


async def test_credentials_that_produce_no_token_are_a_connect_error() -> None:
    class Empty(FakeGoogleCredentials):
        def refresh(self, request: Any) -> None:
            self.refreshes += 1

    with pytest.raises(LiveConnectError, match="no access token"):
        await google_credentials(Empty()).access_token()


def test_quota_project_comes_from_the_credentials() -> None:
    assert google_credentials(FakeGoogleCredentials(quota_project_id="q-1")).quota_project_id == (
        "q-1"
    )
    assert google_credentials(FakeGoogleCredentials()).quota_project_id is None


def test_missing_google_auth_is_a_config_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "google.auth", None)
    with pytest.raises(ConfigError, match=r"gemini-phone-agent\[vertex\]") as caught:
        GoogleAuthCredentials.from_environment()
    assert caught.value.key == "LIVE_BACKEND"


def test_missing_requests_transport_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.auth.transport.requests", None)
    with pytest.raises(ConfigError, match="google-auth"):
        GoogleAuthCredentials(FakeGoogleCredentials())


def test_no_application_default_credentials_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import google.auth
    import google.auth.exceptions

    def no_credentials(**kwargs: Any) -> Any:
        raise google.auth.exceptions.DefaultCredentialsError(  # type: ignore[no-untyped-call]
            "File x was not found."
        )

    monkeypatch.setattr(google.auth, "default", no_credentials)
    with pytest.raises(ConfigError, match=r"Application Default Credentials.*was not found"):
        GoogleAuthCredentials.from_environment()


def test_application_default_credentials_are_loaded_with_the_cloud_platform_scope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import google.auth

    seen: dict[str, Any] = {}
    creds = FakeGoogleCredentials(token="ya29.adc", expiry=NOW + timedelta(hours=1))

    def default(**kwargs: Any) -> tuple[Any, str]:
        seen.update(kwargs)
        return creds, "adc-project"

    monkeypatch.setattr(google.auth, "default", default)
    tokens = GoogleAuthCredentials.from_environment()
    assert seen == {"scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
    assert isinstance(tokens, GoogleAuthCredentials)


# --------------------------------------------------------------------------------------------
# Choosing a target from settings
# --------------------------------------------------------------------------------------------


def test_live_endpoint_builds_the_developer_target_by_default() -> None:
    target = live_endpoint("gemini", api_key="k")
    assert target == DeveloperApiTarget(api_key="k")


def test_live_endpoint_builds_a_vertex_target() -> None:
    provider = FixedTokens()
    target = live_endpoint(
        "vertex",
        vertex_project="acme-prod",
        vertex_location="global",
        credentials_provider=provider,
    )
    assert target == VertexTarget("acme-prod", "global", provider)


@pytest.mark.parametrize(
    ("backend", "project", "key"),
    [("vertex", None, "VERTEX_PROJECT"), ("openai", "p", "LIVE_BACKEND")],
)
def test_live_endpoint_refuses_incomplete_settings(
    backend: str, project: str | None, key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        live_endpoint(backend, vertex_project=project, credentials_provider=FixedTokens())
    assert caught.value.key == key


def test_settings_default_to_the_developer_api() -> None:
    settings = Settings.from_env({})
    assert (settings.live_backend, settings.vertex_project, settings.vertex_location) == (
        "gemini",
        None,
        "us-central1",
    )
    assert settings.use_emulator


def test_settings_for_vertex() -> None:
    settings = Settings.from_env(
        {"LIVE_BACKEND": "Vertex", "VERTEX_PROJECT": "acme-prod", "VERTEX_LOCATION": "global"}
    )
    assert (settings.live_backend, settings.vertex_project, settings.vertex_location) == (
        "vertex",
        "acme-prod",
        "global",
    )
    # Vertex needs no API key, and must not fall back to the embedded emulator without one.
    assert not settings.use_emulator


@pytest.mark.parametrize(
    ("env", "key", "says"),
    [
        ({"LIVE_BACKEND": "openai"}, "LIVE_BACKEND", "gemini or vertex"),
        ({"LIVE_BACKEND": "vertex"}, "VERTEX_PROJECT", "needs VERTEX_PROJECT"),
        (
            {"LIVE_BACKEND": "vertex", "VERTEX_PROJECT": "Acme Prod"},
            "VERTEX_PROJECT",
            "project id",
        ),
        (
            {"LIVE_BACKEND": "vertex", "VERTEX_PROJECT": "acme-prod", "VERTEX_LOCATION": "us/c"},
            "VERTEX_LOCATION",
            "region",
        ),
    ],
)
def test_settings_errors(env: dict[str, str], key: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        Settings.from_env(env)
    assert caught.value.key == key


# --------------------------------------------------------------------------------------------
# On the wire: what a local server receives
# --------------------------------------------------------------------------------------------


@dataclass
class Seen:
    """What the local Live server saw of one connection."""

    path: str
    headers: dict[str, str]
    setup: dict[str, Any]


@pytest.fixture
async def live_server() -> AsyncIterator[tuple[str, list[Seen]]]:
    """A WebSocket server that records each handshake and setup, then completes the setup."""
    seen: list[Seen] = []

    async def handler(connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        setup = json.loads(await connection.recv())
        seen.append(Seen(request.path, dict(request.headers.raw_items()), setup))
        await connection.send(json.dumps({"setupComplete": {"sessionId": "s-1"}}).encode())
        await connection.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}", seen


async def _open(target: LiveEndpoint, agent: AgentConfig, **kwargs: Any) -> SetupComplete:
    connection = await LiveConnection.open(target, agent, timeout_s=5.0, **kwargs)
    async with connection:
        return connection.setup


async def test_vertex_connection_sends_path_bearer_token_and_model_path(
    live_server: tuple[str, list[Seen]],
) -> None:
    url, seen = live_server
    creds = FakeGoogleCredentials(quota_project_id="billing-proj")
    target = VertexTarget("acme-prod", "us-central1", google_credentials(creds), base_url=url)
    agent = AgentConfig(
        model="gemini-live-2.5-flash-native-audio",
        system_instruction=None,
        voice=None,
        session_resumption=SessionResumptionConfig(transparent=True),
    )

    assert await _open(target, agent, resumption_handle="h-7") == SetupComplete("s-1")

    (connection,) = seen
    assert connection.path == (
        "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent"
    )
    assert connection.headers["Authorization"] == "Bearer ya29.token-1"
    assert connection.headers["x-goog-user-project"] == "billing-proj"
    assert "x-goog-api-key" not in connection.headers
    assert connection.setup == {
        "setup": {
            "model": "projects/acme-prod/locations/us-central1/publishers/google/models/"
            "gemini-live-2.5-flash-native-audio",
            "generationConfig": {"responseModalities": ["AUDIO"]},
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
            "contextWindowCompression": {"slidingWindow": {}},
            "sessionResumption": {"handle": "h-7", "transparent": True},
        }
    }


async def test_each_vertex_connect_reuses_a_fresh_token(
    live_server: tuple[str, list[Seen]],
) -> None:
    url, seen = live_server
    creds = FakeGoogleCredentials()
    target = VertexTarget("acme-prod", "us-central1", google_credentials(creds), base_url=url)
    await _open(target, AgentConfig())
    await _open(target, AgentConfig())
    assert [s.headers["Authorization"] for s in seen] == ["Bearer ya29.token-1"] * 2
    assert creds.refreshes == 1


async def test_developer_connection_sends_the_key_and_models_path(
    live_server: tuple[str, list[Seen]],
) -> None:
    url, seen = live_server
    await _open(
        DeveloperApiTarget(base_url=url, api_key="AIza-k"), AgentConfig(model="gemini-3.8-live")
    )
    (connection,) = seen
    assert connection.path == (
        "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    )
    assert connection.headers["x-goog-api-key"] == "AIza-k"
    assert "Authorization" not in connection.headers
    assert connection.setup["setup"]["model"] == "models/gemini-3.8-live"


async def test_a_token_failure_fails_the_connect_before_any_handshake(
    live_server: tuple[str, list[Seen]],
) -> None:
    url, seen = live_server
    creds = FakeGoogleCredentials(fail_with=OSError("metadata server unreachable"))
    target = VertexTarget("acme-prod", "us-central1", google_credentials(creds), base_url=url)
    with pytest.raises(LiveConnectError, match="metadata server unreachable"):
        await _open(target, AgentConfig())
    assert seen == []


async def test_a_vertex_only_field_fails_before_connecting_to_the_developer_api(
    live_server: tuple[str, list[Seen]],
) -> None:
    url, seen = live_server
    with pytest.raises(ConfigError, match="Vertex AI only"):
        await _open(DeveloperApiTarget(base_url=url), AgentConfig(explicit_vad_signal=True))
    assert seen == []
