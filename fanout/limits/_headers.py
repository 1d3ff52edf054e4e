"""Parses rate-limit response headers (OpenAI ``x-ratelimit-*``, ``retry-after``, Anthropic).

Anthropic's ``anthropic-ratelimit-{requests,tokens}-*`` give limits per minute like
OpenAI's (``tokens`` is the input and output limits' sum, what fanout's token bucket
counts), but their resets are RFC 3339 times: read relative to the response's ``date``.

Behind LiteLLM's proxy the provider's own headers arrive prefixed ``llm_provider-``
(``llm_provider-retry-after-ms``, ``llm_provider-x-ratelimit-remaining-tokens``): each is
read where the plain header is missing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

__all__ = ["RateLimitHeaders", "parse_duration_s"]

_PROXIED = "llm_provider-"
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration_s(text: str) -> float | None:
    """``"1s"``, ``"6m0s"``, ``"20ms"``, ``"0.5"`` -> seconds; ``None`` if unreadable."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _number(headers: Mapping[str, str], *names: str) -> float | None:
    for name in names:
        value = headers.get(name)
        if value is not None:
            try:
                return float(value)
            except ValueError:
                continue
    return None


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """What a response says about the provider's limits (per minute) and when to retry."""

    limit_requests: float | None = None
    limit_tokens: float | None = None
    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None
    retry_after_s: float | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, str]) -> RateLimitHeaders:
        if not raw or (len(raw) == 1 and "date" in raw):  # most answers: nothing to learn
            return _EMPTY
        headers = {k.lower(): v for k, v in raw.items()}
        proxied = [k for k in headers if k.startswith(_PROXIED)]
        for name in proxied:  # the plain header, if also sent, wins
            headers.setdefault(name[len(_PROXIED) :], headers[name])
        reset_req = headers.get("x-ratelimit-reset-requests")
        reset_tok = headers.get("x-ratelimit-reset-tokens")
        reset_req_s = parse_duration_s(reset_req) if reset_req else None
        reset_tok_s = parse_duration_s(reset_tok) if reset_tok else None
        if reset_req_s is None:
            reset_req_s = _reset_at(headers, "anthropic-ratelimit-requests-reset")
        if reset_tok_s is None:
            reset_tok_s = _reset_at(headers, "anthropic-ratelimit-tokens-reset")
        return cls(
            limit_requests=_number(
                headers, "x-ratelimit-limit-requests", "anthropic-ratelimit-requests-limit"
            ),
            limit_tokens=_number(
                headers, "x-ratelimit-limit-tokens", "anthropic-ratelimit-tokens-limit"
            ),
            remaining_requests=_number(
                headers, "x-ratelimit-remaining-requests", "anthropic-ratelimit-requests-remaining"
            ),
            remaining_tokens=_number(
                headers, "x-ratelimit-remaining-tokens", "anthropic-ratelimit-tokens-remaining"
            ),
            reset_requests_s=reset_req_s,
            reset_tokens_s=reset_tok_s,
            retry_after_s=_retry_after(headers),
        )


def _reset_at(headers: Mapping[str, str], name: str) -> float | None:
    """Seconds from the response's ``date`` to the RFC 3339 time in header ``name``."""
    value = headers.get(name)
    sent = headers.get("date")
    if value is None or sent is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        base = parsedate_to_datetime(sent)
        return max(0.0, (when - base).total_seconds())
    except (TypeError, ValueError):
        return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    ms = _number(headers, "retry-after-ms")
    if ms is not None:
        return ms / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = parse_duration_s(value)
    if seconds is not None:
        return seconds
    try:  # an HTTP date; relative to the date the server sent, if any
        when = parsedate_to_datetime(value)
        sent = headers.get("date")
        base = parsedate_to_datetime(sent) if sent else None
    except (TypeError, ValueError):
        return None
    if base is None:
        return None
    return max(0.0, (when - base).total_seconds())


_EMPTY = RateLimitHeaders()
