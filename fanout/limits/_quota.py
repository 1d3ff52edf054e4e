"""``QuotaLedger``: one provider/model limit shared by many workers through leases.

Each worker enforces its lease locally (a :class:`Limiter` in leased mode) and
reports its counters several times a second. The ledger owns the real pace: it
learns from every worker's 429s and stated limits with the same law as a local
limiter (:class:`AdaptiveRate`), and splits the pace among the workers alive in
proportion to their demand (queued + in flight + granted since their last
report). Shares never add up to more than the whole: a worker's new share is at
most what the others' current leases leave, so a worker whose demand grows takes
capacity only as the others report and shrink (the sum of live leases stays
within the limit at every moment, startup included: ``expected_workers`` that
have not reported yet count as idle). A worker that stops reporting for
``lease_ttl_s`` is forgotten and its share goes to the others.

The provider's bucket holds more than the pace (OpenAI's hold a minute of the limit):
once a report's headers show it (``remaining`` and ``reset``, ``window_s`` at most),
the ledger grants that burst once, split among the workers by demand as they report,
and never more in all than the provider said remained less every worker's calls in
flight; a 429 anywhere ends the grants. Pure logic on an injected clock: the Ray actor
in ``fanout.distributed`` only wraps it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fanout.clock import Clock
from fanout.limits._adaptive import AdaptiveRate
from fanout.limits._limiter import LEASED_BURST_S, LeaseReport, LimiterState

__all__ = ["Lease", "QuotaLedger"]

_MIN_WEIGHT = 1.0  # an idle worker keeps a sliver, so its first call need not wait a report
_SMOOTHING = 0.3  # weight of a report's demand against the worker's previous weight
_MARGIN = 0.98  # leases add up to this much of the pace: room for leases still in transit
# Where the provider's bucket is deep (a burst was granted), the pace's own shortfall
# refills it: a lease in transit draws on that, so a smaller margin holds.
_DEEP_MARGIN = 0.99


@dataclass(frozen=True, slots=True)
class Lease:
    """One worker's share, valid for ``ttl_s``; ``None`` rates are not limited."""

    requests_per_min: float | None
    tokens_per_min: float | None
    max_concurrency: int | None
    ttl_s: float
    workers: int  # workers sharing the limit now
    burst_requests: float = 0.0  # to spend at once, beyond the pace: granted once
    burst_tokens: float = 0.0


@dataclass(slots=True)
class _Worker:
    seen: float
    weight: float
    last: LeaseReport
    share: float = 0.0  # of the whole limit, as last leased
    burst_requests: float = 0.0  # of the burst, granted to it so far
    burst_tokens: float = 0.0


