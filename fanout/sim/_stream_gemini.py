"""The emulator's streamed Gemini reply: ``streamGenerateContent?alt=sse`` chunks, each a
whole ``GenerateContentResponse``, written apart from the client's reader on purpose."""

from __future__ import annotations

import re

import orjson

from fanout.sim._dialect import Parsed, as_object, calls_of
from fanout.sim._stream_protocols import Script
from fanout.types import ChatResponse, Usage

__all__ = ["gemini_script"]

_PIECE = re.compile(r"\S+\s*|\s+")


def gemini_script(parsed: Parsed, reply: ChatResponse, usage: Usage, serial: int) -> Script:
    """A chunk per piece of text (or one with every ``functionCall``), the usage so far on
    each; the last chunk has the ``finishReason`` and the whole ``usageMetadata``."""
    model = parsed.chat.model
    so_far = {"promptTokenCount": usage.input_tokens, "totalTokenCount": usage.input_tokens}
    whole: dict[str, int] = {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": usage.output_tokens,
        "totalTokenCount": usage.total_tokens,
    }
    if usage.cached_input_tokens:
        whole["cachedContentTokenCount"] = usage.cached_input_tokens

    def chunk(parts: list[dict[str, object]], finish: str | None = None) -> bytes:
        candidate: dict[str, object] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish is not None:
            candidate["finishReason"] = finish
        data = {"candidates": [candidate], "usageMetadata": whole if finish else so_far,
                "modelVersion": model, "responseId": f"emu{serial}"}  # fmt: skip
        return b"data: " + orjson.dumps(data) + b"\r\n\r\n"  # Gemini ends events so

    calls = calls_of(reply, parsed)
    finish = "MAX_TOKENS" if reply.finish_reason == "length" else "STOP"
    script = Script("text/event-stream")
    if calls:
        parts: list[dict[str, object]] = [
            {"functionCall": {"name": c.name, "args": as_object(c.arguments)}} for c in calls
        ]
        script.closing = [chunk(parts, finish)]
    else:
        pieces = _PIECE.findall(reply.content or "") or [""]
        script.pieces = [(p, chunk([{"text": p}])) for p in pieces[:-1]]
        last = pieces[-1]
        if len(pieces) > 1:
            script.pieces.append((last, chunk([{"text": last}], finish)))
        else:
            script.closing = [chunk([{"text": last}], finish)]
    error = {"code": 503, "message": "The model is overloaded. Please try again later.",
             "status": "UNAVAILABLE"}  # fmt: skip
    script.overloaded = b"data: " + orjson.dumps({"error": error}) + b"\r\n\r\n"
    return script
