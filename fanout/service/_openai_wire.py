"""The OpenAI chat-completions wire: a request body read into a ``ChatRequest``, answers
and errors written back as OpenAI's SDKs and frameworks expect them.

Only what fanout can honour is accepted as such: text content (a list of text parts is
joined), tools of type ``function``, ``response_format`` ``json_schema`` (structured
output) and ``json_object``; sampling parameters the upstream understands
(``tool_choice``, ``stop``, ``top_p``, ``seed``, ...) are passed through as given.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fanout.types import ChatRequest, ChatResponse, JSONSchema, Message, ToolCall, ToolSpec, Usage

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "ChatCompletionIn",
    "OpenAIError",
    "completion_body",
    "message_body",
    "parse_chat",
    "to_chat_request",
    "usage_body",
]

DEFAULT_MAX_TOKENS = 1024  # when a caller sets none: the worst case its budget reserves
_PASSED = (
    "tool_choice", "parallel_tool_calls", "stop", "top_p", "seed", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "user",
    "reasoning_effort", "service_tier",
)  # fmt: skip
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
          "tool": "tool"}  # fmt: skip


class OpenAIError(Exception):
    """An answer in OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.code, self.param, self.headers = code, param, headers

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


class ChatCompletionIn(BaseModel):
    """``POST /v1/chat/completions``'s body (fields fanout reads; others pass or are ignored)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


def parse_chat(raw: bytes) -> ChatCompletionIn:
    """The body, or an :class:`OpenAIError` 400 naming the parameter and the fix."""
    try:
        return ChatCompletionIn.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(p) for p in error.get("loc", ()))
        if error.get("type") == "json_invalid":
            raise OpenAIError(400, "the request body is not valid JSON") from None
        reason = "required" if error.get("type") == "missing" else error.get("msg", "invalid")
        raise OpenAIError(400, f"{loc or 'body'}: {reason}", param=loc or None) from None


def to_chat_request(body: ChatCompletionIn) -> ChatRequest:
    """The provider-neutral request (its ``model`` is set per route by the engine)."""
    schema: JSONSchema | None = None
    schema_name = "output"
    options: dict[str, object] = {}
    fmt = body.response_format
    if fmt is not None:
        kind = fmt.get("type")
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                raise OpenAIError(
                    400, "response_format.json_schema needs a 'schema' object",
                    param="response_format",
                )  # fmt: skip
            schema, schema_name = spec["schema"], str(spec.get("name") or "output")
        elif kind == "json_object":
            options["response_format"] = {"type": "json_object"}
        elif kind != "text":
            raise OpenAIError(
                400, f"response_format.type {kind!r}: use text, json_object or json_schema",
                param="response_format",
            )  # fmt: skip
    extra = body.model_extra or {}
    options.update((name, extra[name]) for name in _PASSED if extra.get(name) is not None)
    return ChatRequest(
        model=body.model,
        messages=[_message(m, i) for i, m in enumerate(body.messages)],
        max_tokens=body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS,
        temperature=body.temperature if body.temperature is not None else 1.0,
        tools=tuple(_tool(t, i) for i, t in enumerate(body.tools or ())),
        response_schema=schema,
        response_schema_name=schema_name,
        options=options or None,
    )


def _message(raw: dict[str, Any], index: int) -> Message:
    where = f"messages.{index}"
    role = _ROLES.get(str(raw.get("role")))
    if role is None:
        raise OpenAIError(
            400, f"{where}.role: use system, developer, user, assistant or tool",
            param=f"{where}.role",
        )  # fmt: skip
    message: dict[str, object] = {"role": role, "content": _text(raw.get("content"), where)}
    for name in ("tool_calls", "tool_call_id", "name"):
        if raw.get(name) is not None:
            message[name] = raw[name]
    return cast(Message, message)


def _text(content: object, where: str) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        if all(isinstance(p, dict) and p.get("type") == "text" for p in content) and all(
            isinstance(t, str) for t in texts
        ):
            return "".join(cast(list[str], texts))
    raise OpenAIError(
        400, f"{where}.content: only text is served (a string, or text parts)",
        param=f"{where}.content",
    )  # fmt: skip


def _tool(raw: dict[str, Any], index: int) -> ToolSpec:
    fn = raw.get("function")
    if raw.get("type") != "function" or not isinstance(fn, dict) or not fn.get("name"):
        raise OpenAIError(
            400, f"tools.{index}: a tool is {{'type': 'function', 'function': {{'name', ...}}}}",
            param=f"tools.{index}",
        )  # fmt: skip
    parameters = fn.get("parameters") or {"type": "object", "properties": {}}
    return ToolSpec(str(fn["name"]), str(fn.get("description") or ""), parameters)


def message_body(content: str | None, calls: tuple[ToolCall, ...]) -> dict[str, object]:
    message: dict[str, object] = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        message["tool_calls"] = [c.to_wire() for c in calls]
    return message


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion_body(
    model: str, answers: list[ChatResponse], usage: Usage, *, id_: str, created: int
) -> dict[str, object]:
    """A ``chat.completion`` object: one choice per answer, ``usage`` summed."""
    choices = [
        {
            "index": index,
            "message": message_body(answer.content, answer.tool_calls),
            "finish_reason": answer.finish_reason,
            "logprobs": None,
        }
        for index, answer in enumerate(answers)
    ]
    return {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage_body(usage),
        "system_fingerprint": None,
    }


def now_s() -> int:
    return int(time.time())
