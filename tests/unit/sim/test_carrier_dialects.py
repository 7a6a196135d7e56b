"""The simulator's Telnyx and Plivo phones, without I/O: the bridge's own sans-I/O cores read
what they send, and they read what those cores build."""

from __future__ import annotations

import json

from agent.sim.carrier import CarrierOptions
from agent.sim.carrier.dialects import DialectPhone, parse_answer
from agent.telephony.plivo import PlivoMediaStream, stream_xml
from agent.telephony.telnyx import TelnyxMediaStream, stream_texml
from agent.telephony.twilio import MarkPlayed, MediaReceived, StreamStarted

SILENT_CLIP = b"\xff" * 1600  # 200 ms of mu-law silence


def phone(carrier: str) -> DialectPhone:
    return DialectPhone(
        carrier,
        CarrierOptions(carrier=carrier, lead_ms=0),
        [SILENT_CLIP],
        call_sid="v3:call" if carrier == "telnyx" else "1b6a-call",
        account_sid="acct",
        stream_sid="5f1c-stream",
    )


def test_telnyx_phone_and_the_bridges_core_understand_each_other() -> None:
    caller, bridge = phone("telnyx"), TelnyxMediaStream()
    events = [bridge.receive_text(json.dumps(m)) for m in caller.connect({"token": "tx1.t"})]
    started = events[-1]
    assert isinstance(started, StreamStarted)
    assert started.call_sid == "v3:call"
    assert started.custom_parameters == {"token": "tx1.t"}
    (media,) = caller.tick()
    assert isinstance(bridge.receive_text(json.dumps(media)), MediaReceived)
    assert caller.receive_text(bridge.media(b"\x7f" * 160)) == []
    # A mark with audio ahead of it waits; a clear returns it unplayed, as Telnyx documents.
    assert caller.receive_text(bridge.mark("m1")) == []
    (echo,) = caller.receive_text(bridge.clear())
    assert bridge.receive_text(json.dumps(echo)) == MarkPlayed(name="m1")
    assert caller.report().protocol_errors == []


def test_plivo_phone_answers_checkpoints_and_clears_as_plivo_does() -> None:
    caller, bridge = phone("plivo"), PlivoMediaStream(ticket="pv1.t")
    (start,) = caller.connect({})  # no "connected": Plivo's first frame is start
    assert isinstance(bridge.receive_text(json.dumps(start)), StreamStarted)
    caller.receive_text(bridge.media(b"\x7f" * 160))
    assert caller.receive_text(bridge.mark("m1")) == []
    # A clear is acknowledged, and answers none of the checkpoints it dropped.
    (cleared,) = caller.receive_text(bridge.clear())
    assert cleared["event"] == "clearedAudio"
    (played,) = caller.receive_text(bridge.mark("m2"))  # nothing queued: answered at once
    assert played["event"] == "playedStream"
    assert bridge.receive_text(json.dumps(played)) == MarkPlayed(name="m2")
    assert caller.report().protocol_errors == []


def test_the_simulator_reads_the_bridges_answers() -> None:
    texml = stream_texml("ws://127.0.0.1:8080/telnyx/stream", {"token": "tx1.t"})
    assert parse_answer("telnyx", texml) == (
        "ws://127.0.0.1:8080/telnyx/stream",
        {"token": "tx1.t"},
    )
    xml = stream_xml("ws://127.0.0.1:8080/plivo/stream?ticket=pv1.t")
    assert parse_answer("plivo", xml) == ("ws://127.0.0.1:8080/plivo/stream?ticket=pv1.t", {})
