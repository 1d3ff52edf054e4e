"""``fanout plan`` predicts what ``fanout bench`` measures on the emulator: for an RPM-bound,
a TPM-bound and a concurrency-bound shape the predicted throughput is within 10% of the
measured steady throughput, and the predicted binding constraint is the one that binds."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanout.batch import load_pipeline
from fanout.bench import (
    BenchOptions,
    compare,
    measure_shape,
    parse_arrivals,
    parse_emulate,
    predict,
    run_bench,
    sample_inputs,
)
from fanout.config import Config, default_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
CLASSIFY = f"{ROOT / 'examples' / 'pipelines' / 'classify.py'}:dag"
RATE = 40  # records/s each shape is sized for: small enough for two shared cores


def _config(max_concurrency: int = 256) -> Config:
    data = default_config().model_dump(exclude={"traces"})
    data["providers"]["sim"]["max_concurrency"] = max_concurrency
    return parse_config(data)


# classify makes one call of ~47 tokens per record (prompt plus a one-word label)
SHAPES = {
    "rpm": (f"rpm={RATE * 60},latency=lognormal:50ms:0.3", 256),
    "tpm": (f"tpm={RATE * 47 * 60},latency=lognormal:50ms:0.3", 256),
    "concurrency": ("latency=400ms", 16),  # 16 in flight x 400 ms = 40/s
}


@pytest.mark.parametrize("kind", list(SHAPES))
def test_plan_predicts_bench_throughput_within_10_percent(tmp_path: Path, kind: str) -> None:
    emulate_text, max_concurrency = SHAPES[kind]
    dag = load_pipeline(CLASSIFY)
    config = _config(max_concurrency)
    emulate = parse_emulate(emulate_text)
    arrivals = parse_arrivals("closed:64")  # more clients than any ceiling needs
    inputs = sample_inputs(dag)
    report = run_bench(
        CLASSIFY, dag, config, arrivals, inputs, tmp_path / kind,
        BenchOptions(duration_s=5.0, warmup_s=1.5, drain_s=20.0, plots=False),
        emulate=emulate,
    )  # fmt: skip
    shape = measure_shape(dag, config, inputs, cpu=False)
    prediction = predict(dag, config, shape, records=1000, clients=64, emulate=emulate)
    assert prediction.binding.kind == kind

    rows = {row.figure: row for row in compare(prediction, report)}
    throughput = rows["throughput, records/s (steady)"]
    assert throughput.measured is not None and throughput.measured > 0
    assert throughput.error is not None and abs(throughput.error) <= 0.10, rows
    calls = rows["sim/sim-small calls/s (steady)"]
    assert calls.error is not None and abs(calls.error) <= 0.10, rows
    assert report["requests"]["unfinished"] == 0
    assert report["requests"]["by_status"] == {"ok": report["requests"]["completed"]}
