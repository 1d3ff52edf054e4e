"""The emulator's Anthropic's Messages API (see :mod:`fanout.sim._dialect`)."""

from __future__ import annotations

import json
from datetime import datetime
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
    rfc3339,
)
from fanout.sim._media_blocks import anthropic_media
from fanout.types import ChatResponse, Message, ToolSpec, Usage

__all__ = ["Anthropic"]


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
        offered, schema, output = forced(tools, choice.get("type"), choice.get("name"))
        chat = chat_of(str(body["model"]), messages, body.get("max_tokens"),
                     body.get("temperature"), offered, schema)  # fmt: skip
        media = anthropic_media(body["messages"])
        return Parsed(chat, output, cacheable, tuple(media.kinds), media.tokens)

    def reply(self, parsed: Parsed, reply: ChatResponse, usage: Usage, serial: int) -> bytes:
        content: list[dict[str, object]] = []
        calls = calls_of(reply, parsed)
        if reply.content is not None and not calls:
            content.append({"type": "text", "text": reply.content})
        for call in calls:
            content.append({"type": "tool_use", "id": f"toolu_{call.id}", "name": call.name,
                            "input": as_object(call.arguments)})  # fmt: skip
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
                headers[f"{prefix}-reset"] = rfc3339(now, reset_s)
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
