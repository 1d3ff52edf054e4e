"""``OpenAIProvider``: chat completions against any OpenAI-compatible base URL over httpx."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

import httpx
from pydantic import SecretStr

from fanout.errors import (
    ConfigError,
    InvalidResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
)
from fanout.providers._deadline import CallDeadline
from fanout.providers._errors import error_for, response_headers
from fanout.types import ChatRequest, ChatResponse, ToolCall, Usage

__all__ = ["OpenAIProvider"]

# httpx errors raised before the request went out: the provider cannot have billed it
_NOT_SENT = (httpx.ConnectTimeout, httpx.PoolTimeout)
_KEY_LIKE = re.compile(r"\b(sk|pk|key)-[A-Za-z0-9_\-*]{6,}")


class OpenAIProvider:
    """An OpenAI-compatible ``/chat/completions`` endpoint (vendors, vLLM, llama.cpp, LiteLLM).

    Connections are kept alive, up to ``max_connections``, each in an
    ``httpx.AsyncClient`` of its own (made when first needed), and a call takes a client
    no other call is using, the last one freed first. One connection per pool, because
    httpx's pool misbehaves with more: it scans all its connections on every request (a
    single client fell from 1,200 to 160 requests/s between 8 and 64 connections in
    ``benchmarks/overhead.py``), and a request queued in it can starve. httpcore assigns
    a freed connection to every queued request at once and a request arriving meanwhile
    takes it, over and over, so under steady load an unlucky call waited for the pool
    timeout (30 s calls against an instant local server; ``tests/integration/
    test_soak.py``). With a free client per call, nothing ever queues there.

    ``timeout_s`` is the provider's time to answer, from when the request goes out
    (connecting has ``connect_timeout_s`` of its own); a response that arrived while the
    event loop was busy is read rather than timed out (:class:`CallDeadline`). The API
    key is held as a ``SecretStr`` until the header is built, scrubbed from every error
    message and never in a repr. ``transport`` replaces the network
    (``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str | None = None,
        max_connections: int = 256,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._api_key = SecretStr(api_key) if api_key else None
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_connections = max(1, max_connections)
        self._transport = transport
        # One TLS context for every client: building one loads the CA bundle (~85 ms each).
        self._tls: object = httpx.create_ssl_context() if transport is None else True
        self._clients: list[httpx.AsyncClient] = []
        self._busy: list[int] = []  # calls in flight per client
        self._free: list[int] = []  # clients no call is using, the last freed on top
        self._next = 0  # with every client busy (over max_connections): round robin

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

    def _client(self) -> int:
        """A client no call is using (made if need be); ``_done`` gives it back."""
        if self._free:
            index = self._free.pop()
        elif len(self._clients) < self.max_connections:
            key = self._api_key
            headers = {"authorization": f"Bearer {key.get_secret_value()}"} if key else {}
            self._clients.append(
                httpx.AsyncClient(
                    base_url=self.base_url,
                    headers=headers,  # httpx's repr of them masks the key
                    verify=self._tls,  # type: ignore[arg-type]
                    limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                    transport=self._transport,
                )
            )
            self._busy.append(0)
            index = len(self._clients) - 1
        else:
            index = self._next = (self._next + 1) % len(self._clients)
        self._busy[index] += 1
        return index

    def _done(self, index: int) -> None:
        self._busy[index] -= 1
        if not self._busy[index]:
            self._free.append(index)

    async def complete(
        self, request: ChatRequest, *, timeout_s: float | None = None
    ) -> ChatResponse:
        body = _request_body(request)
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        connect = min(self.connect_timeout_s, timeout)
        deadline = CallDeadline(connect + timeout)
        index = self._client()
        try:
            async with deadline:
                # httpx's own read timeout is only a backstop: the deadline decides
                response = await self._clients[index].post(
                    "/chat/completions",
                    json=body,
                    timeout=httpx.Timeout(connect + 2 * timeout, connect=connect),
                )
                raw = response.content
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ProviderTimeout(
                f"{self.name}: no answer within {timeout:.1f}s",
                provider=self.name,
                sent=not isinstance(exc, _NOT_SENT),
            ) from None
        except httpx.TransportError as exc:
            raise ProviderConnectionError(
                f"{self.name}: connection failed: {self._scrub(f'{type(exc).__name__}: {exc}')}",
                provider=self.name,
            ) from None
        finally:
            self._done(index)
        headers = response_headers(response.headers)
        if response.status_code != 200:
            raise self._http_error(response.status_code, raw, headers)
        return self._parse(raw, headers)

    def _parse(self, raw: bytes, headers: dict[str, str]) -> ChatResponse:
        where = f"{self.name}: malformed response"
        try:
            data = json.loads(raw)
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
                usage=Usage(int(usage["prompt_tokens"]), int(usage.get("completion_tokens") or 0)),
                finish_reason=str(choice.get("finish_reason") or "stop"),
                tool_calls=calls,
                model=str(data.get("model") or ""),
                headers=headers,
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            missing = "usage" if isinstance(data, dict) and "usage" not in data else str(exc)
            raise InvalidResponse(
                f"{where}: missing or bad field {missing}", provider=self.name
            ) from None

    def _http_error(self, status: int, raw: bytes, headers: dict[str, str]) -> ProviderError:
        return error_for(self.name, status, raw, headers, scrub=self._scrub)

    def _scrub(self, text: str) -> str:
        if self._api_key is not None:
            text = text.replace(self._api_key.get_secret_value(), "***")
        return _KEY_LIKE.sub("***", text)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()

    def __repr__(self) -> str:
        return f"OpenAIProvider({self.name!r}, base_url={self.base_url!r}, api_key=***)"


def _request_body(request: ChatRequest) -> dict[str, object]:
    body: dict[str, object] = {
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

