"""The load generator on a fake clock: open-loop arrivals keep their schedule whatever the
latency, closed-loop clients wait for their last request, a drain timeout cancels."""

from __future__ import annotations

import pytest
from support import sim_config

from fanout import DAG, Engine
from fanout.bench import Arrival, generate_load, parse_arrivals
from fanout.sim import FakeClock, SimProvider


def _dag() -> DAG:
    dag = DAG("one-call")
    dag.input("text")
    dag.output(label=dag.llm("fast", "Rate the sentiment of: {text}", max_tokens=5))
    return dag


INPUTS = [{"text": "great product"}, {"text": "terrible, broken"}]


async def test_open_loop_arrivals_do_not_wait_for_completions(clock: FakeClock) -> None:
    async with Engine(sim_config(500.0), clock=clock) as engine:  # 0.5 s per call
        load = await generate_load(
            engine, _dag(), parse_arrivals("constant:10/s"), INPUTS, duration_s=2.0, clock=clock
        )
    assert load.offered == 20 and len(load.records) == 20 and load.unfinished == 0
    arrivals = sorted(r.arrival_s for r in load.records)
    assert arrivals == pytest.approx([i / 10 for i in range(20)], abs=1e-6)
    assert all(r.status == "ok" and r.calls == 1 for r in load.records)
    assert [r.latency_s for r in load.records] == pytest.approx([0.5] * 20, abs=1e-6)
    sim = engine.providers["sim"]
    assert isinstance(sim, SimProvider) and sim.max_in_flight == 5  # 0.5 s x 10/s


async def test_closed_loop_clients_wait_for_their_last_request(clock: FakeClock) -> None:
    async with Engine(sim_config(125.0), clock=clock) as engine:
        load = await generate_load(
            engine, _dag(), parse_arrivals("closed:3"), INPUTS, duration_s=1.0, clock=clock
        )
    assert load.offered == len(load.records) == 24  # 3 clients x 1 s / 125 ms
    sim = engine.providers["sim"]
    assert isinstance(sim, SimProvider) and sim.max_in_flight == 3
    tokens = {r.input_tokens + r.output_tokens for r in load.records}
    assert len(tokens) == 2  # the two inputs alternate


async def test_drain_timeout_cancels_and_counts_unfinished(clock: FakeClock) -> None:
    async with Engine(sim_config(5000.0), clock=clock) as engine:
        load = await generate_load(
            engine, _dag(), parse_arrivals("burst:4/1s"), INPUTS,
            duration_s=2.0, clock=clock, drain_s=1.0,
        )  # fmt: skip
    assert (load.offered, len(load.records), load.unfinished) == (8, 0, 8)
    assert load.arrivals == [0.0] * 4 + [1.0] * 4
    assert load.wall_s == pytest.approx(3.0, abs=1e-6)


async def test_replay_keeps_recorded_times_and_keys(clock: FakeClock) -> None:
    replay = [
        Arrival(0.0, "a", INPUTS[0]),
        Arrival(0.5, "b", INPUTS[1]),
        Arrival(0.5, "c", INPUTS[0]),
        Arrival(3.0, "late", INPUTS[1]),  # after --duration: not sent
    ]
    async with Engine(sim_config(10.0), clock=clock) as engine:
        load = await generate_load(
            engine, _dag(), parse_arrivals("replay:x"), replay, duration_s=2.0, clock=clock
        )
    got = sorted((r.arrival_s, r.key) for r in load.records)
    assert got == [(0.0, "a"), (0.5, "b"), (0.5, "c")]


async def test_failed_requests_are_recorded_and_the_load_goes_on(clock: FakeClock) -> None:
    inputs = [{"text": "[sim:fail] always a 500"}, {"text": "fine"}]
    no_retry = sim_config(10.0, retry={"max_attempts": 1})
    async with Engine(no_retry, clock=clock) as engine:
        load = await generate_load(
            engine, _dag(), parse_arrivals("constant:4/s"), inputs, duration_s=1.0, clock=clock
        )
    by_status = sorted(r.status for r in load.records)
    assert by_status == ["error", "error", "ok", "ok"]
    assert {r.error_type for r in load.records if r.status == "error"} == {"ProviderHTTPError"}
