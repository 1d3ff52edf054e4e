"""The Anthropic, Azure, Bedrock and Gemini clients' wire formats over httpx.MockTransport:
bodies and headers as each vendor documents them, replies and usage read back, every
error mapping, and secrets kept out of errors and reprs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import httpx
import pytest

from fanout import ChatRequest, ToolSpec
from fanout.errors import ContentFiltered, ProviderHTTPError, RateLimited, RequestTooLarge
from fanout.providers import (
    AnthropicProvider,
    AzureOpenAIProvider,
    BedrockProvider,
    GeminiProvider,
    OpenAIProvider,
)
from fanout.retry import classify
from fanout.types import Message

KEY = "sk-ant-test-SECRET-0123456789abcdef"
LOOKUP = ToolSpec("lookup", "Look an order up", {"type": "object", "properties": {"id": {}}})
SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}}
CONVERSATION: list[Message] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Where is order 1?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"id": 1}'}},
        {"id": "c2", "type": "function", "function": {"name": "lookup", "arguments": "{bad"}},
    ]},
    {"role": "tool", "tool_call_id": "c1", "content": "shipped"},
    {"role": "tool", "tool_call_id": "c2", "content": "unknown"},
]  # fmt: skip
Handler = Callable[[httpx.Request], httpx.Response]


def mock(
    seen: list[httpx.Request], status: int, body: object, **headers: str
) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body, headers=headers)

    return httpx.MockTransport(handle)


def anthropic_reply(*content: dict[str, object], stop: str = "end_turn") -> dict[str, object]:
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": list(content), "stop_reason": stop,
        "usage": {"input_tokens": 10, "output_tokens": 4, "cache_creation_input_tokens": 100,
                  "cache_read_input_tokens": 1000},
    }  # fmt: skip


async def test_anthropic_body_headers_tools_and_cached_usage() -> None:
    seen: list[httpx.Request] = []
    reply = anthropic_reply(
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {"id": 2}},
        stop="tool_use",
    )
    provider = AnthropicProvider(
        "claude", api_key=KEY, base_url="https://api.example/v1", cache_prompt=True,
        transport=mock(seen, 200, reply, **{"anthropic-ratelimit-requests-limit": "50"}),
    )  # fmt: skip
    request = ChatRequest("claude-x", CONVERSATION, max_tokens=9, tools=(LOOKUP,))
    response = await provider.complete(request)

    (sent,) = seen
    assert str(sent.url) == "https://api.example/v1/messages"
    assert (sent.headers["x-api-key"], sent.headers["anthropic-version"]) == (KEY, "2023-06-01")
    assert "authorization" not in sent.headers
    body = json.loads(sent.content)
    assert body["system"] == [
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
    ]
    assert body["max_tokens"] == 9
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "lookup", "input": {"id": 1}},
        {"type": "tool_use", "id": "c2", "name": "lookup", "input": {"_raw": "{bad"}},
    ]
    assert body["messages"][2]["content"] == [  # two tool messages, one user turn
        {"type": "tool_result", "tool_use_id": "c1", "content": "shipped"},
        {"type": "tool_result", "tool_use_id": "c2", "content": "unknown"},
    ]
    assert body["tools"] == [{"name": "lookup", "description": "Look an order up",
                              "input_schema": LOOKUP.parameters,
                              "cache_control": {"type": "ephemeral"}}]  # fmt: skip
    assert "tool_choice" not in body
    assert response.content == "Let me look."
    assert response.finish_reason == "tool_calls"
    assert [(c.id, c.name, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("toolu_9", "lookup", {"id": 2})
    ]
    u = response.usage
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens) == (
        1110,
        4,
        1000,
        100,
    )
    assert response.headers == {"anthropic-ratelimit-requests-limit": "50"}


@pytest.mark.parametrize("tools", [(), (LOOKUP,)])
async def test_anthropic_structured_output_is_a_forced_tool(tools: tuple[ToolSpec, ...]) -> None:
    seen: list[httpx.Request] = []
    reply = anthropic_reply(
        {"type": "tool_use", "id": "t1", "name": "Verdict", "input": {"label": "ok"}},
        stop="tool_use",
    )
    provider = AnthropicProvider("c", api_key=KEY, transport=mock(seen, 200, reply))
    request = ChatRequest("m", [{"role": "user", "content": "judge"}], tools=tools,
                          response_schema=SCHEMA, response_schema_name="Verdict")  # fmt: skip
    response = await provider.complete(request)

    body = json.loads(seen[0].content)
    assert body["tools"][-1]["name"] == "Verdict"
    assert body["tools"][-1]["input_schema"] == SCHEMA
    assert body["tool_choice"] == (
        {"type": "any"} if tools else {"type": "tool", "name": "Verdict"}
    )
    assert json.loads(response.content or "") == {"label": "ok"}
    assert (response.tool_calls, response.finish_reason) == ((), "stop")


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "retryable"),
    [
        (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
         {"retry-after": "7"}, RateLimited, True),
        (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
         {}, ProviderHTTPError, True),
        (400, {"type": "error", "error": {"type": "invalid_request_error",
                                          "message": "prompt is too long: 210000 tokens > "
                                                     "200000 maximum"}},
         {}, RequestTooLarge, False),
        (401, {"type": "error", "error": {"type": "authentication_error",
                                          "message": f"invalid x-api-key {KEY}"}},
         {}, ProviderHTTPError, False),
    ],
)  # fmt: skip
async def test_anthropic_errors_are_classified(
    status: int, body: object, headers: dict[str, str], kind: type, retryable: bool
) -> None:
    provider = AnthropicProvider("c", api_key=KEY, transport=mock([], status, body, **headers))
    with pytest.raises(kind) as caught:
        await provider.complete(ChatRequest("m", [{"role": "user", "content": "x"}]))

    error = caught.value
    assert type(error) is kind and error.retryable is retryable
    assert KEY not in str(error) and KEY not in repr(provider)
    if status == 429:
        assert error.retry_after_s == 7
    if status == 529:
        assert (error.status_code, classify(error)) == (529, "server")  # not rate_limited


def azure(
    seen: list[httpx.Request], status: int, body: object, **kw: object
) -> AzureOpenAIProvider:
    return AzureOpenAIProvider(
        "az", endpoint="https://res.openai.azure.com", api_key=KEY,
        transport=mock(seen, status, body), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def completion(content: str | None, finish: str = "stop") -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "choices": [{"message": {"role": "assistant", "content": content},
                     "finish_reason": finish,
                     "content_filter_results": {"hate": {"filtered": finish == "content_filter"}}}],
        "usage": {"prompt_tokens": 2000, "completion_tokens": 5,
                  "prompt_tokens_details": {"cached_tokens": 1536}},
    }  # fmt: skip


async def test_azure_deployment_url_api_version_key_and_cached_tokens() -> None:
    seen: list[httpx.Request] = []
    provider = azure(seen, 200, completion("hello"), query={"tenant": "t1"})
    response = await provider.complete(ChatRequest("my deploy", [{"role": "user", "content": "x"}]))

    url = seen[0].url
    assert url.raw_path.decode().split("?")[0] == "/openai/deployments/my%20deploy/chat/completions"
    assert dict(url.params) == {"api-version": "2024-10-21", "tenant": "t1"}
    assert seen[0].headers["api-key"] == KEY and "authorization" not in seen[0].headers
    assert (response.usage.input_tokens, response.usage.cached_input_tokens) == (2000, 1536)


async def test_azure_token_is_a_bearer_header() -> None:
    seen: list[httpx.Request] = []
    provider = AzureOpenAIProvider(
        "az", endpoint="https://r.example", token="entra-token-SECRET-123",
        transport=mock(seen, 200, completion("x")),
    )  # fmt: skip
    await provider.complete(ChatRequest("d", [{"role": "user", "content": "x"}]))

    assert seen[0].headers["authorization"] == "Bearer entra-token-SECRET-123"
    assert "api-key" not in seen[0].headers


async def test_azure_content_filter_is_its_own_error_class() -> None:
    body = {"error": {"code": "content_filter", "status": 400, "message": "filtered",
                      "innererror": {"code": "ResponsibleAIPolicyViolation"}}}  # fmt: skip
    request = ChatRequest("d", [{"role": "user", "content": "x"}])
    with pytest.raises(ContentFiltered) as prompt:
        await azure([], 400, body).complete(request)
    with pytest.raises(ContentFiltered) as reply:
        await azure([], 200, completion(None, "content_filter")).complete(request)

    for error in (prompt.value, reply.value):
        assert (error.retryable, error.fallback_ok, classify(error)) == (
            False,
            True,
            "content_filter",
        )
    assert "hate" in str(reply.value)
    partial = await azure([], 200, completion("half an ans", "content_filter")).complete(request)
    assert partial.finish_reason == "content_filter"  # what was left is kept


def gemini_reply(*parts: dict[str, object], finish: str = "STOP") -> dict[str, object]:
    return {
        "candidates": [{"content": {"role": "model", "parts": list(parts)},
                        "finishReason": finish}],
        "usageMetadata": {"promptTokenCount": 300, "candidatesTokenCount": 7,
                          "thoughtsTokenCount": 5, "cachedContentTokenCount": 256},
        "modelVersion": "gemini-2.0-flash-001",
    }  # fmt: skip


async def test_gemini_body_headers_function_calls_and_usage() -> None:
    seen: list[httpx.Request] = []
    reply = gemini_reply({"functionCall": {"name": "lookup", "args": {"id": 3}}})
    provider = GeminiProvider("g", api_key=KEY, transport=mock(seen, 200, reply))
    response = await provider.complete(
        ChatRequest("gemini-2.0-flash", CONVERSATION, tools=(LOOKUP,))
    )

    sent = seen[0]
    assert sent.url.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY and "key" not in sent.url.params
    body = json.loads(sent.content)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "lookup", "response": {"result": "shipped"}}},
        {"functionResponse": {"name": "lookup", "response": {"result": "unknown"}}},
    ]
    assert body["tools"] == [{"functionDeclarations": [
        {"name": "lookup", "description": "Look an order up",
         "parametersJsonSchema": LOOKUP.parameters}]}]  # fmt: skip
    assert response.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("lookup", {"id": 3})
    ]
    u = response.usage
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens) == (300, 12, 256)


async def test_gemini_structured_output_is_native_without_tools() -> None:
    seen: list[httpx.Request] = []
    provider = GeminiProvider(
        "g", api_key=KEY, transport=mock(seen, 200, gemini_reply({"text": "{}"}))
    )
    await provider.complete(
        ChatRequest("m", [{"role": "user", "content": "x"}], response_schema=SCHEMA)
    )

    generation = json.loads(seen[0].content)["generationConfig"]
    assert generation["responseMimeType"] == "application/json"
    assert generation["responseJsonSchema"] == SCHEMA


async def test_gemini_resource_exhausted_honours_retry_info_and_blocks_are_filtered() -> None:
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
                      "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                   "retryDelay": "37s"}]}}  # fmt: skip
    request = ChatRequest("m", [{"role": "user", "content": "x"}])
    with pytest.raises(RateLimited) as limited:
        await GeminiProvider("g", api_key=KEY, transport=mock([], 429, body)).complete(request)
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {}}
    with pytest.raises(ContentFiltered, match="SAFETY"):
        await GeminiProvider("g", api_key=KEY, transport=mock([], 200, blocked)).complete(request)

    assert limited.value.retry_after_s == 37


class _Frozen:
    access_key, secret_key, token = "AKIAWIRETEST00000001", "wire/SECRET/key0123456789", None


class _Credentials:
    def get_frozen_credentials(self) -> _Frozen:
        return _Frozen()


def bedrock(
    seen: list[httpx.Request], status: int, body: object, **headers: str
) -> BedrockProvider:
    return BedrockProvider(
        "br", region="eu-west-1", credentials=_Credentials(),
        transport=mock(seen, status, body, **headers),
    )  # fmt: skip


async def test_bedrock_converse_body_sigv4_header_and_usage() -> None:
    seen: list[httpx.Request] = []
    reply = {
        "output": {"message": {"role": "assistant", "content": [
            {"text": "ok"},
            {"toolUse": {"toolUseId": "tu1", "name": "lookup", "input": {"id": 4}}}]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 20, "outputTokens": 6, "totalTokens": 26,
                  "cacheReadInputTokens": 500, "cacheWriteInputTokens": 50},
    }  # fmt: skip
    provider = bedrock(seen, 200, reply)
    model = "anthropic.claude-3-haiku-20240307-v1:0"
    response = await provider.complete(ChatRequest(model, CONVERSATION, tools=(LOOKUP,)))

    sent = seen[0]
    assert str(sent.url).startswith("https://bedrock-runtime.eu-west-1.amazonaws.com/model/")
    assert sent.url.raw_path.decode() == f"/model/{model.replace(':', '%3A')}/converse"
    auth = sent.headers["authorization"]
    assert re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=AKIAWIRETEST00000001/\d{8}/eu-west-1/bedrock/aws4_request, "
        r"SignedHeaders=[a-z0-9;-]*host[a-z0-9;-]*, Signature=[0-9a-f]{64}",
        auth,
    )
    assert re.fullmatch(r"\d{8}T\d{6}Z", sent.headers["x-amz-date"])
    body = json.loads(sent.content)
    assert body["system"] == [{"text": "Be brief."}]
    assert body["messages"][2]["content"][0] == {
        "toolResult": {"toolUseId": "c1", "content": [{"text": "shipped"}]}
    }
    assert body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {"json": LOOKUP.parameters}
    assert body["inferenceConfig"]["maxTokens"] == 256
    assert (response.content, response.finish_reason) == ("ok", "tool_calls")
    u = response.usage
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens) == (570, 500, 50)
    assert _Frozen.secret_key not in repr(provider)


@pytest.mark.parametrize(
    ("kind", "status", "error", "rate_limited"),
    [
        ("ThrottlingException", 429, RateLimited, True),
        ("ServiceQuotaExceededException", 400, RateLimited, True),
        ("ModelNotReadyException", 429, ProviderHTTPError, False),
        ("ServiceUnavailableException", 503, ProviderHTTPError, False),
        ("AccessDeniedException", 403, ProviderHTTPError, False),
    ],
)
async def test_bedrock_errors_are_named_by_their_type(
    kind: str, status: int, error: type, rate_limited: bool
) -> None:
    header = {"x-amzn-errortype": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    body = {"message": f"no ({_Frozen.secret_key})"}
    with pytest.raises(error) as caught:
        await bedrock([], status, body, **header).complete(
            ChatRequest("m", [{"role": "user", "content": "x"}])
        )

    assert isinstance(caught.value, RateLimited) is rate_limited
    assert kind in str(caught.value) or rate_limited or status in (403, 503)
    assert _Frozen.secret_key not in str(caught.value)
    expected = {"ModelNotReadyException": "server", "ServiceUnavailableException": "server",
                "AccessDeniedException": "auth"}.get(kind, "rate_limited")  # fmt: skip
    assert classify(caught.value) == expected


async def test_extra_headers_and_query_are_sent_and_scrubbed() -> None:
    seen: list[httpx.Request] = []
    provider = OpenAIProvider(
        "p", base_url="https://gw.example/v1", api_key=KEY,
        headers={"x-gateway-token": "gw-SECRET-777"}, query={"team": "a b"},
        secrets=("gw-SECRET-777",),
        transport=mock(seen, 500, {"error": {"message": "bad token gw-SECRET-777"}}),
    )  # fmt: skip
    with pytest.raises(ProviderHTTPError) as caught:
        await provider.complete(ChatRequest("m", [{"role": "user", "content": "x"}]))

    assert seen[0].headers["x-gateway-token"] == "gw-SECRET-777"
    assert seen[0].url.params["team"] == "a b"
    assert "gw-SECRET-777" not in str(caught.value)
