"""The console's view of a call, from literal records: the live events and the SVG timeline."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

from agent.records.store import CallRecord, ToolCallRecord, Turn
from agent.records.timeline import CallFeed, LiveSample, record_json, timeline_svg

T0 = 1_700_000_000.0
SVG = "{http://www.w3.org/2000/svg}"

GREETING = Turn(0, "agent", "Hello! How can I help?", "Hello! How can I help?", T0, T0 + 2, False)
ASK = Turn(1, "caller", "Where is my order <A&B>?", None, T0 + 3, T0 + 5, False)
ANSWER = Turn(2, "agent", "It shipped yesterday and", "It shipped", T0 + 6, T0 + 7.5, True)
LOOKUP = ToolCallRecord(
    call_id="c1",
    name="lookup_order",
    arguments={"caller_number": "+1555***99"},
    result={"status": "shipped"},
    outcome="ok",
    started_at=T0 + 5.2,
    latency_ms=340.0,
)
RUNNING = CallRecord(
    call_sid="CO1",
    stream_sid="BS1",
    agent="acme-support",
    from_number="+1555***99",
    to_number=None,
    started_at=T0,
    ended_at=None,
    end_reason=None,
    summary={},
    usage={"prompt_audio": 120},
    turns=(GREETING,),
)
ENDED = dataclasses.replace(
    RUNNING,
    ended_at=T0 + 9,
    end_reason="caller hung up",
    summary={"cost_usd": 0.0012},
    usage={"prompt_audio": 900, "response_audio": 300},
    turns=(GREETING, ASK, ANSWER),
    tool_calls=(LOOKUP,),
)


def sample(**changes: object) -> LiveSample:
    base = LiveSample(
        caller_level_dbfs=-30.0,
        caller_speaking=False,
        agent_frames=100,
        barge_ins=0,
        reconnects=0,
        tokens={"prompt_audio": 120},
        cost_usd=0.0001,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_watcher_gets_each_turn_tool_and_change_once() -> None:
    feed = CallFeed()
    first = feed.update(RUNNING, sample(), T0 + 2.5)
    assert [e["type"] for e in first] == ["started", "turn", "level", "usage"]
    assert first[0] == {
        "type": "started",
        "call_sid": "CO1",
        "agent": "acme-support",
        "from": "+1555***99",
        "at": T0,
    }
    assert first[1] == {
        "type": "turn",
        "index": 0,
        "role": "agent",
        "said": "Hello! How can I help?",
        "heard": "Hello! How can I help?",
        "interrupted": False,
        "start_s": 0.0,
        "end_s": 2.0,
    }
    # Nothing new: only the level, which is news every time.
    assert [e["type"] for e in feed.update(RUNNING, sample(), T0 + 2.75)] == ["level"]
    later = dataclasses.replace(ENDED, ended_at=None, end_reason=None)
    events = feed.update(
        later,
        sample(barge_ins=1, reconnects=2, open_turn=("caller", "thanks"), tokens={"a": 1}),
        T0 + 8,
    )
    assert [e["type"] for e in events] == [
        "turn",
        "turn",
        "tool",
        "level",
        "barge_in",
        "reconnect",
        "reconnect",
        "speaking",
        "usage",
    ]
    assert events[1]["heard"] == "It shipped"
    assert events[1]["interrupted"] is True
    assert events[2] == {
        "type": "tool",
        "call_id": "c1",
        "name": "lookup_order",
        "arguments": {"caller_number": "+1555***99"},
        "result": {"status": "shipped"},
        "outcome": "ok",
        "start_s": 5.2,
        "latency_ms": 340.0,
    }
    assert events[7] == {"type": "speaking", "role": "caller", "text": "thanks", "at": T0 + 8}


def test_the_feed_ends_with_the_record() -> None:
    feed = CallFeed()
    feed.update(RUNNING, sample(), T0 + 1)
    events = feed.update(ENDED, None, T0 + 10, record_cost_usd=0.0011)
    assert events[-1] == {
        "type": "ended",
        "reason": "caller hung up",
        "at": T0 + 9,
        "duration_s": 9.0,
        "cost_usd": 0.0012,
    }
    assert feed.ended
    # Another replica's call (no sample): token totals come from the record.
    usage = {"type": "usage", "tokens": dict(ENDED.usage), "cost_usd": 0.0011, "at": T0 + 10}
    assert usage in events


def test_a_turn_rewritten_with_what_was_heard_is_sent_again() -> None:
    feed = CallFeed()
    feed.update(RUNNING, None, T0)
    cut = dataclasses.replace(GREETING, heard="Hello!", interrupted=True)
    (event,) = [e for e in feed.update(dataclasses.replace(RUNNING, turns=(cut,)), None, T0) if e]
    assert (event["type"], event["heard"]) == ("turn", "Hello!")


def test_the_svg_timeline_draws_turns_on_a_time_axis() -> None:
    svg = timeline_svg(ENDED)
    root = ET.fromstring(svg)  # well-formed, text escaped
    rects = root.findall(f"{SVG}rect")
    classes = [r.get("class") for r in rects]
    assert classes == ["turn agent", "turn caller", "turn agent", "barge-in", "tool"]
    # 9 s over 720 px from x=70: 80 px a second.
    greeting, ask, answer, barge_in, tool = rects
    assert (greeting.get("x"), greeting.get("width")) == ("70.0", "160.0")
    assert (ask.get("x"), ask.get("width")) == ("310.0", "160.0")
    assert answer.get("x") == "550.0"
    assert barge_in.get("x") == "668.0"  # at the answer's end, where the caller cut in
    assert tool.get("x") == "486.0"
    titles = [r.find(f"{SVG}title") for r in rects]
    assert titles[1] is not None
    assert titles[1].text == "Where is my order <A&B>?"
    assert titles[2] is not None
    assert titles[2].text == "It shipped yesterday and\nheard: It shipped"
    ticks = [t.text for t in root.findall(f"{SVG}text") if t.get("text-anchor") == "middle"]
    assert ticks == ["0s", "2s", "4s", "6s", "8s"]


def test_the_record_as_the_console_gets_it() -> None:
    shown = record_json(ENDED)
    assert shown["duration_s"] == 9.0
    assert [t["role"] for t in shown["turns"]] == ["agent", "caller", "agent"]
    assert shown["tools"][0]["name"] == "lookup_order"
    assert shown["cost_usd"] == 0.0012
