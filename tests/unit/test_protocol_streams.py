"""The Anthropic, Gemini, Bedrock and Azure clients' streamed wire formats over
httpx.MockTransport: the request each sends, vendor-shaped events read back into the
same reply the non-streamed path gives, events split anywhere, error events classified,
a stream that ends early cut, and the key in no error. Bedrock's frames are written by
the emulator's encoder and read by botocore's own decoder (CRCs checked)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import orjson
import pytest

from fanout import ChatRequest, ToolSpec
from fanout.errors import (
    ContentFiltered,
    InvalidResponse,
    ProviderHTTPError,
    RateLimited,
    StreamCut,
)
from fanout.providers import AnthropicProvider, AzureOpenAIProvider, BedrockProvider, GeminiProvider
from fanout.providers._anthropic_stream import AnthropicStream
from fanout.providers._bedrock_stream import BedrockStream
from fanout.retry import classify
from fanout.sim._eventstream import event_frame, exception_frame

KEY = "sk-ant-stream-SECRET-0123456789abcdef"
LOOKUP = ToolSpec("lookup", "Look an order up", {"type": "object", "properties": {"id": {}}})
REQUEST = ChatRequest("m", [{"role": "user", "content": "Where is order 1?"}], tools=(LOOKUP,))


def sse(*events: tuple[str, dict[str, object]]) -> bytes:
    return b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events
    )


def mock(seen: list[httpx.Request], body: bytes, status: int = 200) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body)

    return httpx.MockTransport(handle)


ANTHROPIC = sse(
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [],
        "model": "claude-x", "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1, "cache_creation_input_tokens": 100,
                  "cache_read_input_tokens": 1000}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "Let me "}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "look."}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "input_json_delta", "partial_json": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "input_json_delta", "partial_json": '{"id": '}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use",
                                                          "stop_sequence": None},
                       "usage": {"output_tokens": 42}}),
    ("message_stop", {"type": "message_stop"}),
)  # fmt: skip


async def test_anthropic_streams_text_and_a_tool_call_into_one_reply() -> None:
    seen: list[httpx.Request] = []
    heard: list[str] = []
    provider = AnthropicProvider("c", api_key=KEY, transport=mock(seen, ANTHROPIC))
    reply = await provider.stream(REQUEST, on_delta=heard.append)

    (request,) = seen
    assert request.url.path == "/v1/messages" and json.loads(request.content)["stream"] is True
    assert heard == ["Let me ", "look."]
    assert reply.content == "Let me look."
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("toolu_1", "lookup", '{"id":1}')  # compact, as the non-streamed path writes it
    ]
    assert reply.finish_reason == "tool_calls" and reply.model == "claude-x"
    # input_tokens excludes the cache's; message_delta's output count is the total
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (1110, 42)
    assert (reply.usage.cached_input_tokens, reply.usage.cache_write_tokens) == (1000, 100)


def test_anthropic_events_split_anywhere_read_the_same() -> None:
    def read(step: int) -> tuple[str | None, list[str]]:
        heard: list[str] = []
        decoder = AnthropicStream(heard.append, finish={}, error=_no_error)
        for at in range(0, len(ANTHROPIC), step):
            decoder.feed(ANTHROPIC[at : at + step])
        assert decoder.complete
        return decoder.response({}).content, heard

    assert read(1) == read(7) == read(len(ANTHROPIC)) == ("Let me look.", ["Let me ", "look."])


def _no_error(status: int, raw: bytes, headers: dict[str, str]) -> ProviderHTTPError:
    raise AssertionError("no error event was sent")


@pytest.mark.parametrize(
    ("kind", "error", "status"),
    [("overloaded_error", ProviderHTTPError, 529), ("rate_limit_error", RateLimited, 429),
     ("api_error", ProviderHTTPError, 500)],
)  # fmt: skip
async def test_an_anthropic_error_event_mid_stream_is_classified_as_its_status(
    kind: str, error: type[Exception], status: int
) -> None:
    body = ANTHROPIC[: ANTHROPIC.index(b"event: content_block_stop")] + sse(
        ("error", {"type": "error", "error": {"type": kind, "message": f"bad key {KEY}"}})
    )
    provider = AnthropicProvider("c", api_key=KEY, transport=mock([], body))
    with pytest.raises(error) as raised:
        await provider.stream(REQUEST, on_delta=lambda _: None)

    assert type(raised.value) is error
    assert getattr(raised.value, "status_code", 429) == status
    assert classify(raised.value) in ("server", "rate_limited")  # both retried
    assert KEY not in str(raised.value)


async def test_an_anthropic_stream_without_message_stop_is_cut_and_garbage_is_invalid() -> None:
    cut = AnthropicProvider("c", api_key=KEY, transport=mock([], ANTHROPIC[:-40]))
    with pytest.raises(StreamCut, match="discarded") as raised:
        await cut.stream(REQUEST, on_delta=lambda _: None)
    assert raised.value.chunks == 2 and classify(raised.value) == "connection"

    garbled = AnthropicProvider("c", api_key=KEY, transport=mock([], b"data: {nope\n\n"))
    with pytest.raises(InvalidResponse, match="malformed stream event"):
        await garbled.stream(REQUEST, on_delta=lambda _: None)


async def test_a_refused_stream_is_the_error_its_status_stands_for() -> None:
    body = orjson.dumps({"type": "error", "error": {"type": "overloaded_error",
                                                    "message": "Overloaded"}})  # fmt: skip
    provider = AnthropicProvider("c", api_key=KEY, transport=mock([], body, status=529))
    with pytest.raises(ProviderHTTPError) as raised:
        await provider.stream(REQUEST, on_delta=lambda _: None)
    assert raised.value.status_code == 529


def gemini_chunks(*chunks: dict[str, object]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks)


def _candidate(parts: list[dict[str, object]], finish: str | None = None) -> dict[str, object]:
    candidate: dict[str, object] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": {"promptTokenCount": 9},
            "modelVersion": "gemini-x"}  # fmt: skip


async def test_gemini_streams_chunks_and_takes_the_usage_of_the_last() -> None:
    seen: list[httpx.Request] = []
    heard: list[str] = []
    last = _candidate([{"text": "world"}], "STOP")
    last["usageMetadata"] = {"promptTokenCount": 9, "candidatesTokenCount": 3,
                             "cachedContentTokenCount": 4, "thoughtsTokenCount": 2}  # fmt: skip
    body = gemini_chunks(_candidate([{"text": "Hello "}]),
                         _candidate([{"text": "hm", "thought": True}]), last)  # fmt: skip
    provider = GeminiProvider("g", api_key=KEY, transport=mock(seen, body))
    reply = await provider.stream(REQUEST, on_delta=heard.append)

    (request,) = seen
    assert request.url.path == "/v1beta/models/m:streamGenerateContent"
    assert request.url.params["alt"] == "sse"
    assert heard == ["Hello ", "world"] and reply.content == "Hello world"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (9, 5)  # thoughts billed
    assert reply.usage.cached_input_tokens == 4 and reply.finish_reason == "stop"


async def test_gemini_function_calls_errors_blocks_and_cuts() -> None:
    call = _candidate([{"functionCall": {"name": "lookup", "args": {"id": 1}}}], "STOP")
    called = await GeminiProvider("g", api_key=KEY, transport=mock([], gemini_chunks(call))).stream(
        REQUEST, on_delta=lambda _: None
    )
    assert [(c.id, c.arguments) for c in called.tool_calls] == [("call_0_lookup", '{"id":1}')]
    assert called.finish_reason == "tool_calls"

    limited = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
                         "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                      "retryDelay": "7s"}]}}  # fmt: skip
    body = gemini_chunks(_candidate([{"text": "Hel"}]), limited)
    with pytest.raises(RateLimited) as raised:
        await GeminiProvider("g", api_key=KEY, transport=mock([], body)).stream(
            REQUEST, on_delta=lambda _: None
        )
    assert raised.value.retry_after_s == 7

    blocked = gemini_chunks({"promptFeedback": {"blockReason": "SAFETY"}})
    with pytest.raises(ContentFiltered, match="SAFETY"):
        await GeminiProvider("g", api_key=KEY, transport=mock([], blocked)).stream(
            REQUEST, on_delta=lambda _: None
        )
    unfinished = gemini_chunks(_candidate([{"text": "Hel"}]))  # no finishReason: cut
    with pytest.raises(StreamCut):
        await GeminiProvider("g", api_key=KEY, transport=mock([], unfinished)).stream(
            REQUEST, on_delta=lambda _: None
        )


class _Frozen:
    access_key, secret_key, token = "AKIASTREAMTEST000001", "stream/SECRET/key0123456789", None


class _Credentials:
    def get_frozen_credentials(self) -> _Frozen:
        return _Frozen()


def _event(kind: str, data: dict[str, object]) -> bytes:
    return event_frame(kind, orjson.dumps({**data, "p": "abcdef"}))


BEDROCK = b"".join([
    _event("messageStart", {"role": "assistant"}),
    _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "On "}}),
    _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "it."}}),
    _event("contentBlockStop", {"contentBlockIndex": 0}),
    _event("contentBlockStart", {"contentBlockIndex": 1,
                                 "start": {"toolUse": {"toolUseId": "tu_1", "name": "lookup"}}}),
    _event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"id"'}}}),
    _event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": ": 1}"}}}),
    _event("contentBlockStop", {"contentBlockIndex": 1}),
    _event("messageStop", {"stopReason": "tool_use"}),
    _event("metadata", {"usage": {"inputTokens": 5, "outputTokens": 7, "totalTokens": 12,
                                  "cacheReadInputTokens": 20, "cacheWriteInputTokens": 0},
                        "metrics": {"latencyMs": 120}}),
])  # fmt: skip


def bedrock(seen: list[httpx.Request], body: bytes) -> BedrockProvider:
    return BedrockProvider("br", region="eu-west-1", credentials=_Credentials(),
                           transport=mock(seen, body))  # fmt: skip


async def test_bedrock_reads_converse_stream_frames_with_botocores_decoder() -> None:
    seen: list[httpx.Request] = []
    heard: list[str] = []
    reply = await bedrock(seen, BEDROCK).stream(
        ChatRequest("anthropic.claude:0", REQUEST.messages, tools=(LOOKUP,)), on_delta=heard.append
    )

    (request,) = seen
    assert request.url.raw_path == b"/model/anthropic.claude%3A0/converse-stream"
    assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIASTREAM")
    assert request.headers["accept"] == "application/vnd.amazon.eventstream"
    assert heard == ["On ", "it."] and reply.content == "On it."
    assert [(c.id, c.arguments) for c in reply.tool_calls] == [("tu_1", '{"id":1}')]
    assert reply.finish_reason == "tool_calls"
    assert (reply.usage.input_tokens, reply.usage.cached_input_tokens) == (25, 20)


def test_bedrock_frames_split_anywhere_read_the_same_and_a_bad_crc_is_refused() -> None:
    for step in (1, 5, 64):
        decoder = BedrockStream(lambda _: None, finish={}, error=_no_error)
        for at in range(0, len(BEDROCK), step):
            decoder.feed(BEDROCK[at : at + step])
        assert decoder.complete and decoder.response({}).content == "On it."
    corrupt = bytearray(BEDROCK)
    corrupt[40] ^= 0xFF  # a payload byte of the first frame: its CRC no longer matches
    with pytest.raises(ValueError, match="ChecksumMismatch"):
        BedrockStream(lambda _: None, finish={}, error=_no_error).feed(bytes(corrupt))


@pytest.mark.parametrize(
    ("exception", "error", "status"),
    [("throttlingException", RateLimited, 429),
     ("serviceUnavailableException", ProviderHTTPError, 503),
     ("modelStreamErrorException", ProviderHTTPError, 502)],
)  # fmt: skip
async def test_a_bedrock_exception_frame_mid_stream_is_classified(
    exception: str, error: type[Exception], status: int
) -> None:
    body = BEDROCK[: len(_event("messageStart", {"role": "assistant"}))]
    body += exception_frame(exception, orjson.dumps({"message": "try again"}))
    with pytest.raises(error) as raised:
        await bedrock([], body).stream(REQUEST, on_delta=lambda _: None)
    assert type(raised.value) is error
    assert classify(raised.value) in ("server", "rate_limited")
    if isinstance(raised.value, ProviderHTTPError):
        assert raised.value.status_code == status
    assert _Frozen.secret_key not in str(raised.value)


async def test_bedrock_without_its_metadata_event_is_cut() -> None:
    with pytest.raises(StreamCut):
        await bedrock([], BEDROCK[:-30]).stream(REQUEST, on_delta=lambda _: None)


async def test_azure_streams_openai_chunks_with_its_deployment_path() -> None:
    seen: list[httpx.Request] = []
    heard: list[str] = []
    chunks = [
        {"choices": [], "prompt_filter_results": [{"prompt_index": 0}]},  # Azure's first
        {"choices": [{"index": 0, "delta": {"content": "Fine"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": 1}},
    ]
    body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    provider = AzureOpenAIProvider("az", endpoint="https://x.example", api_key=KEY,
                                   transport=mock(seen, body))  # fmt: skip
    reply = await provider.stream(ChatRequest("prod", REQUEST.messages), on_delta=heard.append)

    (request,) = seen
    assert request.url.path == "/openai/deployments/prod/chat/completions"
    sent = json.loads(request.content)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert heard == ["Fine"] and (reply.usage.input_tokens, reply.usage.output_tokens) == (8, 1)


def test_every_native_provider_is_a_streaming_provider() -> None:
    from fanout.providers import StreamingProvider

    made: list[Callable[[], object]] = [
        lambda: AnthropicProvider("c", api_key=KEY),
        lambda: GeminiProvider("g", api_key=KEY),
        lambda: bedrock([], b""),
        lambda: AzureOpenAIProvider("az", endpoint="https://x.example", api_key=KEY),
    ]
    assert all(isinstance(make(), StreamingProvider) for make in made)


async def test_a_stream_that_carried_no_usage_is_settled_by_estimate() -> None:
    bare = {"candidates": [{"content": {"parts": [{"text": "Hello world"}]},
                            "finishReason": "STOP"}]}  # fmt: skip
    provider = GeminiProvider("g", api_key=KEY, transport=mock([], gemini_chunks(bare)))
    reply = await provider.stream(REQUEST, on_delta=lambda _: None)
    assert reply.content == "Hello world"
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
