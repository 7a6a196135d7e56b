"""The playback tracker: what was sent, and what Twilio's marks prove was heard."""

from __future__ import annotations

from agent.call.playback import Playback


def test_a_mark_echo_proves_the_frames_before_it_were_played() -> None:
    playback = Playback()
    playback.sent(2)
    first = playback.mark()
    playback.sent(3)
    second = playback.mark()
    assert playback.mark_played(first)
    assert playback.played_ms == 40
    assert playback.mark_played(second)
    assert playback.played_ms == 100
    assert playback.pending_marks == 0


def test_marks_echoed_by_a_clear_are_not_counted_as_played() -> None:
    playback = Playback()
    playback.sent(2)
    played = playback.mark()
    playback.sent(5)
    stale = playback.mark()
    assert playback.mark_played(played)

    outcome = playback.clear()

    assert outcome.frames_unconfirmed == 5
    assert outcome.marks_cancelled == 1
    assert not playback.mark_played(stale)  # Twilio's echo of a cleared mark
    assert playback.played_ms == 40
    assert playback.frames_discarded == 5


def test_the_timeline_continues_after_a_clear() -> None:
    playback = Playback()
    playback.sent(4)
    playback.clear()
    playback.sent(3)
    mark = playback.mark()
    assert playback.mark_played(mark)
    assert playback.played_ms == 60
    assert playback.frames_sent == 7


def test_an_unknown_mark_is_ignored() -> None:
    playback = Playback()
    playback.sent(1)
    playback.mark()
    assert not playback.mark_played("someone-else")