class QuotaLedger:
    def __init__(
        self,
        *,
        clock: Clock,
        requests_per_min: float | None,
        tokens_per_min: float | None,
        max_concurrency: int | None = None,
        lease_ttl_s: float = 3.0,
        adaptive: bool = True,
        expected_workers: int = 1,
        window_s: float | None = None,
    ) -> None:
        self.clock = clock
        self.window_s = window_s
        # The burst to grant (None: not known yet; 0 once spent, refused or not there).
        self._pool_req: float | None = None
        self._pool_tok: float | None = None
        self._pool_req_total = self._pool_tok_total = 0.0
        self.burst_granted_requests = 0.0
        self.burst_granted_tokens = 0.0
        self.expected_workers = expected_workers
        self.lease_ttl_s = lease_ttl_s
        self.adaptive = adaptive
        self.max_concurrency = max_concurrency
        self._requests = AdaptiveRate(requests_per_min / 60 if requests_per_min else None)
        self._tokens = AdaptiveRate(tokens_per_min / 60 if tokens_per_min else None)
        self._workers: dict[str, _Worker] = {}
        # Answers per window, as the Limiter counts them: the first window opens at the
        # first report that carries answers; None until one closes (nothing measured).
        self._window_start: float | None = None
        self._window_ok = 0
        self._window_tokens = 0
        self._ok_per_s: float | None = None
        self._tok_per_s: float | None = None
        self.rate_limited = 0  # 429s reported by all workers
        self.granted = 0  # calls let through by all workers' leases, since the start

    @property
    def requests_per_min(self) -> float | None:
        return self._requests.rate * 60 if self._requests.rate is not None else None

    @property
    def tokens_per_min(self) -> float | None:
        return self._tokens.rate * 60 if self._tokens.rate is not None else None

    @property
    def workers(self) -> int:
        """Workers holding a lease (reported within its ttl, or not yet pruned)."""
        return len(self._workers)

    def state(self, name: str) -> LimiterState:
        """The shared limit as one limiter's snapshot (progress output on the driver)."""
        req, tok = self._requests.configured, self._tokens.configured
        workers = [w.last for w in self._workers.values()]
        return LimiterState(
            name=name,
            requests_per_min=self.requests_per_min,
            tokens_per_min=self.tokens_per_min,
            configured_requests_per_min=req * 60 if req else None,
            configured_tokens_per_min=tok * 60 if tok else None,
            in_flight=sum(w.in_flight for w in workers),
            queued=sum(w.queued for w in workers),
            granted=self.granted,
            rate_limited=self.rate_limited,
            total_wait_s=0.0,
            paused_s=0.0,
        )

    def report(self, worker_id: str, report: LeaseReport) -> Lease:
        """Take a worker's counters; return its lease."""
        now = self.clock.now()
        worker = self._workers.get(worker_id)
        previous = worker.last if worker is not None else None
        d_ok = report.ok - (previous.ok if previous else 0)
        d_tokens = report.tokens - (previous.tokens if previous else 0)
        d_limited = report.rate_limited - (previous.rate_limited if previous else 0)
        d_granted = report.granted - (previous.granted if previous else 0)
        if d_ok < 0 or d_limited < 0:  # the worker restarted: its counters did too
            d_ok, d_tokens, d_limited, d_granted = report.ok, report.tokens, 0, report.granted
        demand = max(_MIN_WEIGHT, report.queued + report.in_flight + max(0, d_granted))
        # smoothed, so shares follow demand without sloshing between workers every report
        weight = demand if worker is None else worker.weight + _SMOOTHING * (demand - worker.weight)
        if worker is None:
            worker = self._workers[worker_id] = _Worker(now, weight, report)
        else:
            worker.seen, worker.weight, worker.last = now, weight, report
        self.granted += max(0, d_granted)
        self._count(now, d_ok, d_tokens)
        if self.adaptive:
            self._adapt(now, report, d_limited)
        self._expire(now)
        if d_limited > 0:
            self._pool_req = self._pool_tok = 0.0  # the provider refuses: no more bursts
        elif self._pool_req is None or self._pool_tok is None:
            self._open_pools(report)
        return self._lease(worker_id)

    def _open_pools(self, report: LeaseReport) -> None:
        """Learn what the provider's bucket holds beyond the pace, once, from a report."""
        busy = [w.last for w in self._workers.values()]
        if self._pool_req is None:
            self._pool_req = self._pool(
                report.remaining_requests, report.reset_requests_s, self._requests,
                sum(w.in_flight for w in busy) + sum(w.burst_left_requests for w in busy),
            )  # fmt: skip
            self._pool_req_total = self._pool_req or 0.0
        if self._pool_tok is None:
            self._pool_tok = self._pool(
                report.remaining_tokens, report.reset_tokens_s, self._tokens,
                sum(w.burst_left_tokens for w in busy),  # in-flight tokens: not reported
            )  # fmt: skip
            self._pool_tok_total = self._pool_tok or 0.0

    def _pool(
        self, remaining: float | None, reset_s: float | None, rate: AdaptiveRate, held: float
    ) -> float | None:
        """The burst a bucket holds: what the provider says is left, less what is held."""
        per_s = rate.stated or rate.configured
        if self.window_s is None or per_s is None:
            return 0.0
        if remaining is None or reset_s is None:
            return None  # not stated yet
        window = min(self.window_s, remaining / per_s + reset_s)
        if window <= 2.0:  # a short window: the pace is all there is
            return 0.0
        # what the workers' paced buckets may hold (half a second of pace in all) stays
        # with the leases
        return max(0.0, remaining - held - per_s * LEASED_BURST_S)

    def _burst_for(
        self, worker: _Worker, share: float, pool: float | None, total: float, tokens: bool
    ) -> tuple[float, float | None]:
        """This worker's part of the burst (its share of the whole, less what it got)."""
        if not pool:
            return 0.0, pool
        got = worker.burst_tokens if tokens else worker.burst_requests
        grant = min(pool, max(0.0, total * share - got))
        if tokens:
            worker.burst_tokens += grant
        else:
            worker.burst_requests += grant
        return grant, pool - grant

    def leave(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    def _count(self, now: float, ok: int, tokens: int) -> None:
        if self._window_start is None:
            if ok > 0:  # these answers came before the window: they open it
                self._window_start = now
            return
        self._window_ok += ok
        self._window_tokens += tokens
        elapsed = now - self._window_start
        if elapsed >= 2.0:
            self._ok_per_s = self._window_ok / elapsed
            self._tok_per_s = self._window_tokens / elapsed
            self._window_start, self._window_ok, self._window_tokens = now, 0, 0

    def _adapt(self, now: float, report: LeaseReport, limited: int) -> None:
        if report.stated_requests_per_min:
            self._requests.limit_stated(report.stated_requests_per_min / 60)
        if report.stated_tokens_per_min:
            self._tokens.limit_stated(report.stated_tokens_per_min / 60)
        if limited > 0:
            self.rate_limited += limited
            cooldown = max(1.0, report.retry_after_s or 0.0)
            self._requests.rate_limited(now, observed_per_s=self._ok_per_s, cooldown_s=cooldown)
            if self._tokens.rate is not None:
                self._tokens.rate_limited(now, observed_per_s=self._tok_per_s, cooldown_s=cooldown)
        else:
            self._requests.recover(now)
            self._tokens.recover(now)

    def _expire(self, now: float) -> None:
        for worker_id in [w for w, v in self._workers.items() if now - v.seen > self.lease_ttl_s]:
            del self._workers[worker_id]

    def _lease(self, worker_id: str) -> Lease:
        me = self._workers[worker_id]
        unseen = max(0, self.expected_workers - len(self._workers)) * _MIN_WEIGHT
        target = me.weight / (sum(w.weight for w in self._workers.values()) + unseen)
        others = sum(w.share for k, w in self._workers.items() if k != worker_id)
        margin = _DEEP_MARGIN if self._pool_req_total or self._pool_tok_total else _MARGIN
        share = me.share = max(0.0, min(target * margin, margin - others))
        req = _full_pace(self._requests, self._pool_req_total)
        tok = _full_pace(self._tokens, self._pool_tok_total)
        concurrency = None
        if self.max_concurrency is not None:
            concurrency = max(1, int(self.max_concurrency * share))
        burst_req, self._pool_req = self._burst_for(
            me, target, self._pool_req, self._pool_req_total, tokens=False
        )
        burst_tok, self._pool_tok = self._burst_for(
            me, target, self._pool_tok, self._pool_tok_total, tokens=True
        )
        self.burst_granted_requests += burst_req
        self.burst_granted_tokens += burst_tok
        return Lease(
            requests_per_min=req * 60 * share if req is not None else None,
            tokens_per_min=tok * 60 * share if tok is not None else None,
            max_concurrency=concurrency,
            ttl_s=self.lease_ttl_s,
            workers=len(self._workers),
            burst_requests=burst_req,
            burst_tokens=burst_tok,
        )

    def __repr__(self) -> str:
        return (
            f"QuotaLedger(rpm={self.requests_per_min}, tpm={self.tokens_per_min}, "
            f"workers={len(self._workers)})"
        )


def _full_pace(rate: AdaptiveRate, burst_total: float) -> float | None:
    """The pace to share: the stated limit itself where the provider's headers showed a
    bucket deeper than the pace (a burst was there to grant), since its ``remaining``
    then bounds what the workers hold; otherwise just under it (``rate.safety``)."""
    stated, pace = rate.stated, rate.rate
    if burst_total > 0 and stated and pace and abs(pace - stated * rate.safety) < 1e-9:
        return stated
    return pace
