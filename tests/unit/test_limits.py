"""Limiter and buckets on a fake clock: pacing, FIFO, concurrency, settle, 429 adaptation."""

from __future__ import annotations

import asyncio

import pytest

from fanout.limits import AdaptiveRate, Limiter, RateLimitHeaders, TokenBucket, parse_duration_s
from fanout.sim import FakeClock


def test_bucket_refills_to_capacity_and_allows_debt() -> None:
    bucket = TokenBucket(rate=10, capacity=5, now=0.0)
    assert bucket.wait_s(5, 0.0) == 0
    bucket.take(5, 0.0)
    assert bucket.wait_s(1, 0.0) == pytest.approx(0.1)
    assert bucket.wait_s(1, 100.0) == 0 and bucket.level == 5  # capped at capacity
    bucket.take(12, 100.0)  # larger than the bucket: admitted when full, then owed
    assert bucket.level == -7
    assert bucket.wait_s(1, 100.0) == pytest.approx(0.8)


async def test_requests_are_paced_at_the_configured_rate(clock: FakeClock) -> None:
    limiter = Limiter(clock=clock, requests_per_min=600, burst_s=1.0)  # 10/s, burst 10
    times: list[float] = []

    async def call() -> None:
        permit = await limiter.acquire()
        times.append(clock.now())
        permit.release()

    await asyncio.gather(*(call() for _ in range(60)))
    burst = sum(1 for t in times if t == 0.0)
    assert 9 <= burst <= 10
    steady = [b - a for a, b in zip(times[burst:], times[burst + 1 :], strict=False)]
    assert all(gap == pytest.approx(1 / 9.9, rel=1e-3) for gap in steady)
    assert times == sorted(times)
    assert limiter.state().total_wait_s > 0


async def test_tokens_are_paced_in_fifo_order_and_settle_gives_back(clock: FakeClock) -> None:
    limiter = Limiter(clock=clock, tokens_per_min=60_000, burst_s=1.0)  # 1000 tokens/s
    order: list[str] = []

    async def call(name: str, tokens: int, actual: int) -> None:
        permit = await limiter.acquire(tokens)
        order.append(name)
        permit.settle(actual)
        permit.release()

    # big waits for a full bucket; small ones behind it do not jump the queue
    await asyncio.gather(call("a", 900, 100), call("big", 990, 990), call("small", 10, 10))
    assert order == ["a", "big", "small"]
    # "a" reserved 900 but used 100: 800 came back, so "big" went early
    assert clock.now() < 1.0


async def test_concurrency_cap_holds(clock: FakeClock) -> None:
    limiter = Limiter(clock=clock, max_concurrency=3)
    peak = 0

    async def call(i: int) -> None:
        nonlocal peak
        permit = await limiter.acquire()
        peak = max(peak, limiter.state().in_flight)
        await clock.sleep(0.1 * (i % 4 + 1))
        permit.release()

    await asyncio.gather(*(call(i) for i in range(20)))
    assert peak == 3
    assert limiter.state().in_flight == 0 and limiter.state().granted == 20


async def test_retry_after_pauses_the_queue(clock: FakeClock) -> None:
    limiter = Limiter(clock=clock, requests_per_min=6000, adaptive=False)
    limiter.rate_limited(retry_after_s=2.5)
    permit = await limiter.acquire()
    assert clock.now() == pytest.approx(2.5)
    permit.release()


async def test_a_cancelled_waiter_does_not_hold_the_queue(clock: FakeClock) -> None:
    limiter = Limiter(clock=clock, max_concurrency=1)
    first = await limiter.acquire()
    blocked = asyncio.create_task(limiter.acquire())
    later = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    blocked.cancel()
    first.release()
    permit = await later
    assert limiter.state().in_flight == 1
    permit.release()
    assert limiter.state().in_flight == 0


def test_429_cuts_the_pace_then_it_recovers_towards_the_ceiling() -> None:
    rate = AdaptiveRate(100.0)  # configured 100/s; the provider really allows 50/s
    assert rate.rate == pytest.approx(99.0)
    assert rate.rate_limited(10.0, observed_per_s=50.0, cooldown_s=1.0)
    assert rate.ceiling == pytest.approx(69.3)  # never below 0.7 x pace in one cut
    assert not rate.rate_limited(10.5, observed_per_s=50.0, cooldown_s=1.0)  # same episode
    assert rate.rate_limited(11.5, observed_per_s=50.0, cooldown_s=1.0)
    assert rate.ceiling == pytest.approx(50.0, rel=0.05)
    rate.recover(11.5 + 10.0)
    assert rate.rate is not None and 0.97 * 50 < rate.rate <= 50 * 1.05


def test_a_429_before_any_measured_rate_takes_the_pace_as_the_ceiling() -> None:
    rate = AdaptiveRate(100.0)  # configured 100/s, and the provider states the same
    rate.limit_stated(100.0)
    assert rate.rate_limited(0.2, observed_per_s=None, cooldown_s=1.0)
    assert rate.rate is not None and rate.rate < 75.0  # the pace is cut...
    assert rate.ceiling == pytest.approx(99.0)  # ...but nothing measured says by how much
    rate.recover(0.2 + 8.0)
    assert rate.rate == pytest.approx(99.0)
    unknown = AdaptiveRate(None)  # no limit known and nothing measured: nothing to cut
    assert not unknown.rate_limited(0.2, observed_per_s=None, cooldown_s=1.0)
    assert unknown.rate is None


