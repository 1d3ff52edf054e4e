"""How close ``fanout plan`` comes to what ``fanout bench`` measures on the emulator.

For each shape, runs a closed-loop bench (64 clients) against ``fanout sim-server``
for ``--duration`` seconds, predicts the same setup with the planner (no provider
call), and prints one Markdown row: the binding constraint the plan names, predicted
and measured steady throughput (records/s after the warm-up), the error, and the
utilisation of the binding limit as the bench measured it.

Shapes (classify: one call of ~47 tokens per record; map_reduce: one call per
sentence on ``fast``, one summary on ``smart``):
  rpm          classify, provider 2,400 requests/min
  tpm          classify, provider 112,800 tokens/min
  concurrency  classify, max_concurrency 16, 400 ms (median) per call
  map_reduce   map_reduce, provider 1,200 requests/min per model, 100 ms per call

With ``--configured`` the client's config also states the emulator's limits
(``requests_per_min``/``tokens_per_min`` of the provider), as a user who knows them
would set them; without it the client learns them from the emulator's headers.

Run: python benchmarks/plan_vs_bench.py [--duration 30] [--shapes rpm,tpm] [--configured]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

from fanout.batch import iter_records, load_pipeline
from fanout.bench import (
    BenchOptions,
    EmulateSpec,
    compare,
    measure_shape,
    parse_arrivals,
    parse_emulate,
    predict,
    run_bench,
    sample_inputs,
)
from fanout.config import Config, default_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT / "examples" / "pipelines"
SHAPES = {
    "rpm": ("classify", "rpm=2400,latency=lognormal:50ms:0.3", 256),
    "tpm": ("classify", "tpm=112800,latency=lognormal:50ms:0.3", 256),
    "concurrency": ("classify", "latency=lognormal:400ms:0.3", 16),
    "map_reduce": ("map_reduce", "rpm=1200,latency=lognormal:100ms:0.3", 256),
}


def _config(max_concurrency: int, limits: EmulateSpec | None = None) -> Config:
    data = default_config().model_dump(exclude={"traces"})
    data["providers"]["sim"]["max_concurrency"] = max_concurrency
    if limits is not None:
        data["providers"]["sim"]["requests_per_min"] = limits.requests_per_min
        data["providers"]["sim"]["tokens_per_min"] = limits.tokens_per_min
    return parse_config(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per shape")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument(
        "--configured", action="store_true", help="configure the emulator's limits on the client"
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}"
    )
    warmup = min(10.0, max(1.5, args.duration * 0.2))
    print(
        f"{args.duration:.0f} s per shape, closed loop of 64 clients, warm-up {warmup:.1f} s, "
        + ("limits configured" if args.configured else "limits learnt from headers")
        + "\n"
    )
    print("| shape | emulator | binding (plan) | predicted rec/s | measured rec/s | error "
          "| utilisation of the binding limit |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    reviews = [r.data for r in iter_records(ROOT / "examples/data/reviews.jsonl") if r.data]
    for name in args.shapes.split(","):
        pipeline, emulate_text, max_concurrency = SHAPES[name]
        spec = f"{PIPELINES / (pipeline + '.py')}:dag"
        dag = load_pipeline(spec)
        emulate = parse_emulate(emulate_text)
        config = _config(max_concurrency, emulate if args.configured else None)
        inputs = reviews if pipeline == "map_reduce" else sample_inputs(dag)
        with tempfile.TemporaryDirectory() as tmp:
            report = run_bench(
                spec, dag, config, parse_arrivals("closed:64"), inputs, Path(tmp) / "r",
                BenchOptions(args.duration, warmup, drain_s=30.0, plots=False),
                emulate=emulate,
            )  # fmt: skip
        shape = measure_shape(dag, config, inputs)
        p = predict(dag, config, shape, records=1000, clients=64, emulate=emulate)
        rows = {r.figure: r for r in compare(p, report)}
        tp = rows["throughput, records/s (steady)"]
        util = next((r.measured for f, r in rows.items() if f.endswith("utilisation")), None)
        if p.binding.kind == "concurrency":
            (prov,) = [q for q in report["providers"] if q["model"] == "sim-small"]
            lat = prov["call_latency_ms"]["mean"]
            util = tp.measured * lat / 1000 / max_concurrency if tp.measured else None
        print(
            f"| {name} | `{emulate_text}`" + (f", max_concurrency {max_concurrency}"
                                              if max_concurrency != 256 else "")
            + f" | {p.binding.kind} {p.binding.where} | {tp.predicted:,.2f} | "
            f"{tp.measured:,.2f} | {tp.error:+.1%} | "
            + (f"{util:.3f}" if util is not None else "-") + " |",
            flush=True,
        )  # fmt: skip


if __name__ == "__main__":
    main()
