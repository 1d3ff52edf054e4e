"""The injected clock: the only module that reads time or sleeps.

Limiters, budgets, retries and the executor take a :class:`Clock`; tests pass
:class:`fanout.sim.FakeClock`, whose time only moves when the test (or its
autojump) says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

__all__ = ["Cancellable", "Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Monotonic time in seconds, an async sleep, and UTC wall time for records."""

    def now(self) -> float:
        """Monotonic seconds; only differences are meaningful."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of this clock's time (cancellable)."""
        ...

    def wall(self) -> datetime:
        """The current UTC time, for timestamps in results and traces."""
        ...

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Cancellable:
        """Call ``callback`` after ``seconds`` of this clock's time, on the running loop,
        unless cancelled first: a timer without a task (hedging arms one per call)."""
        ...


class Cancellable(Protocol):
    def cancel(self) -> object: ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    __slots__ = ()

    # the builtin itself: no Python frame per reading (a run reads the clock ~10 times)
    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def wall(self) -> datetime:
        return datetime.now(UTC)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, seconds), callback)

    def __repr__(self) -> str:
        return "SystemClock()"
