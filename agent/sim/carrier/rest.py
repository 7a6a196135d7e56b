"""Twilio's REST API as the simulator serves it: the Calls update endpoint (hang up, transfer),
the Calls create endpoint (outbound calls: :mod:`agent.sim.carrier.callee` answers them), and
the account's own resource (``agent doctor`` checks credentials with it)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from agent.numbers import is_e164
from agent.sim.carrier.phone import (
    Message,
    Phone,
    new_sid,
)

# -- Twilio's REST API: the Calls update endpoint --------------------------------------------------

#: Where Twilio's API takes a call update (``POST``, form-encoded).
CALL_UPDATE_PATH: Final = "/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json"
#: Where Twilio's API creates a call (``POST``, form-encoded):
#: https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource
CALL_CREATE_PATH: Final = "/2010-04-01/Accounts/{account_sid}/Calls.json"
#: The account resource (``GET``): https://twilio.com/docs/usage/api/account
ACCOUNT_PATH: Final = "/2010-04-01/Accounts/{account_sid}.json"
_ERRORS_URL: Final = "https://www.twilio.com/docs/errors/"
#: Twilio's "not found": for a call update, a CallSid that is unknown or whose call has ended.
NOT_FOUND_CODE: Final = 20404
#: Twilio's "Authenticate": missing or wrong credentials.
AUTHENTICATE_CODE: Final = 20003
# For a malformed update. Twilio's own codes for these vary by parameter; the simulator reports one
# generic code and says in the message what is wrong.
_BAD_REQUEST_CODE: Final = 20001
#: Twilio's "Document parse failure", for a ``Twiml`` parameter that is not XML.
_PARSE_FAILURE_CODE: Final = 12100

Send = Callable[[list[Message]], None]


@dataclass(frozen=True, slots=True)
class CallCreate:
    """One accepted ``Calls.json`` create: its new CallSid and its form (a repeated field,
    ``StatusCallbackEvent``, as the tuple of its values)."""

    call_sid: str
    params: dict[str, str | tuple[str, ...]]

    def get(self, name: str) -> str | None:
        value = self.params.get(name)
        return value if isinstance(value, str) else None


#: What answers a created call: started as its own task when Twilio would start ringing.
Answerer = Callable[[CallCreate], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class CallUpdate:
    """One request to the Calls update endpoint, and how the simulator answered it."""

    call_sid: str
    params: dict[str, str]
    status: int
    code: int | None = None


@dataclass(slots=True)
class _LiveCall:
    phone: Phone
    send: Send | None = None  # None until the media stream runs (the call is still ringing)


class TwilioApiSimulator:
    """A local stand-in for Twilio's REST API, as far as a bridge uses it during a call.

    It serves ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` on loopback (port
    0: any free port) and routes each update to the :class:`Phone` that :func:`place_call`
    attached for that CallSid:

    * ``Status=completed`` ends the call: the stream gets its ``stop`` and the report says
      ``hung up via REST`` (:data:`ENDED_BY_REST_HANG_UP`);
    * ``Twiml`` ends the stream; its verbs are followed in order, as Twilio would: each
      ``<Say>`` is recorded as spoken (``CallReport.twilio_said``), ``<Pause>`` and ``<Play>``
      pass, ``<Dial>`` records the number the call moved to (``transferred via REST``,
      ``CallReport.transferred_to``), ``<Hangup/>`` or the end of the document hangs up; any
      other verb, or ``Url``, ends the stream as ``redirected via REST``;
    * an unknown CallSid, or a call that has ended, is a 404 with code 20404, as Twilio answers.

    Requests must carry HTTP Basic credentials: the account SID and ``auth_token``. Without an
    ``auth_token`` (development) any password is accepted, but the account SID must still match.
    Every request is kept in :attr:`updates`; what real Twilio would warn about (``Twiml`` and
    ``Url`` together, ``Status=canceled`` on a call in progress) is noted in the call's report.
    """

    def __init__(
        self,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.account_sid = account_sid or new_sid("AC")
        self._auth_token = auth_token
        self._host = host
        self._port = port
        self._calls: dict[str, _LiveCall] = {}
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self.updates: list[CallUpdate] = []
        #: Every call created through ``Calls.json``, in order.
        self.created: list[CallCreate] = []
        #: Answers created calls (:class:`agent.sim.carrier.callee.SimulatedCallees`); None:
        #: creates are refused (501), as an account without outbound calling would.
        self.answerer: Answerer | None = None
        self._answering: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"TwilioApiSimulator(account_sid={self.account_sid!r}, url={self._url!r})"

    @property
    def url(self) -> str:
        """The base URL to give the bridge as ``TWILIO_API_URL`` (once started)."""
        if self._url is None:
            raise RuntimeError("the Twilio API simulator is not started")
        return self._url

    def app(self) -> web.Application:
        """The aiohttp application (what :meth:`start` serves; tests may serve it themselves)."""
        app = web.Application()
        app.router.add_post(CALL_CREATE_PATH, self._create_call)
        app.router.add_post(CALL_UPDATE_PATH, self._update_call)
        app.router.add_get(ACCOUNT_PATH, self._fetch_account)
        return app

    async def start(self) -> str:
        """Listen on ``host:port``; returns :attr:`url`."""
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"
        return self._url

    async def close(self) -> None:
        """Stop listening (and end the calls still being answered)."""
        for task in list(self._answering):
            task.cancel()
        if self._answering:
            await asyncio.wait(list(self._answering))
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> TwilioApiSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def attach(self, phone: Phone, send: Send | None = None) -> None:
        """Route updates for ``phone.call_sid`` to ``phone``; ``send`` delivers the messages an
        update produces (the ``stop``) to the media stream. Attaching again replaces ``send``."""
        self._calls[phone.call_sid] = _LiveCall(phone, send)

    def detach(self, call_sid: str) -> None:
        """The call is over: later updates for it get 20404."""
        self._calls.pop(call_sid, None)

    async def _fetch_account(self, request: web.Request) -> web.Response:
        """The account resource, as Twilio answers it, less its ``auth_token`` (a stand-in has
        no reason to echo a secret). Wrong credentials: 401 with code 20003."""
        account_sid = request.match_info["account_sid"]
        if not self._authorised(request.headers.get("Authorization"), account_sid):
            return _error_response(401, AUTHENTICATE_CODE, "Authenticate")
        return web.json_response(
            {
                "sid": self.account_sid,
                "owner_account_sid": self.account_sid,
                "friendly_name": "Simulated account",
                "status": "active",
                "type": "Full",
                "uri": request.path,
            }
        )

    async def _create_call(self, request: web.Request) -> web.Response:
        """``Calls.json``: check the form as Twilio would (``To``, ``From`` E.164, ``Url`` or
        ``Twiml``), answer 201 with the new call queued, and start the callee's side."""
        account_sid = request.match_info["account_sid"]
        if not self._authorised(request.headers.get("Authorization"), account_sid):
            return _error_response(401, AUTHENTICATE_CODE, "Authenticate")
        form = await request.post()
        params: dict[str, str | tuple[str, ...]] = {}
        for name in form:
            values = [v for v in form.getall(name) if isinstance(v, str)]
            params[name] = tuple(values) if name == "StatusCallbackEvent" else values[-1]
        to, from_ = params.get("To"), params.get("From")
        if not isinstance(to, str) or not is_e164(to):
            return _error_response(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not isinstance(from_, str) or not is_e164(from_):
            return _error_response(400, 21212, f"Invalid 'From' Phone Number: {from_}")
        if not isinstance(params.get("Url"), str) and not isinstance(params.get("Twiml"), str):
            return _error_response(400, 21205, "Url or Twiml is required")
        if self.answerer is None:
            return _error_response(501, _BAD_REQUEST_CODE, "this simulator answers no calls")
        created = CallCreate(new_sid("CA"), params)
        self.created.append(created)
        task = asyncio.get_running_loop().create_task(self.answerer(created))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)
        body = {
            "sid": created.call_sid,
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "status": "queued",
            "direction": "outbound-api",
            "to": to,
            "from": from_,
            "uri": request.path.removesuffix(".json") + f"/{created.call_sid}.json",
        }
        return web.json_response(body, status=201)

    async def _update_call(self, request: web.Request) -> web.Response:
        account_sid = request.match_info["account_sid"]
        call_sid = request.match_info["call_sid"]
        form = await request.post()
        params = {name: value for name, value in form.items() if isinstance(value, str)}

        def error(status: int, code: int, message: str) -> web.Response:
            self.updates.append(CallUpdate(call_sid, params, status, code))
            return _error_response(status, code, message)

        if not self._authorised(request.headers.get("Authorization"), account_sid):
            return error(401, AUTHENTICATE_CODE, "Authenticate")
        live = self._calls.get(call_sid)
        if live is None or live.phone.finished:
            return error(
                404, NOT_FOUND_CODE, f"The requested resource {request.path} was not found"
            )
        phone = live.phone
        status = params.get("Status")
        twiml = params.get("Twiml")
        url = params.get("Url")
        if status is not None and status not in ("completed", "canceled"):
            return error(400, _BAD_REQUEST_CODE, f"Status must be completed or canceled: {status}")
        dial: str | None = None
        messages: list[Message] = []
        if url is not None or twiml is not None:
            if url is not None and twiml is not None:
                phone.note_problem("REST update with both Twiml and Url (Twilio warning 32019)")
                twiml = None  # Twilio follows the Url
            if twiml is not None:
                try:
                    document = read_update_twiml(twiml)
                except ValueError as exc:
                    return error(400, _PARSE_FAILURE_CODE, f"Document parse failure: {exc}")
                dial = document.dial
                for text in document.said:
                    phone.said_by_twilio(text)
                if document.conference is not None:
                    messages = phone.join_conference_via_rest(document.conference)
                elif document.ending == "Hangup":
                    messages = phone.hang_up_via_rest()
                else:
                    if document.ending == "Dial" and (dial is None or not is_e164(dial)):
                        phone.note_problem(f"REST <Dial> to {dial!r}, not an E.164 number")
                    messages = phone.redirect_via_rest(dial)
            else:
                messages = phone.redirect_via_rest(None)
        elif status == "canceled" and live.send is not None:
            # Twilio cancels only queued or ringing calls; one in progress needs "completed".
            phone.note_problem("REST Status=canceled on a call in progress has no effect")
        elif status is not None:
            messages = phone.hang_up_via_rest()
        else:
            return error(400, _BAD_REQUEST_CODE, "Nothing to update: give Status, Twiml or Url")
        if messages and live.send is not None:
            live.send(messages)
        self.updates.append(CallUpdate(call_sid, params, 200))
        body = {
            "sid": call_sid,
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "status": "completed" if phone.finished and dial is None else "in-progress",
            "uri": request.path,
        }
        return web.json_response(body)

    def _authorised(self, header: str | None, account_sid: str) -> bool:
        if header is None or account_sid != self.account_sid:
            return False
        scheme, _, encoded = header.partition(" ")
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        login, colon, password = decoded.partition(":")
        if scheme.lower() != "basic" or not colon:
            return False
        if not hmac.compare_digest(login.encode(), self.account_sid.encode()):
            return False
        return self._auth_token is None or hmac.compare_digest(
            password.encode(), self._auth_token.encode()
        )


def _error_response(status: int, code: int, message: str) -> web.Response:
    """Twilio's error body: ``code``, ``message``, ``more_info``, ``status``."""
    body = {"code": code, "message": message, "more_info": f"{_ERRORS_URL}{code}", "status": status}
    headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


#: Verbs that neither end nor move the call: Twilio carries on with the next one.
_PASSING_VERBS: Final = frozenset({"Say", "Pause", "Play"})


@dataclass(frozen=True, slots=True)
class UpdateTwiml:
    """What a REST update's TwiML does to the call, as far as the simulator follows it."""

    #: The text of each ``<Say>`` Twilio speaks before the call ends or moves on.
    said: tuple[str, ...]
    #: ``"Dial"``, ``"Hangup"`` (also when the document runs out: Twilio then ends the call), or
    #: the name of another verb, which takes the call somewhere the simulator does not follow.
    ending: str
    #: For ``<Dial>``, the number dialled.
    dial: str | None = None
    #: For ``<Dial><Conference>``, the conference's name (then ``dial`` is None).
    conference: str | None = None


def read_update_twiml(twiml: str) -> UpdateTwiml:
    """Follow a REST update's TwiML verb by verb, as Twilio executes it (``ValueError`` when it
    is not a ``<Response>`` with at least one verb, which Twilio could not parse either)."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise ValueError(str(exc)) from exc
    if root.tag != "Response" or len(root) == 0:
        raise ValueError("expected <Response> with at least one verb")
    said: list[str] = []
    for verb in root:
        if verb.tag == "Say":
            said.append(" ".join((verb.text or "").split()))
        elif verb.tag == "Dial":
            # Without an action URL Twilio would go on after the dialled call ends; the caller is
            # elsewhere by then, which is as far as the simulator follows.
            conference = verb.find("Conference")
            if conference is not None:
                room = (conference.text or "").strip() or None
                return UpdateTwiml(tuple(said), "Dial", None, room)
            number = verb.find("Number")
            text = number.text if number is not None else verb.text
            return UpdateTwiml(tuple(said), "Dial", (text or "").strip() or None)
        elif verb.tag not in _PASSING_VERBS:
            return UpdateTwiml(tuple(said), verb.tag)
    return UpdateTwiml(tuple(said), "Hangup")
