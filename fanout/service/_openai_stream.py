"""``stream: true``: a chat completion as OpenAI's server-sent events.

The stream is ``chat.completion.chunk`` events: per choice a first chunk with the role,
then its content and tool calls, then one with its ``finish_reason``; with
``stream_options.include_usage`` a last chunk with no choices and the usage (every
other chunk has ``"usage": null``); then ``data: [DONE]``.

Until the providers stream tokens, the deltas come from the completed answer
(:func:`answer_deltas`): the caller gets a correct stream, all at once. The chunks are
built from any async iterator of :class:`Delta`, so a token iterator replaces
``answer_deltas`` without changing the wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson

from fanout.service._openai_wire import usage_body
from fanout.types import ChatResponse, ToolCall, Usage

__all__ = ["Delta", "answer_deltas", "sse_chunks"]


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of one choice: its role (first), content, tool calls, or finish reason."""

    index: int
    role: str | None = None
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None


async def answer_deltas(answers: list[ChatResponse]) -> AsyncIterator[Delta]:
    """The deltas of completed answers, choice by choice (what a token stream will give
    piece by piece)."""
    for index, answer in enumerate(answers):
        yield Delta(index, role="assistant", content="")
        if answer.content:
            yield Delta(index, content=answer.content)
        if answer.tool_calls:
            yield Delta(index, tool_calls=answer.tool_calls)
        yield Delta(index, finish_reason=answer.finish_reason)


def _delta_body(delta: Delta) -> dict[str, object]:
    body: dict[str, object] = {}
    if delta.role is not None:
        body["role"] = delta.role
    if delta.content is not None:
        body["content"] = delta.content
    if delta.tool_calls:
        body["tool_calls"] = [
            {"index": position, **call.to_wire()} for position, call in enumerate(delta.tool_calls)
        ]
    return body


async def sse_chunks(
    deltas: AsyncIterator[Delta],
    *,
    id_: str,
    model: str,
    created: int,
    usage: Callable[[], Usage] | None,
) -> AsyncIterator[bytes]:
    """``data: {chunk}`` lines for ``deltas``, the usage chunk (``usage``: read once the
    deltas are done; ``None``: not asked for), then ``data: [DONE]``."""
    head = {"id": id_, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None}  # fmt: skip
    async for delta in deltas:
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
