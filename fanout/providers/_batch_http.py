"""``BatchHttp``: what the Batch-API clients share over httpx.

One client for their few, large calls (uploads, downloads, polls); JSON answers checked;
the transport's failures raised as the provider errors; every secret scrubbed from the
messages. Each vendor's class adds its payloads, states and error shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from fanout.errors import InvalidResponse, ProviderConnectionError, ProviderError, ProviderTimeout
from fanout.providers._errors import error_for, response_headers, scrub

__all__ = ["BatchHttp"]


class BatchHttp:
    """``base_url``'s Batch API over one ``httpx.AsyncClient`` sending ``headers`` and
    ``query`` with every call; ``secrets`` (the key, secret header and query values) never
    reach an error message or a repr. ``transport`` replaces the network (tests)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        headers: Mapping[str, str],
        query: Mapping[str, str] | None = None,
        secrets: tuple[str | None, ...] = (),
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._secrets = tuple(s for s in secrets if s)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=dict(headers),
            params=dict(query or {}),
            timeout=httpx.Timeout(timeout_s, connect=10.0),  # bodies of hundreds of MB
            transport=transport,
        )

    def _refused(self, response: httpx.Response) -> ProviderError:
        """The error a non-200 answer raises (as the online API's would be)."""
        headers = response_headers(response.headers)
        return error_for(
            self.name, response.status_code, response.content, headers, scrub=self._scrub
        )

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        raw = await self._send(method, path, **kwargs)
        try:
            data = orjson.loads(raw)
        except ValueError:
            raise InvalidResponse(
                f"{self.name}: {method} {path}: body is not JSON ({raw[:80]!r})", provider=self.name
            ) from None
        if not isinstance(data, dict):
            raise InvalidResponse(
                f"{self.name}: {method} {path}: not an object", provider=self.name
            )
        return data

    async def _send(self, method: str, path: str, **kwargs: Any) -> bytes:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ProviderTimeout(
                f"{self.name}: {method} {path}: no answer in time", provider=self.name
            ) from None
        except httpx.TransportError as exc:
            raise ProviderConnectionError(
                f"{self.name}: {method} {path}: {self._scrub(f'{type(exc).__name__}: {exc}')}",
                provider=self.name,
            ) from None
        if response.status_code != 200:
            raise self._refused(response)
        return response.content

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, base_url={self.base_url!r}, api_key=***)"
