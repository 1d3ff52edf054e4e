"""The vendors' own SDKs read the emulator's streamed replies: Anthropic's Python SDK its
server-sent events, Google's ``google-genai`` its ``streamGenerateContent`` chunks,
boto3 its ConverseStream event-stream frames. fanout's clients and
its emulator share no code, and these parsers share none with either, so an event shape
both fanout sides got wrong the same way fails here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import Emulator, start_emulator

from fanout.sim.server import EmulatorConfig

anthropic = pytest.importorskip("anthropic")
boto3 = pytest.importorskip("boto3")
genai = pytest.importorskip("google.genai")

KEY = "sk-fanout-sdk-0123456789"
TOOL_PROMPT = '[sim:tools=lookup({"id": 7})] Where is my order?'
SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}}}
LOOKUP = {"name": "lookup", "description": "Look an order up.", "input_schema": SCHEMA}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with start_emulator(EmulatorConfig(api_key=KEY, latency_per_token_ms=0.5)) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _fresh(emulator: Emulator) -> None:
    emulator.reset()
    emulator.faults(cut_streams=0, overload_streams=0)


def _anthropic(emulator: Emulator) -> anthropic.Anthropic:
    # this SDK sends its key as a bearer token; the emulator reads x-api-key, which the
    # Messages API documents (and fanout's client sends)
    return anthropic.Anthropic(api_key=KEY, base_url=emulator.root, max_retries=0,
                               default_headers={"x-api-key": KEY})  # fmt: skip


def test_anthropics_sdk_streams_text_and_a_tool_call(emulator: Emulator) -> None:
    with _anthropic(emulator) as client:
        with client.messages.stream(
            model="claude-3-5-haiku-latest", max_tokens=64,
            messages=[{"role": "user", "content": "Sentiment of: great, I love it"}],
        ) as stream:  # fmt: skip
            pieces = list(stream.text_stream)
            message = stream.get_final_message()
        with client.messages.stream(
            model="claude-3-5-haiku-latest", max_tokens=64, tools=[LOOKUP],
            messages=[{"role": "user", "content": TOOL_PROMPT}],
        ) as stream:  # fmt: skip
            called = stream.get_final_message()

    assert "".join(pieces) == message.content[0].text == "positive"
    assert message.stop_reason == "end_turn" and message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    (use,) = [b for b in called.content if b.type == "tool_use"]
    assert (use.name, use.input) == ("lookup", {"id": 7})  # from its input_json_delta pieces
    assert called.stop_reason == "tool_use"
    assert emulator.stats()["streams"] == 2


def test_anthropics_sdk_raises_the_overloaded_error_sent_mid_stream(emulator: Emulator) -> None:
    emulator.faults(overload_streams=1)
    asked = {"model": "claude-3-5-haiku-latest", "max_tokens": 64,
             "messages": [{"role": "user", "content": "Summarise: a long enough text here"}]}
    with (
        _anthropic(emulator) as client,
        pytest.raises(anthropic.APIStatusError, match="overloaded_error"),
        client.messages.stream(**asked) as stream,
    ):  # fmt: skip
        stream.get_final_message()


def _bedrock(emulator: Emulator) -> object:
    from botocore.config import Config

    return boto3.client(
        "bedrock-runtime", endpoint_url=emulator.root, region_name="us-east-1",
        aws_access_key_id="AKIAFANOUTSDKTEST001", aws_secret_access_key="sdk/SECRET/0123456789",
        config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip


def test_boto3_reads_converse_stream_text_tool_use_and_usage(emulator: Emulator) -> None:
    client = _bedrock(emulator)
    reply = client.converse_stream(  # type: ignore[attr-defined]
        modelId="anthropic.claude-3-haiku-20240307-v1:0",
        messages=[{"role": "user", "content": [{"text": "Sentiment of: broken and late"}]}],
    )
    events = list(reply["stream"])
    tools = {"tools": [{"toolSpec": {"name": "lookup", "description": "Look an order up.",
                                     "inputSchema": {"json": SCHEMA}}}]}  # fmt: skip
    called = client.converse_stream(  # type: ignore[attr-defined]
        modelId="anthropic.claude-3-haiku-20240307-v1:0", toolConfig=tools,
        messages=[{"role": "user", "content": [{"text": TOOL_PROMPT}]}],
    )  # fmt: skip
    call_events = list(called["stream"])
    client.close()  # type: ignore[attr-defined]

    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events
                   if "contentBlockDelta" in e)  # fmt: skip
    assert text == "negative"
    assert events[-1]["metadata"]["usage"]["outputTokens"] > 0
    (start,) = [e["contentBlockStart"]["start"]["toolUse"] for e in call_events
                if "contentBlockStart" in e]  # fmt: skip
    fragments = [e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in call_events
                 if "contentBlockDelta" in e]  # fmt: skip
    assert start["name"] == "lookup" and len(fragments) == 2
    assert "".join(fragments).replace(" ", "") == '{"id":7}'
    assert call_events[-2]["messageStop"]["stopReason"] == "tool_use"


def test_boto3_raises_the_exception_frame_sent_mid_stream(emulator: Emulator) -> None:
    from botocore.exceptions import EventStreamError

    emulator.faults(overload_streams=1)
    client = _bedrock(emulator)
    reply = client.converse_stream(  # type: ignore[attr-defined]
        modelId="anthropic.claude-3-haiku-20240307-v1:0",
        messages=[{"role": "user", "content": [{"text": "Summarise: a long enough text"}]}],
    )
    with pytest.raises(EventStreamError) as raised:
        list(reply["stream"])
    reply["stream"].close()  # the connection a failed stream leaves open
    client.close()  # type: ignore[attr-defined]
    assert raised.value.response["Error"]["Code"] == "serviceUnavailableException"


def _gemini(emulator: Emulator) -> object:
    options = genai.types.HttpOptions(base_url=emulator.root, api_version="v1beta")
    return genai.Client(api_key=KEY, http_options=options)


def test_googles_sdk_streams_text_usage_and_a_function_call(emulator: Emulator) -> None:
    client = _gemini(emulator)
    chunks = list(client.models.generate_content_stream(  # type: ignore[attr-defined]
        model="gemini-2.0-flash", contents="Sentiment of: it is a chair"))  # fmt: skip
    lookup = genai.types.FunctionDeclaration(
        name="lookup", description="Look an order up.", parameters_json_schema=SCHEMA
    )
    tools = genai.types.GenerateContentConfig(
        tools=[genai.types.Tool(function_declarations=[lookup])]
    )
    called = list(client.models.generate_content_stream(  # type: ignore[attr-defined]
        model="gemini-2.0-flash", contents=TOOL_PROMPT, config=tools))  # fmt: skip
    client.close()  # type: ignore[attr-defined]

    assert "".join(c.text or "" for c in chunks) == "neutral"
    last = chunks[-1]
    assert last.candidates[0].finish_reason == genai.types.FinishReason.STOP
    assert last.usage_metadata.candidates_token_count > 0
    (call,) = [p.function_call for c in called for p in c.candidates[0].content.parts
               if p.function_call]  # fmt: skip
    assert (call.name, call.args) == ("lookup", {"id": 7})


def test_googles_sdk_raises_the_error_chunk_sent_mid_stream(emulator: Emulator) -> None:
    emulator.faults(overload_streams=1)
    client = _gemini(emulator)
    with pytest.raises(genai.errors.ServerError, match="UNAVAILABLE"):
        list(client.models.generate_content_stream(  # type: ignore[attr-defined]
            model="gemini-2.0-flash", contents="Summarise: a long enough text here"))  # fmt: skip
    client.close()  # type: ignore[attr-defined]
