"""The gateway's OpenAI wire: request bodies read, the SSE stream's chunks in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from fanout.service._openai_stream import Delta, answer_deltas, sse_chunks
from fanout.service._openai_wire import OpenAIError, parse_chat, to_chat_request
from fanout.types import ChatResponse, ToolCall, ToolCallDelta, Usage


def chat(**body: object) -> bytes:
    return json.dumps({"model": "fast", "messages": [{"role": "user", "content": "x"}],
                       **body}).encode()  # fmt: skip


def test_a_body_becomes_a_chat_request() -> None:
    body = parse_chat(chat(
        messages=[{"role": "developer", "content": "be brief"},
                  {"role": "user", "content": [{"type": "text", "text": "a"},
                                               {"type": "text", "text": "b"}]}],
        tools=[{"type": "function", "function": {"name": "f"}}],
        response_format={"type": "json_object"}, tool_choice="auto", seed=3, temperature=0,
        max_completion_tokens=77, some_unknown_field=True,
    ))  # fmt: skip
    request = to_chat_request(body)
    assert [m["role"] for m in request.messages] == ["system", "user"]
    assert request.messages[1]["content"] == "ab"
    assert request.tools[0].name == "f" and request.tools[0].parameters["type"] == "object"
    assert request.max_tokens == 77 and request.temperature == 0
    assert request.options == {"response_format": {"type": "json_object"},
                               "tool_choice": "auto", "seed": 3}  # fmt: skip
    schema = {"type": "object"}
    fmt = {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema}}
    structured = to_chat_request(parse_chat(chat(response_format=fmt)))
    assert structured.response_schema == schema and structured.response_schema_name == "thing"
    assert structured.max_tokens == 1024 and structured.temperature == 1.0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"n": 0}, "n"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
         "messages.0.content"),
        ({"tools": [{"type": "retrieval"}]}, "tools.0"),
        ({"response_format": {"type": "xml"}}, "response_format"),
    ],
)
def test_bad_bodies_name_the_parameter(body: dict[str, object], param: str) -> None:
    with pytest.raises(OpenAIError) as caught:
        to_chat_request(parse_chat(chat(**body)))
    assert caught.value.status == 400 and caught.value.param == param
    assert caught.value.body()["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_the_stream_is_role_content_tools_finish_usage_done() -> None:
    answers = [
        ChatResponse("hello", Usage(3, 2)),
        ChatResponse(None, Usage(3, 4), "tool_calls", (ToolCall("c1", "f", "{}"),)),
    ]

    async def collect() -> list[bytes]:
        stream = sse_chunks(answer_deltas(answers), id_="chatcmpl-1", model="fast", created=1,
                            usage=lambda: Usage(6, 6))  # fmt: skip
        return [chunk async for chunk in stream]

    raw = b"".join(asyncio.run(collect())).decode()
    events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    choices = [(c["choices"][0]["index"], c["choices"][0]["delta"],
                c["choices"][0]["finish_reason"]) for c in chunks[:-1]]  # fmt: skip
    assert choices == [
        (0, {"role": "assistant", "content": ""}, None),
        (0, {"content": "hello"}, None),
        (0, {}, "stop"),
        (1, {"role": "assistant", "content": ""}, None),
        (1, {"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                             "function": {"name": "f", "arguments": "{}"}}]}, None),
        (1, {}, "tool_calls"),
    ]  # fmt: skip
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 12


def test_tool_call_pieces_and_an_error_chunk_on_the_wire() -> None:
    async def deltas() -> AsyncIterator[Delta | OpenAIError]:
        yield Delta(0, role="assistant", content="")
        yield Delta(0, tool_calls=(ToolCallDelta(0, "c1", "f", ""),))
        yield Delta(0, tool_calls=(ToolCallDelta(0, None, None, '{"a": '),))
        yield OpenAIError(502, "cut", kind="server_error", code="stream_cut")
        yield Delta(0, content="never sent")

    async def collect() -> list[bytes]:
        stream = sse_chunks(deltas(), id_="chatcmpl-1", model="fast", created=1,
                            usage=lambda: Usage(1, 1))  # fmt: skip
        return [chunk async for chunk in stream]

    raw = b"".join(asyncio.run(collect())).decode()
    events = [json.loads(e.removeprefix("data: ")) for e in raw.split("\n\n") if e]
    pieces = [e["choices"][0]["delta"]["tool_calls"][0] for e in events[1:3]]
    assert pieces == [
        {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"a": '}},
    ]
    # the error ends the stream: no usage chunk, no [DONE]
    assert events[-1] == {"error": {"message": "cut", "type": "server_error", "param": None,
                                    "code": "stream_cut"}}  # fmt: skip
    assert len(events) == 4
