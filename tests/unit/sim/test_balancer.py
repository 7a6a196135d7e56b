"""The balancer stand-in's routing plans, with literal requests."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request

from agent.sim.balancer import CallRoute, first_stream_then


def _paths(route: object, paths: list[str]) -> list[str]:
    assert callable(route)
    return [route(make_mocked_request("GET", path)) for path in paths]


CALL = ["/twilio/voice", "/twilio/stream", "/twilio/continue", "/twilio/stream"]


def test_a_call_route_sends_the_first_stream_one_way_and_the_rest_another() -> None:
    plan = CallRoute()
    plan.next_call("http://a", "http://a", "http://b")
    assert _paths(plan, CALL) == ["http://a", "http://a", "http://b", "http://b"]
    plan.next_call("http://a", "http://b", "http://b")  # the next call: counting starts again
    assert _paths(plan, CALL) == ["http://a", "http://b", "http://b", "http://b"]


def test_first_stream_then_reads_replicas_filled_in_later() -> None:
    replicas: list[str] = []
    route = first_stream_then(replicas)
    replicas.extend(["http://a", "http://b"])
    assert _paths(route, CALL) == ["http://a", "http://a", "http://b", "http://b"]
