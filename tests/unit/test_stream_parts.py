"""Pure parts of streaming, embeddings and content parts: the SSE parser, a streamed
reply put together, the OpenAI client's stream over a mock transport (a body that
breaks off), usage shares, and the image token formula."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from fanout._media import UNKNOWN_IMAGE_TOKENS, audio_tokens, image_size, image_tokens
from fanout.errors import StreamCut
from fanout.providers import (
    OpenAIProvider,
    SSEParser,
    ToolCallListener,
    image_source,
    parts_of,
)
from fanout.providers._openai_stream import StreamAssembler
from fanout.run._embed import shares
from fanout.types import (
    ChatRequest,
    ToolCallDelta,
    Usage,
    estimate_prompt_tokens,
    modalities_of,
)


def test_sse_events_split_anywhere_and_any_line_ending() -> None:
    body = (
        b'data: {"a": 1}\r\n\r\n: a comment\ndata: two\ndata: lines\n\nevent: x\rdata: [DONE]\r\r\n'
    )
    parser = SSEParser()
    got: list[str] = []
    for i in range(len(body)):  # one byte at a time: every cut point
        got += parser.feed(body[i : i + 1])
    assert got == ['{"a": 1}', "two\nlines", "[DONE]"]
    assert not parser.pending


def chunk(delta: dict[str, object], finish: str | None = None) -> str:
    return orjson.dumps(
        {"model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    ).decode()


def test_a_streamed_reply_is_put_together_with_its_tool_calls() -> None:
    heard: list[str] = []
    assembler = StreamAssembler(heard.append)
    assembler.event(chunk({"role": "assistant", "content": ""}))
    assembler.event(chunk({"content": "Let me "}))
    assembler.event(chunk({"content": "look."}))
    opening = {"index": 0, "id": "call_1", "type": "function",
               "function": {"name": "lookup", "arguments": ""}}  # fmt: skip
    assembler.event(chunk({"tool_calls": [opening]}))
    assembler.event(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q": '}}]}))
    assembler.event(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}))
    assembler.event(chunk({}, "tool_calls"))
    assembler.event(
        '{"model": "m", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}'
    )
    assembler.event("[DONE]")
    assert assembler.done and heard == ["Let me ", "look."]
    reply = assembler.response(assembler.usage, {})  # type: ignore[arg-type]
    assert reply.content == "Let me look." and reply.finish_reason == "tool_calls"
    assert reply.tool_calls[0].name == "lookup"
    assert reply.tool_calls[0].parsed_arguments() == {"q": "x"}
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (9, 4)


class _Listener:
    """An ``on_delta`` that hears tool calls too (a ToolCallListener)."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.tools: list[ToolCallDelta] = []

    def __call__(self, text: str) -> None:
        self.text.append(text)

    def tool_call(self, piece: ToolCallDelta) -> None:
        self.tools.append(piece)


def test_a_tool_call_listener_hears_each_piece_of_a_tool_call() -> None:
    heard = _Listener()
    assert isinstance(heard, ToolCallListener)
    assembler = StreamAssembler(heard)
    opening = {"index": 0, "id": "call_1", "type": "function",
               "function": {"name": "lookup", "arguments": ""}}  # fmt: skip
    assembler.event(chunk({"tool_calls": [opening]}))
    assembler.event(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q": '}}]}))
    assembler.event(chunk({"tool_calls": [{"index": 1, "id": "call_2",
                                            "function": {"name": "time"}}]}))  # fmt: skip
    assembler.event(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}))
    assert heard.text == []
    assert heard.tools == [
        ToolCallDelta(0, "call_1", "lookup", ""),
        ToolCallDelta(0, None, None, '{"q": '),
        ToolCallDelta(1, "call_2", "time", ""),
        ToolCallDelta(0, None, None, '"x"}'),
    ]
    reply = assembler.response(Usage(1, 1), {})
    assert [c.name for c in reply.tool_calls] == ["lookup", "time"]
    assert reply.tool_calls[0].parsed_arguments() == {"q": "x"}


