"""``TokenBucket``: continuous refill at a rate up to a capacity; pure arithmetic on given times."""

from __future__ import annotations

__all__ = ["TokenBucket"]

# Refill arithmetic leaves 0.999999... after sleeping exactly the computed wait; treat
# that as full, or a waiter would sleep ever-shorter intervals that never add up.
_EPSILON = 1e-9


class TokenBucket:
    """A bucket of ``capacity`` that refills at ``rate`` per second.

    ``take`` may drive the level negative (debt): a call larger than the bucket is
    admitted when the bucket is full, and a settle that charges more than was
    reserved is paid back by waiting. Times are passed in, so it is pure.
    """

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_s(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` can be taken (0 if now)."""
        self.refill(now)
        need = min(amount, self.capacity)
        if self.level >= need - _EPSILON:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level -= amount

    def adjust(self, delta: float) -> None:
        """Give back (positive) or charge (negative) tokens after the fact."""
        self.level = min(self.capacity, self.level + delta)

    def drain(self, now: float) -> None:
        """Empty the bucket: the provider says there is nothing left."""
        self.refill(now)
        self.level = min(self.level, 0.0)

    def set_rate(self, rate: float, capacity: float, now: float) -> None:
        self.refill(now)
        self.rate = rate
        self.capacity = capacity
        self.level = min(self.level, capacity)
