"""``OpenAIProvider``: chat completions against any OpenAI-compatible base URL."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import orjson
from pydantic import SecretStr

from fanout.errors import (
    ConfigError,
    InvalidResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
)
from fanout.providers._deadline import CallDeadline
from fanout.providers._errors import KEPT_HEADERS, error_for
from fanout.providers._http import HttpTransport, TransportBroken, TransportTimeout
from fanout.types import ChatRequest, ChatResponse, ToolCall, Usage

if TYPE_CHECKING:
    import httpx

__all__ = ["OpenAIProvider"]

_KEY_LIKE = re.compile(r"\b(sk|pk|key)-[A-Za-z0-9_\-*]{6,}")


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
        self._api_key = SecretStr(api_key) if api_key else None
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http: HttpTransport
        if transport is None:
            from fanout.providers._aiohttp import AiohttpTransport

            self._http = AiohttpTransport(
                self.base_url,
                headers=headers,
                keep=KEPT_HEADERS,
                max_connections=max_connections,
                connect_timeout_s=connect_timeout_s,
            )
        elif hasattr(transport, "handle_async_request"):  # an httpx transport
            from fanout.providers._httpx import HttpxTransport

            self._http = HttpxTransport(
                self.base_url,
                headers=headers,
                keep=KEPT_HEADERS,
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
        connect = min(self.connect_timeout_s, timeout)
        deadline = CallDeadline(connect + timeout)
        try:
            async with deadline:
                # The transport's own timeout is a backstop past the latest the deadline
                # can move to (twice its limit), so the deadline decides: a timer of the
                # transport's, late after a busy loop, would throw an arrived answer away.
                reply = await self._http.post(
                    "/chat/completions", body, timeout_s=2 * (connect + timeout) + 1.0
                )
        except (TimeoutError, TransportTimeout) as exc:
            raise ProviderTimeout(
                f"{self.name}: no answer within {timeout:.1f}s",
                provider=self.name,
                # a connect that timed out sent nothing: the provider cannot have billed it
                sent=not (isinstance(exc, TransportTimeout) and not exc.sent),
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

    def _http_error(self, status: int, raw: bytes, headers: dict[str, str]) -> ProviderError:
        return error_for(self.name, status, raw, headers, scrub=self._scrub)

    def _scrub(self, text: str) -> str:
        if self._api_key is not None:
            text = text.replace(self._api_key.get_secret_value(), "***")
        return _KEY_LIKE.sub("***", text)

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"OpenAIProvider({self.name!r}, base_url={self.base_url!r}, api_key=***)"


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

