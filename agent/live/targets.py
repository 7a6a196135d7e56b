"""Where a Live API is and how to authenticate to it.

:meth:`LiveConnection.open <agent.live.connection.LiveConnection.open>` takes any
:class:`LiveEndpoint`: it asks it for the WebSocket URL, the handshake headers and the model's
resource name, and which backend it is (Vertex AI has fields the Developer API lacks). Two
backends speak the same protocol:

* :class:`DeveloperApiTarget` (also importable as ``DeveloperApiTarget``): the Gemini Developer API,
  ``generativelanguage.googleapis.com``, an API key in ``x-goog-api-key``; models are
  ``models/{model}``. An ephemeral token (``auth_tokens/...``) goes to the constrained method with
  ``Authorization: Token ...``, as the SDK does.
* :class:`VertexTarget`: Vertex AI's ``LlmBidiService``, an OAuth access token in
  ``Authorization: Bearer ...``; models are
  ``projects/{p}/locations/{l}/publishers/google/models/{m}``.
  Tokens come from a :class:`CredentialsProvider`; :class:`GoogleAuthCredentials` wraps
  ``google-auth`` (Application Default Credentials), an optional dependency
  (``pip install 'gemini-phone-agent[vertex]'``) imported only when a Vertex target is built.

Only the OAuth refresh does I/O here, and it runs in a worker thread: the event loop keeps
moving every other call's audio while a token is fetched.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from agent.errors import ConfigError, LiveConnectError
from agent.live.protocol import DEFAULT_LIVE_API_URL, Backend, developer_model_path, live_url
from agent.settings import Settings, reveal

CONSTRAINED_PATH: Final = (
    "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContentConstrained"
)
VERTEX_PATH: Final = "/ws/google.cloud.aiplatform.{version}.LlmBidiService/BidiGenerateContent"
VERTEX_API_VERSION: Final = "v1beta1"
CLOUD_PLATFORM_SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
# Refresh this long before expiry: a token must outlive the handshake that carries it, and
# google-auth's own "expired" check already allows for a few minutes of clock skew.
DEFAULT_REFRESH_MARGIN_S: Final = 300.0
_LOCATION_RE: Final = re.compile(r"[a-z][a-z0-9-]*")


class LiveEndpoint(Protocol):
    """A Live API backend as :class:`~agent.live.connection.LiveConnection` needs it."""

    @property
    def backend(self) -> Backend:
        """``"gemini"`` (Developer API) or ``"vertex"``: decides which setup fields exist."""
        ...

    def url(self, version: str) -> str:
        """The WebSocket URL for the agent's API ``version``."""
        ...

    async def headers(self) -> dict[str, str]:
        """Handshake headers (authentication); may fetch a token, so it is awaited per connect."""
        ...

    def model_path(self, model: str) -> str:
        """The resource name ``setup.model`` must carry for the agent's ``model``."""
        ...


@dataclass(frozen=True, slots=True)
class DeveloperApiTarget:
    """The Gemini Developer API (``LIVE_API_URL``, ``GEMINI_API_KEY``), or anything speaking it
    (the embedded emulator). Without a key no credential is sent."""

    base_url: str = DEFAULT_LIVE_API_URL
    api_key: str | None = field(default=None, repr=False)

    @property
    def backend(self) -> Backend:
        return "gemini"

    @property
    def _ephemeral(self) -> bool:
        return self.api_key is not None and self.api_key.startswith("auth_tokens/")

    def url(self, version: str) -> str:
        if self._ephemeral:
            return self.base_url.rstrip("/") + CONSTRAINED_PATH.format(version=version)
        return live_url(self.base_url, version)

    async def headers(self) -> dict[str, str]:
        if not self.api_key:
            return {}
        if self._ephemeral:
            return {"Authorization": f"Token {self.api_key}"}
        return {"x-goog-api-key": self.api_key}

    def model_path(self, model: str) -> str:
        return developer_model_path(model)


class CredentialsProvider(Protocol):
    """Where a :class:`VertexTarget` gets OAuth access tokens."""

    async def access_token(self) -> str:
        """A token valid for at least the next few minutes; raises ``LiveConnectError``."""
        ...

    @property
    def quota_project_id(self) -> str | None:
        """The project to bill quota to, when the credentials name one."""
        ...


class RefreshableCredentials(Protocol):
    """The part of ``google.auth.credentials.Credentials`` this module uses (tests fake it)."""

    token: str | None
    expiry: datetime | None

    def refresh(self, request: Any) -> None: ...


