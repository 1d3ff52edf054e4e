"""``HedgePolicy``: when to send a duplicate of a slow call, learned per model alias.

A call that has not answered by the ``quantile`` of its alias's recent latencies
(learned online from answered calls) may be hedged: a second copy goes out and the
first answer wins. Hedges are paid for out of a budget of extra calls, ``max_extra``
per call made, so a slow provider cannot double the traffic: each call adds
``max_extra`` of a hedge to the budget, which holds at most ``burst`` hedges (by
default what ``window`` calls earn: slow calls come in bursts, as calls go out in
waves, and a tight burst would refuse the very calls worth hedging).
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["HedgePolicy"]

_RECOMPUTE_EVERY = 64  # observations between two quantile computations (a sort of the window)


class HedgePolicy:
    """Learned hedge delay and hedge budget for one model alias (pure; no clock, no I/O)."""

    def __init__(
        self,
        *,
        quantile: float = 0.95,
        max_extra: float = 0.05,
        min_samples: int = 20,
        window: int = 1000,
        burst: float | None = None,
    ) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be within (0, 1) (got {quantile})")
        if not 0.0 <= max_extra <= 1.0:
            raise ValueError(f"max_extra must be within [0, 1] (got {max_extra})")
        if min_samples < 1 or window < min_samples:
            raise ValueError("min_samples must be >= 1 and window >= min_samples")
        self.quantile = quantile
        self.max_extra = max_extra
        self.min_samples = min_samples
        self.burst = max(1.0, burst if burst is not None else max_extra * window)
        self._latencies: deque[float] = deque(maxlen=window)
        self._since_compute = 0
        self._delay_s: float | None = None
        self._credit = 0.0
        self.calls = 0  # calls that could have been hedged
        self.hedges = 0  # duplicates sent

    def observe(self, latency_s: float) -> None:
        """An answered call's latency (from its own start)."""
        self._latencies.append(latency_s)
        self._since_compute += 1
        if self._since_compute >= _RECOMPUTE_EVERY or (
            self._delay_s is None and len(self._latencies) >= self.min_samples
        ):
            self._since_compute = 0
            self._delay_s = _quantile(self._latencies, self.quantile)

    def delay_s(self) -> float | None:
        """How long to wait for an answer before hedging (``None``: not learned yet)."""
        return self._delay_s if len(self._latencies) >= self.min_samples else None

    def note_call(self) -> None:
        """A call went out: it earns ``max_extra`` of a hedge."""
        self.calls += 1
        self._credit = min(self.burst, self._credit + self.max_extra)

    def try_hedge(self) -> bool:
        """Spend one hedge from the budget, if it holds one."""
        if self._credit < 1.0 - 1e-9:  # tenths summed in floats fall just short of 1
            return False
        self._credit -= 1.0
        self.hedges += 1
        return True

    def __repr__(self) -> str:
        return (
            f"HedgePolicy(quantile={self.quantile}, delay_s={self._delay_s}, "
            f"calls={self.calls}, hedges={self.hedges})"
        )


def _quantile(values: deque[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[rank]
