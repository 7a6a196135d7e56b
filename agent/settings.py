"""Process settings from the environment (12-factor), parsed and validated once at start-up.

| variable            | meaning                                                               |
|---------------------|-----------------------------------------------------------------------|
| `PORT`              | HTTP port (default 8080)                                              |
| `HOST`              | bind address (default 127.0.0.1; elsewhere TWILIO_AUTH_TOKEN needed) |
| `ALLOW_UNAUTHENTICATED` | `true`: serve without TWILIO_AUTH_TOKEN on a non-loopback address |
| `PUBLIC_URL`        | the bridge's public base URL as Twilio reaches it (`https://…`)      |
| `STREAM_URL`        | the base URL TwiML points media streams at (default `PUBLIC_URL`)     |
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
| `TELNYX_PUBLIC_KEY` | verifies Telnyx's Ed25519 webhook signatures; unset = Telnyx dev mode |
| `TELNYX_API_KEY`, `TELNYX_API_URL` | Telnyx Call Control: hang up and transfer Telnyx calls |
| `PLIVO_AUTH_ID`, `PLIVO_AUTH_TOKEN` | Plivo: verifies V3 signatures; REST hang-up / transfer |
| `PLIVO_API_URL`     | Plivo REST base URL (default `https://api.plivo.com`)                 |
| `CRM_DATABASE_URL`  | the embedded demo CRM (default `sqlite:///./crm.db`)                  |
| `DRAIN_MODE`        | on SIGTERM: `handover` (default) moves calls in progress to other     |
|                     | replicas at a quiet moment; `wait` lets them finish here              |
| `HANDOVER_TIMEOUT_S`| handover: calls not quiet by then are handed over at once (default 30)|
| `DRAIN_TIMEOUT_S`   | wait: calls in progress get this long to finish (default 600)         |
| `WORKERS`           | `agent serve` processes on the one port, one core each (default 1)    |
| `EVENT_LOOP`        | `uvloop` (default, where installed) or `asyncio` for `agent serve`    |
| `MAX_CALLS`         | calls one process takes at once, in progress plus answered webhooks  |
|                     | awaiting their stream (default 50); beyond it the webhook answers 503 |
|                     | (Twilio uses the number's fallback URL) and `/readyz` is unready.     |
|                     | With `WORKERS`, the machine takes this many per worker, summed        |
| `MAX_CONNECTIONS`   | open HTTP/WebSocket connections per process (default 500; at most    |
|                     | half the open-files limit); beyond it new ones get 503 and are closed |
| `HTTP_READ_TIMEOUT_S` | a connection's request headers (from connecting, or idle between  |
|                     | requests) and a webhook's body must arrive within this (default 15);  |
|                     | behind a proxy that pools connections, set it above the proxy's idle  |
|                     | timeout to the bridge (ingress-nginx: 60 s)                           |
| `SHARED_STATE_URL`  | what replicas share (used stream tickets, calls in progress):         |
|                     | `postgresql://…` or `sqlite:///…`; default a PostgreSQL DATABASE_URL  |
| `STREAM_TOKEN_SECRET` | keys stream tickets instead of TWILIO_AUTH_TOKEN (same on replicas) |
| `LOG_LEVEL`         | debug, info (default), warning, error                                 |
| `LOG_FORMAT`        | auto (default: console on a TTY, JSON otherwise), json, console       |
| `DATABASE_URL`      | call records: `sqlite:///path.db` (default `sqlite:///./calls.db`) or |
|                     | `postgresql://…` (needs the `postgres` extra)                         |
| `RECORDS_CRASH_HORIZON_S` | at start-up, close the records of calls ended by a crash once |
|                     | their last write is this old ("bridge crashed"). Default: 0 for SQLite|
|                     | with one process; 14400 (4 h, Twilio's longest call) otherwise        |
| `RECORD_REDACT_FIELDS` | comma-separated tool argument/result fields stored as `***`        |
| `MASK_CALLER_NUMBERS`  | `true`: caller numbers are masked in records and logs              |
| `PRICE_TABLE`       | token prices for call cost estimates: inline JSON, or a .json/.yaml   |
|                     | file, on top of observability.logging.DEFAULT_PRICES              |
| `AGENTS_PATH`       | a folder of agent YAML files, or one file (default: the bundled       |
|                     | examples, so `agent serve` answers as `acme-support` out of the box)  |
| `AGENTS_RELOAD_INTERVAL_S` | poll the agent files' modification times this often and reload |
|                     | on a change (default 0: off; SIGHUP always reloads)                   |
| `AGENT_ENV_PREFIX`  | `${VAR}` in agent files reads only variables with this prefix     |
|                     | (default `AGENT_`) or listed in `AGENT_ENV_ALLOW`                     |
| `AGENT_ENV_ALLOW`   | comma-separated further variables agent files may read; never one of |
|                     | the bridge's own variables (those in this table)                      |
| `CONSOLE_ENABLED`   | `true`: serve the browser softphone and call console at `/console`    |
| `CONSOLE_TOKEN`     | the console's secret (`Authorization: Bearer`, or basic auth's        |
|                     | password); required to serve the console beyond loopback              |

:meth:`Settings.from_env` reads these from the environment and from a ``.env`` file in the
working directory (``NAME=value`` lines; the environment wins where both set a variable). An empty
variable counts as unset. Secrets (the API key, the Twilio auth token and API key secret) are
``SecretStr``: they never appear in ``repr``, logs or error messages.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from agent.config.fields import describe, step_of
from agent.errors import ConfigError

LogFormat = Literal["auto", "json", "console"]
LiveBackendName = Literal["gemini", "vertex"]
DrainMode = Literal["handover", "wait"]
EventLoopName = Literal["uvloop", "asyncio"]
_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
# A Google Cloud project id, and a region name ("us-central1", "europe-west4") or "global".
_PROJECT_RE: Final = re.compile(
    r"[a-z][a-z0-9-]{4,28}[a-z0-9]|[a-z0-9.-]+:[a-z][a-z0-9-]{4,28}[a-z0-9]"
)
_LOCATION_RE: Final = re.compile(r"[a-z]+(-[a-z]+)*[0-9]*|global")
_VARIABLE_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Fields that are tuning for tests and benchmarks, not variables (the table above).
_NOT_VARIABLES: Final = frozenset({"live_connect_timeout_s", "stream_start_timeout_s"})


def _problem(message: str) -> PydanticCustomError:
    return PydanticCustomError("config", "{message}", {"message": message})


def _optional(value: Any) -> Any:
    """Blank text is unset: ``TWILIO_AUTH_TOKEN=`` means no token, not an empty one."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _flag(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    raw = str(value).strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise _problem(f"must be true or false, got {raw!r}")


