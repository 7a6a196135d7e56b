"""Process settings from the environment (12-factor), parsed and validated once at start-up.

| variable            | meaning                                                               |
|---------------------|-----------------------------------------------------------------------|
| `PORT`              | HTTP port (default 8080)                                              |
| `HOST`              | bind address (default 127.0.0.1; elsewhere TWILIO_AUTH_TOKEN needed) |
| `ALLOW_UNAUTHENTICATED` | `true`: serve without TWILIO_AUTH_TOKEN on a non-loopback address |
| `PUBLIC_URL`        | the bridge's public base URL as Twilio reaches it (`https://…`)      |
| `LIVE_API_URL`      | Live API base URL (default Google's); set it to use another backend   |
| `GEMINI_API_KEY`    | Developer API key. With neither it nor `LIVE_API_URL`, the embedded   |
|                     | Live API emulator answers calls (Developer API backend only)          |
| `LIVE_BACKEND`      | `gemini` (default: the Developer API) or `vertex` (Vertex AI, with    |
|                     | Application Default Credentials; needs the `vertex` extra)            |
| `VERTEX_PROJECT`    | Google Cloud project for `LIVE_BACKEND=vertex` (required there)       |
| `VERTEX_LOCATION`   | Vertex AI region, or `global` (default `us-central1`). `LIVE_API_URL` |
|                     | replaces the regional host if set                                     |
| `TWILIO_AUTH_TOKEN` | verifies `X-Twilio-Signature` and keys stream tokens; unset = dev mode|
| `TWILIO_ACCOUNT_SID`| with the auth token (or an API key): REST calls to hang up / transfer |
| `TWILIO_API_KEY_SID`, `TWILIO_API_KEY_SECRET` | REST credentials instead of the auth token |
| `TWILIO_API_URL`    | Twilio REST base URL (default `https://api.twilio.com`)               |
| `CRM_DATABASE_URL`  | the embedded demo CRM (default `sqlite:///./crm.db`)                  |
| `DRAIN_TIMEOUT_S`   | on SIGTERM, calls in progress get this long to finish (default 600)   |
| `LOG_LEVEL`         | debug, info (default), warning, error                                 |
| `LOG_FORMAT`        | auto (default: console on a TTY, JSON otherwise), json, console       |
| `DATABASE_URL`      | call records: `sqlite:///path.db` (default `sqlite:///./calls.db`) or |
|                     | `postgresql://…` (needs the `postgres` extra)                         |
| `RECORD_REDACT_FIELDS` | comma-separated tool argument/result fields stored as `***`        |
| `MASK_CALLER_NUMBERS`  | `true`: caller numbers are masked in records and logs              |
| `PRICE_TABLE`       | token prices for call cost estimates: inline JSON, or a .json/.yaml   |
|                     | file, on top of observability.logging.DEFAULT_PRICES              |
| `AGENTS_PATH`       | a folder of agent YAML files, or one file (default: the bundled       |
|                     | examples, so `agent serve` answers as `acme-support` out of the box)  |
| `AGENTS_RELOAD_INTERVAL_S` | poll the agent files' modification times this often and reload |
|                     | on a change (default 0: off; SIGHUP always reloads)                   |
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from agent.errors import ConfigError

LogFormat = Literal["auto", "json", "console"]
LiveBackendName = Literal["gemini", "vertex"]
_LEVELS = ("debug", "info", "warning", "error", "critical")
# A Google Cloud project id, and a region name ("us-central1", "europe-west4") or "global".
_PROJECT_RE = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]|[a-z0-9.-]+:[a-z][a-z0-9-]{4,28}[a-z0-9]")
_LOCATION_RE = re.compile(r"[a-z]+(-[a-z]+)*[0-9]*|global")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server reads from its environment. Secrets never appear in ``repr``."""

    host: str = "127.0.0.1"
    allow_unauthenticated: bool = False
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    live_api_url: str | None = None
    gemini_api_key: str | None = field(default=None, repr=False)
    twilio_auth_token: str | None = field(default=None, repr=False)
    log_level: str = "info"
    log_format: LogFormat = "auto"
    live_connect_timeout_s: float = 10.0
    stream_start_timeout_s: float = 10.0
    drain_timeout_s: float = 600.0  # DRAIN_MODE=wait: calls in progress get this long to finish
    # On SIGTERM: "handover" moves calls in progress to other replicas; "wait" lets them finish.
    drain_mode: Literal["handover", "wait"] = "handover"
    handover_timeout_s: float = 30.0  # calls not quiet by then are handed over mid-sentence
    workers: int = 1  # agent serve processes on the one port (WORKERS)
    live_backend: LiveBackendName = "gemini"
    vertex_project: str | None = None
    vertex_location: str = "us-central1"
    database_url: str = field(default="sqlite:///./calls.db", repr=False)
    # Where replicas share used stream tickets; None: this process's memory (one instance).
    shared_state_url: str | None = field(default=None, repr=False)
    # Keys stream tickets; None: TWILIO_AUTH_TOKEN (or a random key per process without one).
    stream_token_secret: str | None = field(default=None, repr=False)
    record_redact_fields: frozenset[str] = frozenset()
    mask_caller_numbers: bool = False
    price_table: str | None = None  # PRICE_TABLE, read by PriceTable.from_spec in create_app
    twilio_account_sid: str | None = None
    twilio_api_key_sid: str | None = None
    twilio_api_key_secret: str | None = field(default=None, repr=False)
    twilio_api_url: str = "https://api.twilio.com"
    crm_database_url: str = "sqlite:///./crm.db"
    agents_path: str | None = (
        None  # None: the bundled examples (agent.config.agents.BUNDLED_AGENTS)
    )
    agents_reload_interval_s: float = 0.0  # 0: no polling

    @property
    def use_emulator(self) -> bool:
        """Developer API with no key and no URL: answer calls with the embedded emulator."""
        return self.live_backend == "gemini" and not self.gemini_api_key and not self.live_api_url

    def check_exposure(self) -> None:
        """Refuse to serve an unauthenticated bridge beyond this machine.

        Without TWILIO_AUTH_TOKEN nothing verifies webhooks or streams: anyone who can reach the
        port could pose as any caller (and use tools bound to the caller's number). That is fine
        on loopback for development, never by accident on a public address.
        """
        loopback = self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")
        if not self.twilio_auth_token and not loopback and not self.allow_unauthenticated:
            raise ConfigError(
                f"refusing to listen on {self.host} without TWILIO_AUTH_TOKEN: webhooks and media "
                "streams would not be verified. Set TWILIO_AUTH_TOKEN, listen on 127.0.0.1, or set "
                "ALLOW_UNAUTHENTICATED=true if something in front of the bridge authenticates",
                key="TWILIO_AUTH_TOKEN",
            )

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a log line."""
        candidates = (
            self.gemini_api_key,
            self.twilio_auth_token,
            self.twilio_api_key_secret,
            self.stream_token_secret,
            urlsplit(self.database_url).password,
            urlsplit(self.shared_state_url or "").password,
        )
        return tuple(s for s in candidates if s)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        host: str | None = None,
    ) -> Settings:
        """Read the environment; ``port`` and ``host`` (from the command line) win over it."""
        env = os.environ if env is None else env
        if port is None:
            port = _int(env, "PORT", 8080)
        public_url = (env.get("PUBLIC_URL") or f"http://127.0.0.1:{port}").rstrip("/")
        if not public_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"PUBLIC_URL must start with http:// or https://, got {public_url!r}",
                key="PUBLIC_URL",
            )
        live_api_url = env.get("LIVE_API_URL") or None
        if live_api_url and not live_api_url.startswith(("ws://", "wss://")):
            raise ConfigError(
                f"LIVE_API_URL must start with ws:// or wss://, got {live_api_url!r}",
                key="LIVE_API_URL",
            )
        level = env.get("LOG_LEVEL", "info").lower()
        if level not in _LEVELS:
            raise ConfigError(f"LOG_LEVEL must be one of {', '.join(_LEVELS)}", key="LOG_LEVEL")
        fmt = env.get("LOG_FORMAT", "auto").lower()
        if fmt not in ("auto", "json", "console"):
            raise ConfigError("LOG_FORMAT must be auto, json or console", key="LOG_FORMAT")
        backend = (env.get("LIVE_BACKEND") or "gemini").strip().lower()
        if backend not in ("gemini", "vertex"):
            raise ConfigError(
                f"LIVE_BACKEND must be gemini or vertex, got {env.get('LIVE_BACKEND')!r}",
                key="LIVE_BACKEND",
            )
        vertex_project = (env.get("VERTEX_PROJECT") or "").strip() or None
        if vertex_project is not None and not _PROJECT_RE.fullmatch(vertex_project):
            raise ConfigError(
                f"VERTEX_PROJECT must be a Google Cloud project id, got {vertex_project!r}",
                key="VERTEX_PROJECT",
            )
        if backend == "vertex" and vertex_project is None:
            raise ConfigError(
                "LIVE_BACKEND=vertex needs VERTEX_PROJECT (the Google Cloud project id)",
                key="VERTEX_PROJECT",
            )
        vertex_location = (env.get("VERTEX_LOCATION") or "us-central1").strip().lower()
        if not _LOCATION_RE.fullmatch(vertex_location):
            raise ConfigError(
                "VERTEX_LOCATION must be a Vertex AI region such as us-central1, or global; "
                f"got {env.get('VERTEX_LOCATION')!r}",
                key="VERTEX_LOCATION",
            )
        database_url = env.get("DATABASE_URL") or "sqlite:///./calls.db"
        if not database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ConfigError(
                "DATABASE_URL must start with sqlite:/// or postgresql://", key="DATABASE_URL"
            )
        shared_state_url = env.get("SHARED_STATE_URL") or None
        if shared_state_url is None and database_url.startswith(("postgresql://", "postgres://")):
            # Replicas that share their records in PostgreSQL share their stream tickets there.
            shared_state_url = database_url
        if shared_state_url and not shared_state_url.startswith(
            ("sqlite:///", "postgresql://", "postgres://")
        ):
            raise ConfigError(
                "SHARED_STATE_URL must start with sqlite:/// or postgresql://",
                key="SHARED_STATE_URL",
            )
        return cls(
            host=host or env.get("HOST", "127.0.0.1"),
            allow_unauthenticated=_flag(env, "ALLOW_UNAUTHENTICATED"),
            port=port,
            public_url=public_url,
            live_api_url=live_api_url,
            gemini_api_key=env.get("GEMINI_API_KEY") or None,
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            log_level=level,
            log_format=fmt,  # type: ignore[arg-type]  # checked just above
            live_backend=backend,  # type: ignore[arg-type]  # checked just above
            vertex_project=vertex_project,
            vertex_location=vertex_location,
            database_url=database_url,
            shared_state_url=shared_state_url,
            stream_token_secret=env.get("STREAM_TOKEN_SECRET") or None,
            record_redact_fields=frozenset(
                f.strip().lower()
                for f in env.get("RECORD_REDACT_FIELDS", "").split(",")
                if f.strip()
            ),
            mask_caller_numbers=_flag(env, "MASK_CALLER_NUMBERS"),
            price_table=(env.get("PRICE_TABLE") or "").strip() or None,
            agents_path=agents_path_from_env(env),
            drain_timeout_s=_seconds(env, "DRAIN_TIMEOUT_S", 600.0),
            drain_mode=_drain_mode(env),
            handover_timeout_s=_seconds(env, "HANDOVER_TIMEOUT_S", 30.0),
            workers=_int(env, "WORKERS", 1),
            twilio_account_sid=(env.get("TWILIO_ACCOUNT_SID") or "").strip() or None,
            twilio_api_key_sid=(env.get("TWILIO_API_KEY_SID") or "").strip() or None,
            twilio_api_key_secret=env.get("TWILIO_API_KEY_SECRET") or None,
            twilio_api_url=(env.get("TWILIO_API_URL") or "https://api.twilio.com").rstrip("/"),
            crm_database_url=env.get("CRM_DATABASE_URL") or "sqlite:///./crm.db",
            agents_reload_interval_s=_seconds(env, "AGENTS_RELOAD_INTERVAL_S", 0.0),
        )


def agents_path_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """``AGENTS_PATH`` alone, for commands (``agent check``) that need nothing else from the
    environment; ``None`` means the bundled examples."""
    env = os.environ if env is None else env
    return (env.get("AGENTS_PATH") or "").strip() or None


def _flag(env: Mapping[str, str], key: str) -> bool:
    raw = env.get(key, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{key} must be true or false, got {raw!r}", key=key)


def _seconds(env: Mapping[str, str], key: str, default: float) -> float:
    raw = (env.get(key) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{key} must be a number of seconds (0 or more), got {raw!r}", key=key)
    return value


def _drain_mode(env: Mapping[str, str]) -> Literal["handover", "wait"]:
    mode = (env.get("DRAIN_MODE") or "handover").strip().lower()
    if mode == "handover":
        return "handover"
    if mode == "wait":
        return "wait"
    raise ConfigError(f"DRAIN_MODE must be handover or wait, got {mode!r}", key="DRAIN_MODE")


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{key} must be a whole number, got {raw!r}", key=key) from exc
