"""The emulator's Gemini's generateContent (see :mod:`fanout.sim._dialect`)."""

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
from fanout.sim._media_blocks import gemini_media
from fanout.types import ChatResponse, Message, ToolSpec, Usage

__all__ = ["Gemini"]


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
        offered, schema, output = forced(tools, "any" if mode == "ANY" else None, None)
        generation = body.get("generationConfig") or {}
        if output is None:
            schema = generation.get("responseJsonSchema") or generation.get("responseSchema")
        chat = chat_of(model, messages, generation.get("maxOutputTokens"),
                     generation.get("temperature"), offered, schema)  # fmt: skip
        media = gemini_media(body["contents"])
        return Parsed(chat, output, media=tuple(media.kinds), media_tokens=media.tokens)

    def reply(self, parsed: Parsed, reply: ChatResponse, usage: Usage, serial: int) -> bytes:
        parts: list[dict[str, object]] = []
        calls = calls_of(reply, parsed)
        if reply.content is not None and not calls:
            parts.append({"text": reply.content})
        for call in calls:
            parts.append({"functionCall": {"name": call.name, "args": as_object(call.arguments)}})
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
