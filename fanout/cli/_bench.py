"""``fanout bench`` and ``fanout plan``: measure a pipeline under load, predict it without calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fanout.cli._common import (
    ConfigOpt,
    PipelineArg,
    RayOpt,
    WorkersOpt,
    bad_input_exits,
    fail,
    group,
    load_cfg,
)
from fanout.cli._progress import make_console

if TYPE_CHECKING:
    from fanout.bench import Arrival, ArrivalSpec, Prediction
    from fanout.config import Config
    from fanout.dag import DAG

__all__ = ["commands"]

commands = group()

_BENCH_INPUT_LIMIT = 100_000  # records read from --input for a bench (they cycle)
_PLAN_SAMPLES = 200  # sample records the plan's dry run reads


def _need_bench() -> None:
    from fanout._extras import require

    require("fanout bench and fanout plan", "matplotlib", "duckdb", "uvicorn", extra="bench")


@commands.command(short_help="Load-test a pipeline; a report with plots.")
def bench(  # one parameter per option: typer reads the signature
    pipeline: PipelineArg,
    arrivals: Annotated[
        str,
        typer.Option(
            help="poisson:RATE | constant:RATE (50/s, 3000/min) | burst:SIZE/PERIOD "
            "(100/5s) | closed:CLIENTS | replay:TRACES_DIR.",
            show_default=False,
        ),
    ],
    report: Annotated[
        Path,
        typer.Option(
            "--report", help="Directory for report.json, plots, report.html and traces.",
            show_default=False, file_okay=False,
        ),
    ],
    config: ConfigOpt = None,
    duration: Annotated[str, typer.Option(help="How long requests arrive (60s, 2m).")] = "60s",
    warmup: Annotated[
        str | None,
        typer.Option(help="Start of the steady window for rates.", show_default="20%, 1-10 s"),
    ] = None,
    drain: Annotated[
        str, typer.Option(help="After --duration, wait this long for requests in flight.")
    ] = "30s",
    input_path: Annotated[
        Path | None,
        typer.Option(
            "--input", "-i", help="Records to send (they cycle); for replay, inputs by key.",
            show_default="generated texts", dir_okay=False,
        ),
    ] = None,
    emulate: Annotated[
        str | None,
        typer.Option(
            help="Run against a fanout sim-server started for the bench, e.g. "
            "rpm=3000,tpm=1000000,latency=lognormal:200ms:0.4,errors=0.01.",
            show_default=False,
        ),
    ] = None,
    ray_address: RayOpt = None,
    workers: WorkersOpt = 2,
    seed: Annotated[int, typer.Option(help="Seed of the poisson arrivals.")] = 0,
) -> None:
    """Load-test a pipeline on the real engine and write a report with plots.

    Open-loop arrivals (they do not wait for completions) or N closed-loop clients,
    against the config's providers or an emulated one (--emulate). Prints a table and
    writes report.json, throughput/latency/time-per-node PNGs and report.html to --report.
    """
    with bad_input_exits():
        _need_bench()
        from fanout.batch import load_pipeline
        from fanout.bench import (
            BenchOptions,
            default_warmup_s,
            parse_arrivals,
            parse_duration,
            parse_emulate,
            print_report,
            run_bench,
        )

        spec = parse_arrivals(arrivals)
        duration_s = parse_duration(duration)
        warmup_s = (
            parse_duration(warmup, what="--warmup") if warmup else default_warmup_s(duration_s)
        )
        if warmup_s >= duration_s:
            fail(f"--warmup {warmup} must be shorter than --duration {duration}")
        drain_s = parse_duration(drain, what="--drain")
        emulated = parse_emulate(emulate) if emulate else None
        dag = load_pipeline(pipeline)
        cfg = load_cfg(config)
        dag.validate(models=cfg.models.keys())
        inputs, source = _bench_inputs(dag, spec, input_path)
        if ray_address is not None:
            from fanout._extras import require

            require("--ray", "ray", extra="ray")
        options = BenchOptions(duration_s, warmup_s, drain_s, ray_address, workers, seed)
        result = run_bench(
            pipeline, dag, cfg, spec, inputs, report, options,
            emulate=emulated, inputs_source=source,
        )  # fmt: skip
    print_report(make_console(), result, str(report))


def _bench_inputs(
    dag: DAG, spec: ArrivalSpec, input_path: Path | None
) -> tuple[list[dict[str, object]] | list[Arrival], str]:
    """The requests' inputs (or a replay's arrivals) and where they came from."""
    from fanout.bench import check_inputs, replay_arrivals, sample_inputs

    records = _read_records(input_path, _BENCH_INPUT_LIMIT) if input_path else {}
    if input_path is not None and not records:
        fail(f"--input {str(input_path)!r} holds no readable record")
    inputs: list[dict[str, object]] | list[Arrival]
    source = str(input_path) if input_path is not None else "generated"
    if spec.kind == "replay":
        assert spec.path is not None
        inputs = replay_arrivals(Path(spec.path), records or None)
        source = f"replay of {spec.path}"
    else:
        inputs = list(records.values()) or sample_inputs(dag)
    check_inputs(dag, inputs, f"--input {input_path}" if input_path else source)
    return inputs, source


def _read_records(path: Path, limit: int) -> dict[str, dict[str, object]]:
    """Up to ``limit`` readable records of ``path``, by key."""
    from fanout.batch import iter_records

    records: dict[str, dict[str, object]] = {}
    for record in iter_records(path):
        if record.data is not None:
            records[record.key] = record.data
        if len(records) >= limit:
            break
    return records


@commands.command(short_help="Predict throughput, latency and cost; no calls.")
def plan(  # one parameter per option: typer reads the signature
    pipeline: PipelineArg,
    config: ConfigOpt = None,
    records: Annotated[
        int | None, typer.Option(min=1, help="Records to plan for.", show_default="1,000,000")
    ] = None,
    arrival_rate: Annotated[
        str | None,
        typer.Option(help="Open-loop arrivals (50/s, 3000/min); default: as fast as it goes."),
    ] = None,
    clients: Annotated[
        int | None, typer.Option(min=1, help="Closed-loop clients (a batch job's --concurrency).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Engine processes (Ray workers).")] = 1,
    emulate: Annotated[
        str | None,
        typer.Option(help="The provider is this emulator (limits, latency): as in bench."),
    ] = None,
    latency_ms: Annotated[
        float | None,
        typer.Option(min=0.0, help="Call latency of HTTP models with no measured figure."),
    ] = None,
    traces: Annotated[
        Path | None,
        typer.Option(help="Traces of an earlier run: measured calls, tokens and latency."),
    ] = None,
    input_path: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="Sample records for the DAG's shape.", dir_okay=False),
    ] = None,
    check: Annotated[
        Path | None,
        typer.Option(
            help="A bench --report DIR: predict for its setup and print the error per figure.",
            file_okay=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Predict throughput, wall time, the binding constraint, latency and cost; no calls.

    The DAG runs offline on sample records (simulated provider, zero latency) to
    measure calls and tokens per record per model and the engine's CPU per record;
    the config (or --emulate) gives limits, concurrency, latency and prices.
    """
    if arrival_rate is not None and clients is not None:
        fail("--arrival-rate (open loop) and --clients (closed loop) contradict; pass one")
    with bad_input_exits():
        _need_bench()
        from fanout.batch import load_pipeline
        from fanout.bench import (
            EmulateSpec,
            measure_shape,
            parse_emulate,
            parse_rate,
            predict,
            read_report,
            sample_inputs,
            shape_from_traces,
        )

        rate = parse_rate(arrival_rate) if arrival_rate is not None else None
        dag = load_pipeline(pipeline)
        report = read_report(check) if check is not None else None
        setup: dict[str, Any] = report["setup"] if report is not None else {}
        cfg = _plan_config(config, setup, check)
        emulated = parse_emulate(emulate) if emulate else None
        if emulated is None and setup.get("emulate"):
            emulated = EmulateSpec(**setup["emulate"])
        if rate is None and clients is None and setup.get("arrival_kind") in (
            "poisson", "constant", "burst",
        ):  # fmt: skip
            rate = setup.get("offered_per_s")
        if rate is None and clients is None and setup.get("clients"):
            clients = int(setup["clients"])
        workers = int(setup.get("workers") or workers)
        sample_file = input_path
        if sample_file is None and setup.get("inputs") and Path(setup["inputs"]).is_file():
            sample_file = Path(setup["inputs"])
        samples = list(_read_records(sample_file, _PLAN_SAMPLES).values()) if sample_file else []
        shape = measure_shape(dag, cfg, samples or sample_inputs(dag))
        if traces is not None:
            shape = shape_from_traces(dag, traces, shape)
        count = records or (report["requests"]["completed"] if report else 1_000_000)
        prediction = predict(
            dag, cfg, shape, records=count, arrival_rate=rate, clients=clients,
            workers=workers, emulate=emulated, latency_ms=latency_ms,
        )  # fmt: skip
    _print_plan(prediction, report, check, as_json=as_json)


def _plan_config(config: Path | None, setup: dict[str, Any], check: Path | None) -> Config:
    from fanout.config import parse_config

    if config is None and setup.get("config"):
        return parse_config(setup["config"], source=f"{check}/report.json setup.config")
    return load_cfg(config)


def _print_plan(
    prediction: Prediction, report: dict[str, Any] | None, check: Path | None, *, as_json: bool
) -> None:
    from fanout.bench import compare, print_check, print_prediction

    console = make_console()
    checked = compare(prediction, report) if report is not None else None
    if as_json:
        data = prediction.to_dict()
        if checked is not None:
            data["check"] = [
                {"figure": r.figure, "predicted": r.predicted, "measured": r.measured,
                 "error": r.error, "note": r.note}
                for r in checked
            ]  # fmt: skip
        typer.echo(json.dumps(data, indent=2))
        return
    print_prediction(console, prediction)
    if checked is not None:
        print_check(console, checked, str(check))
