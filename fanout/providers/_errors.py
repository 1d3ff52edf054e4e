"""What a failed response means: rate limited, too large for the model, filtered, or other.

Transport-independent: every wire protocol (httpx, aiohttp, ...) hands the status, the
raw body and the response headers to :func:`error_for`, which returns the error to raise.
Vendors and proxies say "this request is too large" in different ways; each is a
:class:`~fanout.errors.RequestTooLarge` here, so retry, the limiter and the circuit look
at the type only:

- OpenAI: a 429 whose message starts "Request too large for MODEL ... on tokens per min
  (TPM): Limit 30000, Requested 250000" (a request bigger than the bucket can ever hold;
  its ``retry-after`` would stall the queue for nothing);
- a 413 from the vendor, a gateway or a proxy in front of it;
- a 400 with code ``context_length_exceeded`` (OpenAI, Azure, vLLM, LiteLLM) or a message
  about the model's maximum context length / a prompt that is too long (Anthropic,
  llama.cpp, vLLM, LiteLLM's ``ContextWindowExceededError``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import orjson

from fanout.errors import (
    ContentFiltered,
    ProviderError,
    ProviderHTTPError,
    RateLimited,
    RequestTooLarge,
)
from fanout.limits import RateLimitHeaders

__all__ = ["KEPT_HEADERS", "error_detail", "error_for", "response_headers", "scrub"]

KEPT_HEADERS = (
    "x-ratelimit-", "retry-after", "anthropic-ratelimit-", "date",
    "llm_provider-x-ratelimit-", "llm_provider-retry-after",  # LiteLLM forwards them so
)  # fmt: skip
"""Response headers a provider keeps (prefixes): limits and retry hints, as sent or as
LiteLLM's proxy forwards them."""

# what looks like a key in a message (OpenAI's and Anthropic's sk-, pk-, key-; Google's AIza)
_KEY_LIKE = re.compile(r"\b(sk|pk|key)-[A-Za-z0-9_\-*]{6,}|\bAIza[0-9A-Za-z_\-]{20,}")


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with each of ``secrets`` and anything shaped like a key masked as ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return _KEY_LIKE.sub("***", text)


_TOO_LARGE_429 = re.compile(r"request too large", re.IGNORECASE)
_TPM_NUMBERS = re.compile(r"limit\D{0,5}(\d[\d,]*)\D{1,20}requested\D{0,5}(\d[\d,]*)", re.I)
_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_CONTEXT_TEXT = re.compile(
    r"maximum context length|context length|context window|prompt is too long|"
    r"too many tokens|exceeds the (?:available )?context|ContextWindowExceeded|"
    r"exceeds the maximum number of tokens|input is too long",
    re.IGNORECASE,
)
# "maximum context length is 8192 tokens. However, you requested 9000 tokens";
# "prompt is too long: 210000 tokens > 200000 maximum"
_CONTEXT_NUMBERS = (
    re.compile(
        r"(?:maximum|max)[^\d]{0,40}(\d[\d,]*)\s*tokens.{0,80}?(?:requested|resulted in|have)"
        r"\D{0,10}(\d[\d,]*)",
        re.I | re.S,
    ),
    re.compile(r"(\d[\d,]*)\s*tokens\s*>\s*(\d[\d,]*)", re.I),
)


def error_detail(raw: bytes) -> tuple[str, str | None]:
    """The error body's message and code (``error.code``, else ``error.type``)."""
    try:
        data = orjson.loads(raw)
    except ValueError:
        return raw[:300].decode("utf-8", "replace"), None
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return str(error.get("message") or error)[:500], str(code) if code else None
    return str(error)[:500], None


def error_for(
    provider: str,
    status: int,
    raw: bytes,
    headers: dict[str, str],
    *,
    scrub: Callable[[str], str] = lambda text: text,
) -> ProviderError:
    """The error a non-2xx response stands for. ``headers``: the response's rate-limit and
    retry headers (lower-case names); ``scrub`` removes secrets from the message."""
    detail, code = error_detail(raw)
    text = scrub(f"{provider}: HTTP {status}: {detail}")
    too_large = _too_large(status, detail, code)
    if too_large is not None:
        kind, requested, limit = too_large
        size = _size(kind, requested, limit)
        return RequestTooLarge(
            f"{text} ({size}; this request fails alone: it is not retried and does not "
            "pause other calls; shorten it, lower max_tokens or route it to a larger model)",
            provider=provider,
            status_code=status,
            kind=kind,
            requested=requested,
            limit=limit,
            headers=headers,
        )
    if status == 429:
        retry_after = RateLimitHeaders.parse(headers).retry_after_s
        return RateLimited(text, provider=provider, retry_after_s=retry_after, headers=headers)
    if code == "content_filter":  # OpenAI, Azure (its innererror: ResponsibleAIPolicyViolation)
        return ContentFiltered(text, provider=provider, status_code=status, headers=headers)
    return ProviderHTTPError(text, provider=provider, status_code=status, headers=headers)


def _too_large(
    status: int, detail: str, code: str | None
) -> tuple[str, int | None, int | None] | None:
    """(kind, requested, limit) when the response says the request is too large."""
    if status == 429 and _TOO_LARGE_429.search(detail):
        match = _TPM_NUMBERS.search(detail)
        if match is None:
            return "tokens_per_min", None, None
        return "tokens_per_min", _int(match.group(2)), _int(match.group(1))
    if status == 413:
        return "body_size", None, None
    if status in (400, 422) and (code in _CONTEXT_CODES or _CONTEXT_TEXT.search(detail)):
        first = _CONTEXT_NUMBERS[0].search(detail)
        if first is not None:
            return "context_length", _int(first.group(2)), _int(first.group(1))
        second = _CONTEXT_NUMBERS[1].search(detail)
        if second is not None:
            return "context_length", _int(second.group(1)), _int(second.group(2))
        return "context_length", None, None
    return None


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _size(kind: str, requested: int | None, limit: int | None) -> str:
    what = {
        "tokens_per_min": "tokens for a tokens/min limit",
        "context_length": "tokens for the model's context",
        "body_size": "bytes of request body",
    }[kind]
    if requested is not None and limit is not None:
        return f"{requested:,} {what} of {limit:,}"
    return f"too many {what}"


def response_headers(raw: Mapping[str, str]) -> dict[str, str]:
    """The response headers fanout uses (:data:`KEPT_HEADERS`), by lower-case name."""
    return {k.lower(): v for k, v in raw.items() if k.lower().startswith(KEPT_HEADERS)}
