"""The playback tracker: what was sent, what marks prove was heard, and where the caller is now."""

from __future__ import annotations

from agent.call.playback import Playback


def test_a_mark_echo_proves_the_frames_before_it_were_played() -> None:
    playback = Playback()
    playback.sent(2, now=0.0)
    first = playback.mark()
    playback.sent(3, now=0.0)
    second = playback.mark()
    assert playback.mark_played(first, now=0.04)
    assert playback.played_ms == 40
    assert playback.mark_played(second, now=0.10)
    assert playback.played_ms == 100
    assert playback.pending_marks == 0


def test_a_later_echo_implies_the_earlier_marks_played() -> None:
    playback = Playback()
    playback.sent(2, now=0.0)
    playback.mark()
    playback.sent(2, now=0.0)
    later = playback.mark()
    assert playback.mark_played(later, now=0.08)
    assert playback.played_ms == 80
    assert playback.marks_played == 2


def test_marks_echoed_by_a_clear_are_not_counted_as_played() -> None:
    playback = Playback()
    playback.start_turn()
    playback.sent(2, now=0.0)
    played = playback.mark()
    playback.sent(5, now=0.0)
    stale = playback.mark()
    assert playback.mark_played(played, now=0.04)

    outcome = playback.clear(now=0.04)

    assert outcome.marks_cancelled == 1
    assert outcome.heard_frames == 2
    assert outcome.discarded_frames == 5
    assert not playback.mark_played(stale, now=0.041)  # Twilio's echo of a cleared mark
    assert playback.played_ms == 40
    assert playback.frames_discarded == 5
    # The cleared mark is gone for good: the next genuine echo counts only what followed.
    assert playback.pending_marks == 0
    playback.start_turn()
    playback.sent(3, now=0.05)
    fresh = playback.mark()
    assert playback.mark_played(fresh, now=0.11)
    assert playback.marks_played == 2
    assert playback.played_ms == (2 + 3) * 20


def test_between_marks_the_position_follows_real_time_playback() -> None:
    playback = Playback()
    playback.start_turn()
    playback.sent(50, now=10.0)  # one second of audio, sent at once: Twilio plays it from 10.0
    playback.mark()
    assert playback.heard_in_turn(now=10.0) == 0
    assert playback.heard_in_turn(now=10.30) == 15
    assert playback.heard_in_turn(now=11.5) == 50  # never beyond what was sent
    assert playback.unplayed_ms(now=10.30) == 700


def test_a_genuine_echo_reanchors_the_estimate() -> None:
    playback = Playback()
    playback.start_turn()
    playback.sent(10, now=0.0)
    mark = playback.mark()
    playback.sent(40, now=0.0)
    # Twilio started late: frame 10 finished at 0.5 s, not 0.2 s.
    assert playback.mark_played(mark, now=0.5)
    assert playback.heard_in_turn(now=0.6) == 15


def test_audio_sent_after_the_buffer_ran_dry_starts_when_it_arrives() -> None:
    playback = Playback()
    playback.sent(5, now=0.0)  # plays 0.0-0.1
    playback.start_turn()
    playback.sent(10, now=2.0)  # the buffer was empty for 1.9 s
    assert playback.heard_in_turn(now=2.1) == 5


def test_a_clear_cuts_the_turn_at_the_estimated_position() -> None:
    playback = Playback()
    playback.start_turn()
    playback.sent(100, now=0.0)
    outcome = playback.clear(now=0.73)
    assert outcome.heard_frames == 36
    assert outcome.discarded_frames == 64
    # The caller's timeline continues from what was heard.
    playback.start_turn()
    playback.sent(3, now=1.0)
    mark = playback.mark()
    assert playback.mark_played(mark, now=1.06)
    assert playback.played_ms == (36 + 3) * 20
    assert playback.frames_sent == 103


