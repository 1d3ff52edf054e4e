"""The emulator's dialects: what each wire protocol it speaks besides OpenAI's shares.

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

from fanout.types import ChatRequest, ChatResponse, Message, ToolCall, ToolSpec, Usage

__all__ = [
    "ERROR_STATUS",
    "Dialect",
    "Parsed",
    "as_object",
    "calls_of",
    "chat_of",
    "forced",
    "rfc3339",
]

ERROR_STATUS = {
    "bad_request": 400, "auth": 401, "not_found": 404, "rate_limited": 429,
    "server": 500, "overloaded": 503, "filtered": 400,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Parsed:
    """A request as the simulated provider takes it, and how its reply is to be written.

    ``output_tool``: answer JSON content as a call of this tool; ``cacheable``: the
    request marked its system prompt for caching (Anthropic, Bedrock); ``media`` and
    ``media_tokens``: its image and audio blocks' kinds and tokens (:mod:`._media_blocks`),
    counted apart from the text the simulated provider reads."""

    chat: ChatRequest
    output_tool: str | None = None
    cacheable: bool = False
    media: tuple[str, ...] = ()
    media_tokens: int = 0


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


def calls_of(reply: ChatResponse, parsed: Parsed) -> tuple[ToolCall, ...]:
    """The reply's tool calls; JSON content of an output-tool request becomes its call."""
    if parsed.output_tool is not None and not reply.tool_calls and reply.content is not None:
        return (ToolCall(f"call_out_{abs(hash(reply.content)) % 10**8}", parsed.output_tool,
                         reply.content),)  # fmt: skip
    return reply.tool_calls


def as_object(arguments: str) -> object:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": arguments}


def forced(
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


def chat_of(
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


def rfc3339(now: datetime, seconds: float) -> str:
    return (now + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
