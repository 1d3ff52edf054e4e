"""``JsonApiProvider``: one JSON POST per call, for every wire protocol but OpenAI's own.

The part all of them share: the transport (aiohttp, or an httpx transport in tests),
the call's deadline, turning transport failures into provider errors, and keeping
secrets (keys, tokens, header and query values read from the environment) out of every
message and repr. A protocol says only how a request is written (:meth:`_request`),
how a reply is read (:meth:`_reply`) and what a failed status means (:meth:`_error`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING

import orjson

from fanout.errors import (
    InvalidResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
)
from fanout.providers._deadline import post_within
from fanout.providers._errors import KEPT_HEADERS, error_for, scrub
from fanout.providers._http import (
    HttpClient,
    HttpTransport,
    TransportBroken,
    TransportTimeout,
    make_transport,
)
from fanout.types import ChatRequest, ChatResponse

if TYPE_CHECKING:
    import httpx

__all__ = ["JsonApiProvider", "malformed"]


class JsonApiProvider:
    """A provider that POSTs one JSON body per call to ``base_url + path``.

    ``headers`` go with every call; ``query`` is appended to every path; ``secrets`` are
    the values scrubbed from error messages (the key and whatever came from the
    environment). ``transport`` replaces the network as in
    :class:`~fanout.providers.OpenAIProvider`.
    """

    protocol = "json"
    keep: tuple[str, ...] = KEPT_HEADERS
    # the content kinds it maps onto its wire (text only, until image and audio blocks
    # are mapped per protocol): a step sending others is refused before any call
    accepts: frozenset[str] = frozenset({"text"})

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        secrets: tuple[str, ...] = (),
        max_connections: int = 256,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | HttpTransport | HttpClient | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._secrets = tuple(s for s in secrets if s)
        self._query = urllib.parse.urlencode(dict(query or {}))
        self._http = make_transport(
            self.base_url, dict(headers or {}), self.keep, max_connections, connect_timeout_s,
            transport,
        )  # fmt: skip

    def _path(self, path: str, query: Mapping[str, str] | None = None) -> str:
        """``path`` with ``query`` and the configured query parameters."""
        parts = [p for p in (urllib.parse.urlencode(dict(query or {})), self._query) if p]
        return f"{path}?{'&'.join(parts)}" if parts else path

    def _request(self, request: ChatRequest) -> tuple[str, bytes, dict[str, str] | None]:
        """``(path with query, body, this call's own headers)``."""
        raise NotImplementedError

    def _reply(self, data: object, headers: dict[str, str]) -> ChatResponse:
        """The response from a 200's parsed JSON; ``KeyError``/``TypeError``/``ValueError``
        on a body that is not what the API promises."""
        raise NotImplementedError

    def _error(self, status: int, raw: bytes, headers: dict[str, str]) -> ProviderError:
        return error_for(self.name, status, raw, headers, scrub=self._scrub)

    async def complete(
        self, request: ChatRequest, *, timeout_s: float | None = None
    ) -> ChatResponse:
        path, body, call_headers = self._request(request)
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        connect = min(self.connect_timeout_s, timeout)
        try:
            reply = await post_within(self._http, path, body, connect + timeout, call_headers)
        except (TimeoutError, TransportTimeout) as exc:
            raise ProviderTimeout(
                f"{self.name}: no answer within {timeout:.1f}s",
                provider=self.name,
                sent=not (isinstance(exc, TransportTimeout) and not exc.sent),
            ) from None
        except TransportBroken as exc:
            raise ProviderConnectionError(
                f"{self.name}: connection failed: {self._scrub(str(exc))}", provider=self.name
            ) from None
        if reply.status != 200:
            raise self._error(reply.status, reply.body, reply.headers)
        try:
            data = orjson.loads(reply.body)
        except ValueError:
            raise malformed(self.name, f"body is not JSON ({reply.body[:80]!r})") from None
        try:
            return self._reply(data, reply.headers)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise malformed(self.name, f"missing or bad field {self._scrub(str(exc))}") from None

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, base_url={self.base_url!r}, secrets=***)"


def malformed(provider: str, what: str) -> InvalidResponse:
    return InvalidResponse(f"{provider}: malformed response: {what}", provider=provider)
