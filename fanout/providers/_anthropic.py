"""``AnthropicProvider``: Anthropic's Messages API (``POST /v1/messages``).

Wire format: ``x-api-key`` and ``anthropic-version`` headers; ``system`` as a field of
its own; tools as ``{name, description, input_schema}``, the model's calls as
``tool_use`` blocks and their results as ``tool_result`` blocks of a user turn;
``stop_reason`` mapped onto OpenAI's finish reasons (``end_turn`` -> ``stop``,
``max_tokens`` -> ``length``, ``tool_use`` -> ``tool_calls``, ``refusal`` ->
``content_filter``); ``usage.input_tokens`` excludes the cache's tokens, so fanout's
input count adds ``cache_creation_input_tokens`` and ``cache_read_input_tokens``.
Structured output (``output=Model``) is a forced tool whose ``input_schema`` is the
model's, or, beside other tools, one more tool with ``tool_choice`` "any".
The ``anthropic-ratelimit-*`` headers feed the limiter; a 429 ``rate_limit_error`` is
:class:`~fanout.errors.RateLimited`, and a 529 ``overloaded_error`` a retryable
:class:`~fanout.errors.ProviderHTTPError` (status 529) that is no rate-limit signal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import orjson

from fanout.providers._anthropic_parts import AnthropicParts, anthropic_block
from fanout.providers._anthropic_stream import AnthropicStream
from fanout.providers._jsonapi import JsonApiProvider
from fanout.providers._jsonstream import stream_call
from fanout.providers._turns import answered, output_tool, system_text, turns
from fanout.types import ChatRequest, ChatResponse, ToolCall, Usage

if TYPE_CHECKING:
    import httpx

    from fanout.providers._http import HttpClient, HttpTransport

__all__ = ["AnthropicProvider", "message_response", "messages_body"]

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_EPHEMERAL = {"type": "ephemeral"}


class AnthropicProvider(AnthropicParts, JsonApiProvider):
    """Anthropic's Messages API at ``base_url`` (``https://api.anthropic.com/v1``).

    ``cache_prompt``: mark the system prompt and the tools cacheable
    (``cache_control: ephemeral``); reads and writes of the cache are priced apart.
    """

    protocol = "anthropic"

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        base_url: str = "https://api.anthropic.com/v1",
        anthropic_version: str = "2023-06-01",
        cache_prompt: bool = False,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        secrets: tuple[str, ...] = (),
        max_connections: int = 256,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | HttpTransport | HttpClient | None = None,
    ) -> None:
        sent = {"x-api-key": api_key, "anthropic-version": anthropic_version, **(headers or {})}
        super().__init__(
            name, base_url=base_url, headers=sent, query=query, secrets=(api_key, *secrets),
            max_connections=max_connections, timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s, transport=transport,
        )  # fmt: skip
        self.cache_prompt = cache_prompt
        self._messages_path = self._path("/messages")

    def _request(self, request: ChatRequest) -> tuple[str, bytes, dict[str, str] | None]:
        return self._messages_path, orjson.dumps(self.body(request)), None

    def body(self, request: ChatRequest) -> dict[str, object]:
        """The Messages API body of ``request``."""
        return messages_body(request, cache_prompt=self.cache_prompt)

    def _reply(self, data: object, headers: dict[str, str]) -> ChatResponse:
        return message_response(data, headers)

    async def complete(
        self, request: ChatRequest, *, timeout_s: float | None = None
    ) -> ChatResponse:
        response = await super().complete(request, timeout_s=timeout_s)
        out = output_tool(request)
        return response if out is None else answered(response, out.name)

    async def stream(
        self,
        request: ChatRequest,
        *,
        on_delta: Callable[[str], None],
        timeout_s: float | None = None,
    ) -> ChatResponse:
        """The reply as server-sent events (``"stream": true``;
        :mod:`fanout.providers._anthropic_stream`)."""
        body = {**self.body(request), "stream": True}
        decoder = AnthropicStream(on_delta, finish=_FINISH, error=self._error)
        response = await stream_call(
            self, request, self._messages_path, orjson.dumps(body), None, decoder, timeout_s
        )
        out = output_tool(request)
        return response if out is None else answered(response, out.name)


def messages_body(request: ChatRequest, *, cache_prompt: bool = False) -> dict[str, object]:
    """The Messages API body of ``request`` (online, and as a Message Batches request's
    ``params``); ``cache_prompt`` marks the system prompt and tools cacheable."""
    body: dict[str, object] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "messages": [
            {"role": t.role, "content": t.blocks}
            for t in turns(
                request.messages, text=_text, call=_call, result=_result, part=anthropic_block
            )
        ],
    }
    system = system_text(request.messages)
    if system:
        block: dict[str, object] = {"type": "text", "text": system}
        if cache_prompt:
            block["cache_control"] = _EPHEMERAL
        body["system"] = [block]
    out = output_tool(request)
    specs = [*request.tools, *((out,) if out is not None else ())]
    if specs:
        tools: list[dict[str, object]] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in specs
        ]
        if cache_prompt:
            tools[-1] = {**tools[-1], "cache_control": _EPHEMERAL}
        body["tools"] = tools
    if out is not None:  # the model must answer through the output tool (or a tool)
        body["tool_choice"] = (
            {"type": "any"} if request.tools else {"type": "tool", "name": out.name}
        )
    return body


def message_response(data: object, headers: dict[str, str] | None = None) -> ChatResponse:
    """A Messages API reply (a ``message`` object) as a :class:`ChatResponse`; raises
    ``KeyError``/``TypeError``/``ValueError`` on one that is not what the API promises."""
    assert isinstance(data, dict)
    usage = data["usage"]
    read = int(usage.get("cache_read_input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in data["content"]:
        if block["type"] == "text":
            texts.append(str(block["text"]))
        elif block["type"] == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(ToolCall(str(block["id"]), str(block["name"]), arguments))
    finish = _FINISH.get(str(data.get("stop_reason")), "stop")
    return ChatResponse(
        content="".join(texts) if texts else None,
        usage=Usage(
            int(usage["input_tokens"]) + read + written,
            int(usage.get("output_tokens") or 0),
            read,
            written,
        ),
        finish_reason=finish,
        tool_calls=tuple(calls),
        model=str(data.get("model") or ""),
        id=str(data.get("id") or ""),
        headers=headers or {},
    )


def _text(content: str) -> dict[str, object]:
    return {"type": "text", "text": content}


def _call(call_id: str, name: str, arguments: dict[str, object]) -> dict[str, object]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def _result(call_id: str, name: str, content: str) -> dict[str, object]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": content}
