"""The planner: the DAG's shape measured offline, ceilings from the config, the binding one,
the critical path, cost, and what would halve the time. No provider is called."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fanout import Engine, parse_config
from fanout.batch import load_pipeline
from fanout.bench import measure_shape, predict, shape_from_traces
from fanout.bench._emulate import EmulateSpec
from fanout.config import Config
from fanout.errors import ConfigError
from fanout.limits import AdaptiveRate

ROOT = Path(__file__).resolve().parents[3]
MAP_REDUCE = load_pipeline(f"{ROOT / 'examples/pipelines/map_reduce.py'}:dag")
SAMPLE = {"text": "Great kettle. It arrived late! Would I buy again?"}  # three sentences
PACE = AdaptiveRate(1.0).safety  # the limiter paces at this share of a limit


def _config(**provider: object) -> Config:
    return parse_config(
        {
            "providers": {"sim": {"kind": "sim", "latency_ms": 100, "jitter_sigma": 0, **provider}},
            "models": {
                "fast": {"provider": "sim", "model": "sim-small", "input_usd_per_mtok": 1.0,
                         "output_usd_per_mtok": 4.0},
                "smart": {"provider": "sim", "model": "sim-large", "input_usd_per_mtok": 10.0,
                          "output_usd_per_mtok": 40.0},
            },
        }
    )  # fmt: skip


def test_shape_counts_calls_per_node_from_a_dry_run() -> None:
    shape = measure_shape(MAP_REDUCE, _config(), [SAMPLE], cpu=False)
    nodes = shape.nodes
    assert (nodes["ratings"].calls, nodes["ratings"].items, nodes["ratings"].model) == (
        3,
        3,
        "fast",
    )
    assert (nodes["summary"].calls, nodes["summary"].model) == (1, "smart")
    assert nodes["counts"].calls == 0 and nodes["counts"].ran == 1
    assert shape.cpu_records_per_s is None


def test_rpm_bound_prediction_latency_cost_and_halving() -> None:
    config = _config(requests_per_min=600)
    shape = measure_shape(MAP_REDUCE, config, [SAMPLE], cpu=False)
    p = predict(MAP_REDUCE, config, shape, records=1000)
    assert p.calls_per_record == {"sim/sim-small": 3, "sim/sim-large": 1}
    assert (p.binding.kind, p.binding.where) == ("rpm", "sim/sim-small")
    assert p.throughput_per_s == pytest.approx(600 * PACE / 60 / 3)
    # the simulated provider states no bucket: the limiter holds a second of the limit
    assert p.wall_time_s == pytest.approx((1000 - 600 / 60 / 3) / p.throughput_per_s + 0.2)
    assert p.latency_ms == pytest.approx(200)  # one wave of 3 ratings (cap 8), then the summary
    assert any("requests_per_min of sim/sim-small from 600 to 1,200" in s for s in p.halve)
    assert not any("sim-large" in s for s in p.halve)  # 600/min for 1 call/record: room for 2x

    async def run_once() -> float:
        async with Engine(_config(latency_ms=0)) as engine:
            return (await engine.run(MAP_REDUCE, SAMPLE)).cost_usd

    assert p.cost_usd_per_record == pytest.approx(asyncio.run(run_once()))  # the same tokens


def test_a_full_bucket_shortens_the_wall_not_the_steady_throughput() -> None:
    config = _config(requests_per_min=600)
    shape = measure_shape(MAP_REDUCE, config, [SAMPLE], cpu=False)
    paced = predict(MAP_REDUCE, config, shape, records=1000, emulate=EmulateSpec("", 600))
    minute = predict(
        MAP_REDUCE, config, shape, records=1000, emulate=EmulateSpec("", 600, burst_s=60.0)
    )
    assert minute.throughput_per_s == paced.throughput_per_s  # the refill, once spent
    # 600 calls at once are 200 records of 3 ratings: 800 left at the pace
    assert minute.wall_time_s == pytest.approx(800 / minute.throughput_per_s)  # latency 0
    assert paced.wall_time_s - minute.wall_time_s == pytest.approx(
        (200 - 600 / 60 / 3) / paced.throughput_per_s
    )
    big = predict(
        MAP_REDUCE, config, shape, records=100, emulate=EmulateSpec("", 600, burst_s=60.0)
    )
    assert big.wall_time_s == pytest.approx(0.0)  # all of it fits in the bucket


def test_tpm_and_concurrency_bound_shapes() -> None:
    tpm = _config(tokens_per_min=6000)
    shape = measure_shape(MAP_REDUCE, tpm, [SAMPLE], cpu=False)
    p = predict(MAP_REDUCE, tpm, shape, records=10)
    assert p.binding.kind == "tpm"
    per_model = {
        "sim/sim-small": shape.nodes["ratings"].input_tokens + shape.nodes["ratings"].output_tokens,
        "sim/sim-large": shape.nodes["summary"].input_tokens + shape.nodes["summary"].output_tokens,
    }
    heavier = max(per_model, key=lambda k: per_model[k])  # each model has its own 6,000/min
    assert p.binding.where == heavier
    assert p.throughput_per_s == pytest.approx(6000 * PACE / 60 / per_model[heavier])

    conc = _config(max_concurrency=2)
    p = predict(MAP_REDUCE, conc, measure_shape(MAP_REDUCE, conc, [SAMPLE], cpu=False), records=10)
    assert (p.binding.kind, p.binding.where) == ("concurrency", "sim/sim-small")
    assert p.throughput_per_s == pytest.approx(2 / (3 * 0.1))  # 2 slots / 3 calls of 100 ms
    assert any("max_concurrency of provider sim from 2 to 4" in s for s in p.halve)


def test_the_load_can_be_the_limit() -> None:
    config = _config(requests_per_min=6000)
    shape = measure_shape(MAP_REDUCE, config, [SAMPLE], cpu=False)
    open_loop = predict(MAP_REDUCE, config, shape, records=100, arrival_rate=2.0)
    assert (open_loop.binding.kind, open_loop.throughput_per_s) == ("arrivals", 2.0)
    assert any("the load is the limit" in s for s in open_loop.halve)
    closed = predict(MAP_REDUCE, config, shape, records=100, clients=4)
    assert closed.binding.kind == "clients"
    assert closed.throughput_per_s == pytest.approx(4 / 0.2)  # 4 clients / 200 ms per record
    flooded = predict(MAP_REDUCE, config, shape, records=100, arrival_rate=1000.0)
    assert flooded.binding.kind == "rpm" and any("queue" in n for n in flooded.notes)


def test_cpu_ceiling_is_measured_and_scales_with_workers() -> None:
    config = _config()  # no limits at all: only latency x concurrency and CPU bound it
    shape = measure_shape(MAP_REDUCE, config, [SAMPLE])
    assert shape.cpu_records_per_s is not None and shape.cpu_records_per_s > 0
    one = predict(MAP_REDUCE, config, shape, records=10, workers=1)
    four = predict(MAP_REDUCE, config, shape, records=10, workers=4)
    cpu = {c.kind: c.records_per_s for c in one.constraints}["cpu"]
    assert {c.kind: c.records_per_s for c in four.constraints}["cpu"] == pytest.approx(4 * cpu)


def test_http_model_without_a_latency_is_said_so() -> None:
    config = parse_config(
        {
            "providers": {"vendor": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                                     "requests_per_min": 60}},
            "models": {"fast": {"provider": "vendor", "model": "m"},
                       "smart": {"provider": "vendor", "model": "m2"}},
        }
    )  # fmt: skip
    shape = measure_shape(MAP_REDUCE, config, [SAMPLE], cpu=False)  # offline: port 9 unused
    p = predict(MAP_REDUCE, config, shape, records=10)
    assert p.latency_ms is None and p.binding.kind == "rpm"
    assert any("no latency known for model 'fast'" in n for n in p.notes)
    with_latency = predict(MAP_REDUCE, config, shape, records=10, latency_ms=250)
    assert with_latency.latency_ms == pytest.approx(500)
    assert "concurrency" in {c.kind for c in with_latency.constraints}


def test_shape_from_a_sample_of_traces(tmp_path: Path) -> None:
    config = _config(latency_ms=0)

    async def job() -> None:
        async with Engine(config, traces=tmp_path / "traces") as engine:
            for _ in range(3):
                await engine.run(MAP_REDUCE, SAMPLE)

    asyncio.run(job())
    one_sentence = measure_shape(MAP_REDUCE, config, [{"text": "Just one."}], cpu=False)
    assert one_sentence.nodes["ratings"].calls == 1
    shape = shape_from_traces(MAP_REDUCE, tmp_path / "traces", one_sentence)
    assert shape.source == f"3 runs in {tmp_path / 'traces'}"
    assert shape.nodes["ratings"].calls == 3  # what the traced runs made, not the sample
    assert shape.nodes["summary"].calls == 1
    assert set(shape.latency_ms) == {"fast", "smart"}
    p = predict(MAP_REDUCE, config, shape, records=10)
    assert p.call_latency_ms["sim/sim-small"] == pytest.approx(shape.latency_ms["fast"])

    other = load_pipeline(f"{ROOT / 'examples/pipelines/classify.py'}:dag")
    with pytest.raises(ConfigError, match="no run of DAG 'classify' in these traces"):
        shape_from_traces(other, tmp_path / "traces", one_sentence)
