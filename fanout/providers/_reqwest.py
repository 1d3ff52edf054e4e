"""``ReqwestTransport``: the providers' hot path over pyreqwest (Rust's reqwest and hyper).

A request's HTTP work (connection pool, HTTP/1.1 framing, TLS, decoding) runs in
pyreqwest's Tokio runtime, in Rust: about a third of aiohttp's client CPU a request
(``_http.py`` has the figures). The seam is the same as ``AiohttpTransport``'s: one
POST, the headers asked for, :class:`TransportTimeout` and :class:`TransportBroken`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta

from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import (
    ConnectTimeoutError,
    PoolTimeoutError,
    PyreqwestError,
    RequestTimeoutError,
)
from pyreqwest.http import HeaderMap
from pyreqwest.proxy import ProxyBuilder
from pyreqwest.response import Response

from fanout.providers._http import (
    Reply,
    Streamed,
    TransportBroken,
    TransportTimeout,
    env_proxy,
)
from fanout.providers._pooled import LoopPooled

__all__ = ["ReqwestTransport"]


class ReqwestTransport(LoopPooled[Client]):
    """One pyreqwest ``Client`` per event loop, with a pool of up to ``max_connections``
    keep-alive HTTP/1.1 connections (one request at a time on each, never pipelined).

    The client is remade when the loop changes (:class:`LoopPooled`), as
    ``AiohttpTransport``'s session is. No cookies, no redirects followed, no
    decompression asked for; the proxy comes from the environment once (``HTTPS_PROXY``,
    ``NO_PROXY``). Every header but the content types is marked sensitive: it holds the key, and
    pyreqwest masks such values in any repr. Only headers whose names start with one of
    ``keep`` are returned.
    """

    times_off_loop = True  # reqwest's timer runs in its runtime: a busy loop cannot delay it

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
        self._keep = keep
        self._urls: dict[str, str] = {}
        self._timeouts: dict[float, timedelta] = {}

    def _open(self) -> Client:
        builder = (
            ClientBuilder()
            .max_connections(self._max_connections)
            .connect_timeout(timedelta(seconds=self.connect_timeout_s))
            .default_headers(_sensitive(self._headers))
            .follow_redirects(False)
            .default_cookie_store(False)
            .http1_only()
            .no_proxy()
        )
        proxy = env_proxy(self._base_url)
        if proxy:
            builder = builder.proxy(ProxyBuilder.all(proxy))
        client = builder.build()  # starts pyreqwest's runtime thread if none runs yet
        batch_scheduled(RUNTIME_THREAD)
        return client

    def _timeout(self, timeout_s: float) -> timedelta:
        timeout = self._timeouts.get(timeout_s)
        if timeout is None:
            if len(self._timeouts) > 64:  # deadlines that shrink per call: no unbounded cache
                self._timeouts.clear()
            timeout = self._timeouts[timeout_s] = timedelta(seconds=timeout_s)
        return timeout

    def _kept(self, response: Response) -> dict[str, str]:
        keep = self._keep
        return {name: value for name, value in response.headers.items() if name.startswith(keep)}

    async def post(
        self, path: str, body: bytes, *, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self._base_url + path
        client = self._client
        if client is None or self._loop is not asyncio.get_running_loop():
            client = await self._current()
        request = client.post(url).body_bytes(body).timeout(self._timeout(timeout_s))
        if headers:
            request = request.headers(_sensitive(headers))
        try:
            response = await request.build().send()
            raw = bytes(await response.bytes())
        except PyreqwestError as exc:
            raise _translated(exc) from None
        return Reply(response.status, self._kept(response), raw)

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, body: bytes, *, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[Streamed]:
        """POST ``body`` and yield the answer while its body is still arriving."""
        client = self._client
        if client is None or self._loop is not asyncio.get_running_loop():
            client = await self._current()
        request = (
            client.post(self._base_url + path)
            .body_bytes(body)
            .timeout(self._timeout(timeout_s))
            .headers(_sensitive(_SSE if headers is None else {**_SSE, **headers}))
            # pyreqwest's default (64 KiB) holds the answer back until that much arrived:
            # a stream of small events would reach the caller only as it ended
            .streamed_read_buffer_limit(1)
            .build_streamed()
        )
        try:
            response = await request.__aenter__()
        except PyreqwestError as exc:
            raise _translated(exc) from None
        try:
            yield Streamed(response.status, self._kept(response), _chunks(response))
        finally:
            await request.__aexit__(None, None, None)  # an unread body is dropped, not pooled

_SSE = {"accept": "text/event-stream"}

RUNTIME_THREAD = "pyreqwest"  # the name pyreqwest gives its Tokio runtime's threads


def batch_scheduled(prefix: str) -> int:
    """Schedule this process's threads named ``prefix``... as ``SCHED_BATCH`` (Linux; a
    no-op elsewhere); returns how many were changed.

    Woken by a socket, pyreqwest's runtime thread would otherwise preempt the event loop's
    thread on a busy core, about once per response: two context switches, each leaving
    the other thread's caches cold, and the loop holding the GIL the woken thread needs.
    A batch thread is never woken ahead of a running one; it runs when the loop's thread
    blocks (it waits for answers) or its time slice ends, and handles the responses that
    arrived meanwhile together. A core to spare runs it at once, as before. On one core
    this takes about half the runtime thread's CPU a call away (what ``fanout run`` costs
    beyond its parts: benchmarks/overhead.py). A policy this process may not set (a
    sandbox) is left as it is.
    """
    if not hasattr(os, "SCHED_BATCH"):
        return 0
    changed = 0
    for tid in named_threads(prefix):
        try:
            if os.sched_getscheduler(tid) == os.SCHED_OTHER:
                os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
                changed += 1
        except OSError:  # the thread ended, or the policy is not ours to set
            continue
    return changed


def named_threads(prefix: str) -> list[int]:
    """The ids of this process's threads whose name starts with ``prefix`` (Linux's
    ``/proc``; none where it is missing)."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return []
    found = []
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="utf-8") as comm:
                if comm.read().startswith(prefix):
                    found.append(int(tid))
        except OSError:  # the thread ended
            continue
    return found


_PLAIN = frozenset({"content-type", "accept"})


def _sensitive(headers: Mapping[str, str]) -> HeaderMap:
    """``headers`` with every value but the content types masked in reprs."""
    marked = HeaderMap()
    for name, value in headers.items():
        marked.insert(name, value, is_sensitive=name.lower() not in _PLAIN)
    return marked


def _translated(exc: PyreqwestError) -> Exception:
    """pyreqwest's error as the seam's: a connect that timed out was never sent."""
    if isinstance(exc, ConnectTimeoutError | PoolTimeoutError):
        return TransportTimeout(sent=False)
    if isinstance(exc, RequestTimeoutError):
        return TransportTimeout()
    return TransportBroken(f"{type(exc).__name__}: {exc}")


async def _chunks(response: Response) -> AsyncIterator[bytes]:
    reader = response.body_reader
    try:
        while (chunk := await reader.read_chunk()) is not None:
            yield bytes(chunk)
    except PyreqwestError as exc:
        raise _translated(exc) from None

