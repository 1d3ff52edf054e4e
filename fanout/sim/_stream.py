"""The emulator's streamed replies: OpenAI ``chat.completion.chunk`` server-sent events,
a piece of text per event, the usage event ``stream_options.include_usage`` asks for,
then ``[DONE]``; or, cut, half the pieces and a body that ends there (no finish, no
usage, no ``[DONE]``), as a proxy that dropped the upstream connection sends."""

from __future__ import annotations

import asyncio
import re
import time

import orjson
from starlette.types import Send

from fanout.sim._text import token_count
from fanout.types import ChatResponse

__all__ = ["stream_reply"]

_PIECE = re.compile(r"\S+\s*|\s+")


async def stream_reply(
    send: Send,
    reply: ChatResponse,
    headers: dict[str, str],
    *,
    model: str,
    reply_id: str,
    include_usage: bool,
    per_token_s: float,
    cut: bool,
    cut_at: int | None = None,
) -> None:
    """Send ``reply`` as server-sent events, waiting ``per_token_s`` a token between
    pieces; ``cut``: stop after half the pieces (``cut_at``: after that many) and break
    the connection."""
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-type", b"text/event-stream"))
    raw.append((b"cache-control", b"no-cache"))
    await send({"type": "http.response.start", "status": 200, "headers": raw})
    created = int(time.time())

    def event(choices: list[dict[str, object]], usage: object = None) -> bytes:
        chunk: dict[str, object] = {
            "id": reply_id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": choices,
        }  # fmt: skip
        if include_usage:
            chunk["usage"] = usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    async def emit(body: bytes) -> None:
        await send({"type": "http.response.body", "body": body, "more_body": True})

    await emit(event([{"index": 0, "delta": {"role": "assistant", "content": ""},
                       "finish_reason": None}]))  # fmt: skip
    pieces = _PIECE.findall(reply.content or "")
    if cut:
        pieces = pieces[: max(1, len(pieces) // 2) if cut_at is None else cut_at]
    for piece in pieces:
        if per_token_s > 0:
            await asyncio.sleep(per_token_s * token_count(piece))
        await emit(event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}]))
    if cut:  # the body ends with no finish, usage or [DONE]: the client sees it break off
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    for index, call in enumerate(reply.tool_calls):
        opening = {"index": index, "id": call.id, "type": "function",
                   "function": {"name": call.name, "arguments": ""}}  # fmt: skip
        await emit(event([{"index": 0, "delta": {"tool_calls": [opening]}, "finish_reason": None}]))
        rest = {"index": index, "function": {"arguments": call.arguments}}
        await emit(event([{"index": 0, "delta": {"tool_calls": [rest]}, "finish_reason": None}]))
    await emit(event([{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}]))
    if include_usage:
        usage = reply.usage
        totals = {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                  "total_tokens": usage.total_tokens}  # fmt: skip
        await emit(event([], totals))
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
