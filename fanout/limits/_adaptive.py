"""``AdaptiveRate``: the pace of one limit dimension, learned from 429s and rate-limit headers.

Law: a 429 sets the ceiling estimate to the rate the provider was accepting when it
drew the 429 (but at least ``decrease`` x the pace, so one noisy window cannot
collapse it), at most once per cool-down so a burst of in-flight 429s counts once.
A 429 before any accepted rate was measured (a start-up burst) says the pace was
too high but not by how much: the ceiling estimate is then the pace itself.
The pace restarts at ``decrease`` x ceiling and climbs back towards ``safety`` x
ceiling on a concave curve (fast while far, slow near it); past that it probes
upward linearly, so a provider that raised its limit is found again. A limit the
provider states in its headers replaces the estimate outright. The pace never
exceeds the configured rate.
"""

from __future__ import annotations

import math

__all__ = ["AdaptiveRate"]


class AdaptiveRate:
    """Per-second rate for requests or tokens; ``rate`` is ``None`` while unlimited."""

    __slots__ = (
        "_cut_at",
        "_floor",
        "ceiling",
        "configured",
        "decrease",
        "probe_per_s",
        "rate",
        "recover_tau_s",
        "safety",
        "stated",
    )

    def __init__(
        self,
        configured: float | None,
        *,
        safety: float = 0.99,
        decrease: float = 0.7,
        recover_tau_s: float = 1.5,
        probe_per_s: float = 0.01,
    ) -> None:
        self.configured = configured
        self.safety = safety
        self.decrease = decrease
        self.recover_tau_s = recover_tau_s
        self.probe_per_s = probe_per_s  # share of the ceiling added per second when probing
        self.ceiling: float | None = None  # best estimate of the provider's real limit
        self.stated: float | None = None  # the limit the provider's headers state
        self.rate: float | None = configured * safety if configured is not None else None
        self._cut_at = -math.inf
        self._floor = 0.0

    def limit_stated(self, per_s: float) -> bool:
        """The provider's headers give its limit; pace just under it. True if the pace changed."""
        if per_s <= 0 or self.stated == per_s:
            return False
        self.stated = per_s
        self.ceiling = per_s if self.ceiling is None else min(self.ceiling, per_s)
        old = self.rate
        self.rate = self._clamp(per_s * self.safety)
        return old != self.rate

    def rate_limited(self, now: float, *, observed_per_s: float | None, cooldown_s: float) -> bool:
        """A 429: cut the pace (once per cool-down). True if the pace changed.

        ``observed_per_s`` is the rate the provider accepted over the last whole window,
        ``None`` while none has been measured yet."""
        if now - self._cut_at < cooldown_s:
            return False
        current = self.rate if self.rate is not None else observed_per_s
        if current is None or current <= 0:
            return False
        # With nothing measured yet (a start-up burst) the pace was too high, but not by
        # how much: the estimate is the pace itself, not `decrease` x it (that left the
        # pace ~30% under a limit stated in every response, until the slow probe).
        observed = current if observed_per_s is None else observed_per_s
        self.ceiling = min(max(observed, current * self.decrease), current)
        if self.stated is not None:
            self.ceiling = min(self.ceiling, self.stated)
        self._floor = self.ceiling * self.decrease
        self.rate = self._clamp(self._floor)
        self._cut_at = now
        return True

    def recover(self, now: float) -> bool:
        """Move the pace along the recovery curve; call often (it is cheap). True if changed."""
        if self.ceiling is None or math.isinf(self._cut_at):
            return False
        since = now - self._cut_at
        target = self.ceiling * self.safety
        approach = self._floor + (target - self._floor) * (
            1 - math.exp(-since / self.recover_tau_s)
        )
        settle_s = 3 * self.recover_tau_s
        probe = max(0.0, since - settle_s) * self.probe_per_s * self.ceiling
        rate = self._clamp(approach + probe)
        if rate == self.rate:
            return False
        self.rate = rate
        return True

    def _clamp(self, rate: float) -> float:
        if self.configured is not None:
            rate = min(rate, self.configured * self.safety)
        if self.stated is not None:
            rate = min(rate, self.stated * self.safety)
        return max(rate, 1e-3)