class _Breaking(httpx.AsyncByteStream):
    """Two events, then the connection breaks."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"data: " + chunk({"content": "Half "}).encode() + b"\n\n"
        yield b"data: " + chunk({"content": "a reply"}).encode() + b"\n\n"
        raise httpx.ReadError("connection reset by peer")


def test_a_stream_that_breaks_off_is_a_retryable_stream_cut_without_the_key() -> None:
    key = "sk-unit-stream-0123456789-SECRET"

    def handler(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        return httpx.Response(
            200, stream=_Breaking(), headers={"content-type": "text/event-stream"}
        )

    provider = OpenAIProvider("unit", base_url="http://x/v1", api_key=key,
                              transport=httpx.MockTransport(handler))  # fmt: skip
    heard: list[str] = []
    request = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(StreamCut) as caught:
        asyncio.run(provider.stream(request, on_delta=heard.append))
    assert caught.value.retryable and caught.value.chunks == 2
    assert heard == ["Half ", "a reply"]
    assert key not in str(caught.value) and key not in repr(provider)


def test_a_server_that_ignores_include_usage_is_settled_by_estimate() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        events = [chunk({"content": "Hello there"}), chunk({}, "stop"), "[DONE]"]
        return httpx.Response(200, content="".join(f"data: {e}\n\n" for e in events).encode())

    provider = OpenAIProvider(
        "unit", base_url="http://x/v1", transport=httpx.MockTransport(handler)
    )
    request = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    reply = asyncio.run(provider.stream(request, on_delta=lambda _: None))
    assert reply.content == "Hello there" and reply.usage.output_tokens == 3
    assert reply.usage.input_tokens == estimate_prompt_tokens(request.messages)


def test_usage_shares_add_up_exactly() -> None:
    assert shares(10, [1, 1, 1]) == [4, 3, 3]
    assert sum(shares(1001, [7, 13, 2, 9])) == 1001
    assert shares(5, [0, 0]) == [3, 2]


def test_image_tokens_follow_openais_published_examples() -> None:
    assert image_tokens(1024, 1024) == 765  # scaled to 768 x 768: 4 tiles
    assert image_tokens(2048, 4096) == 1105  # 1024 x 2048, then 768 x 1536: 6 tiles
    assert image_tokens(4096, 8192, detail="low") == 85
    assert image_tokens(500, 500) == 255
    assert image_tokens(None, None) == UNKNOWN_IMAGE_TOKENS == 85 + 170 * 8


def test_image_sizes_read_from_data_uris() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + struct.pack(">II", 640, 480) + b"\x08" * 5
    gif = b"GIF89a" + struct.pack("<HH", 32, 16) + b"\x00" * 8
    jpeg = (b"\xff\xd8" + b"\xff\xe0" + struct.pack(">H", 4) + b"\x00\x00"
            + b"\xff\xc0" + struct.pack(">HBHH", 11, 8, 300, 200) + b"\x00" * 8)  # fmt: skip
    for raw, size in ((png, (640, 480)), (gif, (32, 16)), (jpeg, (200, 300))):
        uri = "data:image/x;base64," + base64.b64encode(raw).decode()
        assert image_size(uri) == size
    assert image_size("https://example.com/cat.png") is None


def test_content_parts_are_estimated_and_named() -> None:
    wav = base64.b64encode(
        b"RIFF" + b"\x00" * 24 + struct.pack("<I", 32_000) + b"\x00" * 32_012
    ).decode()
    messages = [
        {"role": "user", "content": [
            {"type": "text", "text": "x" * 40},
            {"type": "image_url",
             "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
            {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
        ]},
    ]  # fmt: skip
    assert audio_tokens(wav, "wav") == 11  # ~1 s at 32,000 bytes/s, 10 tokens a second
    assert estimate_prompt_tokens(messages) == 10 + 85 + 11 + 4 + 2  # type: ignore[arg-type]
    assert modalities_of(messages) == {"image", "audio"}  # type: ignore[arg-type]
    assert modalities_of([{"role": "user", "content": [{"type": "video"}]}]) == {"unknown:video"}  # type: ignore[list-item]
    assert parts_of("hi") == [{"type": "text", "text": "hi"}]
    source = image_source({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}})
    assert source.media_type == "image/png" and source.data == b"\x00\x00\x00"
