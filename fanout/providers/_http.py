"""The HTTP seam under the providers: one POST, its timeouts and its two failure kinds.

``AiohttpTransport`` is the hot path; ``HttpxTransport`` wraps any
``httpx.AsyncBaseTransport`` (``httpx.MockTransport`` in the wire-format tests).
Both turn the library's errors into :class:`TransportTimeout` and
:class:`TransportBroken`, so a provider classifies the same way whichever carries it.

Why aiohttp on the hot path (``benchmarks/overhead.py``, one client core, 200 in
flight against the instant emulator on the other core): a bare aiohttp loop served
~11,100 requests/s with its core full, httpx over the ``httpx-aiohttp`` transport
~3,100 (httpx's request and response models cost ~230 µs a call on top of aiohttp's
~90), and one plain ``httpx.AsyncClient`` ~90 (httpcore scans its whole pool on every
request; sharding kept fanout's at ~1,200). aiohttp's pool hands a free connection
out in O(1) at any size, so one session per provider holds all its connections.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx
from yarl import URL

__all__ = [
    "AiohttpTransport",
    "HttpTransport",
    "HttpxTransport",
    "Reply",
    "TransportBroken",
    "TransportTimeout",
    "env_proxy",
]

_JSON = "application/json"
_NEVER_ROUNDED = 1e9


class TransportTimeout(Exception):
    """Connecting or reading took longer than its timeout."""


class TransportBroken(Exception):
    """The connection failed or broke (refused, reset, a body cut short); ``str`` says how."""


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status, the headers asked for (names lower-cased), the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes


class HttpTransport(Protocol):
    """POSTs a JSON body to ``base_url + path``; raises only the two errors above.

    ``timeout_s`` bounds the whole call (waiting for a pooled connection, connecting,
    sending, reading); connecting alone is bounded by ``connect_timeout_s`` as well.
    """

    async def post(self, path: str, body: bytes, *, timeout_s: float) -> Reply: ...

    async def aclose(self) -> None: ...


class AiohttpTransport:
    """One ``aiohttp.ClientSession`` with a pool of up to ``max_connections`` keep-alive
    connections (HTTP/1.1, one request at a time on each: aiohttp never pipelines).

    The session is made in the running loop at the first call (an engine may be built
    before its loop exists) and made again if the loop changes (``asyncio.run`` twice).
    Cookies are not kept (an API call needs none, and the jar costs every call a
    lookup); proxies come from the environment once (as httpx's ``trust_env``), not
    per call. Only headers whose names start with one of ``keep`` are returned.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str],
        keep: tuple[str, ...],
        max_connections: int,
        connect_timeout_s: float,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"content-type": _JSON, "accept": _JSON, **headers}
        self._keep = tuple(k.encode() for k in keep)
        self._max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self._urls: dict[str, URL] = {}
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closer: AsyncGenerator[None, None] | None = None
        self._timeout: aiohttp.ClientTimeout | None = None

    async def _current(self) -> aiohttp.ClientSession:
        """The session of the running loop (made at the first call, or anew in a new loop)."""
        loop = asyncio.get_running_loop()
        old = self._session
        if old is not None:
            if self._loop is loop:
                return old
            if self._loop is not None and self._loop.is_closed():
                await old.close()  # its loop ended without asyncio.run's clean-up
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300
        )
        self._session = session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            cookie_jar=aiohttp.DummyCookieJar(),
            proxy=env_proxy(self._base_url),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._loop = loop
        # Closed when the loop shuts down (asyncio.run finalises open async generators
        # while the loop still runs), so an engine whose loop ends leaves no socket open.
        self._closer = _closed_with_loop(session)
        await anext(self._closer)
        return session

    async def post(self, path: str, body: bytes, *, timeout_s: float) -> Reply:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self._base_url + path)
        session = self._session
        if session is None or self._loop is not asyncio.get_running_loop():
            session = await self._current()
        timeout = self._timeout
        if timeout is None or timeout.total != timeout_s:  # one per deadline; usually the same
            # ceil_threshold: aiohttp would round a timeout of 5 s or more up to a whole
            # second (coalescing timers); a request's deadline must not slip by one.
            timeout = self._timeout = aiohttp.ClientTimeout(
                total=timeout_s,
                sock_connect=min(self.connect_timeout_s, timeout_s),
                ceil_threshold=_NEVER_ROUNDED,
            )
        try:
            async with session.post(url, data=body, timeout=timeout) as response:
                raw = await response.read()
                keep = self._keep
                kept = {
                    name.decode("latin-1").lower(): value.decode("latin-1")
                    for name, value in response.raw_headers
                    if name.lower().startswith(keep)
                }
                return Reply(response.status, kept, raw)
        except TimeoutError:  # aiohttp's connect and read timeouts are TimeoutErrors
            raise TransportTimeout from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportBroken(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        if self._closer is not None:
            await self._closer.aclose()  # closes the session
            self._session = self._closer = None

    def __repr__(self) -> str:
        return f"AiohttpTransport({self._base_url!r})"  # never the headers: they hold the key


class HttpxTransport:
    """The same POST over an ``httpx.AsyncClient`` on ``transport`` (tests' MockTransport)."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str],
        keep: tuple[str, ...],
        connect_timeout_s: float,
        transport: httpx.AsyncBaseTransport,
    ) -> None:
        self._keep = keep
        self.connect_timeout_s = connect_timeout_s
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"content-type": _JSON, "accept": _JSON, **headers},
            transport=transport,
        )

    async def post(self, path: str, body: bytes, *, timeout_s: float) -> Reply:
        timeout = httpx.Timeout(timeout_s, connect=min(self.connect_timeout_s, timeout_s))
        try:
            async with asyncio.timeout(timeout_s):  # httpx's timeouts bound each step only
                response = await self._client.post(path, content=body, timeout=timeout)
                raw = response.content
        except (TimeoutError, httpx.TimeoutException):
            raise TransportTimeout from None
        except httpx.TransportError as exc:
            raise TransportBroken(f"{type(exc).__name__}: {exc}") from None
        kept = {
            k.lower(): v for k, v in response.headers.items() if k.lower().startswith(self._keep)
        }
        return Reply(response.status_code, kept, raw)

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return "HttpxTransport()"


async def _closed_with_loop(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await session.close()


def env_proxy(base_url: str) -> str | None:
    """The proxy the environment names for ``base_url`` (``HTTPS_PROXY``, ``NO_PROXY``, ...)."""
    url = URL(base_url)
    if url.host is None or urllib.request.proxy_bypass(url.host):
        return None
    return urllib.request.getproxies().get(url.scheme)
