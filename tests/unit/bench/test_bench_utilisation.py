"""Utilisation in a bench report: admitted over what the provider's bucket could admit."""

from __future__ import annotations

import random

import pytest

from fanout.bench._report import bucket_ceiling
from fanout.limits import TokenBucket


def _admitted_by_provider(
    per_min: float, burst_s: float, attempts: list[tuple[float, int]]
) -> list[tuple[float, int]]:
    """The (time, amount) a provider with this bucket would accept of ``attempts``."""
    rate = per_min / 60
    bucket = TokenBucket(rate, max(1.0, rate * burst_s), 0.0)
    out = []
    for at, amount in attempts:
        if bucket.wait_s(amount, at) == 0.0:
            bucket.take(amount, at)
            out.append((at, amount))
    return out


def _in_window(spent: list[tuple[float, int]], start: float, end: float) -> int:
    return sum(amount for at, amount in spent if start <= at < end)


def test_a_burst_spent_inside_the_window_is_counted_in_the_ceiling() -> None:
    # 600/min with a 60 s bucket: 600 admitted at once, then 10/s; 30 s window from t=0
    spent = [(0.0, 1)] * 600 + [(i / 10, 1) for i in range(1, 300)]
    admitted = _in_window(spent, 0.0, 30.0)
    ceiling = bucket_ceiling(spent, 600, 60.0, 0.0, 30.0)
    assert admitted / (600 / 60 * 30) > 2  # the refill alone: "300%"
    assert admitted / ceiling == pytest.approx(1.0, abs=0.01)


def test_a_burst_spent_before_the_window_is_not_counted_again() -> None:
    spent = [(0.0, 1)] * 600 + [(i / 10, 1) for i in range(1, 600)]
    ceiling = bucket_ceiling(spent, 600, 60.0, 30.0, 60.0)
    assert ceiling == pytest.approx(300, abs=1.5)  # the bucket was empty at 30 s


def test_an_idle_client_leaves_the_whole_bucket_to_the_window() -> None:
    assert bucket_ceiling([], 600, 60.0, 10.0, 20.0) == pytest.approx(600 + 100)
    assert bucket_ceiling([], 600, 1.0, 10.0, 20.0) == pytest.approx(10 + 100)


@pytest.mark.parametrize("burst_s", [1.0, 10.0, 60.0])
@pytest.mark.parametrize("amount", [1, 250])
def test_whatever_the_client_sends_utilisation_never_passes_one(
    burst_s: float, amount: int
) -> None:
    per_min = 3000.0 * amount
    rng = random.Random(f"{burst_s}-{amount}")
    ratios = []
    for run in range(20):
        at, attempts = 0.0, []
        while at < 40.0:  # a second at a time: a lull, the limit's pace or far over it
            second, per_s = at + 1.0, 2000.0 if run == 0 else rng.choice([2.0, 50.0, 2000.0])
            while at < second:
                at += rng.expovariate(per_s)
                attempts.append((at, amount))
        spent = _admitted_by_provider(per_min, burst_s, attempts)
        warmup = rng.uniform(0, 10)
        ceiling = bucket_ceiling(spent, per_min, burst_s, warmup, 40.0)
        ratios.append(_in_window(spent, warmup, 40.0) / ceiling)
    assert max(ratios) <= 1.0 + 1e-9
    assert ratios[0] > 0.99  # always far over the limit: it spends what the bucket holds