def _seconds(value: Any) -> Any:
    raw = value.strip() if isinstance(value, str) else value
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0 or math.isinf(seconds):
        raise _problem(f"must be a number of seconds (0 or more), got {raw!r}")
    return seconds


def _whole(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise _problem(f"must be a whole number, got {value!r}") from None
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _one_of(choices: Any) -> Callable[[Any], Any]:
    """A validator for a ``Literal`` of names: case and spaces ignored, else the names listed."""
    names: tuple[str, ...] = get_args(choices)
    listed = ", ".join(names[:-1]) + " or " + names[-1]

    def validate(value: Any) -> Any:
        value = _lower(value)
        if value not in names:
            raise _problem(f"must be {listed}, got {value!r}")
        return value

    return validate


def _fields(value: Any) -> Any:
    """``RECORD_REDACT_FIELDS``: comma-separated, compared in lower case."""
    if isinstance(value, str):
        return frozenset(f.strip().lower() for f in value.split(",") if f.strip())
    return value


def _variable_names(value: Any) -> Any:
    """``AGENT_ENV_ALLOW``: comma-separated variable names."""
    if isinstance(value, str):
        return frozenset(n.strip() for n in value.split(",") if n.strip())
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]
SecondsValue = Annotated[float, BeforeValidator(_seconds)]
OptionalSeconds = Annotated[
    float | None, BeforeValidator(lambda v: None if _optional(v) is None else _seconds(v))
]
OptionalText = Annotated[str | None, BeforeValidator(_optional)]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_optional)]


