"""``LoopPooled``: what the hot-path transports share, a pooled client per event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Generic, Protocol, TypeVar

from fanout.providers._http import JSON

__all__ = ["LoopPooled"]


class _Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class LoopPooled(Generic[C]):
    """A transport's client (its connection pool), made in the running loop at the first
    call (an engine may be built before its loop exists) and made again if the loop
    changes (``asyncio.run`` twice). It is closed when its loop shuts down (asyncio.run
    finalises open async generators while the loop still runs), so an engine whose loop
    ends leaves no socket open.

    A subclass makes the client in :meth:`_open`. Its calls read ``self._client`` and
    ``self._loop`` themselves and await :meth:`_current` only when either is stale, so
    the per-call path pays no extra coroutine.
    """

    def __init__(
        self, base_url: str, *, headers: dict[str, str], max_connections: int,
        connect_timeout_s: float,
    ) -> None:  # fmt: skip
        self._base_url = base_url.rstrip("/")
        self._headers = {"content-type": JSON, "accept": JSON, **headers}
        self._max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self._client: C | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closer: AsyncGenerator[None, None] | None = None

    def _open(self) -> C:
        """A new client with its pool (called in the loop that will use it)."""
        raise NotImplementedError

    async def _current(self) -> C:
        """The client of the running loop (made at the first call, or anew in a new loop)."""
        loop = asyncio.get_running_loop()
        old = self._client
        if old is not None:
            if self._loop is loop:
                return old
            if self._loop is not None and self._loop.is_closed():
                await old.close()  # its loop ended without asyncio.run's clean-up
        self._client = client = self._open()
        self._loop = loop
        self._closer = _closed_with_loop(client)
        await anext(self._closer)
        return client

    async def aclose(self) -> None:
        if self._closer is not None:
            await self._closer.aclose()  # closes the client
            self._client = self._closer = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._base_url!r})"  # never the headers: the key


async def _closed_with_loop(client: _Closable) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await client.close()
