"""A streamed Bedrock reply put together: ConverseStream's AWS event-stream frames in,
one :class:`ChatResponse` out, the same the non-streamed Converse path gives.

The body is ``application/vnd.amazon.eventstream``: binary frames (a prelude with the
lengths and its CRC, typed headers, a JSON payload, the frame's CRC), read by botocore's
own decoder (``botocore.eventstream.EventStreamBuffer``, which checks both CRCs). An
``event`` frame's ``:event-type`` is one of ``messageStart``, ``contentBlockStart`` (a
``toolUse`` block's id and name), ``contentBlockDelta`` (``text``, or a fragment of a
tool call's ``input``), ``contentBlockStop``, ``messageStop`` (``stopReason``) and
``metadata`` (``usage``), the last. An ``exception`` frame mid-stream
(``throttlingException``, ``serviceUnavailableException``, ...) is the failure the same
exception answered as a status would be.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from fanout.providers._jsonstream import ErrorFactory, normalised_arguments
from fanout.types import ChatResponse, ToolCall, Usage

__all__ = ["BedrockStream"]

# an exception frame's type as the status Bedrock answers the same exception with; a
# ModelStreamErrorException ("retry your request") counts as a server fault, not a 424
_EXCEPTION_STATUS = {
    "ThrottlingException": 429, "ServiceUnavailableException": 503,
    "InternalServerException": 500, "ModelStreamErrorException": 502,
    "ValidationException": 400, "ModelTimeoutException": 408,
}  # fmt: skip


@dataclass(slots=True)
class _Block:
    id: str = ""
    name: str = ""
    tool: bool = False
    pieces: list[str] = field(default_factory=list)


class BedrockStream:
    """Hears a ConverseStream body's bytes; ``on_delta`` hears each piece of text."""

    __slots__ = ("_blocks", "_buffer", "_error", "_finish", "_on_delta", "_stop", "_usage",
                 "chunks", "ended")  # fmt: skip

    def __init__(
        self,
        on_delta: Callable[[str], None],
        *,
        finish: Mapping[str, str],
        error: ErrorFactory,
    ) -> None:
        from botocore.eventstream import EventStreamBuffer  # the bedrock extra

        self._buffer = EventStreamBuffer()
        self._on_delta = on_delta
        self._finish = finish
        self._error = error
        self._blocks: dict[int, _Block] = {}
        self._stop: str | None = None
        self._usage: dict[str, Any] | None = None
        self.chunks = 0
        self.ended = False  # the metadata event came: the stream's last

    @property
    def done(self) -> bool:
        return self.ended

    @property
    def complete(self) -> bool:
        return self.ended and self._stop is not None

    def feed(self, data: bytes) -> None:
        from botocore.eventstream import ParserError

        self._buffer.add_data(data)
        try:
            for message in self._buffer:
                self._message(message.headers, message.payload)
        except ParserError as exc:
            raise ValueError(f"bad event-stream frame ({type(exc).__name__}: {exc})") from None
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"missing or bad field {exc}") from None

    def _message(self, headers: dict[str, Any], payload: bytes) -> None:
        kind = headers.get(":message-type")
        if kind == "exception":
            name = str(headers.get(":exception-type") or "")
            name = name[:1].upper() + name[1:]
            status = _EXCEPTION_STATUS.get(name, 500)
            raise self._error(status, payload, {"x-amzn-errortype": name})
        if kind == "error":
            name = str(headers.get(":error-code") or "InternalServerException")
            body = orjson.dumps({"message": str(headers.get(":error-message") or name)})
            raise self._error(_EXCEPTION_STATUS.get(name, 500), body, {"x-amzn-errortype": name})
        if kind != "event":
            raise ValueError(f"a frame of :message-type {kind!r}")
        event = orjson.loads(payload)
        if not isinstance(event, dict):
            raise ValueError("an event's payload is not a JSON object")
        self._event(str(headers.get(":event-type")), event)

    def _event(self, kind: str, event: dict[str, Any]) -> None:
        if kind == "contentBlockDelta":
            delta = event["delta"]
            index = int(event.get("contentBlockIndex") or 0)
            if "text" in delta:
                self._text(index, str(delta["text"]))
            elif "toolUse" in delta:
                block = self._blocks.setdefault(index, _Block(tool=True))
                block.pieces.append(str(delta["toolUse"].get("input") or ""))
            # reasoningContent and citations: not part of the reply's text
        elif kind == "contentBlockStart":
            use = (event.get("start") or {}).get("toolUse")
            if use is not None:
                index = int(event.get("contentBlockIndex") or 0)
                self._blocks[index] = _Block(str(use["toolUseId"]), str(use["name"]), tool=True)
        elif kind == "messageStop":
            self._stop = str(event.get("stopReason") or "end_turn")
        elif kind == "metadata":
            self._usage = event.get("usage") or {}
            self.ended = True
        # messageStart and contentBlockStop carry nothing to keep

    def _text(self, index: int, text: str) -> None:
        self._blocks.setdefault(index, _Block()).pieces.append(text)
        self.chunks += 1
        self._on_delta(text)

    def response(self, headers: dict[str, str]) -> ChatResponse:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for _, block in sorted(self._blocks.items()):
            if block.tool:
                calls.append(ToolCall(block.id, block.name, normalised_arguments(block.pieces)))
            else:
                texts.extend(block.pieces)
        usage = self._usage or {}
        read = int(usage.get("cacheReadInputTokens") or 0)
        written = int(usage.get("cacheWriteInputTokens") or 0)
        return ChatResponse(
            content="".join(texts) if texts else None,
            usage=Usage(
                int(usage.get("inputTokens") or 0) + read + written,
                int(usage.get("outputTokens") or 0),
                read,
                written,
            ),
            finish_reason=self._finish.get(str(self._stop), "stop"),
            tool_calls=tuple(calls),
            headers=headers,
        )
