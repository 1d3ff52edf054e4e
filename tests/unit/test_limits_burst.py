"""The limiter spends the provider's whole bucket (burst, then refill), on a fake clock.

The provider below keeps its requests/min bucket as OpenAI's behave (and as the
emulator keeps it): full at the start, ``window_s`` seconds of its limit deep, and its
headers state the limit, what is left and the time to refill to full. ``stated_window_s``
lets it lie about the window, as a provider that enforces a per-minute limit per second
does.
"""

from __future__ import annotations

import asyncio

from fanout.limits import Limiter, QuotaLedger, TokenBucket
from fanout.sim import FakeClock


class _BucketProvider:
    def __init__(
        self,
        clock: FakeClock,
        per_min: float,
        window_s: float,
        stated_window_s: float | None = None,
    ) -> None:
        self.clock, self.per_min = clock, per_min
        rate = per_min / 60
        self.bucket = TokenBucket(rate, rate * window_s, clock.now())
        self.stated = TokenBucket(rate, rate * (stated_window_s or window_s), clock.now())
        self.accepted: list[float] = []
        self.limited = 0

    def call(self) -> tuple[bool, dict[str, str]]:
        now = self.clock.now()
        ok = self.bucket.wait_s(1, now) == 0
        if ok:
            self.bucket.take(1, now)
            self.stated.refill(now)
            self.stated.level = max(0.0, self.stated.level - 1)
            self.accepted.append(now)
        else:
            self.limited += 1
        shown = self.stated
        shown.refill(now)
        reset = (shown.capacity - shown.level) / shown.rate
        return ok, {
            "x-ratelimit-limit-requests": str(int(self.per_min)),
            "x-ratelimit-remaining-requests": str(max(0, int(shown.level))),
            "x-ratelimit-reset-requests": f"{reset * 1000:.0f}ms",
        }


async def _run(
    limiter: Limiter, provider: _BucketProvider, clock: FakeClock, calls: int, latency_s: float
) -> float:
    """``calls`` calls, all queued at once, each retried until the provider takes it;
    returns when the last was answered."""

    async def one() -> None:
        while True:
            permit = await limiter.acquire()
            await clock.sleep(latency_s / 2)
            ok, headers = provider.call()
            await clock.sleep(latency_s / 2)
            permit.release()
            if ok:
                limiter.observe(headers)
                return
            limiter.rate_limited(retry_after_s=0.02, headers=headers, permit=permit)

    await asyncio.gather(*(one() for _ in range(calls)))
    return clock.now()


async def test_a_full_bucket_is_spent_at_once_then_the_refill() -> None:
    clock = FakeClock(autojump=True)
    provider = _BucketProvider(clock, per_min=3000, window_s=60)
    limiter = Limiter(clock=clock, requests_per_min=3000, max_concurrency=5000, window_s=60.0)
    end = await _run(limiter, provider, clock, calls=5000, latency_s=0.3)
    assert provider.limited == 0
    # the first answer (0.3 s) confirms the bucket: nearly all of it goes at once
    assert sum(1 for t in provider.accepted if t < 0.5) >= 2900
    # bucket-aware minimum: (5000 - 3000) / 50 per s + 0.3 s = 40.3 s
    assert 40.3 / end >= 0.97, end


async def test_without_a_window_the_limiter_paces_as_before() -> None:
    clock = FakeClock(autojump=True)
    provider = _BucketProvider(clock, per_min=3000, window_s=60)
    limiter = Limiter(clock=clock, requests_per_min=3000, max_concurrency=5000)
    end = await _run(limiter, provider, clock, calls=1000, latency_s=0.3)
    assert provider.limited == 0
    assert sum(1 for t in provider.accepted if t < 0.5) <= 60  # a second's worth at most
    assert end > 15  # 1000 calls at 50/s


async def test_no_limit_configured_learns_limit_and_bucket_from_the_first_answer() -> None:
    clock = FakeClock(autojump=True)
    provider = _BucketProvider(clock, per_min=3000, window_s=60)
    limiter = Limiter(clock=clock, max_concurrency=5000, window_s=60.0)
    end = await _run(limiter, provider, clock, calls=5000, latency_s=0.3)
    assert provider.limited == 0
    assert 40.3 / end >= 0.97, end


async def test_a_short_window_stated_by_the_headers_is_paced() -> None:
    clock = FakeClock(autojump=True)
    provider = _BucketProvider(clock, per_min=3000, window_s=1)
    limiter = Limiter(clock=clock, requests_per_min=3000, max_concurrency=5000, window_s=60.0)
    end = await _run(limiter, provider, clock, calls=1000, latency_s=0.3)
    assert provider.limited <= 5  # at most what the first answer's window let through
    assert (1000 - 50) / 50 / end >= 0.95, end