def test_an_unknown_mark_is_ignored() -> None:
    playback = Playback()
    playback.sent(1, now=0.0)
    playback.mark()
    assert not playback.mark_played("someone-else", now=0.1)
    assert playback.pending_marks == 1


# -- "everything played": no model turn open, no mark pending --------------------------------------


def test_everything_is_played_once_the_turn_is_over_and_its_last_mark_echoed() -> None:
    changes: list[bool] = []
    playback = Playback(on_drained=changes.append)
    assert playback.drained
    playback.start_turn()
    assert playback.turn_open
    assert not playback.drained
    playback.sent(10, now=0.0)
    first = playback.mark()
    playback.sent(10, now=0.0)
    last = playback.mark()
    assert playback.mark_played(first, now=0.2)
    assert not playback.drained  # the model may still be speaking
    playback.end_turn()
    assert not playback.drained  # over, but Twilio has not played its end yet
    assert playback.mark_played(last, now=0.4)
    assert playback.drained
    assert changes == [False, True]  # told of each change, once


def test_a_turn_whose_marks_were_all_echoed_is_played_when_it_ends() -> None:
    changes: list[bool] = []
    playback = Playback(on_drained=changes.append)
    playback.start_turn()
    playback.sent(5, now=0.0)
    assert playback.mark_played(playback.mark(), now=0.1)
    assert not playback.drained
    playback.end_turn()
    assert playback.drained
    playback.end_turn()  # ending it twice changes nothing
    assert changes == [False, True]


def test_a_clear_ends_the_turn_and_leaves_nothing_to_play() -> None:
    changes: list[bool] = []
    playback = Playback(on_drained=changes.append)
    playback.start_turn()
    playback.sent(50, now=0.0)
    stale = playback.mark()
    playback.clear(now=0.3)
    assert not playback.turn_open
    assert playback.drained
    assert not playback.mark_played(stale, now=0.31)  # the clear's echo
    assert playback.drained
    assert changes == [False, True]


def test_an_unknown_echo_does_not_drain_an_open_turn() -> None:
    playback = Playback()
    playback.start_turn()
    assert not playback.mark_played("m99", now=0.0)
    assert not playback.drained


def test_audio_sent_outside_a_turn_is_unplayed_until_its_mark_echoes() -> None:
    """A bundled prompt (the transfer announcement) is no model turn: the call must still wait
    for Twilio to play it before it moves the call."""
    changes: list[bool] = []
    playback = Playback(on_drained=changes.append)
    playback.sent(130, 0.0)
    name = playback.mark()
    assert not playback.drained
    assert changes == [False]
    assert playback.mark_played(name, 2.6)
    assert playback.drained
    assert changes == [False, True]


def test_unmarked_frames_count_what_a_mark_now_would_cover() -> None:
    playback = Playback()
    playback.start_turn()
    playback.sent(2, 0.0)
    playback.sent(2, 0.04)
    assert playback.unmarked_frames == 4  # two chunks, no mark yet
    playback.mark()
    assert playback.unmarked_frames == 0
    playback.sent(3, 0.08)
    assert playback.unmarked_frames == 3
    playback.clear(0.1)
    assert playback.unmarked_frames == 0  # cleared audio needs no mark


def test_with_a_mark_every_ten_frames_a_barge_in_still_cuts_at_the_played_frame() -> None:
    """Marks every 200 ms instead of every 40 ms chunk: the player model counts time between
    them, so the heard position at a clear is the same frame either way."""
    playback = Playback()
    playback.start_turn()
    for chunk in range(10):  # 40 ms chunks sent as they come, in real time
        playback.sent(2, chunk * 0.04)
        if playback.unmarked_frames >= 10:
            playback.mark()
    assert playback.marks_sent == 2
    assert playback.mark_played("m1", 0.2)  # the first 10 frames played by 200 ms
    cleared = playback.clear(0.31)
    assert cleared.heard_frames == 15  # 310 ms: 15 whole frames, as per-chunk marks would say
    assert cleared.discarded_frames == 5
