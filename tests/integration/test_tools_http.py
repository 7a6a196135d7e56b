"""``http`` tools against a local aiohttp server: templates and encoding, bodies, ``select``,
size caps, retries (idempotent methods only), errors, and cancellation the server can see.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.config.tools import HttpTool, ToolSpec
from agent.crm import Crm
from agent.tools import CallContext, Toolbox
from agent.tools.http import TEXT_LIMIT

CONTEXT = CallContext(
    call_sid="CA" + "1" * 32,
    account_sid="AC" + "a" * 32,
    stream_sid="MZ" + "5" * 32,
    agent="acme-support",
    caller_number="+15555550100",
    called_number="+15555550199",
    local_time="2025-06-02T10:00:00-04:00",
)
ORDER = {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}


@dataclass
class Backend:
    """A business's HTTP API, recording what it was asked."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)
    aborted: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/orders/{order_id}", self.order)
        app.router.add_route("*", "/echo", self.echo)
        app.router.add_get("/text", self.text)
        app.router.add_get("/big", self.big)
        app.router.add_get("/endless", self.endless)
        app.router.add_route("*", "/flaky", self.flaky)
        app.router.add_get("/missing", self.missing)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/moved", self.moved)
        return app

    def _record(self, request: web.Request, body: Any = None) -> None:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        self.requests.append(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": body,
            }
        )

    async def order(self, request: web.Request) -> web.Response:
        self._record(request)
        order_id = request.match_info["order_id"]
        return web.json_response({"data": {"order": {"id": order_id, "status": "shipped"}}})

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self._record(request, body)
        return web.json_response({"ok": True}, status=201 if request.method == "POST" else 200)

    async def text(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.Response(text="é" * (TEXT_LIMIT + 10), content_type="text/plain")

    async def big(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({"blob": "x" * 5000})

    async def endless(self, request: web.Request) -> web.StreamResponse:
        """No Content-Length: the cap must hold while streaming."""
        self._record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(1000):
                await response.write(b"y" * 1024)
        except ConnectionError:
            pass  # the client stopped reading, as it should
        return response

    async def flaky(self, request: web.Request) -> web.Response:
        self._record(request)
        if self.hits[request.path] <= 2:
            return web.json_response({"error": "try again"}, status=503)
        return web.json_response({"answer": 42})

    async def missing(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({"error": "internal detail: table orders_v2"}, status=404)

    async def moved(self, request: web.Request) -> web.Response:
        self._record(request)
        raise web.HTTPFound("https://elsewhere.example.com/collect")

    async def slow(self, request: web.Request) -> web.Response:
        self._record(request)
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            # aiohttp cancels a handler whose client went away (the test server enables it).
            self.aborted.set()
            raise
        return web.json_response({"late": True})


Start = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture
async def backend(aiohttp_server: Start) -> tuple[Backend, str]:
    api = Backend()
    server = await aiohttp_server(api.app())
    return api, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def crm(tmp_path: Path) -> Crm:
    return await Crm.open(f"sqlite:///{tmp_path / 'crm.db'}")


@pytest.fixture
def tools(http: aiohttp.ClientSession, crm: Crm) -> Callable[..., Toolbox]:
    def make(*specs: ToolSpec) -> Toolbox:
        return Toolbox(specs, http=http, crm=crm)

    return make


def http_tool(name: str, url: str, parameters: Any = None, **kind: Any) -> ToolSpec:
    spec_fields = {k: kind.pop(k) for k in ("bind", "timeout_s") if k in kind}
    return ToolSpec(
        name=name,
        description=name,
        kind=HttpTool(url, **kind),
        parameters=parameters or {"type": "object", "properties": {}},
        **spec_fields,
    )


async def test_arguments_in_the_url_are_encoded_as_one_component(
    backend: tuple[Backend, str], tools: Callable[..., Toolbox]
) -> None:
    api, base = backend
    spec = http_tool("order", base + "/orders/{order_id}", ORDER, select="data.order")
    outcome = await tools(spec).run("order", {"order_id": "A1017/../../admin?x=1 #"}, CONTEXT)
    assert outcome.outcome == "ok"
    assert outcome.response == {"result": {"id": "A1017/../../admin?x=1 #", "status": "shipped"}}
    # One path segment: the slashes, "?" and "#" stay encoded ("=" needs no encoding in a path).
    assert api.requests[0]["raw_path"] == "/orders/A1017%2F..%2F..%2Fadmin%3Fx=1%20%23"
    assert api.requests[0]["query"] == {}


async def test_bound_and_unused_arguments_go_in_the_query_of_a_get(
    backend: tuple[Backend, str], tools: Callable[..., Toolbox]
) -> None:
    api, base = backend
    parameters = {
        "type": "object",
        "properties": {"status": {"type": "string"}, "recent": {"type": "boolean"}},
    }
    spec = http_tool(
        "search",
        base + "/echo",
        parameters,
        headers={"X-Caller": "{phone}", "X-Agent": "bridge/{agent}"},
        bind={"phone": "caller_number", "agent": "agent"},
    )
    outcome = await tools(spec).run(
        "search", {"status": "shipped", "recent": True, "phone": "+19995550000"}, CONTEXT
    )
    assert outcome.response == {"result": {"ok": True}}
    [request] = api.requests
    assert request["query"] == {"status": "shipped", "recent": "true"}
    assert request["headers"]["X-Caller"] == "+15555550100"  # the call's, not the model's
    assert request["headers"]["X-Agent"] == "bridge/acme-support"


async def test_a_post_sends_its_json_body_template_with_typed_values(
    backend: tuple[Backend, str], tools: Callable[..., Toolbox]
) -> None:
    api, base = backend
    parameters = {
        "type": "object",
        "properties": {"subject": {"type": "string"}, "priority": {"type": "integer"}},
    }
    spec = http_tool(
        "ticket",
        base + "/echo",
        parameters,
        method="POST",
        json_body={
            "ticket": {"subject": "{subject}", "priority": "{priority}"},
            "title": "Call {call}: {subject}",
        },
        bind={"call": "call_sid"},
    )
    outcome = await tools(spec).run("ticket", {"subject": "bent pole", "priority": 2}, CONTEXT)
    assert outcome.outcome == "ok"
    assert api.requests[0]["body"] == {
        "ticket": {"subject": "bent pole", "priority": 2},
        "title": f"Call {CONTEXT.call_sid}: bent pole",
    }


async def test_a_post_without_a_body_template_sends_the_arguments(
    backend: tuple[Backend, str], tools: Callable[..., Toolbox]
) -> None:
    api, base = backend
    spec = http_tool("post", base + "/echo", ORDER, method="POST")
    await tools(spec).run("post", {"order_id": "A1017"}, CONTEXT)
    assert api.requests[0]["body"] == {"order_id": "A1017"}


async def test_a_header_value_with_a_line_break_is_refused(
    backend: tuple[Backend, str], tools: Callable[..., Toolbox]
) -> None:
    api, base = backend
    spec = http_tool("h", base + "/echo", ORDER, headers={"X-Order": "{order_id}"})
    outcome = await tools(spec).run("h", {"order_id": "A1\r\nX-Admin: yes"}, CONTEXT)
    assert outcome.response == {"error": "the value for header X-Order contains a line break"}
    assert api.requests == []


async def test_text_is_returned_truncated(
    backend: tuple[Backend, str], tools: Callable[..., Toolbox]
) -> None:
    _, base = backend
    spec = http_tool("text", base + "/text", max_response_bytes=64 * 1024)
    outcome = await tools(spec).run("text", {}, CONTEXT)
    text = outcome.response["result"]
    assert text == "é" * TEXT_LIMIT + "…"


@pytest.mark.parametrize("path", ["/big", "/endless"])
async def test_a_response_over_the_cap_is_refused(
    backend: tuple[Backend, str], tools: Callable[..., Toolbox], path: str
) -> None:
    _, base = backend
    spec = http_tool("big", base + path, max_response_bytes=1000)
    outcome = await tools(spec).run("big", {}, CONTEXT)
    assert outcome.outcome == "error"
    assert outcome.response == {"error": "the service's response is larger than 1000 bytes"}


async def test_a_non_2xx_answer_is_an_error_with_its_status_only(
    backend: tuple[Backend, str], tools: Callable[..., Toolbox]
) -> None:
    _, base = backend
    outcome = await tools(http_tool("missing", base + "/missing")).run("missing", {}, CONTEXT)
    assert outcome.response == {"error": "the service answered HTTP 404 Not Found"}
    assert "orders_v2" not in json.dumps(outcome.response)


async def test_select_names_a_missing_path(
    backend: tuple[Backend, str], tools: Callable[..., Toolbox]
) -> None:
    _, base = backend
    spec = http_tool("order", base + "/orders/{order_id}", ORDER, select="data.customer")
    outcome = await tools(spec).run("order", {"order_id": "A1"}, CONTEXT)
    assert outcome.response == {"error": "the service's answer has no data.customer"}


async def test_a_get_is_retried_on_5xx(
    backend: tuple[Backend, str], tools: Callable[..., Toolbox]
) -> None:
    api, base = backend
    outcome = await tools(http_tool("flaky", base + "/flaky", retries=2)).run("flaky", {}, CONTEXT)
    assert outcome.response == {"result": {"answer": 42}}
    assert api.hits["/flaky"] == 3


async def test_retries_run_out(backend: tuple[Backend, str], tools: Callable[..., Toolbox]) -> None:
    api, base = backend
    outcome = await tools(http_tool("flaky", base + "/flaky", retries=1)).run("flaky", {}, CONTEXT)
    assert outcome.response == {"error": "the service answered HTTP 503 Service Unavailable"}
    assert api.hits["/flaky"] == 2


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_method_that_is_not_idempotent_is_never_retried(
    backend: tuple[Backend, str], tools: Callable[..., Toolbox], method: str
) -> None:
    api, base = backend
    spec = http_tool("flaky", base + "/flaky", method=method, retries=3)
    outcome = await tools(spec).run("flaky", {}, CONTEXT)
    assert outcome.outcome == "error"
    assert api.hits["/flaky"] == 1


async def test_an_unreachable_service_is_retried_then_an_error(
    tools: Callable[..., Toolbox],
) -> None:
    with socket.socket() as sock:  # a port nobody listens on once this is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = http_tool("down", f"http://127.0.0.1:{port}/x", retries=2)
    outcome = await tools(spec).run("down", {}, CONTEXT)
    assert outcome.response == {"error": "could not reach the service"}


async def test_a_timeout_aborts_the_request_and_the_server_sees_it(
    backend: tuple[Backend, str], tools: Callable[..., Toolbox]
) -> None:
    api, base = backend
    spec = http_tool("slow", base + "/slow", timeout_s=0.3)
    outcome = await tools(spec).run("slow", {}, CONTEXT)
    assert outcome.outcome == "timeout"
    assert outcome.response == {"error": "the tool did not finish within 0.3 seconds"}
    await asyncio.wait_for(api.aborted.wait(), 5)


async def test_cancelling_the_tool_aborts_the_request(
    backend: tuple[Backend, str], tools: Callable[..., Toolbox]
) -> None:
    api, base = backend
    task = asyncio.create_task(tools(http_tool("slow", base + "/slow")).run("slow", {}, CONTEXT))
    await asyncio.wait_for(api.started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(api.aborted.wait(), 5)


async def test_a_redirect_is_not_followed(
    backend: tuple[Backend, str], tools: Callable[..., Toolbox]
) -> None:
    api, base = backend
    spec = http_tool("moved", base + "/moved", headers={"X-Api-Key": "k-123"})
    outcome = await tools(spec).run("moved", {}, CONTEXT)
    assert outcome.response == {"error": "the service answered HTTP 302 Found"}
    assert api.hits == {"/moved": 1}


@pytest.mark.parametrize("order_id", ["..", ".", ""])
async def test_a_dot_segment_argument_cannot_move_the_request_to_another_path(
    backend: tuple[Backend, str], tools: Callable[..., Toolbox], order_id: str
) -> None:
    api, base = backend
    spec = http_tool("order", base + "/orders/{order_id}/details", ORDER)
    outcome = await tools(spec).run("order", {"order_id": order_id}, CONTEXT)
    assert outcome.outcome == "error"
    assert not api.hits  # nothing was requested at all
