"""The Live link's memory across connections, with literal events and times (no event loop)."""

from __future__ import annotations

from agent.live.protocol import (
    GenerationComplete,
    GoAway,
    ModelAudio,
    ResumptionHandle,
    ToolCallRequested,
    TurnComplete,
)
from agent.live.session_state import HeldMessages, ResumptionState

AUDIO = ModelAudio(b"\x00\x00" * 480)


def test_a_go_away_between_turns_with_a_fresh_handle_switches_at_once() -> None:
    state = ResumptionState(go_away_margin_s=5.0)
    state.observe(ResumptionHandle("h-1", True), now=1.0)
    assert not state.switch_now  # no goAway: nothing to switch for
    state.observe(GoAway(50.0), now=2.0)
    assert state.go_away_at == 47.0  # timeLeft minus the margin
    assert state.switch_now
    assert state.handle == "h-1"


def test_a_handle_issued_mid_turn_is_not_fresh_for_a_go_away_switch() -> None:
    state = ResumptionState(go_away_margin_s=5.0)
    state.observe(ResumptionHandle("h-old", True), now=0.0)
    state.observe(AUDIO, now=1.0)
    state.observe(ResumptionHandle("h-mid", True), now=1.1)  # resumes into the middle of a turn
    state.observe(GoAway(50.0), now=1.2)
    assert state.handle == "h-mid"  # the newest, still the one to resume from if we must
    assert not state.switch_now  # mid-turn
    state.observe(GenerationComplete(), now=1.5)
    state.observe(TurnComplete(), now=1.6)
    # Between turns now, but the newest handle does not cover the end of the turn: wait for one.
    assert not state.switch_now
    state.observe(ResumptionHandle("h-after", True), now=1.7)
    assert state.switch_now
    assert state.handle == "h-after"


def test_a_tool_call_makes_the_handle_stale_and_an_unresumable_one_is_kept_out() -> None:
    state = ResumptionState(go_away_margin_s=0.0)
    state.observe(ResumptionHandle("h-1", True), now=0.0)
    state.observe(GoAway(30.0), now=0.0)
    assert state.switch_now
    state.observe(ToolCallRequested(calls=()), now=0.5)
    assert not state.switch_now
    state.observe(TurnComplete(), now=1.0)
    state.observe(ResumptionHandle(None, False), now=1.1)  # mid-generation: not resumable
    assert state.handle == "h-1"
    assert not state.switch_now


def test_the_go_away_deadline_never_lies_in_the_past_and_ends_with_the_connection() -> None:
    state = ResumptionState(go_away_margin_s=5.0)
    state.observe(GoAway(3.0), now=10.0)  # less time left than the margin: leave at once
    assert state.go_away_at == 10.0
    state.connected()
    assert state.go_away_at is None


def test_a_switch_starts_between_turns_with_no_fresh_handle() -> None:
    state = ResumptionState(go_away_margin_s=5.0)
    state.observe(ResumptionHandle("h-1", True), now=0.0)
    state.switching()
    state.connected()
    state.observe(GoAway(50.0), now=1.0)
    assert not state.switch_now  # h-1 was used to resume: the new connection needs its own
    state.handle_refused()
    assert state.handle is None


def test_held_messages_keep_their_order_and_leave_only_once_sent() -> None:
    held = HeldMessages(max_audio_frames=10, replay_s=0.2)
    held.hold("a1", audio=True)
    held.hold("tool", audio=False)
    held.hold("a2", audio=True)
    assert held.switch_started() == (3, 0)
    assert held.first() == "a1"
    held.first_sent()
    assert held.first() == "tool"  # a failed send here would keep it for the next connection
    held.first_sent()
    held.first_sent()
    assert held.first() is None
    assert len(held) == 0
    assert held.switch_done() == 0


def test_past_the_bound_the_oldest_caller_frame_is_dropped_never_a_text_turn() -> None:
    held = HeldMessages(max_audio_frames=2, replay_s=0.2)
    held.hold("tool", audio=False)
    for frame in ("a1", "a2", "a3"):
        held.hold(frame, audio=True)
    order = []
    while (message := held.first()) is not None:
        order.append(message)
        held.first_sent()
    assert order == ["tool", "a2", "a3"]
    assert held.switch_done() == 1
    assert held.switch_done() == 0  # counted once