def _utcnow() -> datetime:
    # google-auth keeps ``expiry`` as a naive UTC datetime.
    return datetime.now(UTC).replace(tzinfo=None)


class GoogleAuthCredentials:
    """OAuth access tokens from ``google-auth`` credentials, refreshed before they expire.

    A token is fetched when missing or within ``refresh_margin_s`` of expiry. The refresh (an
    HTTPS round trip) runs in a worker thread, once however many connects ask at the same time,
    and is shielded: a connect that times out does not abandon a refresh others are waiting for.
    """

    def __init__(
        self,
        credentials: RefreshableCredentials,
        *,
        request: Any = None,
        refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        """Wrap ``credentials``. ``request`` is google-auth's HTTP transport for refreshing; by
        default ``google.auth.transport.requests.Request()``. ``clock`` returns naive UTC."""
        self._credentials = credentials
        self._request = request if request is not None else _requests_transport()
        self._margin = timedelta(seconds=refresh_margin_s)
        self._clock = clock
        self._refreshing: asyncio.Future[None] | None = None

    @classmethod
    def from_environment(
        cls,
        *,
        scopes: Sequence[str] = (CLOUD_PLATFORM_SCOPE,),
        refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
    ) -> GoogleAuthCredentials:
        """Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's user
        credentials, or the metadata server on Google Cloud).

        Blocking (it reads files and may probe the metadata server): call it at start-up. Raises
        :class:`~agent.errors.ConfigError` when ``google-auth`` is not installed or no
        credentials are found.
        """
        google_auth, auth_exceptions = _import_google_auth()
        try:
            credentials, _project = google_auth.default(scopes=list(scopes))
        except auth_exceptions.DefaultCredentialsError as exc:
            raise ConfigError(
                "LIVE_BACKEND=vertex needs Google Application Default Credentials "
                f"(GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth application-default login`): "
                f"{exc}",
                key="LIVE_BACKEND",
            ) from exc
        return cls(credentials, refresh_margin_s=refresh_margin_s)

    @property
    def quota_project_id(self) -> str | None:
        project = getattr(self._credentials, "quota_project_id", None)
        return project if isinstance(project, str) and project else None

    async def access_token(self) -> str:
        if not self._fresh():
            if self._refreshing is None:
                self._refreshing = asyncio.ensure_future(
                    asyncio.to_thread(self._credentials.refresh, self._request)
                )
                self._refreshing.add_done_callback(self._refreshed)
            try:
                await asyncio.shield(self._refreshing)
            except Exception as exc:
                # Vendor code: google-auth and its HTTP transport raise many types. Map them here,
                # at the boundary, so the call above handles one name.
                raise LiveConnectError(f"could not refresh the Google access token: {exc}") from exc
        token = self._credentials.token
        if not token:
            raise LiveConnectError("Google credentials produced no access token")
        return token

    def _fresh(self) -> bool:
        if not self._credentials.token:
            return False
        expiry = self._credentials.expiry
        if expiry is None:  # some credentials (e.g. a fixed token) never expire
            return True
        if expiry.tzinfo is not None:
            expiry = expiry.astimezone(UTC).replace(tzinfo=None)
        return expiry - self._clock() > self._margin

    def _refreshed(self, future: asyncio.Future[None]) -> None:
        self._refreshing = None
        # Mark a failure as seen even if every waiter was cancelled: the next connect retries.
        if not future.cancelled():
            future.exception()


@dataclass(frozen=True, slots=True)
class VertexTarget:
    """Vertex AI's Live API (``LlmBidiService``) in ``project`` and ``location``.

    ``location="global"`` uses the global host. ``base_url`` replaces the regional host (a private
    endpoint, or a local test server). ``api_version`` is Vertex's own (``v1beta1`` as the SDK's
    default, or ``v1``), so the agent's Developer API version does not apply here.
    """

    project: str
    location: str
    credentials_provider: CredentialsProvider = field(repr=False)
    base_url: str | None = None
    api_version: str = VERTEX_API_VERSION

    def __post_init__(self) -> None:
        if not self.project or any(c in self.project for c in "/?#& "):
            raise ConfigError(
                f"Vertex AI project must be a project id, got {self.project!r}",
                key="VERTEX_PROJECT",
            )
        if not _LOCATION_RE.fullmatch(self.location):
            raise ConfigError(
                "Vertex AI location must be a region such as 'us-central1' or 'global', "
                f"got {self.location!r}",
                key="VERTEX_LOCATION",
            )
        if self.base_url is not None and not self.base_url.startswith(("ws://", "wss://")):
            raise ConfigError(
                f"the Vertex AI URL must start with ws:// or wss://, got {self.base_url!r}",
                key="LIVE_API_URL",
            )
        if self.api_version not in ("v1", "v1beta1"):
            raise ConfigError(
                f"Vertex AI api_version must be v1 or v1beta1, got {self.api_version!r}",
                key="api_version",
            )

    @property
    def backend(self) -> Backend:
        return "vertex"

    @property
    def host_url(self) -> str:
        """The base URL: ``base_url``, else the regional (or global) Vertex AI host."""
        if self.base_url is not None:
            return self.base_url.rstrip("/")
        if self.location == "global":
            return "wss://aiplatform.googleapis.com"
        return f"wss://{self.location}-aiplatform.googleapis.com"

    def url(self, version: str) -> str:
        # ``version`` is the agent's Developer API version; Vertex has its own (see class doc).
        return self.host_url + VERTEX_PATH.format(version=self.api_version)

    async def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {await self.credentials_provider.access_token()}"}
        quota_project = self.credentials_provider.quota_project_id
        if quota_project:
            # As the SDK does: user credentials bill the project they name, not the model's.
            headers["x-goog-user-project"] = quota_project
        return headers

    def model_path(self, model: str) -> str:
        """``projects/{p}/locations/{l}/publishers/google/models/{model}``.

        A full ``projects/...`` path is kept; ``publishers/{pub}/models/{m}`` and ``{pub}/{m}``
        name another publisher's model (as in the SDK); a Developer API style ``models/`` prefix
        is dropped, so one agent file serves both backends.
        """
        prefix = f"projects/{self.project}/locations/{self.location}/"
        if model.startswith("projects/"):
            return model
        if model.startswith("publishers/"):
            return prefix + model
        model = model.removeprefix("models/")
        if "/" in model:
            publisher, name = model.split("/", 1)
            return f"{prefix}publishers/{publisher}/models/{name}"
        return f"{prefix}publishers/google/models/{model}"


def live_endpoint(
    backend: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    vertex_project: str | None = None,
    vertex_location: str = "us-central1",
    credentials_provider: CredentialsProvider | None = None,
) -> LiveEndpoint:
    """The target for the process settings (``LIVE_BACKEND``, ``LIVE_API_URL``, ...).

    For Vertex AI without a ``credentials_provider`` it loads Application Default Credentials,
    which blocks briefly: call it at start-up. Raises :class:`~agent.errors.ConfigError`.
    """
    if backend == "gemini":
        return DeveloperApiTarget(base_url=base_url or DEFAULT_LIVE_API_URL, api_key=api_key)
    if backend != "vertex":
        raise ConfigError(
            f"LIVE_BACKEND must be gemini or vertex, got {backend!r}", key="LIVE_BACKEND"
        )
    if not vertex_project:
        raise ConfigError("LIVE_BACKEND=vertex needs VERTEX_PROJECT", key="VERTEX_PROJECT")
    return VertexTarget(
        project=vertex_project,
        location=vertex_location,
        credentials_provider=credentials_provider or GoogleAuthCredentials.from_environment(),
        base_url=base_url,
    )


def settings_endpoint(settings: Settings) -> LiveEndpoint:
    """:func:`live_endpoint` for the process settings, as the server and ``agent doctor`` need."""
    return live_endpoint(
        settings.live_backend,
        base_url=settings.live_api_url,
        api_key=reveal(settings.gemini_api_key),
        vertex_project=settings.vertex_project,
        vertex_location=settings.vertex_location,
    )


def _missing_google_auth(exc: ImportError) -> ConfigError:
    return ConfigError(
        "LIVE_BACKEND=vertex needs the optional google-auth dependency: "
        f"pip install 'gemini-phone-agent[vertex]' ({exc})",
        key="LIVE_BACKEND",
    )


def _import_google_auth() -> tuple[Any, Any]:
    # Imported lazily: google-auth is an optional extra that Developer API deployments never need.
    try:
        import google.auth
        import google.auth.exceptions
    except ImportError as exc:
        raise _missing_google_auth(exc) from exc
    return google.auth, google.auth.exceptions


def _requests_transport() -> Any:
    try:
        from google.auth.transport.requests import Request
    except ImportError as exc:  # google-auth without its "requests" extra
        raise _missing_google_auth(exc) from exc
    return Request()
