"""The quota ledger: shares that never add up to more than the limit, by demand, adaptive."""

from __future__ import annotations

import asyncio

import pytest

from fanout.limits import LeaseReport, Limiter, QuotaLedger
from fanout.sim import FakeClock


def report(
    *, queued: int = 0, in_flight: int = 0, granted: int = 0, ok: int = 0, limited: int = 0,
    stated_rpm: float | None = None, tokens: int = 0, stated_tpm: float | None = None,
) -> LeaseReport:  # fmt: skip
    return LeaseReport(
        granted=granted,
        ok=ok,
        tokens=tokens,
        rate_limited=limited,
        queued=queued,
        in_flight=in_flight,
        stated_requests_per_min=stated_rpm,
        stated_tokens_per_min=stated_tpm,
        retry_after_s=None,
    )


def test_shares_never_exceed_the_limit_and_follow_demand(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock, requests_per_min=600, tokens_per_min=None, expected_workers=4)
    whole = ledger.requests_per_min
    assert whole is not None
    leases: dict[str, float] = {}
    demand = {"a": 90, "b": 10, "c": 0, "d": 0}
    for _ in range(20):  # several rounds of reports, in turn
        for worker, queued in demand.items():
            lease = ledger.report(worker, report(queued=queued))
            assert lease.requests_per_min is not None
            leases[worker] = lease.requests_per_min
            assert sum(leases.values()) <= whole * (1 + 1e-9)  # at every moment
    assert leases["a"] > 5 * leases["b"] > 0  # proportional to demand, idle ones a sliver
    assert sum(leases.values()) > 0.95 * whole  # and the whole limit is in use


def test_the_first_reporter_gets_only_its_part_of_the_expected_pool(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock, requests_per_min=600, tokens_per_min=None, expected_workers=4)
    first = ledger.report("a", report(queued=1))
    assert first.requests_per_min is not None and first.requests_per_min <= 600 / 2


async def test_a_silent_worker_is_forgotten_and_its_share_reused(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock, requests_per_min=600, tokens_per_min=None, lease_ttl_s=2)
    for _ in range(3):
        ledger.report("a", report(queued=10))
        ledger.report("b", report(queued=10))
    await clock.sleep(3.0)
    alone = ledger.report("a", report(queued=10))
    assert alone.workers == 1
    assert alone.requests_per_min is not None and alone.requests_per_min > 0.9 * 594


async def test_429s_from_any_worker_cut_the_global_pace(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock, requests_per_min=None, tokens_per_min=None)
    assert ledger.report("a", report(queued=5)).requests_per_min is None  # unknown: unlimited
    for second in range(1, 4):  # 10 requests/s accepted
        await clock.sleep(1.0)
        ledger.report("a", report(ok=10 * second, granted=10 * second))
    lease = ledger.report("b", report(limited=3))
    assert ledger.rate_limited == 3
    assert lease.requests_per_min is not None and ledger.requests_per_min is not None
    assert ledger.requests_per_min <= 10 * 60  # at most what was being accepted
    stated = ledger.report("a", report(ok=30, granted=30, stated_rpm=300))
    assert ledger.requests_per_min <= 300
    assert stated.requests_per_min is not None


async def test_a_startup_429_leaves_a_configured_token_pace_at_the_limit(clock: FakeClock) -> None:
    # The configured tokens/min is the provider's and the workers report it stated; a
    # 429 from the start-up burst, before any rate was measured, cuts the pace for a
    # moment but must not become a ceiling ~30% under the limit.
    ledger = QuotaLedger(clock=clock, requests_per_min=None, tokens_per_min=60_000)
    ledger.report("a", report(queued=12))
    await clock.sleep(0.2)
    ledger.report("a", report(ok=8, granted=20, tokens=376, limited=1, stated_tpm=60_000))
    assert ledger.tokens_per_min is not None and ledger.tokens_per_min < 0.75 * 60_000
    for step in range(1, 41):  # 8 s of reports (cumulative counters), paced at the limit
        await clock.sleep(0.2)
        ok = 8 + 4 * step
        ledger.report("a", report(ok=ok, granted=ok, tokens=47 * ok, limited=1, stated_tpm=60_000))
    assert ledger.tokens_per_min == pytest.approx(0.99 * 60_000, rel=0.01)


def test_a_restarted_worker_does_not_count_as_429s(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock, requests_per_min=600, tokens_per_min=None)
    ledger.report("a", report(ok=100, granted=100, limited=5))
    before = ledger.rate_limited
    ledger.report("a", report(ok=2, granted=2, limited=0))  # counters started over
    assert ledger.rate_limited == before


async def test_a_raised_lease_wakes_a_queue_paced_for_the_old_one(clock: FakeClock) -> None:
    limiter = Limiter(clock=clock, name="p/m", requests_per_min=600)
    limiter.set_lease(0.0, None)  # the others hold the whole limit for now: a trickle
    first = await limiter.acquire()
    second = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    start = clock.now()
    limiter.set_lease(600.0, None)
    await second
    assert clock.now() - start < 1.0  # not the ~1000 s the trickle pace had scheduled
    report_ = limiter.lease_report()
    assert report_.granted == 2 and report_.queued == 0
    first.release()


def test_the_ledger_state_sums_what_every_worker_let_through(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock, requests_per_min=600, tokens_per_min=None)
    ledger.report("a", report(granted=10, ok=10, in_flight=3))
    ledger.report("b", report(granted=5, ok=5, queued=2))
    ledger.report("a", report(granted=25, ok=24, in_flight=1))
    state = ledger.state("emu/sim-small")
    assert (state.name, state.granted, state.in_flight, state.queued) == ("emu/sim-small", 30, 1, 2)
    assert state.configured_requests_per_min == 600
    ledger.report("b", report(granted=2, ok=2))  # b restarted: its counters start again
    assert ledger.state("x").granted == 32
