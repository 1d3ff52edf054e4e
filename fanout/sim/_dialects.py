"""The emulator's other wire protocols: Anthropic, Azure OpenAI, Bedrock Converse, Gemini.

Each :class:`Dialect` reads its protocol's request into the simulated provider's
:class:`~fanout.types.ChatRequest` (OpenAI-style messages), writes the simulated reply
back in its own shape, and says its errors and rate-limit headers as the vendor does.
Written apart from ``fanout.providers`` on purpose: the emulator checks the clients,
so it must not share their mapping code (a bug shared would pass unseen).

Structured output through a tool: a forced tool (Anthropic ``tool_choice`` ``tool``,
Bedrock ``toolChoice.tool``) is answered with a call of it whose input is a document of
its schema; under "call some tool" (``any``, Gemini mode ``ANY``) the model calls the
other tools until one has answered, then the *last* tool declared (where clients put
their output tool), with such a document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import orjson

from fanout.types import ChatRequest, ChatResponse, Message, ToolCall, ToolSpec, Usage

__all__ = ["DIALECTS", "Dialect", "Parsed"]

ERROR_STATUS = {
    "bad_request": 400, "auth": 401, "not_found": 404, "rate_limited": 429,
    "server": 500, "overloaded": 503, "filtered": 400,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Parsed:
    """A request as the simulated provider takes it, and how its reply is to be written.

    ``output_tool``: answer JSON content as a call of this tool; ``cacheable``: the
    request marked its system prompt for caching (Anthropic, Bedrock)."""

    chat: ChatRequest
    output_tool: str | None = None
    cacheable: bool = False


class Dialect:
    """One protocol's requests, replies, errors and headers."""

    name: ClassVar[str] = ""
    automatic_cache: ClassVar[bool] = True  # caches a long prompt unasked (OpenAI, Gemini)

    def parse(self, body: Any, model: str) -> Parsed:
        raise NotImplementedError

    def reply(self, parsed: Parsed, reply: ChatResponse, usage: Usage, serial: int) -> bytes:
        raise NotImplementedError

    def error(
        self, kind: str, message: str, retry_after_s: float | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        raise NotImplementedError

    def limit_headers(
        self, limits: dict[str, tuple[float, float, float]], now: datetime
    ) -> dict[str, str]:
        """Headers for ``{"requests"|"tokens": (limit, remaining, reset_s)}``."""
        return {}


def _calls_of(reply: ChatResponse, parsed: Parsed) -> tuple[ToolCall, ...]:
    """The reply's tool calls; JSON content of an output-tool request becomes its call."""
    if parsed.output_tool is not None and not reply.tool_calls and reply.content is not None:
        return (ToolCall(f"call_out_{abs(hash(reply.content)) % 10**8}", parsed.output_tool,
                         reply.content),)  # fmt: skip
    return reply.tool_calls


def _object(arguments: str) -> object:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": arguments}


def _forced(
    tools: list[ToolSpec], choice: str | None, chosen: str | None
) -> tuple[tuple[ToolSpec, ...], object, str | None]:
    """``(tools offered to the sim, response schema, output tool)`` under a tool choice:
    ``"tool"`` forces ``chosen``; ``"any"`` makes the last tool the output tool."""
    if choice == "tool" and chosen is not None:
        spec = next((t for t in tools if t.name == chosen), None)
        if spec is None:
            raise ValueError(f"tool_choice names {chosen!r}, which is not among the tools")
        return (), spec.parameters, spec.name
    if choice == "any" and tools:
        last = tools[-1]
        return tuple(tools[:-1]), last.parameters, last.name
    return tuple(tools), None, None


def _chat(
    model: str, messages: list[Message], max_tokens: Any, temperature: Any,
    tools: tuple[ToolSpec, ...], schema: object,
) -> ChatRequest:  # fmt: skip
    if not messages:
        raise ValueError("messages must be a non-empty list")
    return ChatRequest(
        model=model,
        messages=messages,
        max_tokens=int(max_tokens or 256),
        temperature=float(temperature or 0.0),
        tools=tools,
        response_schema=schema if isinstance(schema, dict) else None,
    )


def _rfc3339(now: datetime, seconds: float) -> str:
    return (now + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


class Anthropic(Dialect):
    """``POST /v1/messages``."""

    name = "anthropic"
    automatic_cache = False  # only what cache_control marks

    def parse(self, body: Any, model: str) -> Parsed:
        messages: list[Message] = []
        cacheable = False
        system = body.get("system")
        if isinstance(system, list):
            cacheable = any(isinstance(b, dict) and "cache_control" in b for b in system)
            system = "".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
        if system:
            messages.append({"role": "system", "content": str(system)})
        for raw in body["messages"]:
            messages.extend(_anthropic_message(raw))
        tools = [
            ToolSpec(t["name"], t.get("description", ""), t.get("input_schema", {}))
            for t in body.get("tools") or ()
        ]
        cacheable = cacheable or any("cache_control" in t for t in body.get("tools") or ())
        choice = body.get("tool_choice") or {}
        offered, schema, output = _forced(tools, choice.get("type"), choice.get("name"))
        chat = _chat(str(body["model"]), messages, body.get("max_tokens"),
                     body.get("temperature"), offered, schema)  # fmt: skip
        return Parsed(chat, output, cacheable)

    def reply(self, parsed: Parsed, reply: ChatResponse, usage: Usage, serial: int) -> bytes:
        content: list[dict[str, object]] = []
        calls = _calls_of(reply, parsed)
        if reply.content is not None and not calls:
            content.append({"type": "text", "text": reply.content})
        for call in calls:
            content.append({"type": "tool_use", "id": f"toolu_{call.id}", "name": call.name,
                            "input": _object(call.arguments)})  # fmt: skip
        stop = {"length": "max_tokens"}.get(reply.finish_reason, "end_turn")
        fresh = usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens
        return orjson.dumps({
            "id": f"msg_emu{serial:08d}", "type": "message", "role": "assistant",
            "model": parsed.chat.model, "content": content,
            "stop_reason": "tool_use" if calls else stop, "stop_sequence": None,
            "usage": {
                "input_tokens": fresh, "output_tokens": usage.output_tokens,
                "cache_creation_input_tokens": usage.cache_write_tokens,
                "cache_read_input_tokens": usage.cached_input_tokens,
            },
        })  # fmt: skip

    def error(
        self, kind: str, message: str, retry_after_s: float | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        status = 529 if kind == "overloaded" else ERROR_STATUS[kind]
        kinds = {400: "invalid_request_error", 401: "authentication_error",
                 404: "not_found_error", 429: "rate_limit_error", 500: "api_error",
                 529: "overloaded_error"}  # fmt: skip
        body = {"type": "error", "error": {"type": kinds[status], "message": message}}
        headers = {"retry-after": str(max(1, round(retry_after_s)))} if retry_after_s else {}
        return status, orjson.dumps(body), headers

    def limit_headers(
        self, limits: dict[str, tuple[float, float, float]], now: datetime
    ) -> dict[str, str]:
        headers: dict[str, str] = {}
        names = {"requests": ("requests",),
                 "tokens": ("tokens", "input-tokens", "output-tokens")}  # fmt: skip
        for what, (limit, remaining, reset_s) in limits.items():
            for name in names[what]:
                prefix = f"anthropic-ratelimit-{name}"
                headers[f"{prefix}-limit"] = str(int(limit))
                headers[f"{prefix}-remaining"] = str(max(0, int(remaining)))
                headers[f"{prefix}-reset"] = _rfc3339(now, reset_s)
        return headers


def _anthropic_message(raw: Any) -> list[Message]:
    role, content = raw["role"], raw["content"]
    if role not in ("user", "assistant"):
        raise ValueError("each message's role must be user or assistant")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    texts: list[str] = []
    calls: list[dict[str, object]] = []
    results: list[Message] = []
    for block in content:
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {
                        "name": block["name"],
                        "arguments": json.dumps(block.get("input") or {}),
                    },
                }
            )
        elif kind == "tool_result":
            value = block.get("content", "")
            if isinstance(value, list):
                value = "".join(b.get("text", "") for b in value)
            results.append({"role": "tool", "tool_call_id": block["tool_use_id"],
                            "content": str(value)})  # fmt: skip
    if role == "assistant":
        message: Message = {"role": "assistant", "content": "".join(texts) or None}
        if calls:
            message["tool_calls"] = calls
        return [message]
    user: list[Message] = [{"role": "user", "content": "".join(texts)}] if texts else []
    return [*results, *user]


class Azure(Dialect):
    """``POST /openai/deployments/{deployment}/chat/completions?api-version=...``."""

    name = "azure"

    def parse(self, body: Any, model: str) -> Parsed:
        from fanout.sim._wire import chat_request

        chat = chat_request({**body, "model": model})  # the deployment names the model
        return Parsed(chat)

    def reply(self, parsed: Parsed, reply: ChatResponse, usage: Usage, serial: int) -> bytes:
        message: dict[str, object] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = [c.to_wire() for c in reply.tool_calls]
        unfiltered = {k: {"filtered": False, "severity": "safe"}
                      for k in ("hate", "self_harm", "sexual", "violence")}  # fmt: skip
        return orjson.dumps({
            "id": f"chatcmpl-emu{serial}", "object": "chat.completion", "created": 0,
            "model": parsed.chat.model,
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": unfiltered}],
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason,
                         "content_filter_results": unfiltered}],
            "usage": {
                "prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                "total_tokens": usage.total_tokens,
                "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
            },
        })  # fmt: skip

    def error(
        self, kind: str, message: str, retry_after_s: float | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        status = ERROR_STATUS[kind]
        error: dict[str, object] = {"code": str(status), "message": message}
        if kind == "filtered":
            error = {
                "code": "content_filter", "status": 400, "param": "prompt",
                "message": "The response was filtered due to the prompt triggering Azure "
                "OpenAI's content management policy. Please modify your prompt and retry.",
                "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                    "hate": {"filtered": True, "severity": "high"},
                    "violence": {"filtered": False, "severity": "safe"}}},
            }  # fmt: skip
        headers: dict[str, str] = {}
        if retry_after_s is not None:
            headers = {"retry-after-ms": f"{retry_after_s * 1000:.0f}",
                       "retry-after": str(max(1, round(retry_after_s)))}  # fmt: skip
        return status, orjson.dumps({"error": error}), headers

    def limit_headers(
        self, limits: dict[str, tuple[float, float, float]], now: datetime
    ) -> dict[str, str]:
        headers: dict[str, str] = {}
        for what, (limit, remaining, _) in limits.items():
            headers[f"x-ratelimit-limit-{what}"] = str(int(limit))
            headers[f"x-ratelimit-remaining-{what}"] = str(max(0, int(remaining)))
        return headers


