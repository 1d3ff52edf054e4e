"""The emulator's streamed Messages API reply: Anthropic's server-sent events, written
apart from the client's reader (``fanout.providers._anthropic_stream``) on purpose."""

from __future__ import annotations

import json
import re

import orjson

from fanout.sim._dialect import Parsed, as_object, calls_of
from fanout.sim._stream_protocols import Script
from fanout.types import ChatResponse, Usage

__all__ = ["anthropic_script"]

_PIECE = re.compile(r"\S+\s*|\s+")


def _event(name: str, data: dict[str, object]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def anthropic_script(parsed: Parsed, reply: ChatResponse, usage: Usage, serial: int) -> Script:
    """``message_start``, ``ping``, a text block's deltas, a ``tool_use`` block per call
    (its input in two ``input_json_delta`` fragments), ``message_delta``, ``message_stop``."""
    calls = calls_of(reply, parsed)
    fresh = usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens
    start: dict[str, object] = {
        "id": f"msg_emu{serial:08d}", "type": "message", "role": "assistant",
        "model": parsed.chat.model, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": fresh, "output_tokens": 1,
                  "cache_creation_input_tokens": usage.cache_write_tokens,
                  "cache_read_input_tokens": usage.cached_input_tokens},
    }  # fmt: skip
    script = Script("text/event-stream; charset=utf-8")
    script.opening = [
        _event("message_start", {"type": "message_start", "message": start}),
        _event("ping", {"type": "ping"}),
    ]
    index = 0
    if reply.content is not None and not calls:
        script.opening.append(_start(0, {"type": "text", "text": ""}))
        script.pieces = [
            (piece, _delta(0, {"type": "text_delta", "text": piece}))
            for piece in _PIECE.findall(reply.content)
        ]
        script.closing.append(_stop(0))
        index = 1
    for n, call in enumerate(calls, start=index):
        whole = json.dumps(as_object(call.arguments))  # with spaces: the client compacts it
        block: dict[str, object] = {
            "type": "tool_use", "id": f"toolu_{call.id}", "name": call.name, "input": {},
        }  # fmt: skip
        script.closing.append(_start(n, block))
        for fragment in (whole[: len(whole) // 2], whole[len(whole) // 2 :]):
            script.closing.append(_delta(n, {"type": "input_json_delta", "partial_json": fragment}))
        script.closing.append(_stop(n))
    stop = "tool_use" if calls else {"length": "max_tokens"}.get(reply.finish_reason, "end_turn")
    script.closing += [
        _event("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": stop, "stop_sequence": None},
                                 "usage": {"output_tokens": usage.output_tokens}}),
        _event("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    script.overloaded = _event("error", {
        "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
    })  # fmt: skip
    return script


def _start(index: int, block: dict[str, object]) -> bytes:
    data = {"type": "content_block_start", "index": index, "content_block": block}
    return _event("content_block_start", data)


def _delta(index: int, delta: dict[str, object]) -> bytes:
    return _event("content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": delta})  # fmt: skip


def _stop(index: int) -> bytes:
    return _event("content_block_stop", {"type": "content_block_stop", "index": index})
