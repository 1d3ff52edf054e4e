"""``fanout run``, ``fanout demo`` and ``fanout validate``: batch jobs over files of records."""

from __future__ import annotations

import math
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fanout.cli._common import (
    EXIT_INTERRUPTED,
    EXIT_NO_RECORD_OK,
    EXIT_PROVIDER_DOWN,
    ConfigOpt,
    PipelineArg,
    RayOpt,
    WorkersOpt,
    bad_input_exits,
    fail,
    group,
    load_cfg,
    trace_dir,
)
from fanout.cli._loop import run as run_loop
from fanout.cli._output import (
    print_demo_intro,
    print_demo_outro,
    print_examples,
    print_plan,
    print_summary,
)
from fanout.cli._progress import ProgressReporter, make_console
from fanout.errors import ConfigError, ProviderOutage

if TYPE_CHECKING:
    from fanout.batch import JobStats
    from fanout.config import Config
    from fanout.dag import DAG
    from fanout.distributed import RayEngine
    from fanout.run import Engine

__all__ = ["commands", "run_job"]

commands = group()

InputOpt = Annotated[
    Path,
    typer.Option(
        "--input",
        "-i",
        help="Records: a .jsonl/.json/.ndjson (optionally .gz), .csv or .parquet file, "
        "a folder of them or a glob.",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    Path,
    typer.Option(
        "--output",
        "-o",
        help="Job directory: results/ (Parquet parts), dead_letter/, calls/, traces/.",
        show_default=False,
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        help="Column that identifies a record (default: a hash of its content).",
        show_default=False,
    ),
]
InFlightOpt = Annotated[
    int,
    typer.Option(
        "--max-in-flight",
        "--concurrency",
        min=1,
        help="Records in progress at once; reading waits while the window is full.",
    ),
]
JobInFlightOpt = Annotated[
    int | None,
    typer.Option(
        "--max-in-flight",
        "--concurrency",
        min=1,
        help="Records in progress at once; reading waits while the window is full "
        "(batch mode: the records whose calls fill a wave of batches).",
        show_default="64; 10,000 in batch mode",
    ),
]
ProviderBatchOpt = Annotated[
    bool,
    typer.Option(
        "--provider-batch",
        help="Send llm calls through the provider's Batch API (half price, answers within "
        "24 h); batches are journaled in OUTPUT/batches, a re-run polls them.",
    ),
]
OnlineFallbackOpt = Annotated[
    bool,
    typer.Option(
        "--online-fallback",
        help="Batch mode: a call still failing after its batch retries goes online.",
    ),
]
DetachOpt = Annotated[
    bool,
    typer.Option(
        "--detach",
        help="Batch mode: exit once every record in the window waits for a batch; the same "
        "command later collects them.",
    ),
]
CacheOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache",
        help="Response cache directory shared across jobs: a call answered there before "
        "is not made (or paid) again.",
        file_okay=False,
        show_default=False,
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Insist on resuming the run in --output (it resumes anyway when one is there).",
    ),
]
RerunOpt = Annotated[
    bool,
    typer.Option(
        "--force-rerun-changed",
        help="The pipeline or config changed since the run in --output: move its rows "
        "aside and run every record again (unchanged calls come from the journal).",
    ),
]
PartRowsOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="Rows per results part (a part is also written every 10 s). A crash loses "
        "no finished call either way; smaller parts mean less to replay on resume.",
    ),
]
BudgetUsdOpt = Annotated[float | None, typer.Option(min=0.0, help="Spend cap per record, in USD.")]
BudgetTokensOpt = Annotated[int | None, typer.Option(min=0, help="Token cap per record.")]
DeadlineOpt = Annotated[
    float | None, typer.Option(min=0.0, help="Time limit per record, in seconds.")
]
TracesOpt = Annotated[
    Path | None,
    typer.Option(
        "--traces",
        help="Directory for the trace (Parquet, a row per run, node and attempt).",
        show_default="OUTPUT/traces",
        file_okay=False,
    ),
]
NoTracesOpt = Annotated[bool, typer.Option("--no-traces", help="Write no trace.")]
MaxWorkersOpt = Annotated[
    int | None,
    typer.Option(min=1, help="With --ray: grow the pool up to this many while records wait."),
]
JobUsdOpt = Annotated[
    float | None,
    typer.Option(min=0.0, help="Spend cap for the whole job, in USD (cluster-wide)."),
]
JobTokensOpt = Annotated[
    int | None, typer.Option(min=0, help="Token cap for the whole job (cluster-wide).")
]
MaxOutageOpt = Annotated[
    str,
    typer.Option(
        "--max-outage",
        help="How long records wait for a provider that is down (connection errors, "
        "circuit open, no fallback) before the job stops, resumably (exit 3): seconds, "
        "or 90s, 10m, 1h; 'inf' waits for ever.",
        metavar="DURATION",
    ),
]
ReadOnDriverOpt = Annotated[
    bool,
    typer.Option(
        "--read-on-driver",
        help="With --ray: this process reads the input and writes the results, and the "
        "workers only run records (for input or output the other nodes cannot reach). "
        "By default each worker reads and writes shards of the input itself.",
    ),
]