class Settings(BaseSettings):
    """Everything the server reads from its environment, validated once. Secrets never appear
    in ``repr``. ``Settings(...)`` is exactly what it is given (tests, benchmarks);
    :meth:`from_env` is the one reader of the environment."""

    model_config = SettingsConfigDict(
        frozen=True,
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",  # a .env may hold other tools' variables too
    )

    host: str = "127.0.0.1"
    allow_unauthenticated: Flag = False
    port: Annotated[int, BeforeValidator(_whole)] = 8080
    public_url: str = Field(default="", validate_default=True)  # "": on loopback at ``port``
    # Where the TwiML points media streams (None: public_url). A pod's own host name here sends
    # each stream to the replica that pre-connected at its webhook; webhooks, whose signatures
    # cover the URL Twilio requested, stay on public_url.
    stream_url: OptionalText = None
    live_api_url: OptionalText = None
    gemini_api_key: OptionalSecret = None
    twilio_auth_token: OptionalSecret = None
    # Bearer token of POST /calls (outbound calls); None: the endpoint is off (404).
    calls_api_token: OptionalSecret = None
    log_level: Annotated[str, BeforeValidator(_lower)] = "info"
    log_format: Annotated[LogFormat, BeforeValidator(_one_of(LogFormat))] = "auto"
    live_connect_timeout_s: float = 10.0
    # How often the server checks that its key opens a Live session for each agent's model
    # (agent.live.preflight); /readyz fails while the Live API refuses them. 0: never.
    live_preflight_interval_s: SecondsValue = 300.0
    stream_start_timeout_s: float = 10.0
    drain_timeout_s: SecondsValue = 600.0  # DRAIN_MODE=wait: calls in progress get this long
    # On SIGTERM: "handover" moves calls in progress to other replicas; "wait" lets them finish.
    drain_mode: Annotated[DrainMode, BeforeValidator(_one_of(DrainMode))] = "handover"
    handover_timeout_s: SecondsValue = 30.0  # calls not quiet by then are handed over at once
    workers: Annotated[int, BeforeValidator(_whole)] = 1  # agent serve processes on the one port
    # uvloop made agent serve ~9 % cheaper per call-second beside the thin bridge (README,
    # Benchmarks); asyncio's own loop where uvloop is not installed, or when asked for.
    event_loop: Annotated[EventLoopName, BeforeValidator(_one_of(EventLoopName))] = "uvloop"
    # Admission control, per process: about 40 calls fill a core (README, Scaling), so 50 leaves
    # headroom for bursts yet refuses the load that made greetings wait 16.8 s at 100 calls.
    max_calls: Annotated[int, BeforeValidator(_whole)] = 50
    # Open connections per process: 50 calls hold 50 stream sockets; the rest is headroom for
    # webhooks, probes and scrapes. Lowered to half the open-files limit (agent.server.listen).
    max_connections: Annotated[int, BeforeValidator(_whole)] = 500
    # Headers from connecting (or idle keep-alive) and a webhook's body: aiohttp's own default
    # held a connection that never finished its headers for an hour.
    http_read_timeout_s: SecondsValue = 15.0
    live_backend: Annotated[LiveBackendName, BeforeValidator(_one_of(LiveBackendName))] = "gemini"
    vertex_project: OptionalText = None
    vertex_location: Annotated[str, BeforeValidator(_lower)] = "us-central1"
    database_url: str = Field(default="sqlite:///./calls.db", repr=False)
    # None: 0 for SQLite with one process, else records.store.CRASH_HORIZON_S (see the README).
    records_crash_horizon_s: OptionalSeconds = None
    # Where replicas share used stream tickets and calls in progress; None: this process only.
    # Defaults to a PostgreSQL database_url (replicas sharing records share this too).
    shared_state_url: OptionalText = Field(default=None, repr=False)
    # Keys stream tickets; None: TWILIO_AUTH_TOKEN (or a random key per process without one).
    stream_token_secret: OptionalSecret = None
    record_redact_fields: Annotated[frozenset[str], NoDecode, BeforeValidator(_fields)] = (
        frozenset()
    )
    mask_caller_numbers: Flag = False
    price_table: OptionalText = None  # PRICE_TABLE, read by PriceTable.from_spec in create_app
    twilio_account_sid: OptionalText = None
    twilio_api_key_sid: OptionalText = None
    twilio_api_key_secret: OptionalSecret = None
    twilio_api_url: str = "https://api.twilio.com"
    # Telnyx and Plivo (agent.server.carriers): each carrier's webhook and stream are verified
    # when its credential is set, as Twilio's are with TWILIO_AUTH_TOKEN.
    telnyx_public_key: OptionalText = None
    telnyx_api_key: OptionalSecret = None
    telnyx_api_url: str = "https://api.telnyx.com"
    plivo_auth_id: OptionalText = None
    plivo_auth_token: OptionalSecret = None
    plivo_api_url: str = "https://api.plivo.com"
    crm_database_url: str = "sqlite:///./crm.db"
    agents_path: OptionalText = None  # None: the bundled examples (agent.config BUNDLED_AGENTS)
    agents_reload_interval_s: SecondsValue = 0.0  # 0: no polling
    # Which variables ${VAR} in agent files may read (never the bridge's own: bridge_variables).
    agent_env_prefix: str = "AGENT_"
    agent_env_allow: Annotated[frozenset[str], NoDecode, BeforeValidator(_variable_names)] = (
        frozenset()
    )
    # The browser softphone and call console (agent.server.console); off unless asked for.
    console_enabled: Flag = False
    console_token: OptionalSecret = None

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _config_error(exc) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what the constructor is given: from_env reads the environment, explicitly.
        return (init_settings,)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str, info: Any) -> str:
        url = (value.strip() or f"http://127.0.0.1:{info.data.get('port', 8080)}").rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise _problem(f"must start with http:// or https://, got {url!r}")
        return url

    @field_validator("stream_url")
    @classmethod
    def _stream_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise _problem(f"must start with http:// or https://, got {value!r}")
        return value.rstrip("/") if value else value

    @field_validator("live_api_url")
    @classmethod
    def _live_api_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("ws://", "wss://")):
            raise _problem(f"must start with ws:// or wss://, got {value!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value not in _LEVELS:
            raise _problem(f"must be one of {', '.join(_LEVELS)}")
        return value

    @field_validator("vertex_project")
    @classmethod
    def _vertex_project(cls, value: str | None) -> str | None:
        if value is not None and not _PROJECT_RE.fullmatch(value):
            raise _problem(f"must be a Google Cloud project id, got {value!r}")
        return value

    @field_validator("vertex_location")
    @classmethod
    def _vertex_location(cls, value: str) -> str:
        if not _LOCATION_RE.fullmatch(value):
            raise _problem(
                f"must be a Vertex AI region such as us-central1, or global; got {value!r}"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise _problem("must start with sqlite:/// or postgresql://")
        return value

    @field_validator("shared_state_url")
    @classmethod
    def _shared_state_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise _problem("must start with sqlite:/// or postgresql://")
        return value

    @field_validator("agent_env_prefix")
    @classmethod
    def _agent_env_prefix(cls, value: str) -> str:
        value = value.strip()
        if not _VARIABLE_RE.fullmatch(value):
            raise _problem(f"must be the start of a variable name such as AGENT_, got {value!r}")
        return value

    @field_validator("agent_env_allow")
    @classmethod
    def _agent_env_allow(cls, value: frozenset[str]) -> frozenset[str]:
        for name in sorted(value):
            if not _VARIABLE_RE.fullmatch(name):
                raise _problem(f"must be variable names separated by commas, got {name!r}")
            if name in bridge_variables():
                raise _problem(
                    f"lists {name}, one of the bridge's own variables: agent files may never "
                    "read those"
                )
        return value

    @field_validator("http_read_timeout_s")
    @classmethod
    def _http_read_timeout(cls, value: float) -> float:
        if value <= 0:
            raise _problem(f"must be more than 0 seconds, got {value}")
        return value

    @field_validator("max_calls", "max_connections")
    @classmethod
    def _max_calls(cls, value: int) -> int:
        if value < 1:
            raise _problem(f"must be at least 1, got {value}")
        return value

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int) -> int:
        if value < 1:
            raise _problem(f"must be at least 1, got {value}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _shared_state_follows_postgres_records(cls, values: Any) -> Any:
        if isinstance(values, dict) and not values.get("shared_state_url"):
            database = str(values.get("database_url") or "")
            if database.startswith(("postgresql://", "postgres://")):
                values = {**values, "shared_state_url": database}
        return values

    @field_validator("twilio_api_url")
    @classmethod
    def _twilio_api_url(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _vertex_needs_a_project(self) -> Settings:
        if self.live_backend == "vertex" and self.vertex_project is None:
            raise ConfigError(
                "LIVE_BACKEND=vertex needs VERTEX_PROJECT (the Google Cloud project id)",
                key="VERTEX_PROJECT",
            )
        return self

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
        loopback = self.host == "localhost" or _is_loopback_address(self.host)
        if not self.twilio_auth_token and not loopback and not self.allow_unauthenticated:
            raise ConfigError(
                f"refusing to listen on {self.host} without TWILIO_AUTH_TOKEN: webhooks and media "
                "streams would not be verified. Set TWILIO_AUTH_TOKEN, listen on 127.0.0.1, or set "
                "ALLOW_UNAUTHENTICATED=true if something in front of the bridge authenticates",
                key="TWILIO_AUTH_TOKEN",
            )
        if self.console_enabled and not self.console_token and not loopback:
            # The console places calls (tokens, tools) and shows transcripts: never open to all.
            raise ConfigError(
                f"refusing to serve the console on {self.host} without CONSOLE_TOKEN: anyone "
                "reaching the port could place calls and read transcripts. Set CONSOLE_TOKEN, "
                "listen on 127.0.0.1, or unset CONSOLE_ENABLED",
                key="CONSOLE_TOKEN",
            )

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a log line."""
        candidates = (
            reveal(self.gemini_api_key),
            reveal(self.twilio_auth_token),
            reveal(self.twilio_api_key_secret),
            reveal(self.telnyx_api_key),
            reveal(self.plivo_auth_token),
            reveal(self.stream_token_secret),
            reveal(self.console_token),
            reveal(self.calls_api_token),
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
        """Read the environment (and ``.env``; None: the process's) or ``env`` (exactly that
        mapping, no ``.env``); ``port`` and ``host`` (from the command line) win over it.
        Raises ConfigError naming the variable that is wrong."""
        if env is None:
            # pydantic-settings' own readers: .env first, so the environment wins over it.
            values: dict[str, Any] = {**DotEnvSettingsSource(cls)(), **EnvSettingsSource(cls)()}
        else:
            values = {key.lower(): value for key, value in env.items() if value.strip()}
        values = {
            k: v for k, v in values.items() if k in cls.model_fields and k not in _NOT_VARIABLES
        }
        if port is not None:
            values["port"] = port
        if host:
            values["host"] = host
        return cls(**values)


def _is_loopback_address(host: str) -> bool:
    """An IP address on the loopback network (127.0.0.0/8, ::1); a name such as
    ``127.example.com`` is not one, whatever it starts with."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bridge_variables() -> frozenset[str]:
    """The bridge's own variables (``TWILIO_AUTH_TOKEN``, ``GEMINI_API_KEY``, ``DATABASE_URL``,
    ...): one per :class:`Settings` field, so a new setting is covered the day it is added.
    ``${VAR}`` in an agent file may never read one of these."""
    return _BRIDGE_VARIABLES


def agent_env_from_env(env: Mapping[str, str] | None = None) -> tuple[str, frozenset[str]]:
    """``AGENT_ENV_PREFIX`` and ``AGENT_ENV_ALLOW`` alone, validated as :class:`Settings` does,
    for commands (``agent check``) that need nothing else (None: the process's environment,
    then ``.env``). Raises ConfigError naming the variable that is wrong."""
    if env is None:
        from_file = DotEnvSettingsSource(Settings)()
        env = {
            "AGENT_ENV_PREFIX": str(from_file.get("agent_env_prefix") or ""),
            "AGENT_ENV_ALLOW": str(from_file.get("agent_env_allow") or ""),
            **os.environ,
        }
    values = {
        key: value
        for key in ("agent_env_prefix", "agent_env_allow")
        if (value := (env.get(key.upper()) or "").strip())
    }
    settings = Settings(**values)
    return settings.agent_env_prefix, settings.agent_env_allow


def reveal(secret: SecretStr | None) -> str | None:
    """A secret's value, for the one place that must send it (a request header, a signature)."""
    return None if secret is None else secret.get_secret_value()


_BRIDGE_VARIABLES: Final = frozenset(name.upper() for name in Settings.model_fields)


def _config_error(exc: ValidationError) -> ConfigError:
    """The first problem, named by its variable: ``DRAIN_TIMEOUT_S must be a number...``."""
    error = exc.errors()[0]
    variable = str(error["loc"][0]).upper() if error["loc"] else None
    message = describe(error, step_of(Settings, error))
    return ConfigError(f"{variable} {message}" if variable else message, key=variable)


def agents_path_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """``AGENTS_PATH`` alone, for commands (``agent check``) that need nothing else from the
    environment (None: the process's, then ``.env``, as :meth:`Settings.from_env` reads them);
    ``None`` means the bundled examples."""
    if env is None:
        from_file = DotEnvSettingsSource(Settings)().get("agents_path")
        env = {"AGENTS_PATH": str(from_file or ""), **os.environ}
    return (env.get("AGENTS_PATH") or "").strip() or None
