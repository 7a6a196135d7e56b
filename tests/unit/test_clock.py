"""Clock.on_running_loop: bound to the loop it is asked on, the same clock otherwise."""

from __future__ import annotations

import asyncio

from agent.clock import REAL_TIME, Clock, loop_time


async def test_on_a_running_loop_it_reads_that_loops_time_at_the_same_speed() -> None:
    loop = asyncio.get_running_loop()
    bound = Clock(speed=10.0).on_running_loop()
    assert bound.source == loop.time  # the loop's own method: no lookup per read
    assert bound.speed == 10.0
    before = loop.time()
    now = bound.now()
    assert before * 10.0 <= now <= loop.time() * 10.0


def test_outside_a_running_loop_it_is_the_same_clock() -> None:
    assert REAL_TIME.on_running_loop() is REAL_TIME
    assert REAL_TIME.source is loop_time


async def test_a_clock_on_another_source_is_left_alone() -> None:
    simulated = Clock(source=lambda: 42.0)
    assert simulated.on_running_loop() is simulated
    assert simulated.on_running_loop().now() == 42.0