@commands.command()
def run(  # one parameter per option: typer reads the signature
    pipeline: PipelineArg,
    input_path: InputOpt,
    output: OutputOpt,
    config: ConfigOpt = None,
    key: KeyOpt = None,
    max_in_flight: JobInFlightOpt = None,
    resume: ResumeOpt = False,
    force_rerun_changed: RerunOpt = False,
    part_rows: PartRowsOpt = 50_000,
    budget_usd: BudgetUsdOpt = None,
    budget_tokens: BudgetTokensOpt = None,
    deadline_s: DeadlineOpt = None,
    traces: TracesOpt = None,
    no_traces: NoTracesOpt = False,
    ray_address: RayOpt = None,
    workers: WorkersOpt = 2,
    max_workers: MaxWorkersOpt = None,
    job_budget_usd: JobUsdOpt = None,
    job_budget_tokens: JobTokensOpt = None,
    read_on_driver: ReadOnDriverOpt = False,
    max_outage: MaxOutageOpt = "10m",
    provider_batch: ProviderBatchOpt = False,
    online_fallback: OnlineFallbackOpt = False,
    detach: DetachOpt = False,
    cache: CacheOpt = None,
) -> None:
    """Run a pipeline over files of records.

    PIPELINE runs once per record of --input (a file, folder or glob; a record
    supplies the DAG's inputs by field name). One row per record goes to
    --output/results/ (Parquet parts, written as records finish); a bad or failed
    record gets an error row and a line in --output/dead_letter/, and the job goes
    on. Running again into the same --output resumes: records with a row are
    skipped, and calls a killed run completed are not paid again (nor counted twice
    against --job-budget-*). A provider outage holds records (never a dead letter)
    until --max-outage. Exit 0 when some record succeeded, 2 for bad input (before any
    call), 3 when a provider stayed down, 4 when no record did, 130 when interrupted.
    With --provider-batch the calls go through the provider's Batch API instead.
    """
    from fanout.batch import load_pipeline

    if no_traces and traces is not None:
        fail("--traces and --no-traces contradict each other; pass one")
    if read_on_driver and ray_address is None:
        fail("--read-on-driver applies to a job on Ray; add --ray or drop it")
    max_outage_s = _duration_s(max_outage, "--max-outage")
    with bad_input_exits():
        dag = load_pipeline(pipeline)
        traces_to = trace_dir(None if no_traces else (traces or output / "traces"))
        job_budget = (job_budget_usd, job_budget_tokens)
        engine: Engine | RayEngine
        if ray_address is None:
            engine = _local_engine(config, traces_to, job_budget, cache)
        elif cache is not None:
            fail("--cache applies to the local engine (set [cache] in the config for Ray)")
        else:
            engine = _ray_engine(config, traces_to, job_budget, output, ray_address,
                                 workers, max_workers)  # fmt: skip
        stats = run_job(
            engine, dag, input_path, output, key=key, max_in_flight=max_in_flight,
            resume=True if resume else None, force_rerun_changed=force_rerun_changed,
            part_rows=part_rows, budget_usd=budget_usd, budget_tokens=budget_tokens,
            deadline_s=deadline_s, shard=False if read_on_driver else None,
            max_outage_s=max_outage_s,
            provider_batch=provider_batch, online_fallback=online_fallback, detach=detach,
        )  # fmt: skip
    print_summary(make_console(), dag.name, stats)
    exit_for(stats, input_path)


def _duration_s(text: str, option: str) -> float:
    """``600``, ``90s``, ``10m``, ``1h``, ``inf`` -> seconds; exit 2 for anything else."""
    from fanout.limits import parse_duration_s

    seconds = math.inf if text.strip().lower() in ("inf", "never") else parse_duration_s(text)
    if seconds is None or seconds < 0:
        fail(f"{option} {text!r}: give a duration such as 600, 90s, 10m, 1h or inf")
    return seconds


def exit_for(stats: JobStats, input_path: Path) -> None:
    """Warn about an empty input; exit 4 when the job ran records and none succeeded."""
    if stats.records == 0 and stats.skipped == 0:
        typer.echo(f"warning: {input_path} holds no records; nothing was run", err=True)
        return
    if stats.records and not stats.ok and not stats.waiting:
        by_status = ", ".join(f"{count:,} {status}" for status, count in stats.failed.items())
        typer.echo(
            f"error: no record succeeded ({by_status}); the error rows are in "
            f"{stats.output_path} and the records in {stats.dead_letter_path}",
            err=True,
        )
        raise typer.Exit(EXIT_NO_RECORD_OK)


def _local_engine(
    config: Path | None,
    traces: Path | None,
    job_budget: tuple[float | None, int | None],
    cache: Path | None = None,
) -> Engine:
    from fanout.batch import batch_clients
    from fanout.run import Engine

    budget = None
    if job_budget != (None, None):
        from fanout.budget import Budget

        budget = Budget(usd=job_budget[0], tokens=job_budget[1])
    return Engine(batch_clients(load_cfg(config)), traces=traces, job_budget=budget, cache=cache)


