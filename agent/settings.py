"""Process settings from the environment (12-factor), parsed and validated once at start-up.

| variable            | meaning                                                               |
|---------------------|-----------------------------------------------------------------------|
| `PORT`              | HTTP port (default 8080)                                              |
| `PUBLIC_URL`        | the bridge's public base URL as Twilio reaches it (`https://…`)      |
| `LIVE_API_URL`      | Live API base URL (default Google's); set it to use another backend   |
| `GEMINI_API_KEY`    | Developer API key. With neither it nor `LIVE_API_URL`, the embedded   |
|                     | Live API emulator answers calls                                       |
| `TWILIO_AUTH_TOKEN` | verifies `X-Twilio-Signature` and keys stream tokens; unset = dev mode|
| `LOG_LEVEL`         | debug, info (default), warning, error                                 |
| `LOG_FORMAT`        | auto (default: console on a TTY, JSON otherwise), json, console       |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from agent.errors import ConfigError

LogFormat = Literal["auto", "json", "console"]
_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server reads from its environment. Secrets never appear in ``repr``."""

    host: str = "0.0.0.0"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    live_api_url: str | None = None
    gemini_api_key: str | None = field(default=None, repr=False)
    twilio_auth_token: str | None = field(default=None, repr=False)
    log_level: str = "info"
    log_format: LogFormat = "auto"
    live_connect_timeout_s: float = 10.0
    stream_start_timeout_s: float = 10.0

    @property
    def use_emulator(self) -> bool:
        """No key and no URL: answer calls with the embedded Live API emulator."""
        return not self.gemini_api_key and not self.live_api_url

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a log line."""
        return tuple(s for s in (self.gemini_api_key, self.twilio_auth_token) if s)

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
        return cls(
            host=host or env.get("HOST", "0.0.0.0"),
            port=port,
            public_url=public_url,
            live_api_url=live_api_url,
            gemini_api_key=env.get("GEMINI_API_KEY") or None,
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            log_level=level,
            log_format=fmt,  # type: ignore[arg-type]  # checked just above
        )


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{key} must be a whole number, got {raw!r}", key=key) from exc
