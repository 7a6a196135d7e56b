"""Twilio's REST client (``agent.telephony.rest``) against the carrier simulator's REST stand-in,
and against small misbehaving servers for what the simulator never does (5xx, slowness, drops).

Everything runs on loopback; no request leaves the machine.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from agent.errors import ConfigError, TelephonyError
from agent.sim.carrier import CarrierOptions, Phone, TwilioApiSimulator, new_sid
from agent.sim.carrier.rest import CallCreate
from agent.telephony.rest import (
    TwilioApiError,
    TwilioRest,
    conference_twiml,
    create_call_params,
    warm_transfer_params,
)

ACCOUNT = "AC" + "a" * 32
TOKEN = "s3cret-auth-token-for-tests"
STREAM = "MZ" + "5" * 32

Message = dict[str, Any]
Server = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def simulator() -> AsyncIterator[TwilioApiSimulator]:
    async with TwilioApiSimulator(account_sid=ACCOUNT, auth_token=TOKEN) as running:
        yield running


def rest(http: aiohttp.ClientSession, base_url: str, **overrides: Any) -> TwilioRest:
    options: dict[str, Any] = {"account_sid": ACCOUNT, "auth_token": TOKEN, "base_url": base_url}
    options.update(overrides)
    return TwilioRest(http, **options)


def live_phone(simulator: TwilioApiSimulator) -> tuple[Phone, list[Message]]:
    """A phone in the middle of a call, attached to the simulator; what it sends is collected."""
    phone = Phone(
        CarrierOptions(lead_ms=0),
        [b"\x10" * 1600],
        call_sid=new_sid("CA"),
        account_sid=simulator.account_sid,
        stream_sid=STREAM,
    )
    sent: list[Message] = []
    phone.connect({})
    phone.tick()
    simulator.attach(phone, sent.extend)
    return phone, sent


async def test_hang_up_completes_the_call_and_the_stream_stops(
    http: aiohttp.ClientSession, simulator: TwilioApiSimulator
) -> None:
    phone, sent = live_phone(simulator)
    assert await rest(http, simulator.url).hang_up(phone.call_sid) is True
    assert phone.finished
    assert phone.report().ended_by == "hung up via REST"
    assert [m["event"] for m in sent] == ["stop"]
    [update] = simulator.updates
    assert (update.call_sid, update.params, update.status) == (
        phone.call_sid,
        {"Status": "completed"},
        200,
    )


async def test_hanging_up_a_call_that_has_ended_is_not_an_error(
    http: aiohttp.ClientSession, simulator: TwilioApiSimulator
) -> None:
    phone, _ = live_phone(simulator)
    client = rest(http, simulator.url)
    assert await client.hang_up(phone.call_sid) is True
    assert await client.hang_up(phone.call_sid) is False  # 20404: already over
    assert await client.hang_up(new_sid("CA")) is False  # never existed: 20404 too
    assert [u.code for u in simulator.updates] == [None, 20404, 20404]


async def test_transfer_dials_the_number_and_ends_the_stream(
    http: aiohttp.ClientSession, simulator: TwilioApiSimulator
) -> None:
    phone, sent = live_phone(simulator)
    await rest(http, simulator.url).transfer(phone.call_sid, "+15555550123")
    [update] = simulator.updates
    assert update.params == {"Twiml": "<Response><Dial>+15555550123</Dial></Response>"}
    report = phone.report()
    assert report.ended_by == "transferred via REST"
    assert report.transferred_to == "+15555550123"
    assert [m["event"] for m in sent] == ["stop"]


async def test_a_transfer_can_be_announced_by_twilios_text_to_speech(
    http: aiohttp.ClientSession, simulator: TwilioApiSimulator
) -> None:
    phone, sent = live_phone(simulator)
    await rest(http, simulator.url).transfer(
        phone.call_sid, "+15555550123", announce="Putting you through <now> & then"
    )
    [update] = simulator.updates
    assert update.params == {
        "Twiml": "<Response><Say>Putting you through &lt;now&gt; &amp; then</Say>"
        "<Dial>+15555550123</Dial></Response>"
    }
    report = phone.report()
    assert report.twilio_said == ("Putting you through <now> & then",)
    assert report.transferred_to == "+15555550123"
    assert [m["event"] for m in sent] == ["stop"]


async def test_say_and_hang_up_speaks_then_ends_the_call(
    http: aiohttp.ClientSession, simulator: TwilioApiSimulator
) -> None:
    phone, sent = live_phone(simulator)
    await rest(http, simulator.url).say_and_hang_up(phone.call_sid, "Sorry, goodbye.")
    [update] = simulator.updates
    assert update.params == {"Twiml": "<Response><Say>Sorry, goodbye.</Say><Hangup/></Response>"}
    report = phone.report()
    assert report.twilio_said == ("Sorry, goodbye.",)
    assert report.ended_by == "hung up via REST"
    assert [m["event"] for m in sent] == ["stop"]


async def test_transferring_a_call_that_has_ended_is_an_error_with_twilios_code(
    http: aiohttp.ClientSession, simulator: TwilioApiSimulator
) -> None:
    with pytest.raises(TwilioApiError) as caught:
        await rest(http, simulator.url).transfer(new_sid("CA"), "+15555550123")
    assert caught.value.status == 404
    assert caught.value.code == 20404
    assert caught.value.more_info == "https://www.twilio.com/docs/errors/20404"
    assert "error 20404" in str(caught.value)


@pytest.mark.parametrize(
    "number", ["5555550123", "+0555550123", "+1555<Hangup/>", "+1 555 555 0123", ""]
)
async def test_transfer_refuses_a_number_that_is_not_e164_before_asking_twilio(
    http: aiohttp.ClientSession, simulator: TwilioApiSimulator, number: str
) -> None:
    phone, _ = live_phone(simulator)
    with pytest.raises(TelephonyError, match=r"not an E\.164 number"):
        await rest(http, simulator.url).transfer(phone.call_sid, number)
    assert simulator.updates == []
    assert not phone.finished


@pytest.mark.parametrize(
    ("credentials", "where"),
    [
        ({"auth_token": "wrong-token-value"}, "token"),
        ({"account_sid": "AC" + "b" * 32}, "account"),
    ],
)
async def test_bad_credentials_are_refused_and_the_token_never_shows(
    http: aiohttp.ClientSession,
    simulator: TwilioApiSimulator,
    credentials: dict[str, str],
    where: str,
) -> None:
    phone, _ = live_phone(simulator)
    client = rest(http, simulator.url, **credentials)
    with capture_logs() as logs, pytest.raises(TwilioApiError) as caught:
        await client.hang_up(phone.call_sid)
    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert not phone.finished
    secret = credentials.get("auth_token", TOKEN)
    assert secret not in str(caught.value)
    assert secret not in repr(client)
    assert secret not in repr(logs)


async def test_fetching_the_account_confirms_the_credentials(
    http: aiohttp.ClientSession, simulator: TwilioApiSimulator
) -> None:
    account = await rest(http, simulator.url).fetch_account()
    assert account == {
        "sid": ACCOUNT,
        "friendly_name": "Simulated account",
        "status": "active",
        "type": "Full",
    }


async def test_fetching_the_account_with_a_wrong_token_is_twilios_401_and_hides_the_token(
    http: aiohttp.ClientSession, simulator: TwilioApiSimulator
) -> None:
    wrong = "not-the-auth-token-at-all"
    with capture_logs() as logs, pytest.raises(TwilioApiError) as caught:
        await rest(http, simulator.url, auth_token=wrong).fetch_account()
    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert (
        str(caught.value)
        == "Twilio refused the account lookup (HTTP 401, error 20003): Authenticate"
    )
    assert wrong not in repr(logs)


async def test_fetching_the_account_of_an_unreachable_api_says_where_it_looked(
    http: aiohttp.ClientSession,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(
        TwilioApiError, match=f"could not reach Twilio's REST API at http://127.0.0.1:{port}"
    ):
        await rest(http, f"http://127.0.0.1:{port}").fetch_account()


def test_the_credentials_are_checked_when_the_client_is_built() -> None:
    session: Any = object()  # never used: construction does no I/O
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN or an API key"):
        TwilioRest(session, account_sid=ACCOUNT)
    with pytest.raises(ConfigError, match="AC followed by 32 hex digits"):
        TwilioRest(session, account_sid="ACnope", auth_token=TOKEN)
    with pytest.raises(ConfigError, match="not both"):
        TwilioRest(
            session,
            account_sid=ACCOUNT,
            auth_token=TOKEN,
            api_key_sid="SK" + "1" * 32,
            api_key_secret="x",
        )
    with pytest.raises(ConfigError, match="both its SID and its secret"):
        TwilioRest(session, account_sid=ACCOUNT, api_key_sid="SK" + "1" * 32)
    with pytest.raises(ConfigError, match="TWILIO_API_URL"):
        TwilioRest(session, account_sid=ACCOUNT, auth_token=TOKEN, base_url="api.twilio.com")
    client = TwilioRest(
        session, account_sid=ACCOUNT, api_key_sid="SK" + "1" * 32, api_key_secret="key-secret"
    )
    assert "key-secret" not in repr(client)


async def test_a_malformed_call_sid_never_reaches_a_url(
    http: aiohttp.ClientSession, simulator: TwilioApiSimulator
) -> None:
    client = rest(http, simulator.url)
    for call_sid in ("../../Accounts", "CA123", "CA" + "g" * 32):
        with pytest.raises(TelephonyError, match="not a Twilio CallSid"):
            await client.hang_up(call_sid)
    assert simulator.updates == []


# -- retries, against servers that misbehave ------------------------------------------------------


class Flaky:
    """A Calls endpoint that answers from a script: a status, "drop" (close the connection with
    no answer) or "slow" (answer after the client has given up)."""

    def __init__(self, *script: int | str) -> None:
        self.script = list(script)
        self.hits = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{call}.json", self.update)
        return app

    async def update(self, request: web.Request) -> web.StreamResponse:
        await request.post()
        step = self.script[min(self.hits, len(self.script) - 1)]
        self.hits += 1
        if step == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if step == "slow":
            await asyncio.sleep(5)
        status = int(step) if isinstance(step, int) else 200
        body: dict[str, Any] = {"sid": request.match_info["call"], "status": "completed"}
        if status >= 400:
            body = {"code": 20500, "message": "Internal error", "status": status}
        return web.json_response(body, status=status)


async def test_hang_up_retries_once_after_a_5xx(
    http: aiohttp.ClientSession, aiohttp_server: Server
) -> None:
    flaky = Flaky(503, 200)
    server = await aiohttp_server(flaky.app())
    assert await rest(http, str(server.make_url(""))).hang_up(new_sid("CA")) is True
    assert flaky.hits == 2


async def test_hang_up_gives_up_after_one_retry(
    http: aiohttp.ClientSession, aiohttp_server: Server
) -> None:
    flaky = Flaky(500)
    server = await aiohttp_server(flaky.app())
    with pytest.raises(TwilioApiError) as caught:
        await rest(http, str(server.make_url(""))).hang_up(new_sid("CA"))
    assert caught.value.status == 500
    assert flaky.hits == 2


async def test_hang_up_retries_after_a_timeout(
    http: aiohttp.ClientSession, aiohttp_server: Server
) -> None:
    flaky = Flaky("slow", 200)
    server = await aiohttp_server(flaky.app())
    client = rest(http, str(server.make_url("")), timeout_s=0.2)
    assert await client.hang_up(new_sid("CA")) is True
    assert flaky.hits == 2


@pytest.mark.parametrize("failure", [503, "drop", "slow"])
async def test_transfer_is_not_repeated_when_the_first_may_have_taken_effect(
    http: aiohttp.ClientSession, aiohttp_server: Server, failure: int | str
) -> None:
    flaky = Flaky(failure, 200)
    server = await aiohttp_server(flaky.app())
    client = rest(http, str(server.make_url("")), timeout_s=0.2)
    with pytest.raises(TwilioApiError):
        await client.transfer(new_sid("CA"), "+15555550123")
    assert flaky.hits == 1


async def test_every_update_retries_once_when_no_connection_could_be_made(
    http: aiohttp.ClientSession,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on once this is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = rest(http, f"http://127.0.0.1:{port}")
    with capture_logs() as logs, pytest.raises(TwilioApiError, match="could not connect"):
        await client.transfer(new_sid("CA"), "+15555550123")
    assert [entry["event"] for entry in logs].count("twilio.retrying") == 1
    assert TOKEN not in repr(logs)


# -- creating outbound calls ---------------------------------------------------------------------


def test_the_create_form_names_each_parameter_as_twilio_does() -> None:
    form = create_call_params(
        to="+15555550201",
        from_="+15555550123",
        answer_url="https://bridge.example/twilio/outbound",
        status_callback="https://bridge.example/twilio/call-status",
        amd_callback="https://bridge.example/twilio/amd",
        ring_timeout_s=25,
        amd_timeout_s=20,
    )
    assert form == {
        "To": "+15555550201",
        "From": "+15555550123",
        "Url": "https://bridge.example/twilio/outbound",
        "Method": "POST",
        "Timeout": "25",
        "StatusCallback": "https://bridge.example/twilio/call-status",
        "StatusCallbackMethod": "POST",
        "StatusCallbackEvent": ("initiated", "ringing", "answered", "completed"),
        "MachineDetection": "DetectMessageEnd",
        "MachineDetectionTimeout": "20",
        "AsyncAmd": "true",
        "AsyncAmdStatusCallback": "https://bridge.example/twilio/amd",
        "AsyncAmdStatusCallbackMethod": "POST",
    }
    with pytest.raises(ValueError, match="To must be an E"):
        create_call_params(
            to="555-0201", from_="+15555550123", answer_url="", status_callback="", amd_callback=""
        )


async def test_create_call_posts_the_form_and_returns_the_new_call_sid(
    http: aiohttp.ClientSession, simulator: TwilioApiSimulator
) -> None:
    answered: list[str] = []

    async def answer(create: CallCreate) -> None:
        answered.append(create.call_sid)

    simulator.answerer = answer
    form = create_call_params(
        to="+15555550201",
        from_="+15555550123",
        answer_url="http://127.0.0.1:9/twilio/outbound",
        status_callback="http://127.0.0.1:9/twilio/call-status",
        amd_callback="http://127.0.0.1:9/twilio/amd",
    )
    call_sid = await rest(http, simulator.url).create_call(form)
    [created] = simulator.created
    assert created.call_sid == call_sid
    # The repeated field arrives once per value, as Twilio's own clients send it.
    assert created.params["StatusCallbackEvent"] == (
        "initiated",
        "ringing",
        "answered",
        "completed",
    )
    assert created.get("MachineDetection") == "DetectMessageEnd"
    await asyncio.sleep(0)
    assert answered == [call_sid]


async def test_a_refused_create_is_a_twilio_api_error_with_its_code(
    http: aiohttp.ClientSession, simulator: TwilioApiSimulator
) -> None:
    with pytest.raises(TwilioApiError) as caught:
        await rest(http, simulator.url).create_call(
            {"To": "12", "From": "+15555550123", "Url": "x"}
        )
    assert caught.value.code == 21211
    assert simulator.created == []


# -- warm transfers ------------------------------------------------------------------------------


def test_the_conference_twiml_says_first_and_ends_when_either_leaves() -> None:
    assert conference_twiml("transfer-CA1") == (
        "<Response><Dial>"
        '<Conference endConferenceOnExit="true" beep="false">transfer-CA1</Conference>'
        "</Dial></Response>"
    )
    assert conference_twiml("r", say="Ada & co <urgent>") == (
        "<Response><Say>Ada &amp; co &lt;urgent&gt;</Say><Dial>"
        '<Conference endConferenceOnExit="true" beep="false">r</Conference>'
        "</Dial></Response>"
    )


def test_the_colleagues_leg_is_a_create_with_inline_twiml_and_a_status_callback() -> None:
    form = warm_transfer_params(
        to="+15555550143",
        from_="+15555550199",
        summary="Ada wants a refund.",
        room="transfer-CA1",
        status_callback="https://bridge.example/twilio/warm-status?for=CA1",
        ring_timeout_s=20,
    )
    assert form == {
        "To": "+15555550143",
        "From": "+15555550199",
        "Twiml": conference_twiml("transfer-CA1", say="Ada wants a refund."),
        "Timeout": "20",
        "StatusCallback": "https://bridge.example/twilio/warm-status?for=CA1",
        "StatusCallbackMethod": "POST",
        "StatusCallbackEvent": ("answered", "completed"),
    }
