"""The emulator's streamed Bedrock reply: ConverseStream's events as AWS event-stream
frames (:mod:`fanout.sim._eventstream`), written apart from the client on purpose."""

from __future__ import annotations

import json
import re

import orjson

from fanout.sim._dialect import Parsed, as_object, calls_of
from fanout.sim._eventstream import event_frame, exception_frame
from fanout.sim._stream_protocols import Script
from fanout.types import ChatResponse, Usage

__all__ = ["bedrock_script"]

_PIECE = re.compile(r"\S+\s*|\s+")
_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _event(kind: str, data: dict[str, object]) -> bytes:
    # Bedrock pads each event with a "p" field of varying length (hides the sizes)
    return event_frame(kind, orjson.dumps({**data, "p": _PAD[: 8 + len(kind)]}))


def bedrock_script(parsed: Parsed, reply: ChatResponse, usage: Usage, serial: int) -> Script:
    """``messageStart``; a text block's ``contentBlockDelta`` s; per call a
    ``contentBlockStart`` (``toolUse``) and its input in two fragments; ``messageStop``;
    ``metadata`` with the usage. A cut ends on half a frame."""
    calls = calls_of(reply, parsed)
    script = Script("application/vnd.amazon.eventstream")
    script.opening = [_event("messageStart", {"role": "assistant"})]
    index = 0
    if reply.content is not None and not calls:
        script.pieces = [
            (p, _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}}))
            for p in _PIECE.findall(reply.content)
        ]
        script.closing.append(_event("contentBlockStop", {"contentBlockIndex": 0}))
        index = 1
    for n, call in enumerate(calls, start=index):
        use = {"toolUseId": f"tooluse_{call.id}", "name": call.name}
        script.closing.append(
            _event("contentBlockStart", {"contentBlockIndex": n, "start": {"toolUse": use}})
        )
        whole = json.dumps(as_object(call.arguments))
        for fragment in (whole[: len(whole) // 2], whole[len(whole) // 2 :]):
            script.closing.append(_event("contentBlockDelta", {
                "contentBlockIndex": n, "delta": {"toolUse": {"input": fragment}}}))  # fmt: skip
        script.closing.append(_event("contentBlockStop", {"contentBlockIndex": n}))
    stop = "tool_use" if calls else {"length": "max_tokens"}.get(reply.finish_reason, "end_turn")
    fresh = usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens
    tokens: dict[str, int] = {"inputTokens": fresh, "outputTokens": usage.output_tokens,
                              "totalTokens": usage.total_tokens}  # fmt: skip
    if usage.cached_input_tokens or usage.cache_write_tokens:
        tokens["cacheReadInputTokens"] = usage.cached_input_tokens
        tokens["cacheWriteInputTokens"] = usage.cache_write_tokens
    script.closing += [
        _event("messageStop", {"stopReason": stop}),
        _event("metadata", {"usage": tokens, "metrics": {"latencyMs": 0}}),
    ]
    script.overloaded = exception_frame(
        "serviceUnavailableException", orjson.dumps({"message": "The model is overloaded."})
    )
    script.cut_tail = _event("contentBlockStop", {"contentBlockIndex": 0})[:9]
    return script