def test_after_an_abnormal_close_the_recent_audio_goes_first() -> None:
    held = HeldMessages(max_audio_frames=100, replay_s=0.2)
    held.sent("old", audio=True, now=0.0)
    held.sent("text", audio=False, now=0.25)  # not caller audio: never replayed
    held.sent("r1", audio=True, now=0.3)
    held.sent("r2", audio=True, now=0.5)  # "old" is now past the 0.2 s window
    held.hold("during", audio=True)
    held.replay_recent()
    assert held.switch_started() == (3, 2)
    order = []
    while (message := held.first()) is not None:
        order.append(message)
        held.first_sent()
    assert order == ["r1", "r2", "during"]
    assert held.replayed_frames == 2
    assert held.switch_started() == (0, 0)  # the replay was reported with its switch


def test_a_clean_switch_replays_nothing() -> None:
    held = HeldMessages(max_audio_frames=100, replay_s=0.2)
    held.sent("a1", audio=True, now=0.0)
    held.forget_recent()
    held.replay_recent()
    assert held.first() is None
    assert held.replayed_frames == 0


def _flush(held: HeldMessages) -> list[str]:
    order = []
    while (message := held.first()) is not None:
        order.append(message)
        held.first_sent()
    return order


def test_transparent_resumption_replays_exactly_what_the_server_had_not_consumed() -> None:
    held = HeldMessages(max_audio_frames=100, replay_s=0.2, transparent=True)
    held.new_connection()  # setup: message 0
    for n, message in enumerate(["a1", "tool", "a2", "a3", "a4"], start=1):
        held.sent(message, audio=message != "tool", now=n * 0.02)
    held.consumed(2)  # the handle's state includes a1 and the tool response
    held.hold("during", audio=True)  # sent while switching
    held.forget_recent()  # a clean goAway switch: still, a2..a4 are not in the state resumed
    assert held.switch_started() == (4, 3)
    held.new_connection()
    assert _flush(held) == ["a2", "a3", "a4", "during"]
    assert held.replayed_frames == 3
    # Replayed messages are counted on the new connection: its first update covers them.
    held.consumed(3)
    held.replay_recent()
    assert _flush(held) == ["during"]


def test_transparent_resumption_replays_text_turns_too_and_is_bounded() -> None:
    held = HeldMessages(max_audio_frames=3, replay_s=0.2, transparent=True)
    held.new_connection()
    for n, message in enumerate(["a1", "a2", "turn", "a3"], start=1):
        held.sent(message, audio=message.startswith("a"), now=n * 0.02)
    assert held.unconsumed_dropped == 1  # a server that never says: the oldest goes
    held.replay_recent()
    assert _flush(held) == ["a2", "turn", "a3"]


def test_an_asked_for_switch_waits_for_the_turn_to_end_and_the_handle_to_cover_it() -> None:
    state = ResumptionState(go_away_margin_s=5.0)
    state.observe(AUDIO, now=1.0)
    state.ask_switch("hand_off", now=1.0, within_s=15.0)
    assert state.switch_by == 16.0
    assert state.switch_reason == "hand_off"
    assert not state.switch_now  # mid-turn
    state.observe(TurnComplete(), now=2.0)
    assert state.switch_now  # no handle at all: the session is seeded afresh, between turns
    state.observe(ResumptionHandle("h-1", True), now=2.1)
    state.observe(AUDIO, now=3.0)
    state.observe(TurnComplete(), now=4.0)
    assert not state.switch_now  # there is a handle now, and it does not cover this turn
    state.observe(ResumptionHandle("h-2", True), now=4.1)
    assert state.switch_now
    state.observe(GoAway(60.0), now=4.2)
    assert state.switch_reason == "go_away"  # the service's own reason comes first
    assert state.switch_by == 16.0  # the earlier deadline of the two
    state.connected()
    assert state.switch_by is None
    assert not state.switch_now
