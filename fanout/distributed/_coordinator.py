"""The quota coordinator: a Ray actor per (provider, model) that owns the real limit.

It wraps :class:`fanout.limits.QuotaLedger`. Workers report several times a
second and get their lease back in the same call; that is the only Ray RPC of
the rate-limit path (never one per LLM call). Ray restarts a dead coordinator
(``max_restarts=-1``); it starts from the configured limit and rebuilds the rest
from the next reports, while workers keep their leases meanwhile.
"""

from __future__ import annotations

import os

import ray

from fanout.budget import Allowance, BudgetLedger
from fanout.clock import SystemClock
from fanout.limits import Lease, LeaseReport, LimiterState, QuotaLedger

__all__ = ["BudgetCoordinator", "QuotaCoordinator"]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class QuotaCoordinator:
    def __init__(
        self,
        name: str,
        requests_per_min: float | None,
        tokens_per_min: float | None,
        max_concurrency: int | None,
        adaptive: bool,
        lease_ttl_s: float,
        expected_workers: int = 1,
        window_s: float | None = None,
    ) -> None:
        self.name = name
        self.ledger = QuotaLedger(
            clock=SystemClock(),
            requests_per_min=requests_per_min,
            tokens_per_min=tokens_per_min,
            max_concurrency=max_concurrency,
            lease_ttl_s=lease_ttl_s,
            adaptive=adaptive,
            expected_workers=expected_workers,
            window_s=window_s,
        )

    def report(self, worker_id: str, report: LeaseReport) -> Lease:
        return self.ledger.report(worker_id, report)

    def leave(self, worker_id: str) -> None:
        self.ledger.leave(worker_id)

    def limiter_state(self) -> LimiterState:
        return self.ledger.state(self.name)

    def state(self) -> dict[str, object]:
        return {
            "name": self.name,
            "requests_per_min": self.ledger.requests_per_min,
            "tokens_per_min": self.ledger.tokens_per_min,
            "rate_limited": self.ledger.rate_limited,
            "burst_granted_requests": self.ledger.burst_granted_requests,
            "workers": self.ledger.workers,
            "pid": os.getpid(),
        }



@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class BudgetCoordinator:
    """The job's budget: workers' allowances add up against one cap (``BudgetLedger``).

    Its state is what was granted and spent; a restarted one starts from the cap and
    the workers' next reports (spent so far) rebuild it.
    """

    def __init__(self, usd: float | None, tokens: int | None) -> None:
        self.ledger = BudgetLedger(clock=SystemClock(), usd=usd, tokens=tokens)

    def grant(
        self,
        worker_id: str,
        spent_usd: float,
        spent_tokens: int,
        want_usd: float,
        want_tokens: int,
    ) -> Allowance:
        return self.ledger.grant(
            worker_id,
            spent_usd=spent_usd,
            spent_tokens=spent_tokens,
            want_usd=want_usd,
            want_tokens=want_tokens,
        )

    def spent(self) -> tuple[float, int]:
        return self.ledger.spent_usd, self.ledger.spent_tokens
