"""One JSON POST of a :class:`~fanout.providers._jsonapi.JsonApiProvider` outside its chat
call (the embeddings requests): the same deadline, transport failures as provider errors,
the protocol's own error mapping, and secrets scrubbed, as ``complete`` has them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from fanout.errors import ProviderConnectionError, ProviderTimeout
from fanout.providers._deadline import post_within
from fanout.providers._http import TransportBroken, TransportTimeout
from fanout.providers._jsonapi import malformed

if TYPE_CHECKING:
    from fanout.providers._jsonapi import JsonApiProvider

__all__ = ["post_json"]


async def post_json(
    provider: JsonApiProvider,
    path: str,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float | None = None,
) -> tuple[Any, dict[str, str]]:
    """POST ``body`` to ``path``: the 200's parsed JSON and its headers, or the provider
    error its status (or a failed transport, or a body that is not JSON) means."""
    name = provider.name
    timeout = timeout_s if timeout_s is not None else provider.timeout_s
    connect = min(provider.connect_timeout_s, timeout)
    try:
        reply = await post_within(provider._http, path, body, connect + timeout, headers)
    except (TimeoutError, TransportTimeout) as exc:
        raise ProviderTimeout(
            f"{name}: no answer within {timeout:.1f}s",
            provider=name,
            sent=not (isinstance(exc, TransportTimeout) and not exc.sent),
        ) from None
    except TransportBroken as exc:
        raise ProviderConnectionError(
            f"{name}: connection failed: {provider._scrub(str(exc))}", provider=name
        ) from None
    if reply.status != 200:
        raise provider._error(reply.status, reply.body, reply.headers)
    try:
        return orjson.loads(reply.body), reply.headers
    except ValueError:
        raise malformed(name, f"body is not JSON ({reply.body[:80]!r})") from None
