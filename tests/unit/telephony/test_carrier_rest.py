"""Telnyx's and Plivo's REST clients against small loopback servers standing in for each API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.errors import ConfigError, TelephonyError
from agent.telephony.carrier_rest import CarrierApiError, PlivoRest, TelnyxRest

Server = Callable[[web.Application], Awaitable[TestServer]]
CALL = "v3:abc-DEF_123"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class FakeApi:
    """Records requests; answers each with the next of ``answers`` (status, JSON body)."""

    def __init__(self, *answers: tuple[int, Any]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, str, str | None, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.requests.append(
            (
                request.method,
                request.raw_path,
                request.headers.get("Authorization"),
                json.loads(body) if body else None,
            )
        )
        status, payload = self.answers.pop(0) if self.answers else (200, {})
        return web.json_response(payload, status=status)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


async def test_telnyx_hangs_up_and_transfers_with_call_control_commands(
    http: aiohttp.ClientSession, aiohttp_server: Server
) -> None:
    api = FakeApi((200, {"data": {"result": "ok"}}), (200, {"data": {"result": "ok"}}))
    server = await aiohttp_server(api.app())
    client = TelnyxRest(http, api_key="KEY123", base_url=str(server.make_url("")))
    assert await client.hang_up(CALL) is True
    await client.transfer(CALL, "+15555550142")
    assert api.requests == [
        ("POST", "/v2/calls/v3:abc-DEF_123/actions/hangup", "Bearer KEY123", {}),
        (
            "POST",
            "/v2/calls/v3:abc-DEF_123/actions/transfer",
            "Bearer KEY123",
            {"to": "+15555550142"},
        ),
    ]
    assert "KEY123" not in repr(client)


async def test_telnyx_call_already_ended_counts_as_hung_up_and_5xx_is_retried(
    http: aiohttp.ClientSession, aiohttp_server: Server
) -> None:
    ended = {"errors": [{"code": "90018", "title": "Call has already ended"}]}
    api = FakeApi((503, {}), (422, ended), (422, {"errors": [{"code": "10015"}]}))
    server = await aiohttp_server(api.app())
    client = TelnyxRest(http, api_key="k", base_url=str(server.make_url("")))
    assert await client.hang_up(CALL) is False
    assert len(api.requests) == 2  # the 503, then the retry
    with pytest.raises(CarrierApiError) as caught:
        await client.transfer(CALL, "+15555550142")
    assert caught.value.code == "10015"


async def test_plivo_hangs_up_with_delete_and_transfers_the_a_leg(
    http: aiohttp.ClientSession, aiohttp_server: Server
) -> None:
    api = FakeApi((204, None), (202, {"message": "call transferred"}), (404, {}))
    server = await aiohttp_server(api.app())
    client = PlivoRest(
        http,
        auth_id="MAXXXX",
        auth_token="tok",
        public_url="https://bridge.example",
        base_url=str(server.make_url("")),
    )
    assert await client.hang_up("5f1c-uuid") is True
    await client.transfer("5f1c-uuid", "+15555550142")
    assert await client.hang_up("5f1c-uuid") is False  # 404: already over
    (hang_up, transfer, _) = api.requests
    assert hang_up[:2] == ("DELETE", "/v1/Account/MAXXXX/Call/5f1c-uuid/")
    assert hang_up[2] == "Basic TUFYWFhYOnRvaw=="  # MAXXXX:tok
    assert transfer[3] == {
        "legs": "aleg",
        "aleg_url": "https://bridge.example/plivo/dial?to=%2B15555550142",
        "aleg_method": "GET",
    }
    assert "tok" not in repr(client)


async def test_bad_numbers_and_missing_credentials_are_refused(http: aiohttp.ClientSession) -> None:
    with pytest.raises(ConfigError):
        TelnyxRest(http, api_key="")
    with pytest.raises(ConfigError):
        PlivoRest(http, auth_id="", auth_token="t", public_url="https://x")
    client = TelnyxRest(http, api_key="k", base_url="http://127.0.0.1:9")
    with pytest.raises(TelephonyError):
        await client.transfer(CALL, "5550142")