class Bedrock(Dialect):
    """``POST /model/{modelId}/converse``."""

    name = "bedrock"
    automatic_cache = False  # only after a cachePoint

    def parse(self, body: Any, model: str) -> Parsed:
        messages: list[Message] = []
        system = body.get("system") or []
        cacheable = any("cachePoint" in b for b in system)
        text = "".join(b.get("text", "") for b in system)
        if text:
            messages.append({"role": "system", "content": text})
        for raw in body["messages"]:
            messages.extend(_bedrock_message(raw))
        config = body.get("toolConfig") or {}
        entries = config.get("tools") or ()
        cacheable = cacheable or any("cachePoint" in t for t in entries)
        tools = [
            ToolSpec(s["name"], s.get("description", ""), s["inputSchema"]["json"])
            for s in (t["toolSpec"] for t in entries if "toolSpec" in t)
        ]
        choice = config.get("toolChoice") or {}
        kind = "tool" if "tool" in choice else "any" if "any" in choice else None
        offered, schema, output = _forced(tools, kind, (choice.get("tool") or {}).get("name"))
        inference = body.get("inferenceConfig") or {}
        chat = _chat(model, messages, inference.get("maxTokens"),
                     inference.get("temperature"), offered, schema)  # fmt: skip
        return Parsed(chat, output, cacheable)

    def reply(self, parsed: Parsed, reply: ChatResponse, usage: Usage, serial: int) -> bytes:
        content: list[dict[str, object]] = []
        calls = _calls_of(reply, parsed)
        if reply.content is not None and not calls:
            content.append({"text": reply.content})
        for call in calls:
            content.append({"toolUse": {"toolUseId": f"tooluse_{call.id}", "name": call.name,
                                        "input": _object(call.arguments)}})  # fmt: skip
        stop = {"length": "max_tokens"}.get(reply.finish_reason, "end_turn")
        fresh = usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens
        tokens: dict[str, int] = {
            "inputTokens": fresh, "outputTokens": usage.output_tokens,
            "totalTokens": usage.total_tokens,
        }  # fmt: skip
        if usage.cached_input_tokens or usage.cache_write_tokens:
            tokens["cacheReadInputTokens"] = usage.cached_input_tokens
            tokens["cacheWriteInputTokens"] = usage.cache_write_tokens
        return orjson.dumps({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": "tool_use" if calls else stop,
            "usage": tokens, "metrics": {"latencyMs": 0},
        })  # fmt: skip

    def error(
        self, kind: str, message: str, retry_after_s: float | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        names = {"bad_request": "ValidationException", "auth": "UnrecognizedClientException",
                 "not_found": "ResourceNotFoundException", "rate_limited": "ThrottlingException",
                 "server": "InternalServerException", "overloaded": "ServiceUnavailableException",
                 "filtered": "ValidationException"}  # fmt: skip
        status = 403 if kind == "auth" else ERROR_STATUS[kind]
        header = f"{names[kind]}:http://internal.amazon.com/coral/com.amazon.bedrock/"
        return status, orjson.dumps({"message": message}), {"x-amzn-errortype": header}


def _bedrock_message(raw: Any) -> list[Message]:
    role = raw["role"]
    if role not in ("user", "assistant"):
        raise ValueError("each message's role must be user or assistant")
    texts: list[str] = []
    calls: list[dict[str, object]] = []
    results: list[Message] = []
    for block in raw["content"]:
        if "text" in block:
            texts.append(block["text"])
        elif "toolUse" in block:
            use = block["toolUse"]
            calls.append(
                {
                    "id": use["toolUseId"],
                    "type": "function",
                    "function": {
                        "name": use["name"],
                        "arguments": json.dumps(use.get("input") or {}),
                    },
                }
            )
        elif "toolResult" in block:
            result = block["toolResult"]
            value = "".join(
                c["text"] if "text" in c else json.dumps(c.get("json")) for c in result["content"]
            )
            results.append({"role": "tool", "tool_call_id": result["toolUseId"], "content": value})
    if role == "assistant":
        message: Message = {"role": "assistant", "content": "".join(texts) or None}
        if calls:
            message["tool_calls"] = calls
        return [message]
    user: list[Message] = [{"role": "user", "content": "".join(texts)}] if texts else []
    return [*results, *user]


class Gemini(Dialect):
    """``POST /v1beta/models/{model}:generateContent``."""

    name = "gemini"

    def parse(self, body: Any, model: str) -> Parsed:
        messages: list[Message] = []
        system = body.get("systemInstruction") or {}
        text = "".join(p.get("text", "") for p in system.get("parts") or ())
        if text:
            messages.append({"role": "system", "content": text})
        pending: dict[str, list[str]] = {}  # function name -> ids of calls not yet answered
        for n, raw in enumerate(body["contents"]):
            messages.extend(_gemini_content(raw, n, pending))
        tools = [
            ToolSpec(d["name"], d.get("description", ""),
                     d.get("parametersJsonSchema") or d.get("parameters") or {})
            for t in body.get("tools") or () for d in t.get("functionDeclarations") or ()
        ]  # fmt: skip
        mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode")
        offered, schema, output = _forced(tools, "any" if mode == "ANY" else None, None)
        generation = body.get("generationConfig") or {}
        if output is None:
            schema = generation.get("responseJsonSchema") or generation.get("responseSchema")
        chat = _chat(model, messages, generation.get("maxOutputTokens"),
                     generation.get("temperature"), offered, schema)  # fmt: skip
        return Parsed(chat, output)

    def reply(self, parsed: Parsed, reply: ChatResponse, usage: Usage, serial: int) -> bytes:
        parts: list[dict[str, object]] = []
        calls = _calls_of(reply, parsed)
        if reply.content is not None and not calls:
            parts.append({"text": reply.content})
        for call in calls:
            parts.append({"functionCall": {"name": call.name, "args": _object(call.arguments)}})
        meta: dict[str, int] = {
            "promptTokenCount": usage.input_tokens,
            "candidatesTokenCount": usage.output_tokens,
            "totalTokenCount": usage.total_tokens,
        }
        if usage.cached_input_tokens:
            meta["cachedContentTokenCount"] = usage.cached_input_tokens
        finish = "MAX_TOKENS" if reply.finish_reason == "length" else "STOP"
        return orjson.dumps({
            "candidates": [{"content": {"role": "model", "parts": parts},
                            "finishReason": finish, "index": 0}],
            "usageMetadata": meta, "modelVersion": parsed.chat.model,
            "responseId": f"emu{serial}",
        })  # fmt: skip

    def error(
        self, kind: str, message: str, retry_after_s: float | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        status = ERROR_STATUS[kind]
        statuses = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND",
                    429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip
        error: dict[str, object] = {"code": status, "message": message, "status": statuses[status]}
        if retry_after_s is not None:
            error["details"] = [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                    {"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                     "quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo",
                 "retryDelay": f"{max(1, round(retry_after_s))}s"},
            ]  # fmt: skip
        return status, orjson.dumps({"error": error}), {}


def _gemini_content(raw: Any, n: int, pending: dict[str, list[str]]) -> list[Message]:
    role = raw.get("role", "user")
    if role not in ("user", "model"):
        raise ValueError("each content's role must be user or model")
    texts: list[str] = []
    calls: list[dict[str, object]] = []
    results: list[Message] = []
    for k, part in enumerate(raw.get("parts") or ()):
        if "text" in part:
            texts.append(part["text"])
        elif "functionCall" in part:
            call = part["functionCall"]
            call_id = f"call_{n}_{k}"
            pending.setdefault(call["name"], []).append(call_id)
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": call["name"],
                        "arguments": json.dumps(call.get("args") or {}),
                    },
                }
            )
        elif "functionResponse" in part:
            answer = part["functionResponse"]
            waiting = pending.get(answer["name"]) or [f"call_{n}_{k}"]
            response = answer.get("response") or {}
            value = response.get("result", response) if isinstance(response, dict) else response
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": waiting.pop(0),
                    "name": answer["name"],
                    "content": value if isinstance(value, str) else json.dumps(value),
                }
            )
    if role == "model":
        message: Message = {"role": "assistant", "content": "".join(texts) or None}
        if calls:
            message["tool_calls"] = calls
        return [message]
    user: list[Message] = [{"role": "user", "content": "".join(texts)}] if texts else []
    return [*results, *user]


DIALECTS: dict[str, Dialect] = {d.name: d for d in (Anthropic(), Azure(), Bedrock(), Gemini())}
"""The emulator's other protocols, by name."""
