"""The emulator's Azure OpenAI's deployment paths (see :mod:`fanout.sim._dialect`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from fanout.sim._dialect import (
    ERROR_STATUS,
    Dialect,
    Parsed,
)
from fanout.types import ChatResponse, Usage

__all__ = ["Azure"]


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
