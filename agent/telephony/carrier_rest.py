"""Telnyx's and Plivo's REST APIs, for what the bridge does to a live call beyond its stream:
hang up and transfer (:class:`~agent.call.control.CallControl`, as
:class:`~agent.telephony.rest.TwilioRest` does for Twilio).

Telnyx, Call Control commands on the call's ``call_control_id`` (Bearer API key):
    ``POST {base}/v2/calls/{id}/actions/hangup``  (https://developers.telnyx.com/api-reference/call-commands/hangup-call)
    ``POST {base}/v2/calls/{id}/actions/transfer`` ``{"to": "+1…"}``
    (https://developers.telnyx.com/api-reference/call-commands/transfer-call)
Plivo, the Call resource under the account (Basic auth ID and token):
    ``DELETE {base}/v1/Account/{auth_id}/Call/{uuid}/`` hang up (https://www.plivo.com/docs/voice/api/call/hang-up-a-call)
    ``POST {base}/v1/Account/{auth_id}/Call/{uuid}/`` ``{"legs": "aleg", "aleg_url": …}``
    transfer: Plivo fetches XML that ``<Dial>``s the number (https://www.plivo.com/docs/voice/api/call/transfer-a-call)

Neither has a "say this, then hang up" in one request, so ``say_and_hang_up`` hangs up (the
message is not spoken; logged). Errors become :class:`CarrierApiError`; credentials never appear
in a log line, an exception or a ``repr``. A hang-up is retried once on a connection error or a
5xx (it is idempotent: "already ended" counts as done); a transfer is not retried.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote, urlsplit

import aiohttp
import structlog

from agent.errors import ConfigError, TelephonyError
from agent.numbers import is_e164

log = structlog.get_logger("agent.telephony.carrier_rest")

TELNYX_API_URL: Final = "https://api.telnyx.com"
PLIVO_API_URL: Final = "https://api.plivo.com"
#: https://developers.telnyx.com/api/errors/90018: "Call has already ended".
TELNYX_CALL_ENDED: Final = "90018"
_RETRY_DELAY_S: Final = 0.25


class CarrierApiError(TelephonyError):
    """A carrier refused a REST request, or could not be reached (``status`` None)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _base_url(url: str, key: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ConfigError(f"{key} must be an http(s):// base URL, got {url!r}", key=key)
    return url.rstrip("/")


async def _request(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    authorization: str,
    body: Mapping[str, Any] | None,
    client_timeout: aiohttp.ClientTimeout,
    carrier: str,
) -> tuple[int, str]:
    """One request; the status and body text. ``CarrierApiError`` if it could not be made."""
    headers = {"Authorization": authorization, "Accept": "application/json"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body)
    try:
        async with http.request(
            method, url, data=data, headers=headers, timeout=client_timeout, allow_redirects=False
        ) as response:
            return response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CarrierApiError(f"{carrier} REST API unreachable: {type(exc).__name__}") from exc


class TelnyxRest:
    """Hangs up and transfers Telnyx calls by their call control ID (Call Control commands)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        api_key: str,
        base_url: str = TELNYX_API_URL,
        timeout_s: float = 10.0,
    ) -> None:
        if not api_key:
            raise ConfigError("Telnyx's REST API needs TELNYX_API_KEY", key="TELNYX_API_KEY")
        self._http = http
        self.base_url = _base_url(base_url, "TELNYX_API_URL")
        self._authorization = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def __repr__(self) -> str:
        return f"TelnyxRest(base_url={self.base_url!r})"

    async def hang_up(self, call_sid: str) -> bool:
        """End the call; False if Telnyx says it had already ended (error 90018)."""
        try:
            await self._action(call_sid, "hangup", {}, retry=True)
        except CarrierApiError as exc:
            if exc.code == TELNYX_CALL_ENDED:
                log.info("telnyx.call_already_ended", call_sid=call_sid)
                return False
            raise
        return True

    async def transfer(self, call_sid: str, number: str, *, announce: str | None = None) -> None:
        """Transfer the call to ``number`` (E.164); ``announce`` is not spoken (no TTS step)."""
        if not is_e164(number):
            raise TelephonyError(f"cannot transfer to {number!r}: not an E.164 number")
        await self._action(call_sid, "transfer", {"to": number}, retry=False)

    async def say_and_hang_up(self, call_sid: str, message: str) -> None:
        """Hang up: Call Control has no "speak, then hang up" command (see the module doc)."""
        log.warning("telnyx.message_not_spoken", call_sid=call_sid, reason="hang-up only")
        await self.hang_up(call_sid)

    async def _action(
        self, call_sid: str, action: str, body: Mapping[str, Any], *, retry: bool
    ) -> None:
        url = f"{self.base_url}/v2/calls/{quote(call_sid, safe='')}/actions/{action}"
        for attempt in (1, 2):
            try:
                status, text = await _request(
                    self._http,
                    "POST",
                    url,
                    authorization=self._authorization,
                    body=body,
                    client_timeout=self._timeout,
                    carrier="Telnyx",
                )
            except CarrierApiError:
                if retry and attempt == 1:
                    await asyncio.sleep(_RETRY_DELAY_S)
                    continue
                raise
            if 200 <= status < 300:
                return
            if status >= 500 and retry and attempt == 1:
                await asyncio.sleep(_RETRY_DELAY_S)
                continue
            code = _telnyx_code(text)
            raise CarrierApiError(
                f"Telnyx refused {action} ({status}, code {code})", status=status, code=code
            )


def _telnyx_code(text: str) -> str | None:
    """The first error code of a Telnyx error body (``{"errors":[{"code":"90018",…}]}``)."""
    try:
        errors = json.loads(text).get("errors")
        code = errors[0].get("code") if isinstance(errors, list) and errors else None
    except (ValueError, AttributeError):
        return None
    return str(code) if code is not None else None


class PlivoRest:
    """Hangs up and transfers Plivo calls by their call UUID (the Call resource)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        auth_id: str,
        auth_token: str,
        public_url: str,
        base_url: str = PLIVO_API_URL,
        timeout_s: float = 10.0,
    ) -> None:
        if not (auth_id and auth_token):
            raise ConfigError(
                "Plivo's REST API needs PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN", key="PLIVO_AUTH_ID"
            )
        if not auth_id.isascii() or not auth_id.isalnum():
            raise ConfigError("PLIVO_AUTH_ID must be letters and digits", key="PLIVO_AUTH_ID")
        self._http = http
        self.auth_id = auth_id
        self.base_url = _base_url(base_url, "PLIVO_API_URL")
        # Where Plivo fetches the <Dial> XML of a transfer (agent.server.carriers).
        self._public_url = public_url.rstrip("/")
        credentials = base64.b64encode(f"{auth_id}:{auth_token}".encode()).decode("ascii")
        self._authorization = f"Basic {credentials}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def __repr__(self) -> str:
        return f"PlivoRest(auth_id={self.auth_id!r}, base_url={self.base_url!r})"

    def _call_url(self, call_sid: str) -> str:
        return f"{self.base_url}/v1/Account/{self.auth_id}/Call/{quote(call_sid, safe='')}/"

    async def hang_up(self, call_sid: str) -> bool:
        """End the call (``DELETE`` the call); False if Plivo no longer knows it (404)."""
        for attempt in (1, 2):
            try:
                status, _ = await _request(
                    self._http,
                    "DELETE",
                    self._call_url(call_sid),
                    authorization=self._authorization,
                    body=None,
                    client_timeout=self._timeout,
                    carrier="Plivo",
                )
            except CarrierApiError:
                if attempt == 1:
                    await asyncio.sleep(_RETRY_DELAY_S)
                    continue
                raise
            if status == 404:
                log.info("plivo.call_already_ended", call_sid=call_sid)
                return False
            if 200 <= status < 300:
                return True
            if status >= 500 and attempt == 1:
                await asyncio.sleep(_RETRY_DELAY_S)
                continue
            raise CarrierApiError(f"Plivo refused the hang-up ({status})", status=status)
        raise AssertionError("unreachable")  # pragma: no cover

    async def transfer(self, call_sid: str, number: str, *, announce: str | None = None) -> None:
        """Transfer the call's A leg to XML that dials ``number`` (``announce`` is not spoken)."""
        if not is_e164(number):
            raise TelephonyError(f"cannot transfer to {number!r}: not an E.164 number")
        dial_url = f"{self._public_url}/plivo/dial?to={quote(number)}"
        status, _ = await _request(
            self._http,
            "POST",
            self._call_url(call_sid),
            authorization=self._authorization,
            body={"legs": "aleg", "aleg_url": dial_url, "aleg_method": "GET"},
            client_timeout=self._timeout,
            carrier="Plivo",
        )
        if not 200 <= status < 300:
            raise CarrierApiError(f"Plivo refused the transfer ({status})", status=status)

    async def say_and_hang_up(self, call_sid: str, message: str) -> None:
        """Hang up (the message is not spoken; see the module doc)."""
        log.warning("plivo.message_not_spoken", call_sid=call_sid, reason="hang-up only")
        await self.hang_up(call_sid)
