"""Retry decisions (error classes, back-off honouring Retry-After), circuit breaking, hedging."""

from fanout.retry._circuit import CircuitBreaker, CircuitState
from fanout.retry._hedge import HedgePolicy
from fanout.retry._policy import ErrorClass, RetryPolicy, classify, provider_fault

__all__ = [
    "CircuitBreaker",
    "CircuitState",
    "ErrorClass",
    "HedgePolicy",
    "RetryPolicy",
    "classify",
    "provider_fault",
]
