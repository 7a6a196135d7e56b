"""A call as the on-call engineer sees it: its log lines (JSON, from ``configure_logging``) and the
metrics at ``GET /metrics``.

Carrier simulator -> bridge -> Live API emulator, in-process, with a greeting and a barge-in so
that most of a call's events happen. The logs are read the way production writes them: every line
through the product's chain into a buffer, parsed back as JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from io import StringIO
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from agent.config.models import AgentConfig
from agent.live.targets import DeveloperApiTarget
from agent.observability.pricing import PriceTable
from agent.observability.privacy import mask_number
from agent.server.state import CALLS
from agent.sim.carrier import CarrierOptions, place_call
from agent.sim.live.server import EmulatorOptions, start_emulator

from .conftest import BridgeFactory, caller_clip

LogCapture = Callable[..., AbstractContextManager[StringIO]]

TAXONOMY = Path(__file__).parents[2] / "docs" / "logging.md"
GREETER = AgentConfig(greeting="Greet the caller warmly and offer help.")
AUTH_TOKEN = "observability-test-auth-token-0123456789"
TO_NUMBER = "+15555550199"
# The emulated model's time from the end of a caller turn to its first audio.
THINK_MS = 400

#: What a call with a greeting and a barge-in logs at INFO, at least once each.
CALL_EVENTS = {
    "server.started",
    "call.webhook",
    "call.started",
    "live.connected",
    "call.first_audio",
    "model.responding",
    "model.turn_complete",
    "caller.barge_in",
    "call.ended",
    "server.access",
}
#: Loggers whose every line, once the stream has started, belongs to the call.
CALL_LOGGERS = {"agent.call", "agent.live", "agent.tools"}
# An event at INFO may repeat per turn, never per frame (a call of a few seconds has hundreds).
MAX_REPEATS_AT_INFO = 10


class LineWaiter(logging.Handler):
    """Sets an event when a record matching ``wanted`` is logged (from any thread)."""

    def __init__(self, wanted: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__()
        self._wanted = wanted
        self._loop = asyncio.get_running_loop()
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self._wanted(record):
            self._loop.call_soon_threadsafe(self.seen.set)

    @contextmanager
    def attached(self) -> Iterator[LineWaiter]:
        root = logging.getLogger()
        root.addHandler(self)
        try:
            yield self
        finally:
            root.removeHandler(self)


def stream_access_logged(record: logging.LogRecord) -> bool:
    """aiohttp logs the stream's access line after the handler returns: the call's last line."""
    line = str(getattr(record, "first_request_line", ""))
    return record.name == "aiohttp.access" and line.startswith("GET /twilio/stream ")


def documented_events() -> set[str]:
    """The event names docs/logging.md lists: the first backticked word of each table row."""
    return set(re.findall(r"^\| `([a-z_]+\.[a-z_.]+)`", TAXONOMY.read_text(), re.MULTILINE))


async def test_one_call_can_be_followed_turn_by_turn_in_the_json_logs(
    start_bridge: BridgeFactory,
    log_capture: LogCapture,
    register_secret: Callable[[str], str],
) -> None:
    register_secret(AUTH_TOKEN)
    thinking = await start_emulator(EmulatorOptions(think_ms=THINK_MS))
    with (
        log_capture("info", "json", mask_numbers=True) as buffer,
        LineWaiter(stream_access_logged).attached() as stream_done,
    ):
        bridge = await start_bridge(
            agent=GREETER,
            twilio_auth_token=AUTH_TOKEN,
            live_target=DeveloperApiTarget(base_url=thinking.url),
        )
        report = await place_call(
            CarrierOptions(
                url=bridge.url,
                auth_token=AUTH_TOKEN,
                to_number=TO_NUMBER,
                barge_in_ms=1500,
            ),
            [caller_clip("order-status"), caller_clip("interrupt")],
        )
        call = await bridge.app[CALLS].wait_ended(report.call_sid)
        async with asyncio.timeout(10):
            await stream_done.seen.wait()
    await thinking.close()

    text = buffer.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert all(isinstance(line, dict) for line in lines)
    events = [line["event"] for line in lines]

    # Every event of a greeted, interrupted call is there, and documented.
    assert set(events) >= CALL_EVENTS, CALL_EVENTS - set(events)
    assert set(events) <= documented_events(), set(events) - documented_events()

    # Every line of the call carries its ids, including aiohttp's access line for the stream.
    ids = {"call_sid": report.call_sid, "stream_sid": report.stream_sid, "agent": "default"}
    started = events.index("call.started")
    call_lines = [
        line
        for line in lines[started:]
        if line["logger"] in CALL_LOGGERS or line.get("path") == "/twilio/stream"
    ]
    assert call_lines
    for line in call_lines:
        assert {key: line.get(key) for key in ids} == ids, line
    (webhook,) = [line for line in lines if line["event"] == "call.webhook"]
    assert webhook["call_sid"] == report.call_sid
    (voice,) = [line for line in lines if line.get("path") == "/twilio/voice"]
    assert voice["call_sid"] == report.call_sid

    # Turn by turn, in order: answered, greeted, interrupted, answered again, ended.
    sequence = [
        e
        for e in events
        if e in {"call.webhook", "call.started", "model.turn_complete", "caller.barge_in"}
        or e == "call.ended"
    ]
    assert sequence[:3] == ["call.webhook", "call.started", "model.turn_complete"]
    assert sequence[-1] == "call.ended"
    assert "caller.barge_in" in sequence[3:-1]
    assert sequence.index("caller.barge_in") < len(sequence) - 2  # a reply came after it
    assert events[-1] == "server.access"  # the stream's line closes the call

    # One summary line that matches what the session counted.
    (ended,) = [line for line in lines if line["event"] == "call.ended"]
    assert ended["reason"] == "caller hung up"
    assert ended["barge_ins"] == call.stats.barge_ins == 1
    assert (ended["frames_in"], ended["frames_out"]) == (
        call.stats.frames_in,
        call.playback.frames_sent,
    )
    assert ended["model_turns"] == events.count("model.turn_complete")
    assert ended["reconnects"] == 0
    assert ended["tokens"] == call.stats.usage
    assert (ended["tool_calls"], ended["tool_errors"], ended["slowest_tool"]) == (0, 0, None)
    expected = PriceTable().estimate(GREETER.model, call.stats.usage)
    assert ended["cost_usd"] == round(expected.usd or 0.0, 6) > 0
    assert ended["cost_priced_as"] == "gemini-2.5-flash-native-audio"
    assert ended["cost_unpriced_tokens"] == 0
    # Once per agent turn, how long the caller waited for the agent.
    responding = [line for line in lines if line["event"] == "model.responding"]
    assert len(responding) == ended["model_turns"]
    # The emulated model thinks THINK_MS before it speaks; the bridge counts from its own VAD's
    # last speech frame, whose hang-over overlaps the model's end-of-turn silence.
    assert all(0 < line["wait_ms"] <= THINK_MS for line in responding), responding

    # No per-frame event at INFO: nothing repeats anywhere near once per frame.
    repeats = Counter(line["event"] for line in lines if line["level"] != "debug")
    assert max(repeats.values()) <= MAX_REPEATS_AT_INFO, repeats
    assert not any(line["logger"].startswith("websockets") for line in lines)

    # The number called is masked (MASK_CALLER_NUMBERS); the auth token and the call's single-use
    # stream token appear nowhere.
    assert webhook["to"] == mask_number(TO_NUMBER) != TO_NUMBER
    assert TO_NUMBER not in text
    assert AUTH_TOKEN not in text
    assert not re.search(r"\b\d{10,16}\.[\w-]{16,}\.[\w-]{20,}", text)


def metric_samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, parsed from a Prometheus text exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


async def test_metrics_count_what_the_call_did(start_bridge: BridgeFactory) -> None:
    bridge = await start_bridge()
    placing = asyncio.create_task(
        place_call(
            CarrierOptions(url=bridge.url, barge_in_ms=1500),
            [caller_clip("order-status"), caller_clip("interrupt")],
        )
    )
    await bridge.app[CALLS].wait_active()
    async with aiohttp.ClientSession() as http, http.get(f"{bridge.url}/metrics") as response:
        during = metric_samples(await response.text())
    assert during[("agent_active_calls", ())] == 1  # the gauge follows calls, not just reads 0
    report = await placing
    call = await bridge.app[CALLS].wait_ended(report.call_sid)
    async with aiohttp.ClientSession() as http, http.get(f"{bridge.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        samples = metric_samples(await response.text())

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("agent_calls_total", agent="default", reason="caller_hung_up") == 1
    assert total(samples, "agent_calls_total") == 1
    assert value("agent_active_calls") == 0
    assert value("agent_frames_total", direction="in") == call.stats.frames_in > 0
    assert value("agent_frames_total", direction="out") == call.playback.frames_sent > 0
    assert value("agent_interruptions_total") == call.stats.barge_ins == 1
    assert total(samples, "agent_live_reconnects_total") == 0
    assert value("agent_live_connect_seconds_count") == 1
    assert ("agent_call_records_dropped_total", ()) in samples  # exported, and nothing lost
    assert value("agent_call_records_dropped_total") == 0
    tokens: dict[str, Any] = {
        f"{labels[0][1]}_{labels[1][1].lower()}": count
        for (name, labels), count in samples.items()
        if name == "agent_tokens_total"
    }
    assert tokens == call.stats.usage
