"""``FakeClock``: virtual time for tests; sleepers wake in time order, by hand or by autojump."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = ["FakeClock"]

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# Without CPython's ready queue to look at, "idle" can only be guessed: yield this
# many times and hope every woken task has reached its next await.
_BLIND_YIELDS = 64
# How many idle-waiters (autojumpers, advance() calls) are spinning on each loop, by
# id(loop). Each spinner keeps exactly one step of its own in the ready queue, so a
# spinner must not mistake the others' steps for work (two autojump clocks on one
# loop would otherwise wait for each other forever). Entries are removed at zero.
_spinners: dict[int, int] = {}


class FakeClock:
    """A :class:`fanout.clock.Clock` whose time moves only when told to.

    Time starts at ``start`` (0.0); ``wall()`` is 2026-01-01T00:00:00Z plus ``now()``.
    Sleepers wait in a heap of ``(when, seq, future)``; nothing polls.

    ``await advance(s)`` moves time forward through the due sleepers in order,
    letting each woken task run until the loop is idle before the next one wakes.

    With ``autojump=True`` a background task (started by the first sleep, gone
    when no one sleeps) jumps time to the earliest sleeper whenever the event
    loop has nothing else ready, so ``await clock.sleep(5)`` returns at once with
    ``now() == 5`` and concurrent sleepers wake in virtual-time order (like
    trio's ``MockClock(autojump_threshold=0)``). The loop is "idle" when no
    callback is ready: work in threads (``asyncio.to_thread``) or on sockets is
    not waited for, so time may jump while it runs. A task that never stops
    yielding (``while True: await asyncio.sleep(0)``) keeps time from jumping.
    Call ``aclose()`` at the end of a test to stop the jumper early.
    """

    def __init__(self, *, start: float = 0.0, autojump: bool = False) -> None:
        self._now = float(start)
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.autojump = autojump
        self._jumper: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self._now

    def wall(self) -> datetime:
        return _EPOCH + timedelta(seconds=self._now)

    @property
    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock now (cancelled ones excluded)."""
        return sum(1 for _, _, future in self._heap if not future.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._heap, (self._now + seconds, next(self._seq), future))
        if self.autojump and (self._jumper is None or self._jumper.done()):
            self._jumper = loop.create_task(self._autojump(), name="FakeClock.autojump")
        # A cancelled sleep cancels the future; the heap skips done futures.
        await future

    def call_later(self, seconds: float, callback: Callable[[], None]) -> asyncio.Future[None]:
        """A timer on this clock: ``callback()`` when time reaches now + ``seconds``
        (cancel the returned future to disarm it)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._heap, (self._now + max(0.0, seconds), next(self._seq), future))
        if self.autojump and (self._jumper is None or self._jumper.done()):
            self._jumper = loop.create_task(self._autojump(), name="FakeClock.autojump")
        future.add_done_callback(lambda f: None if f.cancelled() else callback())
        return future

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in time order as they fall due."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance: seconds must be >= 0 (got {seconds})")
        target = self._now + seconds
        while True:
            await _wait_idle()
            self._drop_cancelled()
            if not self._heap or self._heap[0][0] > target:
                break
            self._wake_next()
        self._now = max(self._now, target)
        await _wait_idle()

    async def aclose(self) -> None:
        """Stop the autojump task, if one is running."""
        jumper, self._jumper = self._jumper, None
        if jumper is not None and not jumper.done():
            jumper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await jumper

    async def _autojump(self) -> None:
        # Exits when no one sleeps, so a finished test's loop holds no pending task
        # of ours; the next sleep() starts a fresh jumper.
        while True:
            await _wait_idle()
            self._drop_cancelled()
            if not self._heap:
                return
            self._wake_next()

    def _wake_next(self) -> None:
        when = self._heap[0][0]
        self._now = max(self._now, when)
        # Everyone due at this instant wakes together, in the order they slept.
        while self._heap and self._heap[0][0] <= self._now:
            _, _, future = heapq.heappop(self._heap)
            if not future.done():
                future.set_result(None)

    def _drop_cancelled(self) -> None:
        while self._heap and self._heap[0][2].done():
            heapq.heappop(self._heap)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now}, sleepers={self.sleepers}, autojump={self.autojump})"


async def _wait_idle() -> None:
    """Yield until the event loop has nothing but idle-waiters ready to run.

    Reads ``loop._ready``, CPython's deque of ready callbacks: it is the only way
    to know that every runnable task has reached its next await (asyncio has no
    public "wait until all tasks are blocked"). Without it, yields a fixed number
    of times instead.
    """
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)
    if ready is None:
        for _ in range(_BLIND_YIELDS):
            await asyncio.sleep(0)
        return
    key = id(loop)
    _spinners[key] = _spinners.get(key, 0) + 1
    try:
        idle_rounds = 0
        # Two idle rounds in a row: a callback may schedule another on its way out.
        while idle_rounds < 2:
            await asyncio.sleep(0)
            idle_rounds = idle_rounds + 1 if len(ready) < _spinners[key] else 0
    finally:
        left = _spinners[key] - 1
        if left:
            _spinners[key] = left
        else:
            del _spinners[key]
