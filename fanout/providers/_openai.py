"""``OpenAIProvider``: chat completions against any OpenAI-compatible base URL."""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING

import orjson
from pydantic import SecretStr

from fanout.errors import (
    ConfigError,
    InvalidResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    StreamCut,
)
from fanout.providers._deadline import CallDeadline, post_within
from fanout.providers._errors import KEPT_HEADERS, error_for, scrub
from fanout.providers._http import (
    HttpClient,
    HttpTransport,
    StreamingTransport,
    TransportBroken,
    TransportTimeout,
    make_transport,
)
from fanout.providers._openai_stream import StreamAssembler
from fanout.providers._propagate import CALL_HEADERS
from fanout.providers._sse import SSEParser
from fanout.types import (
    MODALITIES,
    ChatRequest,
    ChatResponse,
    EmbedRequest,
    EmbedResponse,
    ToolCall,
    Usage,
    estimate_prompt_tokens,
    estimate_text_tokens,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["OpenAIProvider", "completion_usage"]


class OpenAIProvider:
    """An OpenAI-compatible ``/chat/completions`` endpoint (vendors, vLLM, llama.cpp, LiteLLM).

    Connections are pooled over aiohttp (keep-alive, up to ``max_connections``): see
    :mod:`fanout.providers._http` for why aiohttp and not httpx. ``timeout_s`` is the
    provider's time to answer (connecting has ``connect_timeout_s`` of its own), and a
    response that arrived while the event loop was busy is read rather than timed out
    (:class:`CallDeadline`; the transport's own timeout is only a backstop). The API key
    is held as a ``SecretStr`` until the header is built, scrubbed from every error
    message and never in a repr. ``transport`` replaces the network: an
    ``httpx.AsyncBaseTransport`` (``httpx.MockTransport`` in tests) or any
    :class:`~fanout.providers._http.HttpTransport`.

    Besides ``complete``: ``stream`` (server-sent events, usage from the final event
    ``stream_options.include_usage`` asks for) and ``embed`` (``/embeddings``, up to
    ``max_inputs`` inputs a request). ``accepts``: the content kinds it sends on (all of
    them, as OpenAI's protocol carries; a model's ``modalities`` narrows it in config).
    """

    accepts = frozenset(MODALITIES)
    max_inputs = 2048  # OpenAI's cap on the inputs of one embeddings request

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str | None = None,
        max_connections: int = 256,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | HttpTransport | HttpClient | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._api_key = SecretStr(api_key) if api_key else None
        self._secrets = tuple(s for s in secrets if s)  # header and query values from env
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        suffix = "?" + urllib.parse.urlencode(dict(query)) if query else ""
        self._completions = "/chat/completions" + suffix
        self._embeddings = "/embeddings" + suffix
        headers = {
            **({"authorization": f"Bearer {api_key}"} if api_key else {}),
            **(headers or {}),
        }
        self._http: HttpTransport
        self._http = make_transport(
            self.base_url, headers, KEPT_HEADERS, max_connections, connect_timeout_s, transport
        )

    @classmethod
    def from_env(
        cls,
        name: str,
        *,
        base_url: str,
        api_key_env: str | None,
        environ: Mapping[str, str] | None = None,
        **kwargs: float | int,
    ) -> OpenAIProvider:
        """Reads the key from the environment variable named ``api_key_env``."""
        env = os.environ if environ is None else environ
        key = None
        if api_key_env:
            key = env.get(api_key_env)
            if not key:
                raise ConfigError(
                    f"providers.{name}.api_key_env = {api_key_env!r}, but that environment "
                    "variable is not set; export it (the key never goes in the config file)"
                )
        return cls(name, base_url=base_url, api_key=key, **kwargs)  # type: ignore[arg-type]

    async def complete(
        self, request: ChatRequest, *, timeout_s: float | None = None
    ) -> ChatResponse:
        body = orjson.dumps(_request_body(request))
        # what _guarded does, inline: the per-call path pays no generator-based context
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        connect = min(self.connect_timeout_s, timeout)
        try:
            reply = await post_within(  # with a traceparent, where the run sends one
                self._http, self._completions, body, connect + timeout, CALL_HEADERS.get()
            )
        except (TimeoutError, TransportTimeout, TransportBroken) as exc:
            raise self._transport_error(exc, timeout) from None
        if reply.status != 200:
            raise self._http_error(reply.status, reply.body, reply.headers)
        return self._parse(reply.body, reply.headers)

    @contextlib.asynccontextmanager
    async def _guarded(self, timeout_s: float | None) -> AsyncIterator[tuple[float, float]]:
        """The call's deadline, and the transport's errors as provider errors; yields the
        timeout and the transport's backstop timeout."""
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        connect = min(self.connect_timeout_s, timeout)
        deadline = CallDeadline(connect + timeout)
        try:
            async with deadline:
                # The transport's own timeout is a backstop past the latest the deadline
                # can move to (twice its limit), so the deadline decides: a timer of the
                # transport's, late after a busy loop, would throw an arrived answer away.
                yield timeout, 2 * (connect + timeout) + 1.0
        except (TimeoutError, TransportTimeout, TransportBroken) as exc:
            raise self._transport_error(exc, timeout) from None

    def _transport_error(self, exc: Exception, timeout: float) -> ProviderError:
        """A transport's failure (or the deadline's) as the provider error it is."""
        if isinstance(exc, TransportBroken):
            return ProviderConnectionError(
                f"{self.name}: connection failed: {self._scrub(str(exc))}", provider=self.name
            )
        return ProviderTimeout(
            f"{self.name}: no answer within {timeout:.1f}s",
            provider=self.name,
            # a connect that timed out sent nothing: the provider cannot have billed it
            sent=not (isinstance(exc, TransportTimeout) and not exc.sent),
        )

    async def stream(
        self,
        request: ChatRequest,
        *,
        on_delta: Callable[[str], None],
        timeout_s: float | None = None,
    ) -> ChatResponse:
        """The reply as server-sent events; ``on_delta`` hears each text delta. A stream
        that breaks off (the connection, or a body ending before ``[DONE]``) raises
        :class:`StreamCut`; the caller discards what it heard."""
        http = self._http
        if not isinstance(http, StreamingTransport):
            raise ConfigError(f"{self.name}: its transport {http!r} cannot stream")
        body = _request_body(request)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        assembler = StreamAssembler(on_delta)
        parser = SSEParser()
        started = False  # the 200 arrived: a break from here on cuts the stream
        try:
            async with (
                self._guarded(timeout_s) as (_, backstop),
                http.stream(
                    self._completions,
                    orjson.dumps(body),
                    timeout_s=backstop,
                    headers=CALL_HEADERS.get(),
                ) as streamed,
            ):
                if streamed.status != 200:
                    raw = b"".join([c async for c in streamed.chunks])
                    raise self._http_error(streamed.status, raw, streamed.headers)
                headers, started = streamed.headers, True
                async for chunk in streamed.chunks:
                    for data in parser.feed(chunk):
                        assembler.event(data)
                    if assembler.done:
                        break
        except ProviderConnectionError as exc:
            if not started:
                raise
            raise self._cut(assembler, str(exc)) from None
        except ValueError as exc:
            raise InvalidResponse(
                f"{self.name}: malformed stream event: {exc}", provider=self.name
            ) from None
        if not assembler.done:
            raise self._cut(assembler, "the body ended before [DONE]")
        usage = assembler.usage
        if usage is None:  # a server that ignores include_usage: settled by estimate
            usage = Usage(
                estimate_prompt_tokens(request.messages, request.tools),
                estimate_text_tokens(assembler.text),
            )
        return assembler.response(usage, headers)

    def _cut(self, assembler: StreamAssembler, why: str) -> StreamCut:
        return StreamCut(
            f"{self.name}: the stream broke off after {assembler.chunks} chunks ({why}); "
            "what arrived was discarded",
            provider=self.name,
            chunks=assembler.chunks,
        )

    async def embed(
        self, request: EmbedRequest, *, timeout_s: float | None = None
    ) -> EmbedResponse:
        """``POST /embeddings`` with every input of ``request``; vectors in input order."""
        payload: dict[str, object] = {
            "model": request.model,
            "input": list(request.inputs),
            "encoding_format": "float",
        }
        if request.dimensions is not None:
            payload["dimensions"] = request.dimensions
        async with self._guarded(timeout_s) as (_, backstop):
            reply = await self._http.post(
                self._embeddings, orjson.dumps(payload), timeout_s=backstop
            )
        if reply.status != 200:
            raise self._http_error(reply.status, reply.body, reply.headers)
        try:
            data = orjson.loads(reply.body)
            rows = sorted(data["data"], key=lambda row: int(row["index"]))
            vectors = tuple(tuple(float(x) for x in row["embedding"]) for row in rows)
            usage = data.get("usage") or {}
            tokens = int(usage.get("prompt_tokens") or usage.get("total_tokens") or 0)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidResponse(
                f"{self.name}: malformed embeddings response: missing or bad field {exc}",
                provider=self.name,
            ) from None
        if len(vectors) != len(request.inputs):
            raise InvalidResponse(
                f"{self.name}: {len(vectors)} vectors for {len(request.inputs)} inputs",
                provider=self.name,
            )
        return EmbedResponse(vectors, Usage(tokens, 0), str(data.get("model") or ""), reply.headers)

    def _parse(self, raw: bytes, headers: dict[str, str]) -> ChatResponse:
        where = f"{self.name}: malformed response"
        try:
            data = orjson.loads(raw)
        except ValueError:
            raise InvalidResponse(
                f"{where}: body is not JSON ({raw[:80]!r})", provider=self.name
            ) from None
        try:
            choice = data["choices"][0]
            message = choice["message"]
            usage = data["usage"]
            calls = tuple(
                ToolCall(
                    id=str(c["id"]),
                    name=str(c["function"]["name"]),
                    arguments=str(c["function"].get("arguments") or "{}"),
                )
                for c in message.get("tool_calls") or ()
            )
            content = message.get("content")
            return ChatResponse(
                content=content if isinstance(content, str) else None,
                usage=completion_usage(usage),
                finish_reason=str(choice.get("finish_reason") or "stop"),
                tool_calls=calls,
                model=str(data.get("model") or ""),
                headers=headers,
                id=str(data.get("id") or ""),
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            missing = "usage" if isinstance(data, dict) and "usage" not in data else str(exc)
            raise InvalidResponse(
                f"{where}: missing or bad field {missing}", provider=self.name
            ) from None

    def _http_error(self, status: int, raw: bytes, headers: dict[str, str]) -> ProviderError:
        return error_for(self.name, status, raw, headers, scrub=self._scrub)

    def _scrub(self, text: str) -> str:
        key = self._api_key.get_secret_value() if self._api_key is not None else None
        return scrub(text, (key, *self._secrets) if key else self._secrets)

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"OpenAIProvider({self.name!r}, base_url={self.base_url!r}, api_key=***)"


def completion_usage(usage: dict[str, object]) -> Usage:
    """A chat completion's ``usage``, with the prompt tokens read from the cache
    (``prompt_tokens_details.cached_tokens``, OpenAI's and Azure's automatic caching)."""
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        int(usage["prompt_tokens"]),  # type: ignore[call-overload]
        int(usage.get("completion_tokens") or 0),  # type: ignore[call-overload]
        int(cached or 0),
    )


def _request_body(request: ChatRequest) -> dict[str, object]:
    body: dict[str, object] = {
        **(request.options or {}),  # passed through; the fields below are fanout's own
        "model": request.model,
        "messages": request.messages,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
    }
    if request.tools:
        body["tools"] = [t.to_wire() for t in request.tools]
    if request.response_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": request.response_schema_name,
                "schema": request.response_schema,
            },
        }
    return body
