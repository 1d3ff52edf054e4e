"""Budget reservations: hold the worst case, settle with actual usage, refuse an overrun."""

from __future__ import annotations

import pickle

import pytest

from fanout import Budget, BudgetExceeded, RateLimited


def test_reserve_settle_release_track_held_and_spent() -> None:
    budget = Budget(tokens=1000, usd=1.0)
    first = budget.reserve(tokens=400, usd=0.4)
    second = budget.reserve(tokens=400, usd=0.4)
    assert (budget.held_tokens, budget.spent_tokens) == (800, 0)
    with pytest.raises(BudgetExceeded) as info:
        budget.reserve(tokens=300, usd=0.0)
    assert info.value.unit == "tokens" and info.value.limit == 1000
    budget.settle(first, tokens=150, usd=0.1)
    assert (budget.held_tokens, budget.spent_tokens) == (400, 150)
    third = budget.reserve(tokens=300, usd=0.1)  # fits once the first settled low
    budget.release(second)
    budget.release(second)  # releasing twice is harmless
    budget.release(third)
    assert budget.held_tokens == 0 and budget.held_usd == pytest.approx(0.0)
    assert budget.spent_usd == pytest.approx(0.1)


def test_usd_limit_refuses_call_that_would_overrun() -> None:
    budget = Budget(usd=0.01)
    budget.settle(budget.reserve(tokens=10, usd=0.009), tokens=10, usd=0.009)
    with pytest.raises(BudgetExceeded, match="USD budget"):
        budget.reserve(tokens=10, usd=0.002)


def test_unlimited_budget_never_refuses() -> None:
    budget = Budget()
    assert not budget.limited
    budget.reserve(tokens=10**9, usd=10**6)


def test_errors_pickle_with_their_attributes() -> None:
    err = pickle.loads(pickle.dumps(BudgetExceeded("over", limit=1.0, needed=2.0, unit="usd")))
    assert (str(err), err.limit, err.needed, err.unit) == ("over", 1.0, 2.0, "usd")
    limited = pickle.loads(pickle.dumps(RateLimited("slow down", provider="p", retry_after_s=3.0)))
    assert (limited.retry_after_s, limited.status_code, limited.provider) == (3.0, 429, "p")
