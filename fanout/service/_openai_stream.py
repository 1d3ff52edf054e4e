"""``stream: true``: a chat completion as OpenAI's server-sent events.

The stream is ``chat.completion.chunk`` events: per choice a first chunk with the role,
then its content and tool calls, then one with its ``finish_reason``; with
``stream_options.include_usage`` a last chunk with no choices and the usage (every
other chunk has ``"usage": null``); then ``data: [DONE]``. A tool call streams as
OpenAI's do: its first piece has the call's ``index``, ``id``, ``type`` and
``function.name``, the others add pieces of ``function.arguments`` at that ``index``.
A stream that fails once under way ends with an error chunk in OpenAI's shape
(``data: {"error": {...}}``, which the openai SDK raises as ``APIError``) and no
``[DONE]``.

The chunks are built from any async iterator of :class:`Delta` (or an error): the
upstream's pieces as they arrive (:mod:`fanout.service._gateway_stream`), or a completed
answer's (:func:`answer_deltas`: a pipeline served as a model).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson

from fanout.service._openai_wire import OpenAIError, usage_body
from fanout.types import ChatResponse, ToolCall, ToolCallDelta, Usage

__all__ = ["Delta", "answer_deltas", "sse_chunks", "whole_calls"]


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of one choice: its role (first), content, tool calls, or finish reason."""

    index: int
    role: str | None = None
    content: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None


def whole_calls(calls: tuple[ToolCall, ...]) -> tuple[ToolCallDelta, ...]:
    """Completed tool calls as one piece each."""
    return tuple(ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(calls))


async def answer_deltas(answers: list[ChatResponse]) -> AsyncIterator[Delta]:
    """The deltas of completed answers, choice by choice (what a token stream will give
    piece by piece)."""
    for index, answer in enumerate(answers):
        yield Delta(index, role="assistant", content="")
        if answer.content:
            yield Delta(index, content=answer.content)
        if answer.tool_calls:
            yield Delta(index, tool_calls=whole_calls(answer.tool_calls))
        yield Delta(index, finish_reason=answer.finish_reason)


def _delta_body(delta: Delta) -> dict[str, object]:
    body: dict[str, object] = {}
    if delta.role is not None:
        body["role"] = delta.role
    if delta.content is not None:
        body["content"] = delta.content
    if delta.tool_calls:
        body["tool_calls"] = [_tool_piece(piece) for piece in delta.tool_calls]
    return body


def _tool_piece(piece: ToolCallDelta) -> dict[str, object]:
    body: dict[str, object] = {"index": piece.index}
    if piece.id is not None:
        body["id"], body["type"] = piece.id, "function"
    function: dict[str, object] = {}
    if piece.name is not None:
        function["name"] = piece.name
    function["arguments"] = piece.arguments
    body["function"] = function
    return body


async def sse_chunks(
    deltas: AsyncIterator[Delta | OpenAIError],
    *,
    id_: str,
    model: str,
    created: int,
    usage: Callable[[], Usage] | None,
) -> AsyncIterator[bytes]:
    """``data: {chunk}`` lines for ``deltas``, the usage chunk (``usage``: read once the
    deltas are done; ``None``: not asked for), then ``data: [DONE]``; an error from
    ``deltas`` ends the stream with its error chunk instead."""
    head = {"id": id_, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None}  # fmt: skip
    async for delta in deltas:
        if isinstance(delta, OpenAIError):
            yield b"data: " + orjson.dumps(delta.body()) + b"\n\n"
            return
        choice = {
            "index": delta.index,
            "delta": _delta_body(delta),
            "logprobs": None,
            "finish_reason": delta.finish_reason,
        }
        chunk = {**head, "choices": [choice]}
        if usage is not None:
            chunk["usage"] = None
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    if usage is not None:
        yield b"data: " + orjson.dumps({**head, "choices": [], "usage": usage_body(usage())})
        yield b"\n\n"
    yield b"data: [DONE]\n\n"
