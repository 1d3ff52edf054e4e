"""``CircuitBreaker``: stop calling a failing provider/model for a cool-down, then probe it."""

from __future__ import annotations

import asyncio
from enum import StrEnum

from fanout.clock import Clock

__all__ = ["CircuitBreaker", "CircuitState"]


class CircuitState(StrEnum):
    CLOSED = "closed"  # calls flow
    OPEN = "open"  # calls go straight to fallbacks until the cool-down ends
    HALF_OPEN = "half_open"  # one probe call decides


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures, for ``cooldown_s``.

    After the cool-down one probe call is let through (half-open); its success
    closes the circuit, its failure opens it again. Only the provider's failures count
    (see :func:`fanout.retry.provider_fault`): a request's own error says nothing of it.

    While open, ``down_since`` is when its run of failures began and ``cause`` the last
    failure (``ErrorType: message``): what a waiting batch job reports. Callers that wait
    for it (:meth:`notify`) are woken by every verdict.
    """

    __slots__ = (
        "_clock", "_failures", "_opened_at", "_probing", "_streak_since", "_waiters",
        "cause", "cooldown_s", "failure_threshold",
    )  # fmt: skip

    def __init__(
        self, clock: Clock, *, failure_threshold: int = 5, cooldown_s: float = 30.0
    ) -> None:
        self._clock = clock
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self._streak_since: float | None = None  # the first failure of the current run
        self.cause = ""
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock.now() - self._opened_at >= self.cooldown_s:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    @property
    def down_since(self) -> float | None:
        """Clock time the failures that opened the circuit began; ``None`` while closed."""
        return self._streak_since if self._opened_at is not None else None

    def probe_in_s(self) -> float:
        """Seconds until a probe may go (0: now, or one is out already)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown_s - self._clock.now())

    def ready(self) -> bool:
        """Would :meth:`allow` let a call through now (without taking the probe)?"""
        state = self.state
        return state is CircuitState.CLOSED or (
            state is CircuitState.HALF_OPEN and not self._probing
        )

    def allow(self) -> bool:
        """May a call go out now? In half-open, only one probe at a time."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = self._streak_since = None
        self._probing = False
        self.cause = ""
        self._wake()

    def record_failure(self, cause: str = "") -> None:
        now = self._clock.now()
        if self._failures == 0 and self._opened_at is None:
            self._streak_since = now
        self._failures += 1
        self.cause = cause or self.cause
        if self._probing or self._failures >= self.failure_threshold:
            self._opened_at = now
        self._probing = False
        self._wake()

    def abandon(self) -> None:
        """A call ended without a verdict (cancelled): let another probe through."""
        if self._probing:
            self._probing = False
            self._wake()

    def notify(self, waiter: asyncio.Future[None]) -> None:
        """Resolve ``waiter`` at the next verdict (success, failure, abandoned probe)."""
        self._waiters.append(waiter)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state}, failures={self._failures})"
