"""``RetryPolicy``: which errors are retried, how many times, and how long to back off."""

from __future__ import annotations

from dataclasses import dataclass

from tenacity import RetryCallState, wait_random_exponential

from fanout.errors import (
    ContentFiltered,
    InvalidResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    ProviderTimeout,
    RateLimited,
    RequestTooLarge,
)

__all__ = ["ErrorClass", "RetryPolicy", "classify", "provider_fault"]

ErrorClass = str
"""One of: rate_limited, too_large, timeout, connection, server, invalid_response, auth,
not_found, bad_request, content_filter, client."""

RETRYABLE_BY_DEFAULT: frozenset[ErrorClass] = frozenset(
    {"rate_limited", "timeout", "connection", "server", "invalid_response"}
)
# The provider's own failures: they open its circuit. A too-large, invalid or filtered
# request, a bad key or an unknown model say nothing about whether it is up.
_PROVIDER_FAULTS: frozenset[ErrorClass] = frozenset(
    {"timeout", "connection", "server", "invalid_response"}
)


def classify(error: BaseException) -> ErrorClass:
    """The class of a provider error, by type and status code (never by message text)."""
    if isinstance(error, RequestTooLarge):  # whatever its status (429, 413, 400)
        return "too_large"
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, ProviderTimeout):
        return "timeout"
    if isinstance(error, ProviderConnectionError):
        return "connection"
    if isinstance(error, InvalidResponse):
        return "invalid_response"
    if isinstance(error, ContentFiltered):  # whatever its status (400, or a 200 cut short)
        return "content_filter"
    if isinstance(error, ProviderHTTPError):
        code = error.status_code or 0
        if code >= 500 or code in (408, 409):
            return "server"
        if code in (401, 403):
            return "auth"
        if code == 404:
            return "not_found"
        if code == 400 and error.content_filter:
            return "content_filter"
        if code in (400, 413, 422):
            return "bad_request"
    return "client"


def provider_fault(error: BaseException) -> bool:
    """Did the provider fail (down, timing out, 5xx, garbled), rather than the request?"""
    return classify(error) in _PROVIDER_FAULTS


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry with exponential back-off and full jitter, honouring ``Retry-After``.

    A call is retried while its error class is in ``retry_on``, fewer than
    ``max_attempts`` attempts were made and less than ``max_elapsed_s`` passed.
    The wait is full jitter over ``initial_backoff_s * 2**n`` capped at
    ``max_backoff_s`` (tenacity's ``wait_random_exponential``), but never shorter
    than the provider's ``Retry-After``.
    """

    max_attempts: int = 4
    max_elapsed_s: float = 120.0
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    retry_on: frozenset[ErrorClass] = RETRYABLE_BY_DEFAULT

    def retryable(self, error: BaseException) -> bool:
        return isinstance(error, ProviderError) and classify(error) in self.retry_on

    def wait_s(self, state: RetryCallState) -> float:
        """tenacity ``wait`` callable: jittered back-off, at least the Retry-After hint."""
        jitter = wait_random_exponential(multiplier=self.initial_backoff_s, max=self.max_backoff_s)
        wait = jitter(state)
        outcome = state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        if isinstance(error, RateLimited) and error.retry_after_s is not None:
            wait = max(wait, min(error.retry_after_s, self.max_elapsed_s))
        return wait