def _ray_engine(
    config: Path | None,
    traces: Path | None,
    job_budget: tuple[float | None, int | None],
    output: Path,
    address: str,
    workers: int,
    max_workers: int | None,
) -> RayEngine:
    from fanout._extras import require

    require("--ray", "ray", extra="ray")
    from fanout.batch import CALLS_DIR
    from fanout.distributed import RayEngine

    return RayEngine(
        load_cfg(config),
        workers=workers,
        max_workers=max_workers,
        address=address,
        traces=traces,
        journal=output / CALLS_DIR,  # a resumed job, or a dead worker's requests
        job_budget_usd=job_budget[0],
        job_budget_tokens=job_budget[1],
    )


@commands.command()
def demo(
    records: Annotated[
        int | None,
        typer.Option(
            min=1, help="Records to run (the 40 samples repeat as needed).", show_default="40"
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Directory for results.", show_default="a new temp dir"
        ),
    ] = None,
    latency_ms: Annotated[
        float, typer.Option(min=0.0, help="Simulated provider latency per call.")
    ] = 200.0,
    rpm: Annotated[
        float, typer.Option(min=1.0, help="Requests/min the 'fast' model is limited to.")
    ] = 900.0,
    max_in_flight: InFlightOpt = 64,
) -> None:
    """Run the demo pipeline offline (sim provider).

    Triages 40 sample customer reviews with the 'triage' pipeline: a map rates each
    sentence on 'fast' (under a rate limit the progress line shows), a route sends
    urgent reviews to an apology on 'smart', and 'smart' summarises each. One sample
    record lacks its text on purpose, to show an error row. No network, no keys.
    """
    from fanout._demo import BAD_RECORD, write_sample
    from fanout._demo.pipeline import dag
    from fanout.run import Engine

    with bad_input_exits():
        out = output if output is not None else Path(tempfile.mkdtemp(prefix="fanout-demo-"))
        try:
            out.mkdir(parents=True, exist_ok=True)
            sample = write_sample(out / "input.jsonl", records)
        except OSError as exc:
            raise ConfigError(f"cannot write to {str(out)!r}: {exc.strerror}") from None
        console = make_console()
        print_demo_intro(console, records or 40, latency_ms, rpm)
        engine = Engine(_demo_config(latency_ms, rpm), traces=trace_dir(out / "traces"))
        stats = run_job(engine, dag, sample, out, key="id", max_in_flight=max_in_flight)
    print_summary(console, dag.name, stats)
    exit_for(stats, sample)
    print_examples(console, stats.output_path)
    print_demo_outro(console, out, sample, BAD_RECORD)


def _demo_config(latency_ms: float, rpm: float) -> Config:
    from fanout.config import default_config, parse_config

    data = default_config().model_dump()
    data["providers"]["sim"]["latency_ms"] = latency_ms
    data["models"]["fast"]["requests_per_min"] = rpm
    data["traces"]["content"] = "full"  # sample reviews, no secrets: readable traces
    return parse_config(data, source="demo config")


@commands.command()
def validate(pipeline: PipelineArg, config: ConfigOpt = None) -> None:
    """Check a pipeline and list what it runs.

    Validates PIPELINE against the config's model aliases and prints its nodes,
    inputs, outputs and models. Makes no calls.
    """
    from fanout.batch import load_pipeline

    with bad_input_exits():
        dag = load_pipeline(pipeline)
        cfg = load_cfg(config)
        plan = dag.validate(models=cfg.models.keys())
    print_plan(make_console(), dag, plan, cfg, str(config) if config else "the embedded default")


def run_job(
    engine: Engine | RayEngine,
    dag: DAG,
    input_path: Path,
    output: Path,
    **options: Any,
) -> JobStats:
    """:func:`fanout.batch.run_file` with a progress bar; Ctrl-C or SIGTERM ends it resumably.

    ``options`` are ``run_file``'s keyword arguments.
    """
    from fanout.batch import run_file

    async def job(progress: ProgressReporter) -> JobStats:
        async with engine:
            return await run_file(engine, dag, input_path, output, on_progress=progress,
                                  **options)  # fmt: skip

    with ProgressReporter(make_console(stderr=True)) as progress:
        # SIGTERM ends a job like Ctrl-C: finished records and the trace are written out.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            return run_loop(job(progress))
        except KeyboardInterrupt:
            typer.echo(f"interrupted: {_finished(progress.last)}", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except ProviderOutage as exc:
            typer.echo(f"error: {exc}; {_finished(progress.last)}", err=True)
            raise typer.Exit(EXIT_PROVIDER_DOWN) from None


def _finished(last: JobStats | None) -> str:
    if last is None:
        return "no record had finished"
    return (
        f"{last.records} records finished this run, written to {last.output_path}; "
        "run the same command again to resume"
    )
