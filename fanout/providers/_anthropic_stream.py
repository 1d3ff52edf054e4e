"""A streamed Messages API reply put together: Anthropic's server-sent events in, one
:class:`ChatResponse` out, the same the non-streamed path gives.

The events (each ``data`` carries its ``type``): ``message_start`` (the message, its
``usage`` with the input tokens and the cache's), ``content_block_start`` (a ``text``
or ``tool_use`` block at ``index``), ``content_block_delta`` (``text_delta`` or
``input_json_delta`` fragments of a tool call's input), ``content_block_stop``,
``message_delta`` (``stop_reason`` and the output tokens so far), ``message_stop`` (the
last), ``ping``, and ``error`` mid-stream (an ``overloaded_error`` after the 200 is the
same retryable failure as a 529 before it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from fanout.providers._jsonstream import ErrorFactory, normalised_arguments
from fanout.providers._sse import SSEParser
from fanout.types import ChatResponse, ToolCall, Usage

__all__ = ["AnthropicStream"]

# an error event's type as the status the same error is answered with before a stream
_ERROR_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
    "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429,
    "api_error": 500, "timeout_error": 504, "overloaded_error": 529,
}  # fmt: skip


@dataclass(slots=True)
class _Block:
    kind: str
    id: str = ""
    name: str = ""
    pieces: list[str] = field(default_factory=list)


class AnthropicStream:
    """Hears a Messages API stream's bytes; ``on_delta`` hears each piece of text."""

    __slots__ = ("_blocks", "_error", "_finish", "_on_delta", "_parser", "_stop", "_usage",
                 "chunks", "model", "stopped")  # fmt: skip

    def __init__(
        self,
        on_delta: Callable[[str], None],
        *,
        finish: Mapping[str, str],
        error: ErrorFactory,
    ) -> None:
        self._on_delta = on_delta
        self._finish = finish
        self._error = error
        self._parser = SSEParser()
        self._blocks: dict[int, _Block] = {}
        self._usage: dict[str, int] = {}
        self._stop: str | None = None
        self.chunks = 0
        self.model = ""
        self.stopped = False  # message_stop came

    @property
    def done(self) -> bool:
        return self.stopped

    @property
    def complete(self) -> bool:
        return self.stopped

    def feed(self, data: bytes) -> None:
        for text in self._parser.feed(data):
            event = orjson.loads(text)
            if not isinstance(event, dict):
                raise ValueError("an event is not a JSON object")
            try:
                self._event(event, text)
            except (KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"missing or bad field {exc} in {text[:80]!r}") from None

    def _event(self, event: dict[str, Any], raw: str) -> None:
        kind = event.get("type")
        if kind == "content_block_delta":
            self._delta(int(event["index"]), _object(event["delta"]))
        elif kind == "content_block_start":
            block, index = _object(event["content_block"]), int(event["index"])
            self._blocks[index] = _Block(
                str(block["type"]), str(block.get("id") or ""), str(block.get("name") or "")
            )
            if block["type"] == "text" and block.get("text"):
                self._text(index, str(block["text"]))
        elif kind == "message_start":
            message = _object(event["message"])
            self.model = str(message.get("model") or "")
            self._counts(message.get("usage"))
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self._stop = str(delta["stop_reason"])
            self._counts(event.get("usage"))
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            error = event.get("error")
            name = error.get("type") if isinstance(error, dict) else None
            raise self._error(_ERROR_STATUS.get(str(name), 500), raw.encode(), {})
        # ping, content_block_stop and kinds added later carry nothing to keep

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        kind = delta.get("type")
        if kind == "text_delta":
            self._text(index, str(delta["text"]))
        elif kind == "input_json_delta":
            block = self._blocks.get(index)
            if block is None:
                raise ValueError(f"input_json_delta for block {index}, which never started")
            block.pieces.append(str(delta.get("partial_json") or ""))
        # thinking_delta, signature_delta, citations_delta: not part of the reply's text

    def _text(self, index: int, text: str) -> None:
        block = self._blocks.setdefault(index, _Block("text"))
        block.pieces.append(text)
        self.chunks += 1
        self._on_delta(text)

    def _counts(self, usage: object) -> None:
        """Usage as far as it came: message_delta's counts are totals, not increments."""
        if isinstance(usage, dict):
            for key, value in usage.items():
                if isinstance(value, int):
                    self._usage[key] = value

    def response(self, headers: dict[str, str]) -> ChatResponse:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for _, block in sorted(self._blocks.items()):
            if block.kind == "text":
                texts.extend(block.pieces)
            elif block.kind == "tool_use":
                calls.append(ToolCall(block.id, block.name, normalised_arguments(block.pieces)))
        usage = self._usage
        read = usage.get("cache_read_input_tokens", 0)
        written = usage.get("cache_creation_input_tokens", 0)
        return ChatResponse(
            content="".join(texts) if texts else None,
            usage=Usage(
                usage.get("input_tokens", 0) + read + written,
                usage.get("output_tokens", 0),
                read,
                written,
            ),
            finish_reason=self._finish.get(str(self._stop), "stop"),
            tool_calls=tuple(calls),
            model=self.model,
            headers=headers,
        )


def _object(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{type(value).__name__} where an object was expected")
    return value
