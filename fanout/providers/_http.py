"""The HTTP seam under the providers: one POST, its timeouts and its two failure kinds.

``AiohttpTransport`` (``_aiohttp.py``) is the hot path; ``ReqwestTransport``
(``_reqwest.py``, ``http_client = "reqwest"``) the faster one a provider may choose
(pyreqwest: a third of aiohttp's client CPU a call in the same bare loop, but a
cancelled request runs on to its answer or timeout); ``HttpxTransport``
(``_httpx.py``) wraps any ``httpx.AsyncBaseTransport`` (``httpx.MockTransport`` in the
wire-format tests). Each is imported when a provider first needs it: aiohttp costs
~150 ms of import and httpx ~60 ms that ``import fanout`` need not pay.
Each turns its library's errors into :class:`TransportTimeout` and
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

import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import httpx

__all__ = [
    "HttpClient",
    "HttpTransport",
    "Reply",
    "Streamed",
    "StreamingTransport",
    "TransportBroken",
    "TransportTimeout",
    "env_proxy",
    "make_transport",
]

JSON = "application/json"


class TransportTimeout(Exception):
    """Connecting or reading took longer than its timeout; ``sent``: whether the request
    may have reached the server (``False`` only for a connect that timed out)."""

    def __init__(self, *, sent: bool = True) -> None:
        super().__init__("timed out connecting" if not sent else "timed out")
        self.sent = sent


class TransportBroken(Exception):
    """The connection failed or broke (refused, reset, a body cut short); ``str`` says how."""


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status, the headers asked for (names lower-cased), the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Streamed:
    """An HTTP answer being read: status, the headers asked for, and the body's bytes as
    they arrive (``chunks`` raises :class:`TransportTimeout` or :class:`TransportBroken`
    if the connection stalls past the timeout or breaks mid-body)."""

    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]


class HttpTransport(Protocol):
    """POSTs a JSON body to ``base_url + path``; raises only the two errors above.

    ``timeout_s`` bounds the whole call (waiting for a pooled connection, connecting,
    sending, reading); connecting alone is bounded by ``connect_timeout_s`` as well.
    ``headers`` are added to this request only (a W3C ``traceparent``, a signature over
    the body as SigV4's); the path is sent as given (already quoted).
    """

    async def post(
        self, path: str, body: bytes, *, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> Reply: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class StreamingTransport(Protocol):
    """A transport that can also read a body as it arrives (server-sent events)."""

    def stream(
        self, path: str, body: bytes, *, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> AbstractAsyncContextManager[Streamed]: ...


def env_proxy(base_url: str) -> str | None:
    """The proxy the environment names for ``base_url`` (``HTTPS_PROXY``, ``NO_PROXY``, ...)."""
    url = urllib.parse.urlsplit(base_url)
    if not url.hostname or urllib.request.proxy_bypass(url.hostname):
        return None
    return urllib.request.getproxies().get(url.scheme)


HttpClient = Literal["reqwest", "aiohttp"]
"""The library under a provider's hot path (``http_client`` in its config)."""


def make_transport(
    base_url: str,
    headers: dict[str, str],
    keep: tuple[str, ...],
    max_connections: int,
    connect_timeout_s: float,
    transport: httpx.AsyncBaseTransport | HttpTransport | HttpClient | None,
) -> HttpTransport:
    """A provider's transport: ``transport`` itself, an httpx transport wrapped (tests'
    ``MockTransport``), or the hot path over the named library (``None``: aiohttp)."""
    if transport is None or isinstance(transport, str):
        hot: type[HttpTransport]
        if transport == "reqwest":
            from fanout._extras import require

            require("http_client = reqwest", "pyreqwest", extra="reqwest")
            from fanout.providers._reqwest import ReqwestTransport

            hot = ReqwestTransport
        else:
            from fanout.providers._aiohttp import AiohttpTransport

            hot = AiohttpTransport
        return hot(
            base_url,
            headers=headers,
            keep=keep,
            max_connections=max_connections,
            connect_timeout_s=connect_timeout_s,
        )
    if hasattr(transport, "handle_async_request"):  # an httpx transport
        from fanout.providers._httpx import HttpxTransport

        return HttpxTransport(
            base_url,
            headers=headers,
            keep=keep,
            connect_timeout_s=connect_timeout_s,
            transport=transport,  # type: ignore[arg-type]  # checked above
        )
    return transport
