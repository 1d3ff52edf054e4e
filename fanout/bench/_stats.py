"""Small statistics over measured values: percentiles and per-second counts."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["latency_summary", "per_second", "percentile"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (as numpy's default); ``q`` in [0, 1]."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def latency_summary(values_ms: Iterable[float]) -> dict[str, float | int | None]:
    """count, mean, p50, p90, p99 and max of ``values_ms`` (None when there are none)."""
    values = sorted(v for v in values_ms if v is not None and not math.isnan(v))
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    return {
        "count": len(values),
        "mean": round(sum(values) / len(values), 3),
        "p50": round(percentile(values, 0.50), 3),
        "p90": round(percentile(values, 0.90), 3),
        "p99": round(percentile(values, 0.99), 3),
        "max": round(values[-1], 3),
    }


def per_second(times_s: Iterable[float], seconds: int) -> list[int]:
    """How many of ``times_s`` fall in each whole second ``[0, seconds)``."""
    counts = [0] * max(0, seconds)
    for t in times_s:
        i = math.floor(t)
        if 0 <= i < seconds:
            counts[i] += 1
    return counts
