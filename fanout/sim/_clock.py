"""``FakeClock``: virtual time for tests; sleepers wake in time order, optionally by autojump."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from datetime import UTC, datetime, timedelta

__all__ = ["FakeClock"]

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_MAX_IDLE_YIELDS = 64


class FakeClock:
    """A :class:`fanout.clock.Clock` whose time moves only when told.

    ``advance(s)`` moves time forward through due sleepers in order, letting each
    woken task run before the next timer. With ``autojump=True``, a background
    task jumps to the next sleeper whenever the event loop is idle, so code that
    sleeps on the clock runs at once in virtual time (like trio's ``MockClock``).
    Work in threads (``asyncio.to_thread``) is not waited for by the autojump.
    """

    def __init__(self, *, start: float = 0.0, autojump: bool = False) -> None:
        self._now = start
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.autojump = autojump
        self._jumper: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self._now

    def wall(self) -> datetime:
        return _EPOCH + timedelta(seconds=self._now)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._heap, (self._now + seconds, next(self._seq), future))
        if self.autojump and (self._jumper is None or self._jumper.done()):
            self._jumper = loop.create_task(self._autojump())
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in order as their time comes."""
        target = self._now + seconds
        while True:
            await _idle()
            self._drop_cancelled()
            if not self._heap or self._heap[0][0] > target:
                break
            self._wake_next()
        self._now = max(self._now, target)
        await _idle()

    async def _autojump(self) -> None:
        while True:
            await _idle()
            self._drop_cancelled()
            if not self._heap:
                return
            self._wake_next()

    def _wake_next(self) -> None:
        when, _, future = heapq.heappop(self._heap)
        self._now = max(self._now, when)
        if not future.done():
            future.set_result(None)
        # Wake every sleeper due at the same instant together.
        while self._heap and self._heap[0][0] <= self._now:
            _, _, same = heapq.heappop(self._heap)
            if not same.done():
                same.set_result(None)

    def _drop_cancelled(self) -> None:
        while self._heap and self._heap[0][2].done():
            heapq.heappop(self._heap)

    async def aclose(self) -> None:
        if self._jumper is not None and not self._jumper.done():
            self._jumper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._jumper

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now}, sleepers={len(self._heap)})"


async def _idle() -> None:
    """Yield until the loop has nothing else ready to run.

    Reads ``loop._ready`` (CPython's queue of ready callbacks): the only way to
    know that every runnable task has run. Falls back to a fixed number of yields.
    """
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)
    for _ in range(_MAX_IDLE_YIELDS if ready is None else 10_000):
        await asyncio.sleep(0)
        if ready is not None and not ready:
            # One more round: a callback may schedule another on its way out.
            await asyncio.sleep(0)
            if not ready:
                return
