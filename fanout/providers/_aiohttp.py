"""``AiohttpTransport``: the providers' hot path, one ``aiohttp.ClientSession`` per provider."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import aiohttp
from yarl import URL

from fanout.providers._http import (
    Reply,
    Streamed,
    TransportBroken,
    TransportTimeout,
    env_proxy,
)
from fanout.providers._pooled import LoopPooled

__all__ = ["AiohttpTransport"]

_NEVER_ROUNDED = 1e9


class AiohttpTransport(LoopPooled[aiohttp.ClientSession]):
    """One ``aiohttp.ClientSession`` with a pool of up to ``max_connections`` keep-alive
    connections (HTTP/1.1, one request at a time on each: aiohttp never pipelines).

    One session per event loop (:class:`LoopPooled`). Cookies are not kept (an API call
    needs none, and the jar costs every call a lookup); proxies come from the environment
    once (as httpx's ``trust_env``), not per call. Only headers whose names start with
    one of ``keep`` are returned.
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
        super().__init__(
            base_url, headers=headers, max_connections=max_connections,
            connect_timeout_s=connect_timeout_s,
        )  # fmt: skip
        self._keep = tuple(k.encode() for k in keep)
        self._urls: dict[str, URL] = {}
        self._timeout: aiohttp.ClientTimeout | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300
        )
        return aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            cookie_jar=aiohttp.DummyCookieJar(),
            proxy=env_proxy(self._base_url),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    def _timeout_of(self, timeout_s: float) -> aiohttp.ClientTimeout:
        timeout = self._timeout
        if timeout is None or timeout.total != timeout_s:  # one per deadline; usually the same
            # ceil_threshold: aiohttp would round a timeout of 5 s or more up to a whole
            # second (coalescing timers); a request's deadline must not slip by one.
            timeout = self._timeout = aiohttp.ClientTimeout(
                total=timeout_s,
                sock_connect=min(self.connect_timeout_s, timeout_s),
                ceil_threshold=_NEVER_ROUNDED,
            )
        return timeout

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self._base_url + path, encoded=True)
        return url

    def _kept(self, response: aiohttp.ClientResponse) -> dict[str, str]:
        keep = self._keep
        return {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in response.raw_headers
            if name.lower().startswith(keep)
        }

    async def post(
        self, path: str, body: bytes, *, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self._base_url + path, encoded=True)
        session = self._client
        if session is None or self._loop is not asyncio.get_running_loop():
            session = await self._current()
        timeout = self._timeout_of(timeout_s)
        try:
            async with session.post(url, data=body, timeout=timeout, headers=headers) as response:
                raw = await response.read()
                keep = self._keep
                kept = {
                    name.decode("latin-1").lower(): value.decode("latin-1")
                    for name, value in response.raw_headers
                    if name.lower().startswith(keep)
                }
                return Reply(response.status, kept, raw)
        except aiohttp.ConnectionTimeoutError:
            raise TransportTimeout(sent=False) from None
        except TimeoutError:  # aiohttp's read timeouts (and the total) are TimeoutErrors
            raise TransportTimeout from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportBroken(f"{type(exc).__name__}: {exc}") from None

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, body: bytes, *, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[Streamed]:
        """POST ``body`` and yield the answer while its body is still arriving."""
        session = self._client
        if session is None or self._loop is not asyncio.get_running_loop():
            session = await self._current()
        timeout = self._timeout_of(timeout_s)
        try:
            response = await session.post(
                self._url(path), data=body, timeout=timeout,
                headers=_SSE if headers is None else {**_SSE, **headers},
            )  # fmt: skip
        except aiohttp.ConnectionTimeoutError:
            raise TransportTimeout(sent=False) from None
        except TimeoutError:
            raise TransportTimeout from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportBroken(f"{type(exc).__name__}: {exc}") from None
        try:
            yield Streamed(response.status, self._kept(response), _chunks(response))
        finally:
            response.close()  # a stream left unread is not put back in the pool

_SSE = {"accept": "text/event-stream"}


async def _chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.content.iter_any():
            yield chunk
    except TimeoutError:
        raise TransportTimeout from None
    except (aiohttp.ClientError, OSError) as exc:
        raise TransportBroken(f"{type(exc).__name__}: {exc}") from None

