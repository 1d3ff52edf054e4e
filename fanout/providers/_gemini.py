"""``GeminiProvider``: Google's Gemini API (``POST /models/{model}:generateContent``).

Wire format: the key in ``x-goog-api-key``; the system prompt as
``systemInstruction``; turns of ``parts`` (``text``, ``functionCall``,
``functionResponse``) with roles ``user`` and ``model``; tools as
``functionDeclarations`` whose parameters are JSON Schema (``parametersJsonSchema``).
Structured output without tools is Gemini's own (``responseMimeType`` JSON with
``responseJsonSchema``); beside tools it is an output function the model must call
(``functionCallingConfig`` mode ``ANY``). ``usageMetadata.promptTokenCount`` includes
``cachedContentTokenCount``; thinking tokens are billed as output. A 429
``RESOURCE_EXHAUSTED`` is :class:`~fanout.errors.RateLimited` with the delay of its
``RetryInfo`` detail; a prompt that was blocked is :class:`~fanout.errors.ContentFiltered`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import orjson

from fanout.errors import ContentFiltered, ProviderError, RateLimited
from fanout.limits import parse_duration_s
from fanout.providers._gemini_embed import GeminiEmbeddings
from fanout.providers._gemini_parts import GeminiParts, gemini_part
from fanout.providers._gemini_stream import GeminiStream
from fanout.providers._jsonstream import stream_call
from fanout.providers._turns import answered, output_tool, system_text, turns
from fanout.types import ChatRequest, ChatResponse, ToolCall, Usage

if TYPE_CHECKING:
    import httpx

    from fanout.providers._http import HttpClient, HttpTransport

__all__ = ["GeminiProvider"]

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
)
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


class GeminiProvider(GeminiParts, GeminiEmbeddings):
    """The Gemini API at ``base_url`` (``https://generativelanguage.googleapis.com/v1beta``)."""

    protocol = "gemini"

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        base_url: str = "https://generativelanguage.googleapis.com/v1beta",
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        secrets: tuple[str, ...] = (),
        max_connections: int = 256,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | HttpTransport | HttpClient | None = None,
    ) -> None:
        super().__init__(
            name, base_url=base_url, headers={"x-goog-api-key": api_key, **(headers or {})},
            query=query, secrets=(api_key, *secrets), max_connections=max_connections,
            timeout_s=timeout_s, connect_timeout_s=connect_timeout_s, transport=transport,
        )  # fmt: skip

    def _request(self, request: ChatRequest) -> tuple[str, bytes, dict[str, str] | None]:
        model = urllib.parse.quote(request.model.removeprefix("models/"), safe="")
        path = self._path(f"/models/{model}:generateContent")
        return path, orjson.dumps(self.body(request)), None

    def body(self, request: ChatRequest) -> dict[str, object]:
        """The generateContent body of ``request``."""
        generation: dict[str, object] = {
            "maxOutputTokens": request.max_tokens,
            "temperature": request.temperature,
        }
        body: dict[str, object] = {
            "contents": [
                {"role": "model" if t.role == "assistant" else "user", "parts": t.blocks}
                for t in turns(
                    request.messages, text=_text, call=_call, result=_result, part=gemini_part
                )
            ],
            "generationConfig": generation,
        }
        system = system_text(request.messages)
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        out = output_tool(request) if request.tools else None
        if request.response_schema is not None and out is None:
            generation["responseMimeType"] = "application/json"
            generation["responseJsonSchema"] = request.response_schema
        specs = [*request.tools, *((out,) if out is not None else ())]
        if specs:
            body["tools"] = [
                {"functionDeclarations": [
                    {"name": t.name, "description": t.description,
                     "parametersJsonSchema": t.parameters}
                    for t in specs
                ]}
            ]  # fmt: skip
        if out is not None:
            body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY"}}
        return body

    def _reply(self, data: object, headers: dict[str, str]) -> ChatResponse:
        assert isinstance(data, dict)
        candidates = data.get("candidates") or ()
        if not candidates:
            reason = (data.get("promptFeedback") or {}).get("blockReason", "no candidates")
            raise ContentFiltered(
                f"{self.name}: the prompt was blocked ({reason})", provider=self.name
            )
        candidate = candidates[0]
        texts: list[str] = []
        calls: list[ToolCall] = []
        for n, part in enumerate((candidate.get("content") or {}).get("parts") or ()):
            if "functionCall" in part:
                call = part["functionCall"]
                arguments = orjson.dumps(call.get("args") or {}).decode()
                call_id = str(call.get("id") or f"call_{n}_{call['name']}")
                calls.append(ToolCall(call_id, str(call["name"]), arguments))
            elif "text" in part and not part.get("thought"):
                texts.append(str(part["text"]))
        reason = str(candidate.get("finishReason") or "STOP")
        finish = "tool_calls" if calls else _FINISH.get(reason, "stop")
        if reason in _FILTERED:
            finish = "content_filter"
        usage = data["usageMetadata"]
        output = int(usage.get("candidatesTokenCount") or 0)
        return ChatResponse(
            content="".join(texts) if texts else None,
            usage=Usage(
                int(usage["promptTokenCount"]),
                output + int(usage.get("thoughtsTokenCount") or 0),
                int(usage.get("cachedContentTokenCount") or 0),
            ),
            finish_reason=finish,
            tool_calls=tuple(calls),
            model=str(data.get("modelVersion") or ""),
            headers=headers,
        )

    async def complete(
        self, request: ChatRequest, *, timeout_s: float | None = None
    ) -> ChatResponse:
        response = await super().complete(request, timeout_s=timeout_s)
        out = output_tool(request) if request.tools else None
        return response if out is None else answered(response, out.name)

    async def stream(
        self,
        request: ChatRequest,
        *,
        on_delta: Callable[[str], None],
        timeout_s: float | None = None,
    ) -> ChatResponse:
        """The reply as server-sent events (``streamGenerateContent?alt=sse``;
        :mod:`fanout.providers._gemini_stream`)."""
        model = urllib.parse.quote(request.model.removeprefix("models/"), safe="")
        path = self._path(f"/models/{model}:streamGenerateContent", {"alt": "sse"})
        decoder = GeminiStream(
            self.name, on_delta, finish=_FINISH, filtered=_FILTERED, error=self._error
        )
        body = orjson.dumps(self.body(request))
        response = await stream_call(self, request, path, body, None, decoder, timeout_s)
        out = output_tool(request) if request.tools else None
        return response if out is None else answered(response, out.name)

    def _error(self, status: int, raw: bytes, headers: dict[str, str]) -> ProviderError:
        error = super()._error(status, raw, headers)
        if isinstance(error, RateLimited) and error.retry_after_s is None:
            error.retry_after_s = retry_delay_s(raw)
        return error


def retry_delay_s(raw: bytes) -> float | None:
    """The ``retryDelay`` of a Google error body's ``RetryInfo`` detail ("37s"), if any."""
    try:
        details = orjson.loads(raw)["error"].get("details") or ()
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    for detail in details:
        if isinstance(detail, dict) and detail.get("@type") == _RETRY_INFO:
            delay = detail.get("retryDelay")
            if isinstance(delay, str):
                return parse_duration_s(delay)
    return None


def _text(content: str) -> dict[str, object]:
    return {"text": content}


def _call(call_id: str, name: str, arguments: dict[str, object]) -> dict[str, object]:
    return {"functionCall": {"name": name, "args": arguments}}


def _result(call_id: str, name: str, content: str) -> dict[str, object]:
    return {"functionResponse": {"name": name, "response": {"result": content}}}