@pytest.mark.parametrize("idle_s", [0.0, 1.9])
async def test_a_startup_429_leaves_a_configured_token_pace_at_the_limit(
    clock: FakeClock, idle_s: float
) -> None:
    """The configured tokens/min is the provider's, and every answer states it; one call
    of the start-up burst still draws a 429 (its request reached the provider late).
    After the cut the pace must climb back to the limit, not settle ~30% under it."""
    tpm = 60_000  # 1000 tokens/s
    limiter = Limiter(clock=clock, tokens_per_min=tpm)
    stated = {"x-ratelimit-limit-tokens": str(tpm), "x-ratelimit-remaining-tokens": "5000"}
    await clock.sleep(idle_s)  # an engine may be built a while before its first call
    start = clock.now()
    granted: list[float] = []

    async def client() -> None:
        while clock.now() < start + 12.0:
            permit = await limiter.acquire(52)  # estimated prompt + max_tokens
            granted.append(clock.now())
            nth = len(granted)
            await clock.sleep(0.05)
            if nth == 20:
                permit.settle(0)
                permit.release()
                limiter.rate_limited(
                    retry_after_s=0.05, headers={**stated, "x-ratelimit-remaining-tokens": "20"}
                )
                continue
            permit.settle(47)  # what the provider counted
            permit.release()
            limiter.observe(stated, tokens=47)

    await asyncio.gather(*(client() for _ in range(12)))
    assert limiter.state().rate_limited == 1
    steady = sum(1 for t in granted if start + 2.0 <= t < start + 12.0)
    # 10 s at 1000 tokens/s of 47 tokens each is 212.8 calls; the pace is 0.99 of that
    assert steady >= 0.95 * 10.0 * 1000 / 47, steady


class _TokenBucketProvider:
    """A provider with a tokens/min bucket kept as the emulator keeps it: a call is
    admitted when its estimate (prompt + max_tokens) is in the bucket, and its headers
    state the limit and what was left; then it is settled to what it used."""

    def __init__(self, clock: FakeClock, tokens_per_min: int) -> None:
        self.clock = clock
        self.tokens_per_min = tokens_per_min
        self.bucket = TokenBucket(tokens_per_min / 60, tokens_per_min / 60, clock.now())
        self.accepted: list[float] = []  # when each call was admitted
        self.limited = 0

    def call(self, estimate: int, used: int) -> tuple[bool, dict[str, str]]:
        now = self.clock.now()
        admitted = self.bucket.wait_s(estimate, now) == 0
        if admitted:
            self.bucket.take(estimate, now)
            self.accepted.append(now)
        else:
            self.limited += 1
        headers = {
            "x-ratelimit-limit-tokens": str(self.tokens_per_min),
            "x-ratelimit-remaining-tokens": str(max(0, int(self.bucket.level))),
        }
        if admitted:
            self.bucket.adjust(estimate - used)
        return admitted, headers


@pytest.mark.parametrize("configured", [False, True])
async def test_a_start_up_burst_draws_no_429s(clock: FakeClock, configured: bool) -> None:
    """64 callers start at once on a provider's tokens/min bucket, the limit configured
    or not (then the first answer's headers state it). The first requests reach the
    provider late (new connections), and the first answer comes while the rest of the
    initial window is still in flight: neither may let a burst past the bucket."""
    tpm = 60_000  # 1000 tokens/s, a bucket of 1000
    provider = _TokenBucketProvider(clock, tpm)
    limiter = Limiter(clock=clock, tokens_per_min=tpm if configured else None)

    async def caller(i: int) -> None:
        # The first caller starts a little before the others; every first request opens
        # a connection, and they all reach the provider together.
        connect_s = 0.07 if i == 0 else 0.03
        await clock.sleep(0.0 if i == 0 else 0.04)
        while clock.now() < 3.0:
            permit = await limiter.acquire(52)  # estimated prompt + max_tokens
            await clock.sleep(connect_s)
            connect_s = 0.001
            ok, headers = provider.call(52, 47)
            await clock.sleep(0.04 + 0.001 * (i % 20))  # latencies differ
            if not ok:
                permit.settle(0)
                permit.release()
                limiter.rate_limited(retry_after_s=0.05, headers=headers)
                continue
            permit.settle(47)
            permit.release()
            limiter.observe(headers, tokens=47)

    await asyncio.gather(*(caller(i) for i in range(64)))
    assert provider.limited == 0
    # and not by holding back: the bucket of 1000 plus 3 s of refill at 1000 tokens/s,
    # in calls of 47, is 85 calls (paced at 0.99 of the limit, after the first answers)
    admitted = sum(1 for t in provider.accepted if t < 3.0)
    assert admitted >= 0.9 * 4000 / 47, admitted


