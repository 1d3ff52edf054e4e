"""Retry decisions (error classes, back-off honouring Retry-After) and circuit breaking."""

from fanout.retry._circuit import CircuitBreaker, CircuitState
from fanout.retry._policy import ErrorClass, RetryPolicy, classify

__all__ = ["CircuitBreaker", "CircuitState", "ErrorClass", "RetryPolicy", "classify"]
