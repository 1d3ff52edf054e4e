"""FakeClock: manual advance, autojump, cancellation, and no tasks left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from fanout.clock import Clock
from fanout.sim import FakeClock


@pytest.fixture
async def jumping() -> AsyncIterator[FakeClock]:
    clock = FakeClock(autojump=True)
    yield clock
    await clock.aclose()


async def _real_idle() -> None:
    """Let the real loop go idle for a moment (so an autojumper gets its chance)."""
    await asyncio.sleep(0.01)


def test_is_a_clock() -> None:
    assert isinstance(FakeClock(), Clock)


def test_wall_is_the_fixed_epoch_plus_virtual_time() -> None:
    clock = FakeClock(start=90.0)
    assert clock.now() == 90.0
    assert clock.wall() == datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=90)


async def test_advance_wakes_sleepers_in_time_order_at_their_deadlines() -> None:
    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    tasks = [
        asyncio.create_task(sleeper(name, s)) for name, s in (("c", 3.0), ("a", 1.0), ("b", 2.0))
    ]
    await clock.advance(2.5)
    assert woke == [("a", 1.0), ("b", 2.0)]
    assert clock.now() == 2.5
    assert clock.sleepers == 1
    await clock.advance(0.5)
    assert woke == [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    await asyncio.gather(*tasks)


async def test_advance_lets_a_woken_task_run_before_the_next_timer() -> None:
    clock = FakeClock()
    events: list[tuple[str, float]] = []

    async def twice() -> None:
        await clock.sleep(1.0)
        events.append(("first", clock.now()))
        await clock.sleep(1.0)  # due at 2.0, before the other sleeper at 2.5
        events.append(("second", clock.now()))

    async def late() -> None:
        await clock.sleep(2.5)
        events.append(("late", clock.now()))

    tasks = [asyncio.create_task(twice()), asyncio.create_task(late())]
    await clock.advance(10.0)
    assert events == [("first", 1.0), ("second", 2.0), ("late", 2.5)]
    assert clock.now() == 10.0
    await asyncio.gather(*tasks)


async def test_sleepers_due_together_wake_in_the_order_they_slept() -> None:
    clock = FakeClock()
    order: list[int] = []

    async def sleeper(i: int) -> None:
        await clock.sleep(1.0)
        order.append(i)

    tasks = [asyncio.create_task(sleeper(i)) for i in range(5)]
    await clock.advance(1.0)
    assert order == [0, 1, 2, 3, 4]
    await asyncio.gather(*tasks)


async def test_advance_rejects_going_back() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        await FakeClock().advance(-1.0)


async def test_sleep_zero_yields_once_without_moving_time() -> None:
    clock = FakeClock()
    ran: list[bool] = []

    async def other() -> None:
        ran.append(True)

    task = asyncio.create_task(other())
    await clock.sleep(0)
    assert ran == [True]
    await clock.sleep(-5)
    assert clock.now() == 0.0
    await task


async def test_autojump_returns_at_once_at_the_virtual_deadline(jumping: FakeClock) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await jumping.sleep(5.0)
    assert jumping.now() == 5.0
    await jumping.sleep(3600.0)
    assert jumping.now() == 3605.0
    assert loop.time() - started < 5.0  # a real hour did not pass


async def test_autojump_wakes_concurrent_sleepers_in_virtual_time_order(
    jumping: FakeClock,
) -> None:
    finished: list[tuple[int, float]] = []

    async def work(i: int, seconds: float) -> None:
        await jumping.sleep(seconds)
        await asyncio.sleep(0)  # real work between virtual waits must not reorder them
        await jumping.sleep(seconds)
        finished.append((i, jumping.now()))

    durations = [3.0, 1.0, 2.5, 0.5, 2.0]
    await asyncio.gather(*(work(i, s) for i, s in enumerate(durations)))
    assert finished == [(3, 1.0), (1, 2.0), (4, 4.0), (2, 5.0), (0, 6.0)]


async def test_cancelled_sleeper_does_not_move_time(jumping: FakeClock) -> None:
    task = asyncio.create_task(jumping.sleep(10.0))
    await asyncio.sleep(0)  # let it start sleeping
    assert jumping.sleepers == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert jumping.sleepers == 0
    await _real_idle()
    assert jumping.now() == 0.0  # the jumper saw no one sleeping, so time stood still
    await jumping.sleep(1.0)
    assert jumping.now() == 1.0


async def test_advance_skips_cancelled_sleepers() -> None:
    clock = FakeClock()
    doomed = asyncio.create_task(clock.sleep(1.0))
    kept = asyncio.create_task(clock.sleep(2.0))
    await asyncio.sleep(0)
    doomed.cancel()
    await clock.advance(5.0)
    assert doomed.cancelled()
    assert kept.done() and not kept.cancelled()
    assert clock.now() == 5.0


async def test_autojump_leaves_no_task_behind(jumping: FakeClock) -> None:
    await jumping.sleep(1.0)
    await _real_idle()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    await jumping.sleep(2.0)  # a fresh jumper starts on demand
    assert jumping.now() == 3.0


async def test_aclose_stops_a_running_jumper() -> None:
    clock = FakeClock(autojump=True)
    sleeper = asyncio.create_task(clock.sleep(1.0))
    await asyncio.sleep(0)  # the sleeper starts the jumper
    assert len(asyncio.all_tasks()) == 3
    await clock.aclose()
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_two_autojump_clocks_on_one_loop_do_not_wait_for_each_other() -> None:
    first, second = FakeClock(autojump=True), FakeClock(autojump=True)
    try:
        await asyncio.wait_for(asyncio.gather(first.sleep(2.0), second.sleep(7.0)), timeout=5.0)
    finally:
        await first.aclose()
        await second.aclose()
    assert (first.now(), second.now()) == (2.0, 7.0)
