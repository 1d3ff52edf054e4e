"""``OpenAIProvider``: chat completions against any OpenAI-compatible base URL."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import orjson

from fanout.errors import (
    ConfigError,
    InvalidResponse,
    ProviderConnectionError,
    ProviderHTTPError,
    ProviderTimeout,
    RateLimited,
)
from fanout.limits import RateLimitHeaders
from fanout.providers._http import HttpTransport, TransportBroken, TransportTimeout
from fanout.types import ChatRequest, ChatResponse, ToolCall, Usage

if TYPE_CHECKING:
    import httpx

__all__ = ["OpenAIProvider"]

_KEPT_HEADERS = ("x-ratelimit-", "retry-after", "anthropic-ratelimit-", "date")
_KEY_LIKE = re.compile(r"\b(sk|pk|key)-[A-Za-z0-9_\-*]{6,}")


class OpenAIProvider:
    """An OpenAI-compatible ``/chat/completions`` endpoint (vendors, vLLM, llama.cpp, LiteLLM).

    Connections are pooled over aiohttp (keep-alive, up to ``max_connections``; a
    connect timeout, and the call's ``timeout_s`` bounding the whole call, the wait for
    a pooled connection included): see :mod:`fanout.providers._http` for why aiohttp
    and not httpx. The API key is held privately and scrubbed from every error
    message; it is never in a repr. ``transport`` replaces the network: an
    ``httpx.AsyncBaseTransport`` (``httpx.MockTransport`` in tests) or any
    :class:`~fanout.providers._http.HttpTransport`.
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
        transport: httpx.AsyncBaseTransport | HttpTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http: HttpTransport
        if transport is None:
            from fanout.providers._aiohttp import AiohttpTransport

            self._http = AiohttpTransport(
                self.base_url,
                headers=headers,
                keep=_KEPT_HEADERS,
                max_connections=max_connections,
                connect_timeout_s=connect_timeout_s,
            )
        elif hasattr(transport, "handle_async_request"):  # an httpx transport
            from fanout.providers._httpx import HttpxTransport

            self._http = HttpxTransport(
                self.base_url,
                headers=headers,
                keep=_KEPT_HEADERS,
                connect_timeout_s=connect_timeout_s,
                transport=transport,  # type: ignore[arg-type]  # checked above
            )
        else:
            self._http = transport

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
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        try:
            reply = await self._http.post("/chat/completions", body, timeout_s=timeout)
        except TransportTimeout:
            raise ProviderTimeout(
                f"{self.name}: no answer within {timeout:.1f}s", provider=self.name
            ) from None
        except TransportBroken as exc:
            raise ProviderConnectionError(
                f"{self.name}: connection failed: {self._scrub(str(exc))}", provider=self.name
            ) from None
        if reply.status != 200:
            raise self._http_error(reply.status, reply.body, reply.headers)
        return self._parse(reply.body, reply.headers)

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

    def _http_error(
        self, status: int, raw: bytes, headers: dict[str, str]
    ) -> ProviderHTTPError | RateLimited:
        detail, code = _error_detail(raw)
        text = self._scrub(f"{self.name}: HTTP {status}: {detail}")
        if status == 429:
            retry_after = RateLimitHeaders.parse(headers).retry_after_s
            return RateLimited(text, provider=self.name, retry_after_s=retry_after, headers=headers)
        return ProviderHTTPError(
            text,
            provider=self.name,
            status_code=status,
            content_filter=code == "content_filter",
            headers=headers,
        )

    def _scrub(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return _KEY_LIKE.sub("***", text)

    async def aclose(self) -> None:
        await self._http.aclose()

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


def _error_detail(raw: bytes) -> tuple[str, str | None]:
    try:
        data = orjson.loads(raw)
        error = data.get("error", data) if isinstance(data, dict) else {}
        if isinstance(error, dict):
            return str(error.get("message") or error)[:300], error.get("code") or error.get("type")
        return str(error)[:300], None
    except ValueError:
        return raw[:200].decode("utf-8", "replace"), None
