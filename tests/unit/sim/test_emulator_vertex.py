"""The emulator's Vertex AI mode, in its sans-I/O core: literal setups and frames, no event loop.

What differs from the Developer API: model resource names, the table's Vertex rows, the
Vertex-only setup fields, function responses (``willContinue`` refused, ``scheduling`` ignored),
the usage count's name, and transparent resumption (``lastConsumedClientMessageIndex``, a
snapshot at a message index).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from agent.sim.live.core import LiveEmulatorCore
from agent.sim.live.options import EmulatorOptions
from agent.sim.live.resumption import ResumptionStore
from agent.sim.live.scenario import Scenario, ScriptedCall, Speech, Step

from .test_emulator_core import (
    CLIPS,
    audio_frame,
    close_of,
    messages,
    run_answer_messages,
    silence,
    tone,
    words_of,
)

VERTEX_MODEL = "projects/acme/locations/us-central1/publishers/google/models/gemini-3.8-live"
VERTEX: dict[str, Any] = {
    "backend": "vertex",
    "connection_lifetime_s": math.inf,
    "session_limit_s": math.inf,
}
TRANSPARENT_SETUP = (
    '{"setup":{"model":"projects/acme/locations/us-central1/publishers/google/models/'
    'gemini-3.8-live","sessionResumption":{"transparent":true}}}'
)
# 20 ms of silence at 16 kHz: what the bridge sends every 20 ms when the caller says nothing.
QUIET_FRAME = audio_frame(silence(20))


def vertex_core(
    setup: str = TRANSPARENT_SETUP, *, store: ResumptionStore | None = None, **options: Any
) -> LiveEmulatorCore:
    core = LiveEmulatorCore(EmulatorOptions(**(VERTEX | options)), CLIPS, store=store)
    core.receive(setup, 0.0)
    return core


def setup_for(model: str = VERTEX_MODEL, **fields: Any) -> str:
    return json.dumps({"setup": {"model": model, **fields}})


def updates(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["sessionResumptionUpdate"] for m in out if "sessionResumptionUpdate" in m]


# -- setup ----------------------------------------------------------------------------------------


def test_a_publisher_model_resource_name_is_accepted_with_the_vertex_only_fields() -> None:
    core = vertex_core(
        setup_for(explicitVadSignal=True, sessionResumption={"transparent": True, "handle": None})
    )
    assert messages(core)[0] == {"setupComplete": {}}
    assert core.record.setup["explicitVadSignal"] is True


@pytest.mark.parametrize(
    "model",
    [
        "models/gemini-3.8-live",  # the Developer API's name
        "gemini-3.8-live",
        "projects/acme/locations/us-central1/publishers/meta/models/gemini-3.8-live",
        # Listed for the Developer API only.
        "projects/acme/locations/us-central1/publishers/google/models/gemini-3.1-flash-live-preview",
        "projects/acme/locations/us-central1/publishers/google/models/gemini-2.0-flash-live-001",
    ],
)
def test_an_unknown_model_is_refused_1008_as_vertex_words_it(model: str) -> None:
    core = vertex_core(setup_for(model))
    close = close_of(core)
    assert close.code == 1008
    assert close.reason.startswith(f"Publisher Model `{model}` was not found")


def test_with_a_list_of_models_only_those_are_served() -> None:
    core = vertex_core(setup_for(), models=frozenset({"gemini-live-2.5-flash-native-audio"}))
    assert close_of(core).code == 1008
    served = vertex_core(
        setup_for(VERTEX_MODEL.replace("gemini-3.8-live", "gemini-live-2.5-flash-native-audio")),
        models=frozenset({"gemini-live-2.5-flash-native-audio"}),
    )
    assert messages(served)[0] == {"setupComplete": {}}


def test_capabilities_come_from_the_tables_vertex_rows() -> None:
    # gemini-3.8-live: affective dialog is gone on the Developer API, always on on Vertex.
    affective: dict[str, Any] = {"generationConfig": {"enableAffectiveDialog": True}}
    developer = LiveEmulatorCore(
        EmulatorOptions(connection_lifetime_s=math.inf, session_limit_s=math.inf), CLIPS
    )
    developer.receive(setup_for("models/gemini-3.8-live", **affective), 0)
    assert (
        close_of(developer).reason == "enable_affective_dialog is not supported by gemini-3.8-live."
    )
    vertex = vertex_core(setup_for(**affective))
    assert messages(vertex)[0] == {"setupComplete": {}}
    # thinking_level: the Vertex row has none.
    thinking = vertex_core(setup_for(generationConfig={"thinkingConfig": {"thinkingLevel": "LOW"}}))
    assert close_of(thinking).reason == "thinking_level is not supported by gemini-3.8-live."


def test_the_developer_api_mode_still_refuses_the_vertex_only_fields() -> None:
    developer = LiveEmulatorCore(EmulatorOptions(session_limit_s=math.inf), CLIPS)
    developer.receive(setup_for("models/gemini-3.8-live", explicitVadSignal=True), 0)
    close = close_of(developer)
    assert close.code == 1007
    assert close.reason == (
        "Invalid JSON payload received. Unknown name \"explicitVadSignal\" at 'setup': "
        "Cannot find field."
    )


def test_usage_counts_the_answer_as_candidates_tokens() -> None:
    core = vertex_core()
    messages(core)
    core.receive('{"realtimeInput":{"text":"Where is my order?"}}', 0)
    final = [m for m in run_answer_messages(core) if "usageMetadata" in m][-1]
    usage = final["usageMetadata"]
    assert usage["candidatesTokenCount"] == 5  # 200 ms of reply at 25 tokens a second
    assert "responseTokenCount" not in usage


# -- function responses ---------------------------------------------------------------------------

TOOLS = setup_for(
    tools=[{"functionDeclarations": [{"name": "send_sms", "behavior": "NON_BLOCKING"}]}],
    outputAudioTranscription={},
)


def pending_sms_core() -> tuple[LiveEmulatorCore, str]:
    """A Vertex core that called NON_BLOCKING send_sms and finished its filler."""
    sms = ScriptedCall(
        "send_sms", {"to": "+1555"}, wait=False, say=Speech("reply", "Text sent: {result}")
    )
    steps = (Step(say=Speech("greeting", "One moment please"), calls=(sms,)),)
    core = vertex_core(TOOLS, scenario=Scenario(steps=steps))
    messages(core)
    core.receive('{"clientContent":{"turnComplete":true}}', 0)
    out = run_answer_messages(core)
    call_id = next(m for m in out if "toolCall" in m)["toolCall"]["functionCalls"][0]["id"]
    return core, call_id


def sms_result(call_id: str, **fields: Any) -> str:
    answer = {"id": call_id, "name": "send_sms", "response": {"result": "ok"}, **fields}
    return json.dumps({"toolResponse": {"functionResponses": [answer]}})


def test_a_silent_result_is_spoken_anyway_as_vertex_ignores_scheduling() -> None:
    core, call_id = pending_sms_core()
    core.receive(sms_result(call_id, scheduling="SILENT"), 5000)
    out = run_answer_messages(core)
    assert words_of(out) == "Text sent: ok"  # taken as WHEN_IDLE, and the model is idle
    assert core.record.tool_responses[0].scheduling == "SILENT"  # recorded as sent


def test_will_continue_is_refused_1007() -> None:
    core, call_id = pending_sms_core()
    core.receive(sms_result(call_id, willContinue=True), 5000)
    close = close_of(core)
    assert close.code == 1007
    assert 'Unknown name "willContinue"' in close.reason


# -- transparent resumption -----------------------------------------------------------------------


def test_updates_name_the_last_consumed_message_counting_setup_as_0() -> None:
    core = vertex_core(transparent_update_every=3)
    assert updates(messages(core)) == [
        {
            "newHandle": core.record.resumption_handles[0],
            "resumable": True,
            "lastConsumedClientMessageIndex": "0",  # an int64: a JSON string
        }
    ]
    out = []
    for i in range(7):
        core.receive(QUIET_FRAME, 20 * i)
        out += messages(core)
    # Every third message while the model is idle and the caller quiet: after 3 and 6.
    assert [u["lastConsumedClientMessageIndex"] for u in updates(out)] == ["3", "6"]
    assert core.record.consumed_indices == [0, 3, 6]
    assert len(core.record.message_digests) == 7
    assert len(set(core.record.message_digests)) == 1  # seven identical frames


def test_without_transparent_no_index_is_sent_and_no_update_between_turns() -> None:
    core = vertex_core(setup_for(sessionResumption={}), transparent_update_every=1)
    first = updates(messages(core))
    assert first == [{"newHandle": core.record.resumption_handles[0], "resumable": True}]
    for i in range(5):
        core.receive(QUIET_FRAME, 20 * i)
        assert messages(core) == []
    assert core.record.message_digests == []


def test_no_update_while_the_caller_speaks() -> None:
    core = vertex_core(transparent_update_every=1)
    messages(core)
    frames = [QUIET_FRAME] * 5
    speech = tone(400)
    frames += [audio_frame(speech[start : start + 320]) for start in range(0, len(speech), 320)]
    for i, frame in enumerate(frames):
        core.receive(frame, 20 * i)
    indices = [int(u["lastConsumedClientMessageIndex"]) for u in updates(messages(core))]
    # One after each quiet frame, then none once the detector hears the caller speaking (a
    # snapshot then would leave half a turn behind), though 20 more frames came.
    assert indices[:5] == [1, 2, 3, 4, 5]
    assert indices == list(range(1, len(indices) + 1))
    assert len(indices) < 10


def test_a_resumed_session_holds_exactly_the_messages_up_to_the_handles_index() -> None:
    store = ResumptionStore()
    first = vertex_core(store=store, transparent_update_every=4)
    messages(first)
    for i in range(6):  # 120 ms of audio; a handle after the 4th message
        first.receive(QUIET_FRAME, 20 * i)
    out = updates(messages(first))
    assert out[-1]["lastConsumedClientMessageIndex"] == "4"
    handle = out[-1]["newHandle"]
    assert first.record.session_audio_bytes == 6 * 640
    first.abort()

    resume = json.dumps(
        {
            "setup": {
                "model": VERTEX_MODEL,
                "sessionResumption": {"handle": handle, "transparent": True},
            }
        }
    )
    second = LiveEmulatorCore(
        EmulatorOptions(**VERTEX), CLIPS, store=store, connection=1, now_ms=200
    )
    second.receive(resume, 200)
    assert messages(second)[0] == {"setupComplete": {}}
    assert second.record.resumed_from == handle
    assert second.record.resumed_at_index == 4
    # The state has the four frames the handle covered, not the two after it ...
    assert second.record.session_audio_bytes == 4 * 640
    # ... which the client sends again: then the session has every frame once.
    for i in range(2):
        second.receive(QUIET_FRAME, 200 + 20 * i)
    assert second.record.session_audio_bytes == 6 * 640
    assert second.record.audio_bytes_received == 2 * 640


def test_explicit_vad_signal_reports_where_speech_starts_and_ends() -> None:
    core = vertex_core(setup_for(explicitVadSignal=True))
    messages(core)
    samples = [silence(200), tone(600), silence(1200)]
    out = []
    for chunk in samples:
        for start in range(0, len(chunk), 320):
            core.receive(audio_frame(chunk[start : start + 320]), 0)
            out += messages(core)
    signals = [
        m["voiceActivityDetectionSignal"] for m in out if "voiceActivityDetectionSignal" in m
    ]
    assert signals == [
        {"vadSignalType": "VAD_SIGNAL_TYPE_SOS"},
        {"vadSignalType": "VAD_SIGNAL_TYPE_EOS"},
    ]
    # Without it (and on the Developer API, which refuses the field) nothing is reported.
    quiet = vertex_core(setup_for())
    messages(quiet)
    for chunk in samples:
        for start in range(0, len(chunk), 320):
            quiet.receive(audio_frame(chunk[start : start + 320]), 0)
            assert not any("voiceActivityDetectionSignal" in m for m in messages(quiet))
