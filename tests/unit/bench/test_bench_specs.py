"""``--arrivals``, ``--duration`` and ``--emulate`` specs: parsed values, generated arrival
times, and one clear error naming the forms for anything else."""

from __future__ import annotations

import itertools
import math

import pytest

from fanout.bench import BenchOptions, parse_arrivals, parse_duration, parse_emulate
from fanout.bench._arrivals import arrival_offsets
from fanout.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "kind", "rate"),
    [
        ("poisson:50/s", "poisson", 50.0),
        ("poisson:3000/min", "poisson", 50.0),
        ("constant:2.5", "constant", 2.5),
        ("constant: 7200 / h", "constant", 2.0),
    ],
)
def test_rates(spec: str, kind: str, rate: float) -> None:
    parsed = parse_arrivals(spec)
    assert (parsed.kind, parsed.rate_per_s, parsed.open_loop) == (kind, rate, True)


def test_burst_closed_and_replay() -> None:
    burst = parse_arrivals("burst:100/5s")
    assert (burst.size, burst.period_s, burst.offered_per_s) == (100, 5.0, 20.0)
    closed = parse_arrivals("closed:16")
    assert (closed.clients, closed.open_loop, closed.offered_per_s) == (16, False, None)
    assert parse_arrivals("replay:out/traces").path == "out/traces"


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("poison:50/s", "unknown kind 'poison'"),
        ("poisson", "expected KIND:ARGUMENT"),
        ("poisson:fast", "'fast' is not a rate"),
        ("poisson:0/s", "more than zero"),
        ("constant:5/week", "is not a rate"),
        ("burst:0/5s", "SIZE a whole number >= 1"),
        ("burst:10", "SIZE/PERIOD"),
        ("burst:10/soon", "not a duration"),
        ("closed:many", "whole number of clients"),
        ("replay:", "expected KIND:ARGUMENT"),
    ],
)
def test_bad_arrival_specs_name_the_forms(spec: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_arrivals(spec)
    message = str(info.value)
    assert message.startswith(f"--arrivals {spec!r}: ")
    assert why in message
    assert "use poisson:RATE" in message and "closed:CLIENTS" in message


def test_generated_arrival_times() -> None:
    constant = list(arrival_offsets(parse_arrivals("constant:4/s"), 2.0))
    assert constant == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    burst = list(arrival_offsets(parse_arrivals("burst:3/1s"), 2.5))
    assert burst == [0.0] * 3 + [1.0] * 3 + [2.0] * 3
    poisson = list(arrival_offsets(parse_arrivals("poisson:200/s"), 50.0, seed=1))
    assert poisson == sorted(poisson) and all(0 <= t < 50 for t in poisson)
    # 10,000 expected; a Poisson count's standard deviation is 100: 5% is 5 sigma
    assert abs(len(poisson) - 10_000) < 500
    gaps = [b - a for a, b in itertools.pairwise(poisson)]
    mean = sum(gaps) / len(gaps)
    cv = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean
    assert 0.9 < cv < 1.1  # exponential gaps: standard deviation equals the mean
    assert poisson == list(arrival_offsets(parse_arrivals("poisson:200/s"), 50.0, seed=1))


def test_durations() -> None:
    assert [parse_duration(t) for t in ("60s", "2m", "500ms", "30", "1h")] == [
        60.0, 120.0, 0.5, 30.0, 3600.0,
    ]  # fmt: skip
    for bad in ("0s", "soon", "-5s", ""):
        with pytest.raises(ConfigError, match="--duration"):
            parse_duration(bad)


def test_emulate_spec() -> None:
    spec = parse_emulate("rpm=3000,tpm=1000000,latency=lognormal:200ms:0.4,errors=0.01")
    assert spec.requests_per_min == 3000 and spec.tokens_per_min == 1_000_000
    assert (spec.latency_ms, spec.jitter_sigma, spec.error_rate) == (200.0, 0.4, 0.01)
    assert spec.mean_latency_ms == pytest.approx(200 * math.exp(0.08))
    fixed = parse_emulate("latency=50ms,burst=2s,per_token=1ms")
    assert (fixed.latency_ms, fixed.jitter_sigma, fixed.burst_s) == (50.0, 0.0, 2.0)
    assert fixed.requests_per_min is None
    assert "--rpm" not in fixed.server_args() and "--latency-ms" in fixed.server_args()


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("rpm=lots", "rpm='lots' is not a number"),
        ("rpm=-5", "must be within"),
        ("errors=2", "must be within [0, 1]"),
        ("latency=lognormal:200ms", "lognormal:MEDIAN:SIGMA"),
        ("latency=fast", "is not a duration"),
        ("speed=9", "unknown key 'speed'"),
        ("rpm", "is not key=value"),
    ],
)
def test_bad_emulate_specs_name_the_keys(spec: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_emulate(spec)
    assert str(info.value).startswith(f"--emulate {spec!r}: ")
    assert why in str(info.value)
    assert "keys: rpm, tpm, latency" in str(info.value)


def test_the_warm_up_must_leave_a_steady_window() -> None:
    assert BenchOptions(10.0, 2.0).warmup_s == 2.0
    for warmup in (10.0, 12.0, -1.0):
        with pytest.raises(ConfigError, match="must be shorter than the duration"):
            BenchOptions(10.0, warmup)
