"""A streamed chat completion put together: OpenAI ``chat.completion.chunk`` events in,
one :class:`ChatResponse` out (text deltas, tool-call fragments, the usage event)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from fanout.providers._base import ToolCallListener
from fanout.types import ChatResponse, ToolCall, ToolCallDelta, Usage

__all__ = ["StreamAssembler"]


@dataclass(slots=True)
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class StreamAssembler:
    """Accumulates one choice's deltas; ``on_delta`` hears each piece of text as it comes
    (and, a :class:`ToolCallListener`, each piece of a tool call).

    ``done`` is set by the ``[DONE]`` event; ``usage`` by the final chunk that
    ``stream_options.include_usage`` asks for (its ``choices`` is empty). A chunk that
    is not JSON raises ``ValueError``.
    """

    __slots__ = ("_calls", "_on_delta", "_on_tool", "_text", "chunks", "done", "finish_reason",
                 "id", "model", "usage")  # fmt: skip

    def __init__(self, on_delta: Callable[[str], None] | None) -> None:
        self._on_delta = on_delta
        self._on_tool = on_delta.tool_call if isinstance(on_delta, ToolCallListener) else None
        self._text: list[str] = []
        self._calls: dict[int, _Call] = {}
        self.chunks = 0  # content chunks received
        self.done = False
        self.finish_reason: str | None = None
        self.model = ""
        self.id = ""
        self.usage: Usage | None = None

    def event(self, data: str) -> None:
        if data == "[DONE]":
            self.done = True
            return
        chunk = orjson.loads(data)
        if not isinstance(chunk, dict):
            raise ValueError("a chunk is not a JSON object")
        self.model = str(chunk.get("model") or self.model)
        self.id = str(chunk.get("id") or self.id)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            details = usage.get("prompt_tokens_details")
            cached = details.get("cached_tokens") if isinstance(details, dict) else None
            self.usage = Usage(
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0),
                int(cached or 0),  # read from the provider's prompt cache
            )
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                self._text.append(text)
                self.chunks += 1
                if self._on_delta is not None:
                    self._on_delta(text)
            for fragment in delta.get("tool_calls") or ():
                self._tool_piece(fragment)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])

    def _tool_piece(self, fragment: dict[str, object]) -> None:
        index = int(fragment.get("index", 0))  # type: ignore[call-overload]
        call = self._calls.setdefault(index, _Call())
        function = fragment.get("function")
        function = function if isinstance(function, dict) else {}
        id_, name = fragment.get("id") or None, function.get("name") or None
        arguments = str(function.get("arguments") or "")
        call.id = str(id_ or call.id)
        call.name = str(name or call.name)
        if arguments:
            call.arguments.append(arguments)
        if self._on_tool is not None:
            piece = ToolCallDelta(index, str(id_) if id_ else None, str(name) if name else None,
                                  arguments)  # fmt: skip
            self._on_tool(piece)

    @property
    def text(self) -> str:
        return "".join(self._text)

    def response(self, usage: Usage, headers: dict[str, str]) -> ChatResponse:
        calls = tuple(
            ToolCall(c.id, c.name, "".join(c.arguments) or "{}")
            for _, c in sorted(self._calls.items())
        )
        return ChatResponse(
            content=self.text if self._text or not calls else None,
            usage=usage,
            finish_reason=self.finish_reason or "stop",
            tool_calls=calls,
            model=self.model,
            headers=headers,
            id=self.id,
        )
