"""What a failed response means (fanout.providers._errors) and the retry hints behind proxies."""

from __future__ import annotations

import json
import pickle

import httpx
import pytest

from fanout import ChatRequest, ProviderHTTPError, RateLimited, RequestTooLarge
from fanout.errors import CircuitOpen, ProviderConnectionError, ProviderTimeout
from fanout.limits import RateLimitHeaders
from fanout.providers import OpenAIProvider
from fanout.providers._errors import error_for, scrub
from fanout.retry import RetryPolicy, classify, provider_fault


def body(message: str, code: str | None = None, kind: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "code": code, "type": kind}}).encode()


OPENAI_TPM = (
    "Request too large for gpt-4o in organization org-x on tokens per min (TPM): Limit "
    "30000, Requested 250120. The input or output tokens must be reduced in order to run "
    "successfully. Visit https://platform.openai.com/account/rate-limits to learn more."
)


def test_openais_request_too_large_429_is_the_requests_own_error_with_its_size() -> None:
    error = error_for("openai", 429, body(OPENAI_TPM, "rate_limit_exceeded", "tokens"),
                      {"retry-after": "60"})  # fmt: skip
    assert isinstance(error, RequestTooLarge) and not isinstance(error, RateLimited)
    assert (error.kind, error.requested, error.limit) == ("tokens_per_min", 250_120, 30_000)
    assert "250,120 tokens for a tokens/min limit of 30,000" in str(error)
    assert not error.retryable and error.fallback_ok
    assert classify(error) == "too_large" and not RetryPolicy().retryable(error)
    assert not provider_fault(error)  # it says nothing about whether the provider is up


@pytest.mark.parametrize(
    ("status", "raw", "requested", "limit"),
    [
        (  # OpenAI, Azure
            400,
            body(
                "This model's maximum context length is 8192 tokens. However, you requested "
                "9100 tokens (9000 in the messages, 100 in the completion).",
                "context_length_exceeded",
            ),
            9100,
            8192,
        ),
        (  # Anthropic
            400,
            body("prompt is too long: 210000 tokens > 200000 maximum", None, "invalid_request"),
            210_000,
            200_000,
        ),
        (  # vLLM (no code)
            400,
            body(
                "This model's maximum context length is 4096 tokens. However, you requested "
                "5000 tokens in the messages, Please reduce the length of the messages."
            ),
            5000,
            4096,
        ),
        (  # LiteLLM's proxy
            400,
            body("litellm.ContextWindowExceededError: prompt too long for the model"),
            None,
            None,
        ),
    ],
    ids=["openai", "anthropic", "vllm", "litellm"],
)
def test_context_length_400s_are_request_too_large(
    status: int, raw: bytes, requested: int | None, limit: int | None
) -> None:
    error = error_for("p", status, raw, {})
    assert isinstance(error, RequestTooLarge)
    assert (error.kind, error.requested, error.limit) == ("context_length", requested, limit)


def test_a_413_is_request_too_large_and_other_errors_keep_their_types() -> None:
    assert isinstance(error_for("p", 413, b"<html>too big</html>", {}), RequestTooLarge)
    limited = error_for("p", 429, body("Rate limit reached", "rate_limit_exceeded"),
                        {"retry-after-ms": "1500"})  # fmt: skip
    assert isinstance(limited, RateLimited) and limited.retry_after_s == 1.5
    filtered = error_for("p", 400, body("flagged", "content_filter"), {})
    assert isinstance(filtered, ProviderHTTPError) and filtered.content_filter
    bad = error_for("p", 400, body("messages must not be empty"), {})
    assert type(bad) is ProviderHTTPError and classify(bad) == "bad_request"


def test_errors_pickle_with_their_attributes() -> None:
    error = error_for("openai", 429, body(OPENAI_TPM), {})
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, RequestTooLarge)
    assert (again.requested, again.limit) == (250_120, 30_000)
    timeout = pickle.loads(pickle.dumps(ProviderTimeout("slow", provider="p", sent=False)))
    assert timeout.sent is False
    circuit = pickle.loads(pickle.dumps(CircuitOpen("open", cause="ProviderConnectionError: x")))
    assert circuit.cause == "ProviderConnectionError: x"


def test_only_the_providers_own_failures_count_against_it() -> None:
    assert provider_fault(ProviderConnectionError("refused"))
    assert provider_fault(ProviderTimeout("slow"))
    assert provider_fault(ProviderHTTPError("boom", status_code=503))
    for status in (400, 401, 404, 422):
        assert not provider_fault(ProviderHTTPError("no", status_code=status))
    assert not provider_fault(RateLimited("429"))


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "3"}, 3.0),
        ({"llm_provider-retry-after-ms": "1500"}, 1.5),  # LiteLLM forwards the vendor's
        ({"llm_provider-retry-after": "2"}, 2.0),
        ({"retry-after": "4", "llm_provider-retry-after": "9"}, 4.0),  # the plain one wins
    ],
)
def test_retry_hints_are_read_plain_and_as_litellm_forwards_them(
    headers: dict[str, str], seconds: float
) -> None:
    assert RateLimitHeaders.parse(headers).retry_after_s == seconds


def test_litellm_forwarded_limit_headers_are_read() -> None:
    parsed = RateLimitHeaders.parse(
        {"llm_provider-x-ratelimit-limit-requests": "500",
         "llm_provider-x-ratelimit-remaining-tokens": "1200"}
    )  # fmt: skip
    assert (parsed.limit_requests, parsed.remaining_tokens) == (500, 1200)


async def test_the_provider_keeps_proxy_hint_headers_on_a_429() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"error": {"message": "slow down"}},
            headers={"llm_provider-retry-after-ms": "700", "x-litellm-call-id": "abc"},
        )  # fmt: skip

    provider = OpenAIProvider("proxy", base_url="http://proxy.test/v1",
                              transport=httpx.MockTransport(handle))  # fmt: skip
    request = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(RateLimited) as info:
        await provider.complete(request)
    await provider.aclose()
    assert info.value.retry_after_s == 0.7
    assert "x-litellm-call-id" not in info.value.headers  # only limits and hints are kept


def test_scrub_masks_the_secrets_given_and_anything_shaped_like_a_key() -> None:
    text = (
        "bad key sk-proj-abcdef123456 for tenant-secret-42; also sk-ant-api03-xyzxyzxyz, "
        "AIzaSyA1234567890abcdefghijk and key-0123456789"
    )
    masked = scrub(text, ("tenant-secret-42",))
    for leaked in ("sk-proj", "tenant-secret", "sk-ant", "AIzaSy", "key-0123"):
        assert leaked not in masked, masked
    assert masked.startswith("bad key *** for ***")
    assert scrub("nothing here", ()) == "nothing here"
