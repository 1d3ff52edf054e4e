"""The emulator's Bedrock's Converse API (see :mod:`fanout.sim._dialect`)."""

from __future__ import annotations

import json
from typing import Any

import orjson

from fanout.sim._dialect import (
    ERROR_STATUS,
    Dialect,
    Parsed,
    as_object,
    calls_of,
    chat_of,
    forced,
)
from fanout.sim._media_blocks import bedrock_media
from fanout.types import ChatResponse, Message, ToolSpec, Usage

__all__ = ["Bedrock"]


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
        offered, schema, output = forced(tools, kind, (choice.get("tool") or {}).get("name"))
        inference = body.get("inferenceConfig") or {}
        chat = chat_of(model, messages, inference.get("maxTokens"),
                     inference.get("temperature"), offered, schema)  # fmt: skip
        media = bedrock_media(body["messages"])
        return Parsed(chat, output, cacheable, tuple(media.kinds), media.tokens)

    def reply(self, parsed: Parsed, reply: ChatResponse, usage: Usage, serial: int) -> bytes:
        content: list[dict[str, object]] = []
        calls = calls_of(reply, parsed)
        if reply.content is not None and not calls:
            content.append({"text": reply.content})
        for call in calls:
            content.append({"toolUse": {"toolUseId": f"tooluse_{call.id}", "name": call.name,
                                        "input": as_object(call.arguments)}})  # fmt: skip
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