async def _start_without_headers(
    window: bool, *, leased: bool = False
) -> tuple[int, int, float, int]:
    """A provider of 50 requests/s (a bucket of 50) that sends no limit headers, nothing
    configured, 256 callers at 100 ms a call for 10 s: (calls, 429s, the end, the most
    calls in flight). ``leased``: a Ray worker's limiter whose coordinator knows no pace
    yet (it leases no rate until the workers' 429s teach it one)."""
    clock = FakeClock(autojump=True)
    bucket = TokenBucket(50.0, 50.0, clock.now())
    limiter = Limiter(clock=clock)
    if leased:
        limiter.set_lease(None, None)
    if not window:
        limiter._cwnd = None  # what the limiter did before it had one
    calls = limited = most_in_flight = 0

    async def caller() -> None:
        nonlocal calls, limited, most_in_flight
        while clock.now() < 10.0:
            permit = await limiter.acquire()
            most_in_flight = max(most_in_flight, limiter.state().in_flight)
            await clock.sleep(0.05)
            calls += 1
            ok = bucket.wait_s(1, clock.now()) == 0
            if ok:
                bucket.take(1, clock.now())
            await clock.sleep(0.05)
            permit.release()
            if ok:
                limiter.observe({})
            else:
                limited += 1
                limiter.rate_limited(permit=permit)

    await asyncio.gather(*(caller() for _ in range(256)))
    end = clock.now()
    await clock.aclose()
    return calls, limited, end, most_in_flight


@pytest.mark.parametrize("leased", [False, True])
async def test_with_no_limit_known_a_congestion_window_keeps_start_up_429s_few(
    leased: bool,
) -> None:
    """The window (a call more per answer, halved by a 429 once per window of calls)
    ramps up instead of sending all 256 callers at the first answer: on one process, and
    on each Ray worker while its coordinator knows no pace either (leased, no rates)."""
    calls, limited, end, most = await _start_without_headers(window=True, leased=leased)
    old_calls, old_limited, _, old_most = await _start_without_headers(window=False, leased=leased)
    assert limited * 10 < old_limited  # 110 vs 4,986 here
    assert limited / calls < old_limited / old_calls / 4
    assert most < old_most == 256  # it never sent every caller at once
    # and the limit is still used: the bucket plus its refill over the run
    assert calls - limited >= 0.9 * (50 + 50 * end), (calls - limited, end)


async def test_the_window_ramps_up_by_time_when_answers_are_slow(clock: FakeClock) -> None:
    """No limit known, a provider that never refuses and answers in 30 s: the window
    doubles every second while full, so 256 callers are all in flight within seconds,
    not after five 30 s round trips."""
    limiter = Limiter(clock=clock)
    in_flight_at: dict[float, int] = {}
    first = await limiter.acquire()  # the first answer ends the initial slow start
    first.release()
    limiter.observe({})

    async def caller() -> None:
        permit = await limiter.acquire()
        in_flight_at[clock.now()] = limiter.state().in_flight
        await clock.sleep(30.0)
        permit.release()
        limiter.observe({})

    await asyncio.gather(*(caller() for _ in range(256)))
    by_then = max((n for t, n in in_flight_at.items() if t <= 6.0), default=0)
    assert by_then == 256, sorted(in_flight_at.items())[:12]
    assert min(in_flight_at) == 0.0 and in_flight_at[0.0] <= 9  # it did start small


def test_a_stated_limit_clamps_the_pace_at_once() -> None:
    rate = AdaptiveRate(None)
    assert rate.rate is None  # unlimited until the provider says otherwise
    assert rate.limit_stated(20.0)
    assert rate.rate == pytest.approx(19.8)
    configured = AdaptiveRate(10.0)
    configured.limit_stated(20.0)  # never above the configured limit
    assert configured.rate == pytest.approx(9.9)


async def test_unconfigured_limiter_learns_from_headers(clock: FakeClock) -> None:
    limiter = Limiter(clock=clock)
    assert limiter.state().requests_per_min is None
    limiter.observe({"x-ratelimit-limit-requests": "600", "x-ratelimit-limit-tokens": "60000"})
    state = limiter.state()
    assert state.requests_per_min == pytest.approx(594.0)
    assert state.tokens_per_min == pytest.approx(59_400.0)


def test_rate_limit_headers_parse_openai_forms() -> None:
    parsed = RateLimitHeaders.parse(
        {
            "X-RateLimit-Limit-Requests": "500",
            "x-ratelimit-remaining-tokens": "1999",
            "x-ratelimit-reset-requests": "6m0s",
            "x-ratelimit-reset-tokens": "20ms",
            "retry-after-ms": "1500",
        }
    )
    assert parsed.limit_requests == 500 and parsed.remaining_tokens == 1999
    assert parsed.reset_requests_s == 360 and parsed.reset_tokens_s == pytest.approx(0.02)
    assert parsed.retry_after_s == 1.5
    assert RateLimitHeaders.parse({"retry-after": "3"}).retry_after_s == 3
    assert parse_duration_s("1m30.5s") == 90.5 and parse_duration_s("soon") is None