async def test_a_429_while_spending_a_burst_shrinks_the_window() -> None:
    """Headers that claim a minute's bucket, a provider that enforces a second's: the
    first refusals of the burst teach the limiter to pace; later calls are not refused."""
    clock = FakeClock(autojump=True)
    provider = _BucketProvider(clock, per_min=3000, window_s=1, stated_window_s=60)
    limiter = Limiter(clock=clock, requests_per_min=3000, max_concurrency=5000, window_s=60.0)
    end = await _run(limiter, provider, clock, calls=3000, latency_s=0.3)
    assert limiter._short_window
    first_burst = provider.limited
    # the refusals are the first burst's (a few thousand at most, each retried once,
    # paced); none of the 3000 calls was lost, and the rest of the run paced under the limit
    assert len(provider.accepted) == 3000
    assert first_burst < 3000
    limited_before = provider.limited
    await _run(limiter, provider, clock, calls=500, latency_s=0.3)
    assert provider.limited == limited_before  # paced now: no more 429s
    assert end > 3000 / 50 * 0.9


async def _leased_run(
    provider: _BucketProvider,
    clock: FakeClock,
    calls: int,
    ledger: QuotaLedger,
    concurrency: int = 2500,
) -> tuple[float, list[Limiter]]:
    """Two workers' leased limiters share ``ledger``, each reporting every 0.2 s, half
    the calls each, at most ``concurrency`` in flight each; returns when the last call
    was answered."""
    limiters = [Limiter(clock=clock, max_concurrency=concurrency) for _ in range(2)]
    for limiter in limiters:
        limiter.set_lease(None, None)
    done = asyncio.Event()

    async def refresh(i: int, limiter: Limiter) -> None:
        while not done.is_set():
            lease = ledger.report(f"w{i}", limiter.lease_report())
            limiter.set_lease(
                lease.requests_per_min,
                lease.tokens_per_min,
                lease.max_concurrency,
                burst_requests=lease.burst_requests,
            )
            await clock.sleep(0.2)

    refreshers = [asyncio.create_task(refresh(i, lim)) for i, lim in enumerate(limiters)]
    await clock.sleep(0.01)
    await asyncio.gather(
        *(_run(lim, provider, clock, calls=calls // 2, latency_s=0.3) for lim in limiters)
    )
    done.set()
    await asyncio.gather(*refreshers)
    return clock.now(), limiters


async def test_leases_spend_the_burst_and_never_more_than_remains() -> None:
    clock = FakeClock(autojump=True)
    provider = _BucketProvider(clock, per_min=3000, window_s=60)
    ledger = QuotaLedger(
        clock=clock, requests_per_min=3000, tokens_per_min=None, expected_workers=2, window_s=60.0
    )
    end, _ = await _leased_run(provider, clock, 5000, ledger)
    assert provider.limited == 0
    granted = ledger.burst_granted_requests
    assert 2500 <= granted <= 3000  # the bucket, less what was in flight and a second's pace
    assert 40.3 / end >= 0.95, end  # the paced leases run at 0.99 of the limit


async def test_leases_spend_the_pace_while_a_slow_burst_drains() -> None:
    """Workers that can hold only 125 calls in flight need ~6 s to spend a 3,000 burst:
    the pace's refill over those seconds is spent beside it (the paced bucket first, the
    burst grant when it is empty), not left to overflow the small paced bucket."""
    clock = FakeClock(autojump=True)
    provider = _BucketProvider(clock, per_min=3000, window_s=60)
    ledger = QuotaLedger(
        clock=clock, requests_per_min=3000, tokens_per_min=None, expected_workers=2, window_s=60.0
    )
    end, _ = await _leased_run(provider, clock, 5000, ledger, concurrency=125)
    assert provider.limited == 0
    slow_drain = sum(1 for t in provider.accepted if t < 6.0)
    assert slow_drain < 3000 + 6 * 50  # the burst took seconds, as it does on Ray
    # 5,000 calls: the burst, then the refill since t = 0 at the stated limit
    assert 40.3 / end >= 0.95, end


async def test_leases_grant_no_burst_where_the_window_is_short() -> None:
    clock = FakeClock(autojump=True)
    provider = _BucketProvider(clock, per_min=3000, window_s=1)
    ledger = QuotaLedger(
        clock=clock, requests_per_min=3000, tokens_per_min=None, expected_workers=2, window_s=60.0
    )
    await _leased_run(provider, clock, 600, ledger)
    assert ledger.burst_granted_requests == 0
    assert provider.limited <= 10
