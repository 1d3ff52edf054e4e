"""``CircuitBreaker``: stop calling a failing provider/model for a cool-down, then probe it."""

from __future__ import annotations

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
    closes the circuit, its failure opens it again.
    """

    __slots__ = ("_clock", "_failures", "_opened_at", "_probing", "cooldown_s", "failure_threshold")

    def __init__(
        self, clock: Clock, *, failure_threshold: int = 5, cooldown_s: float = 30.0
    ) -> None:
        self._clock = clock
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock.now() - self._opened_at >= self.cooldown_s:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

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
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.failure_threshold:
            self._opened_at = self._clock.now()
        self._probing = False

    def abandon(self) -> None:
        """A call ended without a verdict (cancelled): let another probe through."""
        self._probing = False

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state}, failures={self._failures})"
