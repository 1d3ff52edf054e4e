"""``HttpxTransport``: the provider's POST over httpx (tests plug ``httpx.MockTransport`` in)."""

from __future__ import annotations

import asyncio

import httpx

from fanout.providers._http import JSON, Reply, TransportBroken, TransportTimeout

__all__ = ["HttpxTransport"]


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
            headers={"content-type": JSON, "accept": JSON, **headers},
            transport=transport,
        )

    async def post(
        self, path: str, body: bytes, *, timeout_s: float, headers: dict[str, str] | None = None
    ) -> Reply:
        timeout = httpx.Timeout(timeout_s, connect=min(self.connect_timeout_s, timeout_s))
        try:
            async with asyncio.timeout(timeout_s):  # httpx's timeouts bound each step only
                response = await self._client.post(
                    path, content=body, timeout=timeout, headers=headers
                )
                raw = response.content
        except (httpx.ConnectTimeout, httpx.PoolTimeout):
            raise TransportTimeout(sent=False) from None
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
