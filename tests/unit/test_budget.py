"""Budget reservations: hold the worst case, settle with actual usage, refuse an overrun."""

from __future__ import annotations

import pickle

import pytest

from fanout import Budget, BudgetExceeded, RateLimited
from fanout.sim import FakeClock


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


def test_allowances_never_add_up_to_more_than_the_job_cap() -> None:
    from fanout.budget import BudgetLedger
    from fanout.clock import SystemClock

    ledger = BudgetLedger(clock=SystemClock(), usd=1.0, tokens=None, chunk_fraction=0.1)
    granted = {}
    spent = {"a": 0.0, "b": 0.0, "c": 0.0}
    for _ in range(30):
        for worker in spent:
            allowance = ledger.grant(worker, spent_usd=spent[worker], spent_tokens=0, want_usd=0.05)
            assert allowance.usd is not None
            granted[worker] = allowance.usd
            spent[worker] = min(allowance.usd, spent[worker] + 0.05)  # spend what it holds
            assert sum(granted.values()) <= 1.0 + 1e-9
    assert sum(spent.values()) == pytest.approx(1.0)  # the whole cap, and no more
    final = ledger.grant("a", spent_usd=spent["a"], spent_tokens=0, want_usd=0.05)
    assert final.exhausted


async def test_a_job_budget_stops_the_job_at_its_cap(clock: FakeClock) -> None:
    from support import sim_config

    from fanout import DAG, Engine
    from fanout.budget import Budget

    dag = DAG("capped")
    dag.input("text")
    dag.output(a=dag.llm("smart", "Summarise {text}", name="a", max_tokens=50))
    job = Budget(usd=0.004)
    async with Engine(sim_config(), clock=clock, job_budget=job) as engine:
        results = [await engine.run(dag, {"text": f"review {i}"}) for i in range(40)]
    ok = [r for r in results if r.ok]
    assert 0 < len(ok) < 40
    assert {str(r.status) for r in results if not r.ok} == {"budget_exceeded"}
    assert sum(r.cost_usd for r in results) <= 0.004 + 1e-12
    assert job.spent_usd == pytest.approx(sum(r.cost_usd for r in results))
