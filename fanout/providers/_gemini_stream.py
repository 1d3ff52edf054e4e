"""A streamed Gemini reply put together: ``streamGenerateContent?alt=sse`` in, one
:class:`ChatResponse` out, the same the non-streamed path gives.

Each event's ``data`` is a whole ``GenerateContentResponse`` holding the next parts of
the first candidate (``text``, or a ``functionCall`` that comes whole); the candidate's
``finishReason`` comes with its last parts, and ``usageMetadata`` (totals so far) with
the chunks, complete on the last. There is no closing event: a reply is whole when a
finish reason came and the body ended. An ``error`` object mid-stream (``UNAVAILABLE``
when the model is overloaded) is the failure its ``code`` stands for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from fanout.errors import ContentFiltered
from fanout.providers._jsonstream import ErrorFactory
from fanout.providers._sse import SSEParser
from fanout.types import ChatResponse, ToolCall, Usage

__all__ = ["GeminiStream"]


class GeminiStream:
    """Hears a Gemini stream's bytes; ``on_delta`` hears each piece of text."""

    __slots__ = ("_calls", "_error", "_filtered", "_finish", "_name", "_on_delta", "_parser",
                 "_parts", "_reason", "_texts", "_usage", "chunks", "model")  # fmt: skip

    def __init__(
        self,
        name: str,
        on_delta: Callable[[str], None],
        *,
        finish: Mapping[str, str],
        filtered: frozenset[str],
        error: ErrorFactory,
    ) -> None:
        self._name = name
        self._on_delta = on_delta
        self._finish = finish
        self._filtered = filtered
        self._error = error
        self._parser = SSEParser()
        self._texts: list[str] = []
        self._calls: list[ToolCall] = []
        self._parts = 0  # parts of the candidate so far: a call's id counts them, as unstreamed
        self._reason: str | None = None
        self._usage: dict[str, Any] = {}
        self.chunks = 0
        self.model = ""

    @property
    def done(self) -> bool:
        return False  # no closing event: read to the body's end

    @property
    def complete(self) -> bool:
        return self._reason is not None and not self._parser.pending

    def feed(self, data: bytes) -> None:
        for text in self._parser.feed(data):
            chunk = orjson.loads(text)
            if not isinstance(chunk, dict):
                raise ValueError("a chunk is not a JSON object")
            try:
                self._chunk(chunk, text)
            except (KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"missing or bad field {exc} in {text[:80]!r}") from None

    def _chunk(self, chunk: dict[str, Any], raw: str) -> None:
        error = chunk.get("error")
        if isinstance(error, dict):
            raise self._error(int(error.get("code") or 500), raw.encode(), {})
        self.model = str(chunk.get("modelVersion") or self.model)
        if isinstance(chunk.get("usageMetadata"), dict):
            self._usage = chunk["usageMetadata"]
        candidates = chunk.get("candidates") or ()
        if not candidates:
            reason = (chunk.get("promptFeedback") or {}).get("blockReason")
            if reason:
                raise ContentFiltered(
                    f"{self._name}: the prompt was blocked ({reason})", provider=self._name
                )
            return  # a chunk of usage alone
        candidate = candidates[0]
        for part in (candidate.get("content") or {}).get("parts") or ():
            n, self._parts = self._parts, self._parts + 1
            if "functionCall" in part:
                call = part["functionCall"]
                arguments = orjson.dumps(call.get("args") or {}).decode()
                call_id = str(call.get("id") or f"call_{n}_{call['name']}")
                self._calls.append(ToolCall(call_id, str(call["name"]), arguments))
            elif "text" in part and not part.get("thought") and part["text"]:
                piece = str(part["text"])
                self._texts.append(piece)
                self.chunks += 1
                self._on_delta(piece)
        if candidate.get("finishReason"):
            self._reason = str(candidate["finishReason"])

    def response(self, headers: dict[str, str]) -> ChatResponse:
        reason = self._reason or "STOP"
        finish = "tool_calls" if self._calls else self._finish.get(reason, "stop")
        if reason in self._filtered:
            finish = "content_filter"
        usage = self._usage
        output = int(usage.get("candidatesTokenCount") or 0)
        return ChatResponse(
            content="".join(self._texts) if self._texts else None,
            usage=Usage(
                int(usage.get("promptTokenCount") or 0),
                output + int(usage.get("thoughtsTokenCount") or 0),
                int(usage.get("cachedContentTokenCount") or 0),
            ),
            finish_reason=finish,
            tool_calls=tuple(self._calls),
            model=self.model,
            headers=headers,
        )
