"""Twilio's REST API: update a live call, and create an outbound one.

A bidirectional media stream cannot hang up or transfer a call by itself (closing the socket
only ends the stream, and what happens next depends on the TwiML around it), so the built-in
``end_call`` and ``transfer_call`` tools end in a call update::

    POST {base_url}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json   (form-encoded)
        Status=completed                                   hang up
        Twiml=<Response><Dial>+15551234567</Dial></Response>  transfer (ends the stream)
        Twiml=<Response><Say>…</Say><Hangup/></Response>   speak a message, then hang up
        Url=https://…                                      continue with the TwiML found there

The fallback for an unreachable model (``fallback.message``, ``fallback.transfer_to``) uses the
same update: Twilio's own text-to-speech says the message (``<Say>``), then ``<Dial>`` moves the
call or ``<Hangup/>`` ends it.

An outbound call (``agent dial``, ``POST /calls``) is one ``Calls.json`` create
(:func:`create_call_params` builds its form)::

    POST {base_url}/2010-04-01/Accounts/{AccountSid}/Calls.json
        To, From, Url (our answer webhook), Timeout, StatusCallback + StatusCallbackEvent,
        MachineDetection=DetectMessageEnd, AsyncAmd=true, AsyncAmdStatusCallback

It is sent once and never retried unless the connection could not be made: a second create
would ring the callee twice.

Authentication is HTTP Basic with the account SID and auth token, or an API key SID and secret
(the key must belong to the account). ``base_url`` is ``TWILIO_API_URL``: Twilio's default host,
a regional one (``https://api.dublin.ie1.twilio.com``) or the carrier simulator's stand-in.

Errors become :class:`TwilioApiError` (a ``TelephonyError``) carrying Twilio's error code and
message; the credentials never appear in a log line, an exception or a ``repr``.

Retries, at most one, after a short pause:

* ``hang_up`` retries on any connection error, timeout or 5xx. Hanging up is idempotent: if the
  first request did reach Twilio, the retry finds the call gone (20404), which counts as done.
* ``transfer``, ``say_and_hang_up`` and ``redirect`` retry only when the connection could not be
  made at all, so the request cannot have reached Twilio. After a dropped connection or a timeout
  the first update may have taken effect; sending it again would restart the ``<Dial>`` or the
  ``<Say>`` (the caller hears ringing or the message start over) or act on a call that has already
  moved on, which is worse than reporting the failure and letting the session end the call
  another way.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import xml.sax.saxutils
from collections.abc import Mapping
from typing import Any, Final, Literal
from urllib.parse import quote, urlsplit

import aiohttp
import structlog

from agent.errors import ConfigError, TelephonyError
from agent.numbers import is_e164

log = structlog.get_logger("agent.telephony.rest")

DEFAULT_API_URL: Final = "https://api.twilio.com"
API_VERSION: Final = "2010-04-01"
#: Twilio's "the requested resource was not found": for a call update, the call has ended.
CALL_NOT_FOUND: Final = 20404

# Twilio SIDs: two capital letters naming the resource, then 32 hex digits. Checked before they go
# into a URL path, so a malformed value cannot address another resource.
_SID: Final = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")

_RETRY_DELAY_S: Final = 0.25
_Retry = Literal["any", "connect"]


class TwilioApiError(TelephonyError):
    """Twilio refused a REST request, or could not be reached.

    ``status`` is the HTTP status (None: no response), ``code`` Twilio's error code
    (https://www.twilio.com/docs/api/errors), ``more_info`` its documentation link.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        more_info: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.more_info = more_info


class TwilioRest:
    """Updates live calls through Twilio's REST API, over a shared ``aiohttp`` session.

    Give either ``auth_token`` (Basic ``AccountSid:AuthToken``) or both ``api_key_sid`` and
    ``api_key_secret``. Construction raises ``ConfigError`` for missing or malformed
    credentials, so a misconfiguration shows at start-up, not at the first hang-up.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        account_sid: str,
        auth_token: str | None = None,
        api_key_sid: str | None = None,
        api_key_secret: str | None = None,
        base_url: str = DEFAULT_API_URL,
        timeout_s: float = 10.0,
    ) -> None:
        if not _SID.fullmatch(account_sid) or not account_sid.startswith("AC"):
            raise ConfigError(
                "TWILIO_ACCOUNT_SID must be AC followed by 32 hex digits", key="TWILIO_ACCOUNT_SID"
            )
        if auth_token and (api_key_sid or api_key_secret):
            raise ConfigError(
                "give the auth token or an API key and secret, not both", key="TWILIO_API_KEY_SID"
            )
        if api_key_sid or api_key_secret:
            if not (api_key_sid and api_key_secret):
                raise ConfigError(
                    "an API key needs both its SID and its secret", key="TWILIO_API_KEY_SID"
                )
            if not _SID.fullmatch(api_key_sid) or not api_key_sid.startswith("SK"):
                raise ConfigError(
                    "TWILIO_API_KEY_SID must be SK followed by 32 hex digits",
                    key="TWILIO_API_KEY_SID",
                )
            login, password = api_key_sid, api_key_secret
        elif auth_token:
            login, password = account_sid, auth_token
        else:
            raise ConfigError(
                "Twilio's REST API needs TWILIO_AUTH_TOKEN or an API key and secret",
                key="TWILIO_AUTH_TOKEN",
            )
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ConfigError(
                f"TWILIO_API_URL must be an http(s):// base URL, got {base_url!r}",
                key="TWILIO_API_URL",
            )
        if not timeout_s > 0:
            raise ConfigError("the Twilio REST timeout must be positive", key="TWILIO_API_URL")
        self._http = http
        self.account_sid = account_sid
        self.base_url = base_url.rstrip("/")
        # The header value, built once; kept private and out of ``repr``. (Encoded here rather
        # than with aiohttp's helpers, whose API changed across the 3.x releases we support.)
        credentials = base64.b64encode(f"{login}:{password}".encode()).decode("ascii")
        self._authorization = f"Basic {credentials}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def __repr__(self) -> str:
        # Never the credentials.
        return f"TwilioRest(account_sid={self.account_sid!r}, base_url={self.base_url!r})"

    async def hang_up(self, call_sid: str) -> bool:
        """End the call (``Status=completed``). True if this ended it, False if it had already
        ended (Twilio's 404 with code 20404): either way the call is over."""
        try:
            await self.update_call(call_sid, {"Status": "completed"}, retry="any")
        except TwilioApiError as exc:
            if exc.code == CALL_NOT_FOUND:
                log.info("twilio.call_already_ended", call_sid=call_sid)
                return False
            raise
        return True

    async def transfer(self, call_sid: str, number: str, *, announce: str | None = None) -> None:
        """Move the call to ``number`` (E.164) with ``<Dial>``; this ends the media stream.

        ``announce`` is said to the caller first, by Twilio's text-to-speech (``<Say>``)."""
        if not is_e164(number):
            raise TelephonyError(f"cannot transfer to {number!r}: not an E.164 number")
        dial = f"<Dial>{xml.sax.saxutils.escape(number)}</Dial>"
        twiml = f"<Response>{_say(announce)}{dial}</Response>"
        await self.update_call(call_sid, {"Twiml": twiml}, retry="connect")

    async def say_and_hang_up(self, call_sid: str, message: str) -> None:
        """Have Twilio say ``message`` to the caller, then end the call; this ends the media
        stream at once (the caller hears the message after it)."""
        if not message.strip():
            raise TelephonyError("there is no message to say")
        twiml = f"<Response>{_say(message)}<Hangup/></Response>"
        await self.update_call(call_sid, {"Twiml": twiml}, retry="connect")

    async def create_call(self, params: Mapping[str, str | tuple[str, ...]]) -> str:
        """Create a call with ``params`` (see :func:`create_call_params`); its CallSid.

        Retried once only when no connection could be made; anything else that fails raises
        :class:`TwilioApiError` (Twilio's 400 with code 21211 for an invalid ``To``, 21210
        for a ``From`` that is not the account's)."""
        url = f"{self.base_url}/{API_VERSION}/Accounts/{quote(self.account_sid)}/Calls.json"
        for attempt in (1, 2):
            try:
                payload = await self._send(url, params, "the call")
                break
            except _TransientError as exc:
                if attempt == 2 or not exc.connect_failed:
                    raise exc.error from exc.__cause__
                log.warning("twilio.retrying", update="create call", error=str(exc.error))
                await asyncio.sleep(_RETRY_DELAY_S)
        sid = payload.get("sid")
        if not isinstance(sid, str) or not _SID.fullmatch(sid) or not sid.startswith("CA"):
            raise TwilioApiError("Twilio created a call but its answer has no CallSid")
        log.info("twilio.call_created", call_sid=sid, status=payload.get("status"))
        return sid

    async def _send(
        self, url: str, params: Mapping[str, str | tuple[str, ...]], what: str
    ) -> dict[str, Any]:
        """POST ``params`` to ``url``; the JSON answer, or the error (as :class:`_TransientError`
        when it is worth one retry)."""
        status, payload = await self._exchange(url, list(_form_items(params)), what)
        if 200 <= status < 300:
            return payload
        error = _api_error(status, payload, f"creating {what}")
        log.warning(
            "twilio.create_refused", http_status=status, code=error.code, message=str(error)
        )
        raise error

    async def join_conference(self, call_sid: str, room: str) -> None:
        """Move the call into the conference ``room`` (a warm transfer's join); this ends the
        media stream. Retried only when no connection could be made, like ``transfer``."""
        await self.update_call(call_sid, {"Twiml": conference_twiml(room)}, retry="connect")

    async def fetch_account(self) -> dict[str, str]:
        """``GET /2010-04-01/Accounts/{AccountSid}.json``: are these credentials valid for this
        account? Returns the account's ``sid``, ``friendly_name``, ``status`` (``active``,
        ``suspended``, ``closed``) and ``type`` (``Trial``, ``Full``); raises
        :class:`TwilioApiError` (401 with code 20003 for wrong credentials). The resource also
        carries the account's auth token (https://twilio.com/docs/usage/api/account): only the
        fields above leave this method, and nothing of the body is logged. ``agent doctor``
        uses it; no call needs it."""
        url = f"{self.base_url}/{API_VERSION}/Accounts/{quote(self.account_sid)}.json"
        try:
            async with self._http.get(
                url,
                timeout=self._timeout,
                headers={"Accept": "application/json", "Authorization": self._authorization},
                allow_redirects=False,
            ) as response:
                status = response.status
                payload = _json_object(await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            what = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise TwilioApiError(
                f"could not reach Twilio's REST API at {self.base_url} ({what})"
            ) from exc
        if not 200 <= status < 300:
            error = _api_error(status, payload, "the account lookup")
            raise error
        return {
            key: str(payload[key])
            for key in ("sid", "friendly_name", "status", "type")
            if isinstance(payload.get(key), str)
        }

    async def update_call(
        self, call_sid: str, params: Mapping[str, str], *, retry: _Retry = "connect"
    ) -> dict[str, Any]:
        """POST ``params`` to the call's resource; Twilio's JSON representation of the call.

        ``retry="any"`` retries once after any connection failure, timeout or 5xx (for updates
        that are safe to repeat); ``"connect"`` only when no connection could be made.
        """
        if not _SID.fullmatch(call_sid) or not call_sid.startswith("CA"):
            raise TelephonyError(f"not a Twilio CallSid: {call_sid!r}")
        url = (
            f"{self.base_url}/{API_VERSION}/Accounts/{quote(self.account_sid)}"
            f"/Calls/{quote(call_sid)}.json"
        )
        action = ",".join(sorted(params))
        for attempt in (1, 2):
            try:
                return await self._post(url, params, call_sid)
            except _TransientError as exc:
                retryable = exc.connect_failed or (retry == "any" and exc.repeatable)
                if attempt == 2 or not retryable:
                    raise exc.error from exc.__cause__
                log.warning(
                    "twilio.retrying",
                    call_sid=call_sid,
                    update=action,
                    error=str(exc.error),
                )
                await asyncio.sleep(_RETRY_DELAY_S)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange(self, url: str, data: Any, what: str) -> tuple[int, dict[str, Any]]:
        """One POST of a form to Twilio: its status and JSON answer. A connection that could not
        be made, or an answer that never came, is a :class:`_TransientError` (the second may
        have been acted on: only a caller whose request is safe to repeat retries it)."""
        try:
            async with self._http.post(
                url,
                data=data,
                timeout=self._timeout,
                headers={"Accept": "application/json", "Authorization": self._authorization},
                allow_redirects=False,
            ) as response:
                return response.status, _json_object(await response.read())
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise _TransientError(
                TwilioApiError(f"could not connect to Twilio's REST API ({type(exc).__name__})"),
                connect_failed=True,
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            failed = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise _TransientError(
                TwilioApiError(f"Twilio's REST API did not answer {what} ({failed})"),
                repeatable=True,
            ) from exc

    async def _post(self, url: str, params: Mapping[str, str], call_sid: str) -> dict[str, Any]:
        status, payload = await self._exchange(url, dict(params), "the call update")
        if 200 <= status < 300:
            log.info(
                "twilio.call_updated",
                call_sid=call_sid,
                update=",".join(sorted(params)),
                status=payload.get("status"),
            )
            return payload
        error = _api_error(status, payload)
        if status >= 500:
            raise _TransientError(error, repeatable=True)
        # A call that has already ended is routine (the caller hung up first), not a warning.
        (log.info if error.code == CALL_NOT_FOUND else log.warning)(
            "twilio.call_update_refused",
            call_sid=call_sid,
            update=",".join(sorted(params)),
            http_status=status,
            code=error.code,
            message=str(error),
        )
        raise error


class _TransientError(Exception):
    """A failure worth one retry, carrying the error to raise if there is none."""

    def __init__(
        self, error: TwilioApiError, *, connect_failed: bool = False, repeatable: bool = False
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.connect_failed = connect_failed
        self.repeatable = repeatable


#: The call progress events the status callback asks for
#: (https://www.twilio.com/docs/voice/api/call-resource#statuscallbackevent).
STATUS_EVENTS: Final = ("initiated", "ringing", "answered", "completed")


def create_call_params(
    *,
    to: str,
    from_: str,
    answer_url: str,
    status_callback: str,
    amd_callback: str,
    ring_timeout_s: int = 30,
    amd_timeout_s: int = 30,
) -> dict[str, str | tuple[str, ...]]:
    """The form of a ``Calls.json`` create for an outbound call of ours, by Twilio's names
    (https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource):

    * ``Url``: what Twilio requests when the callee picks up (our answer webhook, which gives
      ``<Connect><Stream>``; a ``Url`` rather than inline ``Twiml`` because the stream's ticket
      is bound to the CallSid, which only exists once the call does);
    * ``Timeout``: seconds of ringing before the call ends ``no-answer``;
    * ``StatusCallback`` with each ``StatusCallbackEvent`` (a repeated field): the call's
      progress, and its final status (``completed``, ``busy``, ``no-answer``, ``failed``,
      ``canceled``);
    * asynchronous answering-machine detection
      (https://www.twilio.com/docs/voice/answering-machine-detection): ``MachineDetection=
      DetectMessageEnd`` (a machine's verdict comes once its greeting has ended, so a message
      left then lands after the beep), ``AsyncAmd=true`` (the call's TwiML runs at once, the
      verdict goes to ``AsyncAmdStatusCallback``), ``MachineDetectionTimeout`` (3-59 s; after it
      the verdict is ``unknown``).

    ``ValueError`` for numbers that are not E.164.
    """
    for name, number in (("To", to), ("From", from_)):
        if not is_e164(number):
            raise ValueError(f"{name} must be an E.164 number, got {number!r}")
    return {
        "To": to,
        "From": from_,
        "Url": answer_url,
        "Method": "POST",
        "Timeout": str(ring_timeout_s),
        "StatusCallback": status_callback,
        "StatusCallbackMethod": "POST",
        "StatusCallbackEvent": STATUS_EVENTS,
        "MachineDetection": "DetectMessageEnd",
        "MachineDetectionTimeout": str(amd_timeout_s),
        "AsyncAmd": "true",
        "AsyncAmdStatusCallback": amd_callback,
        "AsyncAmdStatusCallbackMethod": "POST",
    }


def conference_twiml(room: str, *, say: str | None = None) -> str:
    """``<Say>`` (if any), then ``<Dial><Conference>room</Conference></Dial>``: how a warm
    transfer joins the caller and the colleague
    (https://www.twilio.com/docs/voice/twiml/conference). Either leaving ends the conference
    (``endConferenceOnExit``): nobody is left alone in it; no entry beep, it is a phone call."""
    conference = (
        '<Conference endConferenceOnExit="true" beep="false">'
        f"{xml.sax.saxutils.escape(room)}</Conference>"
    )
    return f"<Response>{_say(say)}<Dial>{conference}</Dial></Response>"


def warm_transfer_params(
    *,
    to: str,
    from_: str,
    summary: str,
    room: str,
    status_callback: str,
    ring_timeout_s: int,
) -> dict[str, str | tuple[str, ...]]:
    """The ``Calls.json`` form that dials the colleague of a warm transfer: inline ``Twiml``
    that says the summary, then waits in the conference for the caller; ``StatusCallback``
    says whether they answered (``answered``) or not (the final ``busy`` / ``no-answer`` /
    ``failed``)."""
    for name, number in (("To", to), ("From", from_)):
        if not is_e164(number):
            raise ValueError(f"{name} must be an E.164 number, got {number!r}")
    return {
        "To": to,
        "From": from_,
        "Twiml": conference_twiml(room, say=summary),
        "Timeout": str(ring_timeout_s),
        "StatusCallback": status_callback,
        "StatusCallbackMethod": "POST",
        "StatusCallbackEvent": ("answered", "completed"),
    }


def _form_items(params: Mapping[str, str | tuple[str, ...]]) -> list[tuple[str, str]]:
    """A form's fields in order, a repeated field once per value (``StatusCallbackEvent``)."""
    items: list[tuple[str, str]] = []
    for name, value in params.items():
        if isinstance(value, tuple):
            items.extend((name, one) for one in value)
        else:
            items.append((name, value))
    return items


def _say(text: str | None) -> str:
    """``<Say>`` for ``text`` (nothing for None), escaped: the text is configuration, not TwiML.

    Twilio speaks the verb's text with its text-to-speech and then moves on to the next verb of the
    document (https://www.twilio.com/docs/voice/twiml/say); a call update's ``Twiml`` replaces what
    the call was doing, the media stream included
    (https://www.twilio.com/docs/voice/tutorials/how-to-modify-calls-in-progress). Without a voice
    attribute Twilio uses its default voice and ``en-US``.
    """
    return "" if text is None else f"<Say>{xml.sax.saxutils.escape(text)}</Say>"


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _api_error(
    status: int, payload: Mapping[str, Any], request: str = "the call update"
) -> TwilioApiError:
    """Twilio's error body (``code``, ``message``, ``more_info``) as a ``TwilioApiError``."""
    code = payload.get("code")
    message = payload.get("message")
    more_info = payload.get("more_info")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    text = f"Twilio refused {request} (HTTP {status}"
    text += f", error {code})" if code is not None else ")"
    if isinstance(message, str) and message:
        text += f": {message[:300]}"
    return TwilioApiError(
        text,
        status=status,
        code=code,
        more_info=more_info if isinstance(more_info, str) else None,
    )
