"""``CallDeadline``: a call's time limit that measures the provider, not a busy event loop.

A plain ``asyncio.timeout`` fires as soon as its timer runs, even when the loop was too
busy to run it on time: the response may have arrived while other work held the loop,
and cancelling then throws away an answer the provider already gave (and billed); the
retry is billed again. Transport-independent: any wire protocol wraps its request in
``async with CallDeadline(timeout_s):``. Like ``asyncio.timeout``, it reads the loop's
clock (the loop schedules the timer; an injected clock could not).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fanout.providers._http import HttpTransport, Reply

__all__ = ["CallDeadline", "post_within"]

# A timer this late means the loop was busy, not that the provider was slow.
_LATE_S = 0.05


class CallDeadline:
    """Cancels the block after ``timeout_s`` (raising ``TimeoutError``), unless its timer
    ran late: then the loop was busy for that long and could not read what arrived, so
    the deadline moves by twice the delay (the few turns of the loop a response takes to
    read), at most ``timeout_s`` more in all. ``extended``: how often it moved.
    """

    __slots__ = ("_grace_s", "_handle", "_loop", "_scope", "_when", "extended", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._grace_s = timeout_s
        self._scope = asyncio.timeout(None)
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._when = 0.0
        self.extended = 0

    async def __aenter__(self) -> CallDeadline:
        await self._scope.__aenter__()
        loop = self._loop = asyncio.get_running_loop()
        self._when = loop.time() + self.timeout_s
        self._handle = loop.call_at(self._when, self._check)
        return self

    def _check(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        late = now - self._when
        if late > _LATE_S and self._grace_s > 0:
            extra = min(2 * late, self._grace_s)
            self._grace_s -= extra
            self._when = now + extra
            self._handle = loop.call_at(self._when, self._check)
            self.extended += 1
            return
        self._handle = None
        self._scope.reschedule(now)  # expire now: asyncio.timeout cancels the block

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        await self._scope.__aexit__(exc_type, exc, tb)  # TimeoutError if it expired

    def expired(self) -> bool:
        return self._scope.expired()


async def post_within(
    http: HttpTransport,
    path: str,
    body: bytes,
    timeout_s: float,
    headers: Mapping[str, str] | None,
) -> Reply:
    """``http.post`` bounded by ``timeout_s``: by the transport alone where it keeps time
    off the event loop (``times_off_loop``: a busy loop cannot make its timer late), else
    by a :class:`CallDeadline`, the transport's own timeout then only a backstop."""
    if getattr(http, "times_off_loop", False):
        return await http.post(path, body, timeout_s=timeout_s, headers=headers)
    async with CallDeadline(timeout_s):
        return await http.post(path, body, timeout_s=2 * timeout_s + 1.0, headers=headers)
