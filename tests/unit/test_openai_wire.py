"""The OpenAI-compatible provider's wire format, over httpx.MockTransport (no network)."""

from __future__ import annotations

import json

import httpx
import pytest

from fanout import (
    ChatRequest,
    ConfigError,
    InvalidResponse,
    ProviderConnectionError,
    ProviderHTTPError,
    RateLimited,
    ToolSpec,
)
from fanout.providers import OpenAIProvider

KEY = "sk-test-SECRET-0123456789abcdef"


def provider(handler: httpx.MockTransport) -> OpenAIProvider:
    return OpenAIProvider(
        "vendor", base_url="https://llm.example/v1/", api_key=KEY, transport=handler
    )


def ok_body(**message: object) -> dict[str, object]:
    return {
        "model": "m-2026",
        "choices": [{"message": {"role": "assistant", **message}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


REQUEST = ChatRequest(
    model="m",
    messages=[{"role": "user", "content": "hi"}],
    max_tokens=7,
    tools=(ToolSpec("lookup", "Look up", {"type": "object", "properties": {}}),),
    response_schema={"type": "object"},
    response_schema_name="Verdict",
)


async def test_request_body_headers_and_parsed_reply() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = ok_body(
            content=None,
            tool_calls=[
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": 1}'},
                }
            ],
        )
        return httpx.Response(
            200, json=body, headers={"x-ratelimit-limit-requests": "500", "server": "x"}
        )

    p = provider(httpx.MockTransport(handle))
    reply = await p.complete(REQUEST, timeout_s=5)
    await p.aclose()
    sent = json.loads(seen[0].content)
    assert str(seen[0].url) == "https://llm.example/v1/chat/completions"
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert sent["max_tokens"] == 7 and sent["model"] == "m"
    assert sent["tools"][0]["function"]["name"] == "lookup"
    assert sent["response_format"]["json_schema"]["name"] == "Verdict"
    assert reply.tool_calls[0].parsed_arguments() == {"q": 1}
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (12, 3)
    assert reply.model == "m-2026"
    assert reply.headers == {"x-ratelimit-limit-requests": "500"}  # only rate-limit headers kept


@pytest.mark.parametrize(
    ("status", "body", "error", "retryable", "fallback_ok"),
    [
        (500, {"error": {"message": "boom"}}, ProviderHTTPError, True, True),
        (400, {"error": {"message": "too long"}}, ProviderHTTPError, False, False),
        (
            400,
            {"error": {"message": "flagged", "code": "content_filter"}},
            ProviderHTTPError,
            False,
            True,
        ),
        (
            401,
            {"error": {"message": f"Incorrect API key provided: {KEY}"}},
            ProviderHTTPError,
            False,
            True,
        ),
    ],
)
async def test_http_errors_are_classified(
    status: int, body: dict[str, object], error: type[Exception], retryable: bool, fallback_ok: bool
) -> None:
    p = provider(httpx.MockTransport(lambda r: httpx.Response(status, json=body)))
    with pytest.raises(error) as info:
        await p.complete(REQUEST)
    await p.aclose()
    assert isinstance(info.value, ProviderHTTPError)
    assert (info.value.retryable, info.value.fallback_ok) == (retryable, fallback_ok)
    assert info.value.status_code == status
    assert KEY not in str(info.value) and "SECRET" not in str(info.value)


async def test_429_carries_retry_after_and_headers() -> None:
    headers = {"retry-after-ms": "250", "x-ratelimit-limit-requests": "60"}
    p = provider(httpx.MockTransport(lambda r: httpx.Response(429, json={}, headers=headers)))
    with pytest.raises(RateLimited) as info:
        await p.complete(REQUEST)
    await p.aclose()
    assert info.value.retry_after_s == 0.25
    assert info.value.headers["x-ratelimit-limit-requests"] == "60"


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"choices": []}',
        json.dumps({"choices": [{"message": {"content": "x"}}]}).encode(),
    ],
)
async def test_malformed_bodies_are_invalid_responses(raw: bytes) -> None:
    p = provider(httpx.MockTransport(lambda r: httpx.Response(200, content=raw)))
    with pytest.raises(InvalidResponse, match="malformed response"):
        await p.complete(REQUEST)
    await p.aclose()


async def test_connection_errors_never_show_the_key() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused while sending {KEY}")

    p = provider(httpx.MockTransport(fail))
    with pytest.raises(ProviderConnectionError) as info:
        await p.complete(REQUEST)
    await p.aclose()
    assert KEY not in str(info.value)
    assert KEY not in repr(p)


def test_key_comes_from_the_named_environment_variable() -> None:
    with pytest.raises(ConfigError, match=r"VENDOR_KEY.*not set"):
        OpenAIProvider.from_env("vendor", base_url="http://x", api_key_env="VENDOR_KEY", environ={})
