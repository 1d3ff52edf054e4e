"""``fanout plan`` predicts what ``fanout bench`` measures on the emulator: for an RPM-bound,
a TPM-bound and a concurrency-bound shape the predicted throughput is within 10% of the
measured steady throughput, and the predicted binding constraint is the one that binds.
The TPM shape runs twice: the limit learnt from the emulator's headers, and configured."""

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
RATE = 20  # records/s each shape is sized for: light on two shared cores


def _config(max_concurrency: int = 64, tokens_per_min: float | None = None) -> Config:
    data = default_config().model_dump(exclude={"traces"})
    data["providers"]["sim"]["max_concurrency"] = max_concurrency
    data["providers"]["sim"]["tokens_per_min"] = tokens_per_min
    return parse_config(data)


# classify makes one call of ~47 tokens per record (prompt plus a one-word label)
SHAPES = {
    "rpm": (f"rpm={RATE * 60},latency=lognormal:50ms:0.3", 64),
    "tpm": (f"tpm={RATE * 47 * 60},latency=lognormal:50ms:0.3", 64),
    # 5 in flight / 255 ms (the mean of a lognormal with median 250 ms) = 19.6/s. Jitter keeps
    # the calls from finishing in lockstep waves that a window would cut; the count of a
    # jittered renewal process is noisy (sigma / sqrt(completions)), so this shape runs longer
    "concurrency": ("latency=lognormal:250ms:0.2", 5),
}

# the limiter paces rpm and tpm exactly: a short window suffices; see above for concurrency
DURATION_S = {"rpm": 4.0, "tpm": 4.0, "concurrency": 8.0}


@pytest.mark.parametrize(
    ("kind", "configured"),
    [("rpm", False), ("tpm", False), ("tpm", True), ("concurrency", False)],
    ids=["rpm", "tpm", "tpm-configured", "concurrency"],
)
def test_plan_predicts_bench_throughput_within_10_percent(
    tmp_path: Path, kind: str, configured: bool
) -> None:
    emulate_text, max_concurrency = SHAPES[kind]
    dag = load_pipeline(CLASSIFY)
    emulate = parse_emulate(emulate_text)
    # configured as the provider's own limit: a start-up 429 used to hold it at ~65%
    config = _config(max_concurrency, emulate.tokens_per_min if configured else None)
    # More clients than any ceiling needs, all starting at once: their start-up burst
    # must not pass the emulator's 1 s token bucket (a 429 there would cut the pace for
    # much of this short window)
    arrivals = parse_arrivals("closed:64")
    inputs = sample_inputs(dag)
    report = run_bench(
        CLASSIFY, dag, config, arrivals, inputs, tmp_path / kind,
        BenchOptions(duration_s=DURATION_S[kind], warmup_s=1.5, drain_s=20.0, plots=False),
        emulate=emulate,
    )  # fmt: skip
    shape = measure_shape(dag, config, inputs, cpu=False)
    prediction = predict(dag, config, shape, records=1000, clients=64, emulate=emulate)
    assert prediction.binding.kind == kind

    rows = {row.figure: row for row in compare(prediction, report)}
    throughput = rows["throughput, records/s (steady)"]
    assert throughput.measured is not None and throughput.measured > 0
    print(
        f"{kind}{' (configured)' if configured else ''}: predicted {throughput.predicted:.2f}, "
        f"measured {throughput.measured:.2f}, 429s {report['emulator']['limited']}"
    )
    assert throughput.error is not None and abs(throughput.error) <= 0.10, rows
    calls = rows["sim/sim-small calls/s (steady)"]
    assert calls.error is not None and abs(calls.error) <= 0.10, rows
    assert report["requests"]["unfinished"] == 0
    assert report["requests"]["by_status"] == {"ok": report["requests"]["completed"]}
