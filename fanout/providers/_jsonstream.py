"""One streamed call of a non-OpenAI protocol: the POST, its deadline, the body read as it
arrives into a protocol's :class:`StreamDecoder`, and a stream that breaks off as
:class:`~fanout.errors.StreamCut`.

What the protocols share: Anthropic, Gemini and Azure OpenAI answer with server-sent
events, Bedrock with AWS event-stream frames; each has its own decoder
(``_anthropic_stream.py``, ``_gemini_stream.py``, ``_bedrock_stream.py``,
``_azure_stream.py``) that hears the body's bytes, tells each
piece of text to ``on_delta``, raises the provider error an error event stands for, and
puts the whole reply together as the non-streamed path would have given it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import orjson

from fanout.errors import (
    ConfigError,
    InvalidResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    StreamCut,
)
from fanout.providers._deadline import CallDeadline
from fanout.providers._http import StreamingTransport, TransportBroken, TransportTimeout
from fanout.types import (
    ChatRequest,
    ChatResponse,
    Usage,
    estimate_prompt_tokens,
    estimate_text_tokens,
)

if TYPE_CHECKING:
    from fanout.providers._jsonapi import JsonApiProvider

__all__ = ["ErrorFactory", "StreamDecoder", "normalised_arguments", "stream_call"]

ErrorFactory = Callable[[int, bytes, dict[str, str]], ProviderError]
"""``(status, body, headers) -> error``: what an error event mid-stream stands for,
classified as the same failure answered as a status would be."""


class StreamDecoder(Protocol):
    """A protocol's streamed reply, put together as its bytes arrive.

    ``feed`` raises ``ValueError`` for an event that is not what the protocol promises
    and a :class:`ProviderError` for an error event; ``done``: the last event came (stop
    reading); ``complete``: what arrived is the whole reply (Gemini has no last event:
    a reply is whole once a candidate finished and the body ended); ``chunks``: pieces
    of content heard so far."""

    @property
    def chunks(self) -> int: ...

    def feed(self, data: bytes) -> None: ...

    @property
    def done(self) -> bool: ...

    @property
    def complete(self) -> bool: ...

    def response(self, headers: dict[str, str]) -> ChatResponse: ...


async def stream_call(
    provider: JsonApiProvider,
    request: ChatRequest,
    path: str,
    body: bytes,
    headers: Mapping[str, str] | None,
    decoder: StreamDecoder,
    timeout_s: float | None,
) -> ChatResponse:
    """POST ``body`` to ``path`` and read the answer into ``decoder``; its reply.

    ``timeout_s`` bounds the whole stream, as it bounds a whole non-streamed call. A
    stream that breaks off after its 200 (the connection, or a body that ends before
    the reply is whole) raises :class:`StreamCut`: retryable, what arrived discarded. A
    stream that carried no usage (a proxy that drops it) is settled by estimate, as
    OpenAI's without ``include_usage``."""
    http = provider._http
    name = provider.name
    if not isinstance(http, StreamingTransport):
        raise ConfigError(f"{name}: its transport {http!r} cannot stream")
    timeout = timeout_s if timeout_s is not None else provider.timeout_s
    connect = min(provider.connect_timeout_s, timeout)
    started = False  # the 200 arrived: a break from here on cuts the stream
    kept: dict[str, str] = {}
    try:
        async with (
            CallDeadline(connect + timeout),  # as every call: the deadline decides
            http.stream(
                path, body, timeout_s=2 * (connect + timeout) + 1.0, headers=headers
            ) as streamed,
        ):
            if streamed.status != 200:
                raw = b"".join([c async for c in streamed.chunks])
                raise provider._error(streamed.status, raw, streamed.headers)
            kept, started = streamed.headers, True
            async for chunk in streamed.chunks:
                decoder.feed(chunk)
                if decoder.done:
                    break
    except (TimeoutError, TransportTimeout) as exc:
        raise ProviderTimeout(
            f"{name}: no answer within {timeout:.1f}s",
            provider=name,
            sent=not (isinstance(exc, TransportTimeout) and not exc.sent),
        ) from None
    except TransportBroken as exc:
        why = provider._scrub(str(exc))
        if not started:
            raise ProviderConnectionError(
                f"{name}: connection failed: {why}", provider=name
            ) from None
        if not decoder.complete:
            raise _cut(name, decoder, why) from None
    except ValueError as exc:
        raise InvalidResponse(
            f"{name}: malformed stream event: {provider._scrub(str(exc))}", provider=name
        ) from None
    if not decoder.complete:
        raise _cut(name, decoder, "the body ended before the reply's last event")
    return _settled(decoder.response(kept), request)


def _settled(response: ChatResponse, request: ChatRequest) -> ChatResponse:
    """``response``, its usage estimated if the stream carried none."""
    if response.usage.total_tokens:
        return response
    estimated = Usage(
        estimate_prompt_tokens(request.messages, request.tools),
        estimate_text_tokens(response.content or ""),
    )
    return dataclasses.replace(response, usage=estimated)


def _cut(name: str, decoder: StreamDecoder, why: str) -> StreamCut:
    return StreamCut(
        f"{name}: the stream broke off after {decoder.chunks} chunks ({why}); "
        "what arrived was discarded",
        provider=name,
        chunks=decoder.chunks,
    )


def normalised_arguments(pieces: list[str]) -> str:
    """A streamed tool call's argument fragments as the non-streamed path writes the
    arguments (compact JSON); text that is not JSON is kept as it came."""
    text = "".join(pieces)
    if not text.strip():
        return "{}"
    try:
        return orjson.dumps(orjson.loads(text)).decode()
    except ValueError:
        return text
