"""The ``fanout`` command line: argument parsing only; the work lives in batch, output in _console.

Bad input (a pipeline, input file, config or DAG that is wrong) prints one
``error: ...`` line naming the thing and the fix, and exits 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from fanout._console import (
    ProgressReporter,
    make_console,
    print_examples,
    print_plan,
    print_summary,
)
from fanout.errors import ConfigError

if TYPE_CHECKING:  # the engine, pyarrow and the rest load per command: `--help` stays fast
    from fanout.batch import JobStats
    from fanout.config import Config
    from fanout.dag import DAG
    from fanout.distributed import RayEngine
    from fanout.run import Engine
    from fanout.store import Review, ReviewStatus, ReviewStore

__all__ = ["app", "main"]

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="fanout",
    help="Run DAGs of LLM and tool calls over files of records.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

PipelineArg = Annotated[
    str,
    typer.Argument(
        help="The DAG to run: path/to/file.py:attr or module.name:attr.",
        metavar="PIPELINE",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML config (providers, models). Default: the embedded simulated provider.",
        dir_okay=False,
    ),
]


# -- the edge: one clear message for bad input -----------------------------------


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


@contextmanager
def _bad_input_exits() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        _fail(str(exc))


# -- commands --------------------------------------------------------------------


@app.command()
def run(
    pipeline: PipelineArg,
    input_path: Annotated[
        Path,
        typer.Option(
            "--input",
            "-i",
            help="Records: .jsonl/.json/.ndjson (optionally .gz), .csv or .parquet.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Directory for results.parquet.", show_default=False),
    ],
    config: ConfigOpt = None,
    key: Annotated[
        str | None,
        typer.Option(
            help="Column that identifies a record (default: a hash of its content).",
            show_default=False,
        ),
    ] = None,
    max_in_flight: Annotated[
        int,
        typer.Option(
            "--max-in-flight",
            "--concurrency",
            min=1,
            help="Records in progress at once; reading waits while the window is full.",
        ),
    ] = 64,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Insist on resuming the run in --output (it resumes anyway when one is there).",
        ),
    ] = False,
    force_rerun_changed: Annotated[
        bool,
        typer.Option(
            "--force-rerun-changed",
            help="The pipeline or config changed since the run in --output: move its rows "
            "aside and run every record again (unchanged calls come from the journal).",
        ),
    ] = False,
    part_rows: Annotated[
        int,
        typer.Option(
            min=1,
            help="Rows per results part (a part is also written every 10 s). A crash loses "
            "no finished call either way; smaller parts mean less to replay on resume.",
        ),
    ] = 50_000,
    budget_usd: Annotated[
        float | None, typer.Option(min=0.0, help="Spend cap per record, in USD.")
    ] = None,
    budget_tokens: Annotated[int | None, typer.Option(min=0, help="Token cap per record.")] = None,
    deadline_s: Annotated[
        float | None, typer.Option(min=0.0, help="Time limit per record, in seconds.")
    ] = None,
    traces: Annotated[
        Path | None,
        typer.Option(
            "--traces",
            help="Directory for the trace (Parquet, a row per run, node and attempt).",
            show_default="OUTPUT/traces",
            file_okay=False,
        ),
    ] = None,
    no_traces: Annotated[bool, typer.Option("--no-traces", help="Write no trace.")] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Run on Ray: local (start one here), auto (join the running cluster, "
            "else start one) or a cluster ADDRESS.",
            metavar="local|auto|ADDRESS",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker actors, with --ray.", show_default=True)
    ] = 2,
    max_workers: Annotated[
        int | None,
        typer.Option(min=1, help="With --ray: grow the pool up to this many while records wait."),
    ] = None,
    job_budget_usd: Annotated[
        float | None,
        typer.Option(min=0.0, help="Spend cap for the whole job, in USD (cluster-wide)."),
    ] = None,
    job_budget_tokens: Annotated[
        int | None, typer.Option(min=0, help="Token cap for the whole job (cluster-wide).")
    ] = None,
    read_on_driver: Annotated[
        bool,
        typer.Option(
            "--read-on-driver",
            help="With --ray: this process reads the input and writes the results, and the "
            "workers only run records (for input or output the other nodes cannot reach). "
            "By default each worker reads and writes shards of the input itself.",
        ),
    ] = False,
) -> None:
    """Run a pipeline over files of records.

    PIPELINE runs once per record of --input (a file, folder or glob; a record
    supplies the DAG's inputs by field name). One row per record goes to
    --output/results/ (Parquet parts, written as records finish); a bad or failed
    record gets an error row and a line in --output/dead_letter/, and the job goes
    on. Running again into the same --output resumes: records with a row are
    skipped, and calls a killed run completed are not paid again.
    """
    from fanout.batch import load_pipeline
    from fanout.run import Engine

    if no_traces and traces is not None:
        _fail("--traces and --no-traces contradict each other; pass one")
    if read_on_driver and ray_address is None:
        _fail("--read-on-driver applies to a job on Ray; add --ray or drop it")
    with _bad_input_exits():
        dag = load_pipeline(pipeline)
        trace_dir = _trace_dir(None if no_traces else (traces or output / "traces"))
        engine: Engine | RayEngine
        if ray_address is None:
            job_budget = None
            if job_budget_usd is not None or job_budget_tokens is not None:
                from fanout.budget import Budget

                job_budget = Budget(usd=job_budget_usd, tokens=job_budget_tokens)
            engine = Engine.from_config(config, traces=trace_dir, job_budget=job_budget)
        else:
            from fanout.batch import CALLS_DIR
            from fanout.config import default_config, load_config
            from fanout.distributed import RayEngine

            cfg = load_config(config) if config is not None else default_config()
            engine = RayEngine(
                cfg,
                workers=workers,
                max_workers=max_workers,
                address=ray_address,
                traces=trace_dir,
                journal=output / CALLS_DIR,  # a resumed job, or a dead worker's requests
                job_budget_usd=job_budget_usd,
                job_budget_tokens=job_budget_tokens,
            )
        stats = _run_job(
            engine,
            dag,
            input_path,
            output,
            key=key,
            max_in_flight=max_in_flight,
            resume=True if resume else None,
            force_rerun_changed=force_rerun_changed,
            part_rows=part_rows,
            budget_usd=budget_usd,
            budget_tokens=budget_tokens,
            deadline_s=deadline_s,
            shard=False if read_on_driver else None,
        )
    print_summary(make_console(), dag.name, stats)


@app.command()
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
    max_in_flight: Annotated[
        int,
        typer.Option("--max-in-flight", "--concurrency", min=1, help="Records in flight at once."),
    ] = 64,
) -> None:
    """Run the demo pipeline offline (sim provider).

    Triages ~40 sample customer reviews (sentiment per sentence, a route to an
    apology or no action, a summary) on the simulated provider: no network, no keys.
    """
    from fanout._demo import write_sample
    from fanout._demo.pipeline import dag
    from fanout.run import Engine

    with _bad_input_exits():
        out = output if output is not None else Path(tempfile.mkdtemp(prefix="fanout-demo-"))
        try:
            out.mkdir(parents=True, exist_ok=True)
            sample = write_sample(out / "input.jsonl", records)
        except OSError as exc:
            raise ConfigError(f"cannot write to {str(out)!r}: {exc.strerror}") from None
        engine = Engine(_demo_config(latency_ms), traces=_trace_dir(out / "traces"))
        stats = _run_job(engine, dag, sample, out, key="id", max_in_flight=max_in_flight)
    console = make_console()
    print_summary(console, dag.name, stats)
    print_examples(console, stats.output_path)
    console.print(f"input: {sample}", soft_wrap=True)
    console.print(f"traces: fanout traces summary {out / 'traces'}", soft_wrap=True)


@app.command()
def validate(pipeline: PipelineArg, config: ConfigOpt = None) -> None:
    """Check a pipeline and list what it runs.

    Validates PIPELINE against the config's model aliases and prints its nodes,
    inputs, outputs and models. Makes no calls.
    """
    from fanout.batch import load_pipeline
    from fanout.config import default_config, load_config

    with _bad_input_exits():
        dag = load_pipeline(pipeline)
        cfg = load_config(config) if config is not None else default_config()
        plan = dag.validate(models=cfg.models.keys())
    print_plan(make_console(), dag, plan, cfg, str(config) if config else "the embedded default")


@app.command("sim-server")
def sim_server(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: a free one).")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    rpm: Annotated[float | None, typer.Option(help="Requests/min per key and model.")] = None,
    tpm: Annotated[float | None, typer.Option(help="Tokens/min per key and model.")] = None,
    burst_s: Annotated[float, typer.Option(help="Bucket size, in seconds of refill.")] = 1.0,
    latency_ms: Annotated[float, typer.Option(help="Base latency per call.")] = 0.0,
    latency_per_token_ms: Annotated[float, typer.Option(help="Added per output token.")] = 0.0,
    jitter_sigma: Annotated[float, typer.Option(help="Lognormal sigma on latency.")] = 0.0,
    error_rate: Annotated[float, typer.Option(help="Share of calls answered 500.")] = 0.0,
    truncate_rate: Annotated[float, typer.Option(help="Share of bodies cut short.")] = 0.0,
    hang_rate: Annotated[float, typer.Option(help="Share of calls that never answer.")] = 0.0,
    malformed_rate: Annotated[float, typer.Option(help="Share of malformed bodies.")] = 0.0,
    no_limit_headers: Annotated[
        bool, typer.Option(help="Do not send x-ratelimit-limit-* headers.")
    ] = False,
    api_key_env: Annotated[
        str | None, typer.Option(help="Require the key held in this environment variable.")
    ] = None,
    record_prompts: Annotated[
        bool, typer.Option(help="Count answered calls per prompt (GET /stats/prompts).")
    ] = False,
) -> None:
    """Run the OpenAI-compatible provider emulator (limits, latency, faults) on loopback."""
    import os

    from fanout.sim.server import EmulatorConfig, serve

    rates = {"error": error_rate, "truncate": truncate_rate, "hang": hang_rate}
    for name, rate in {**rates, "malformed": malformed_rate}.items():
        if not 0 <= rate <= 1:
            _fail(f"--{name}-rate must be between 0 and 1 (got {rate})")
    key = None
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            _fail(f"--api-key-env {api_key_env}: that environment variable is not set")
    config = EmulatorConfig(
        requests_per_min=rpm,
        tokens_per_min=tpm,
        burst_s=burst_s,
        latency_ms=latency_ms,
        latency_per_token_ms=latency_per_token_ms,
        jitter_sigma=jitter_sigma,
        error_rate=error_rate,
        truncate_rate=truncate_rate,
        hang_rate=hang_rate,
        malformed_rate=malformed_rate,
        send_limit_headers=not no_limit_headers,
        api_key=key,
        record_prompts=record_prompts,
    )
    typer.echo(f"fanout sim-server on http://{host}:{port}/v1 (stats: /stats)", err=True)
    serve(config, host=host, port=port)


# -- serve: named DAGs over HTTP for latency-sensitive callers (fanout.service) -----------


@app.command()
def serve(
    pipelines: Annotated[
        list[str],
        typer.Argument(
            help="DAGs to serve (path/to/file.py:attr or module.name:attr), each under its name.",
            metavar="PIPELINE",
            show_default=False,
        ),
    ],
    config: ConfigOpt = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: a free one).")] = 8080,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    tokens_file: Annotated[
        Path | None,
        typer.Option(
            help="Bearer tokens, one 'tenant:token' per line (default: $FANOUT_SERVICE_TOKENS).",
            dir_okay=False,
        ),
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Accept requests without a token (local use only).")
    ] = False,
    tenant_concurrency: Annotated[
        int | None, typer.Option(min=1, help="Runs in flight at once per tenant (else 429).")
    ] = None,
    tenant_budget_usd: Annotated[
        float | None, typer.Option(min=0.0, help="USD each tenant may spend (else 402).")
    ] = None,
    traces: Annotated[
        Path | None,
        typer.Option("--traces", help="Directory for the trace (default: none).", file_okay=False),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Serve on Ray Serve: local, auto or a cluster ADDRESS (replicas share the "
            "cluster-wide rate limits).",
            metavar="local|auto|ADDRESS",
            show_default=False,
        ),
    ] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Ray Serve replicas, with --ray.")] = 2,
) -> None:
    """Serve pipelines over HTTP: POST /v1/pipelines/NAME/runs, OpenAPI at /docs.

    Each PIPELINE is served under its DAG's name. Requests need a bearer token from
    --tokens-file or $FANOUT_SERVICE_TOKENS ('tenant:token' entries), unless --no-auth.
    """
    from fanout.batch import load_pipeline
    from fanout.service import TenantLimits, TokenStore

    with _bad_input_exits():
        if tokens_file is not None and no_auth:
            _fail("--tokens-file and --no-auth contradict each other; pass one")
        tokens = TokenStore.from_file(tokens_file) if tokens_file else TokenStore.from_env()
        if tokens is None and not no_auth:
            _fail(
                "no bearer tokens: set FANOUT_SERVICE_TOKENS or pass --tokens-file "
                "(or --no-auth for local use)"
            )
        dags: dict[str, DAG] = {}
        for spec in pipelines:
            dag = load_pipeline(spec)
            if dag.name in dags:
                _fail(f"two pipelines are named {dag.name!r}; give each DAG its own name")
            dags[dag.name] = dag
        limits = TenantLimits(max_concurrent=tenant_concurrency, budget_usd=tenant_budget_usd)
        _trace_dir(traces)
        if ray_address is not None:
            from functools import partial

            from fanout.config import default_config, load_config
            from fanout.distributed.serve import run_service
            from fanout.service import build_app

            cfg = load_config(config) if config is not None else default_config()
            run_service(
                partial(build_app, dags, tokens=tokens, tenant_limits=limits),
                cfg,
                dags.values(),
                address=ray_address,
                replicas=replicas,
                host=host,
                port=port,
                traces=traces,
            )
            return
        from fanout.run import Engine
        from fanout.service import build_app, serve_forever

        engine = Engine.from_config(config, traces=traces)
        service = build_app(dags, engine, tokens=tokens, tenant_limits=limits, close_runner=True)
    names = ", ".join(sorted(dags))
    typer.echo(f"fanout serve on http://{host}:{port} ({names}; API docs at /docs)", err=True)
    serve_forever(service, host=host, port=port)  # until SIGINT/SIGTERM


# -- traces: reading a traces directory (summary, one request, OTLP export) ----------

traces_app = typer.Typer(
    help="Read a traces directory: summaries, one request's timeline, OTLP export.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(traces_app, name="traces")

TRACE_EXPORT_FORMATS = ("otlp-json",)

TracesDirArg = Annotated[
    Path,
    typer.Argument(
        help="A traces directory: the one a job wrote its trace files to.",
        metavar="DIR",
        show_default=False,
    ),
]


@traces_app.command("summary")
def traces_summary(
    directory: TracesDirArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Calls, errors, 429s, retries, latency, tokens and cost per model, node and job.

    Reads the Parquet parts and the open log segments, so a running or crashed
    job shows as far as it got.
    """
    from fanout._console import print_trace_summary
    from fanout.trace import summarize

    with _bad_input_exits():
        summary = summarize(directory)
    print_trace_summary(make_console(), summary, as_json=as_json)


@traces_app.command("show")
def traces_show(
    directory: TracesDirArg,
    trace_id: Annotated[
        str,
        typer.Argument(help="A trace id, or a unique prefix of 6+ characters.", show_default=False),
    ],
) -> None:
    """One request as an indented timeline: run, nodes, attempts."""
    from fanout._console import print_trace_tree
    from fanout.trace import trace_tree

    with _bad_input_exits():
        rows = trace_tree(directory, trace_id)
    print_trace_tree(make_console(), rows)


@traces_app.command("export")
def traces_export(
    directory: TracesDirArg,
    export_format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help=f"Output format: {', '.join(TRACE_EXPORT_FORMATS)}.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="File to write.", show_default="stdout", dir_okay=False
        ),
    ] = None,
) -> None:
    """Export every span, e.g. as OTLP/JSON lines for an OpenTelemetry collector.

    otlp-json: one ExportTraceServiceRequest per line (the collector's file
    exporter format), with gen_ai.* and OpenInference attributes.
    """
    import sys

    from fanout.trace import export_otlp

    if export_format not in TRACE_EXPORT_FORMATS:
        formats = ", ".join(TRACE_EXPORT_FORMATS)
        _fail(f"unknown --format {export_format!r}: choose one of {formats}")
    with _bad_input_exits():
        if output is None:
            try:
                export_otlp(directory, sys.stdout)
                sys.stdout.flush()
            except BrokenPipeError:  # `| head`: the reader has all it wanted
                _quiet_stdout()
            return
        partial = output.with_name(output.name + ".partial")
        try:  # a whole file or none: a failed export leaves no half file behind
            with partial.open("w", encoding="utf-8") as out:
                count = export_otlp(directory, out)
            partial.replace(output)
        except OSError as exc:
            raise ConfigError(f"cannot write {str(output)!r}: {exc.strerror}") from None
        finally:
            partial.unlink(missing_ok=True)
    typer.echo(f"exported {count:,} spans to {output}", err=True)


def _quiet_stdout() -> None:
    import os
    import sys

    # Python flushes stdout again at exit; point it at /dev/null so that cannot fail.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (a test runner's buffer)
        pass
    finally:
        os.close(devnull)


# -- bench and plan: load benchmarks and capacity planning ----------------------------

_BENCH_INPUT_LIMIT = 100_000  # records read from --input for a bench (they cycle)


@app.command()
def bench(
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
    ray_address: Annotated[
        str | None,
        typer.Option("--ray", help="Run on Ray (local, auto or ADDRESS).", show_default=False),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker actors, with --ray.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the poisson arrivals.")] = 0,
) -> None:
    """Load-test a pipeline on the real engine and write a report with plots.

    Open-loop arrivals (they do not wait for completions) or N closed-loop clients,
    against the config's providers or an emulated one (--emulate). Prints a table and
    writes report.json, throughput/latency/time-per-node PNGs and report.html to --report.
    """
    from fanout.batch import iter_records, load_pipeline
    from fanout.bench import (
        Arrival,
        BenchOptions,
        check_inputs,
        default_warmup_s,
        parse_arrivals,
        parse_duration,
        parse_emulate,
        print_report,
        replay_arrivals,
        run_bench,
        sample_inputs,
    )
    from fanout.config import default_config, load_config

    with _bad_input_exits():
        spec = parse_arrivals(arrivals)
        duration_s = parse_duration(duration)
        warmup_s = (
            parse_duration(warmup, what="--warmup") if warmup else default_warmup_s(duration_s)
        )
        if warmup_s >= duration_s:
            _fail(f"--warmup {warmup} must be shorter than --duration {duration}")
        drain_s = parse_duration(drain, what="--drain")
        emulated = parse_emulate(emulate) if emulate else None
        dag = load_pipeline(pipeline)
        cfg = load_config(config) if config is not None else default_config()
        dag.validate(models=cfg.models.keys())
        records: dict[str, dict[str, object]] = {}
        if input_path is not None:
            for record in iter_records(input_path):
                if record.data is not None:
                    records[record.key] = record.data
                if len(records) >= _BENCH_INPUT_LIMIT:
                    break
            if not records:
                _fail(f"--input {str(input_path)!r} holds no readable record")
        inputs: list[dict[str, object]] | list[Arrival]
        source = str(input_path) if input_path is not None else "generated"
        if spec.kind == "replay":
            assert spec.path is not None
            inputs = replay_arrivals(Path(spec.path), records or None)
            source = f"replay of {spec.path}"
        else:
            inputs = list(records.values()) or sample_inputs(dag)
        check_inputs(dag, inputs, f"--input {input_path}" if input_path else source)
        options = BenchOptions(duration_s, warmup_s, drain_s, ray_address, workers, seed)
        result = run_bench(
            pipeline, dag, cfg, spec, inputs, report, options,
            emulate=emulated, inputs_source=source,
        )  # fmt: skip
    print_report(make_console(), result, str(report))


@app.command()
def plan(
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
    import json

    from fanout.batch import iter_records, load_pipeline
    from fanout.bench import (
        EmulateSpec,
        compare,
        measure_shape,
        parse_emulate,
        parse_rate,
        predict,
        print_check,
        print_prediction,
        read_report,
        sample_inputs,
        shape_from_traces,
    )
    from fanout.config import default_config, load_config, parse_config

    if arrival_rate is not None and clients is not None:
        _fail("--arrival-rate (open loop) and --clients (closed loop) contradict; pass one")
    with _bad_input_exits():
        rate = parse_rate(arrival_rate) if arrival_rate is not None else None
        dag = load_pipeline(pipeline)
        report = read_report(check) if check is not None else None
        setup = report["setup"] if report is not None else {}
        if config is not None:
            cfg = load_config(config)
        elif setup.get("config"):
            cfg = parse_config(setup["config"], source=f"{check}/report.json setup.config")
        else:
            cfg = default_config()
        emulated = parse_emulate(emulate) if emulate else None
        if emulated is None and setup.get("emulate"):
            emulated = EmulateSpec(**setup["emulate"])
        if rate is None and clients is None and setup.get("arrival_kind") in (
            "poisson", "constant", "burst",
        ):
            rate = setup.get("offered_per_s")
        if rate is None and clients is None and setup.get("clients"):
            clients = int(setup["clients"])
        if setup.get("workers"):
            workers = int(setup["workers"])
        samples: list[dict[str, object]] = []
        sample_file = input_path
        if sample_file is None and setup.get("inputs") and Path(setup["inputs"]).is_file():
            sample_file = Path(setup["inputs"])
        if sample_file is not None:
            for record in iter_records(sample_file):
                if record.data is not None:
                    samples.append(record.data)
                if len(samples) >= 200:
                    break
        shape = measure_shape(dag, cfg, samples or sample_inputs(dag))
        if traces is not None:
            shape = shape_from_traces(dag, traces, shape)
        count = records or (report["requests"]["completed"] if report else 1_000_000)
        prediction = predict(
            dag, cfg, shape, records=count, arrival_rate=rate, clients=clients,
            workers=workers, emulate=emulated, latency_ms=latency_ms,
        )  # fmt: skip
    console = make_console()
    if as_json:
        data = prediction.to_dict()
        if report is not None:
            data["check"] = [
                {"figure": r.figure, "predicted": r.predicted, "measured": r.measured,
                 "error": r.error, "note": r.note}
                for r in compare(prediction, report)
            ]  # fmt: skip
        typer.echo(json.dumps(data, indent=2))
        return
    print_prediction(console, prediction)
    if report is not None:
        print_check(console, compare(prediction, report), str(check))


# -- human review ------------------------------------------------------------------------

review_app = typer.Typer(
    help="Pending human reviews: list, show, approve, reject, edit; resume the paused run.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(review_app, name="review")

ReviewIdArg = Annotated[
    str, typer.Argument(help="A review id (see `fanout review list`).", show_default=False)
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="The engine's data dir (where sessions.db lives). Default: the config's data_dir.",
        file_okay=False,
        show_default=False,
    ),
]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who decides (kept with the decision).")]
ResumeOpt = Annotated[
    str | None,
    typer.Option(
        "--resume",
        help="Then resume the paused run with this pipeline (path/to/file.py:attr) and print "
        "its result as JSON.",
        metavar="PIPELINE",
        show_default=False,
    ),
]


@review_app.command("list")
def review_list(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    status: Annotated[
        str | None,
        typer.Option(help="Only reviews with this status: pending, approved, rejected, edited."),
    ] = None,
) -> None:
    """Reviews as JSON lines, oldest first (all of them, or those with --status)."""
    import json

    if status is not None and status not in ("pending", "approved", "rejected", "edited"):
        _fail(f"--status {status!r} is not a review status; use pending/approved/rejected/edited")
    with _bad_input_exits():
        reviews = _review_store(data_dir, config).list(status=status)
    for review in reviews:
        typer.echo(json.dumps(review.to_dict(), ensure_ascii=False, default=str))


@review_app.command("show")
def review_show(
    review_id: ReviewIdArg, data_dir: DataDirOpt = None, config: ConfigOpt = None
) -> None:
    """One review as JSON: the value under review, the instructions, the decision."""
    import json

    with _bad_input_exits():
        review = _review_store(data_dir, config).get(review_id)
    typer.echo(json.dumps(review.to_dict(), ensure_ascii=False, indent=2, default=str))


@review_app.command("approve")
def review_approve(
    review_id: ReviewIdArg,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    by: ByOpt = None,
    resume: ResumeOpt = None,
) -> None:
    """Approve the value under review (the step's output is that value)."""
    _decide(review_id, "approved", data_dir, config, by=by, resume=resume)


@review_app.command("reject")
def review_reject(
    review_id: ReviewIdArg,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    reason: Annotated[
        str | None, typer.Option(help="Why (the failed step's error says it).")
    ] = None,
    by: ByOpt = None,
    resume: ResumeOpt = None,
) -> None:
    """Reject the value under review: the step fails, and so does what depends on it."""
    _decide(review_id, "rejected", data_dir, config, by=by, reason=reason, resume=resume)


@review_app.command("edit")
def review_edit(
    review_id: ReviewIdArg,
    value: Annotated[
        str, typer.Option("--value", help="The corrected value, as JSON.", show_default=False)
    ],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    by: ByOpt = None,
    resume: ResumeOpt = None,
) -> None:
    """Replace the value under review (the step's output is the edited value)."""
    import json

    try:
        parsed = json.loads(value)
    except ValueError as exc:
        _fail(f"--value is not valid JSON ({exc}); quote a string as '\"text\"'")
    _decide(review_id, "edited", data_dir, config, by=by, value=parsed, resume=resume)


@review_app.command("resume")
def review_resume(
    review_id: ReviewIdArg,
    pipeline: PipelineArg,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Resume the run a decided review paused, from its checkpoint; print its result."""
    _resume_review(review_id, pipeline, data_dir, config)


def _review_store(data_dir: Path | None, config: Path | None) -> ReviewStore:
    from fanout.config import load_config
    from fanout.store import ReviewStore

    if data_dir is None and config is not None:
        configured = load_config(config).data_dir
        data_dir = Path(configured) if configured is not None else None
    if data_dir is None:
        raise ConfigError("no review store: pass --data-dir DIR, or a --config that sets data_dir")
    if not data_dir.is_dir():
        raise ConfigError(f"data dir {str(data_dir)!r} does not exist; pass the engine's data_dir")
    return ReviewStore(data_dir)


def _decide(
    review_id: str,
    status: ReviewStatus,
    data_dir: Path | None,
    config: Path | None,
    *,
    by: str | None,
    value: object = None,
    reason: str | None = None,
    resume: str | None = None,
) -> None:
    import json

    with _bad_input_exits():
        store = _review_store(data_dir, config)
        review: Review = store.decide(review_id, status, value=value, reason=reason, by=by)
    if resume is None:
        typer.echo(json.dumps(review.to_dict(), ensure_ascii=False, default=str))
        return
    _resume_review(review_id, resume, data_dir, config)


def _resume_review(
    review_id: str, pipeline: str, data_dir: Path | None, config: Path | None
) -> None:
    import json

    from fanout.batch import load_pipeline
    from fanout.config import default_config, load_config
    from fanout.run import Engine

    with _bad_input_exits():
        store = _review_store(data_dir, config)
        dag = load_pipeline(pipeline)
        cfg = load_config(config) if config is not None else default_config()
        engine = Engine(cfg, store=store.path, reviews=store)

        async def resume() -> dict[str, object]:
            async with engine:
                return (await engine.resume(dag, review_id)).to_dict()

        result = asyncio.run(resume())
    typer.echo(json.dumps(result, ensure_ascii=False, default=str))


# -- the root callback ---------------------------------------------------------------


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        from fanout import __version__

        typer.echo(f"fanout {__version__}")
        raise typer.Exit()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="fanout")


# -- running a job -----------------------------------------------------------------


def _run_job(
    engine: Engine | RayEngine,
    dag: DAG,
    input_path: Path,
    output: Path,
    *,
    max_in_flight: int,
    key: str | None = None,
    resume: bool | None = None,
    force_rerun_changed: bool = False,
    part_rows: int = 50_000,
    budget_usd: float | None = None,
    budget_tokens: int | None = None,
    deadline_s: float | None = None,
    shard: bool | None = None,
) -> JobStats:
    from fanout.batch import run_file

    async def job(progress: ProgressReporter) -> JobStats:
        async with engine:
            return await run_file(
                engine,
                dag,
                input_path,
                output,
                key=key,
                max_in_flight=max_in_flight,
                resume=resume,
                force_rerun_changed=force_rerun_changed,
                part_rows=part_rows,
                budget_usd=budget_usd,
                budget_tokens=budget_tokens,
                deadline_s=deadline_s,
                on_progress=progress,
                shard=shard,
            )

    with ProgressReporter(make_console(stderr=True)) as progress:
        # SIGTERM ends a job like Ctrl-C: finished records and the trace are written out.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            return asyncio.run(job(progress))
        except KeyboardInterrupt:
            last = progress.last
            done = (
                f"{last.records} records finished this run, written to {last.output_path}; "
                f"run the same command again to resume"
                if last
                else "no record had finished"
            )
            typer.echo(f"interrupted: {done}", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None


def _trace_dir(path: Path | None) -> Path | None:
    """``path``, unless it is a file (it is created when the job starts)."""
    if path is not None and path.exists() and not path.is_dir():
        raise ConfigError(f"--traces {str(path)!r} exists and is not a directory; pick a directory")
    return path


def _demo_config(latency_ms: float) -> Config:
    from fanout.config import default_config, parse_config

    data = default_config().model_dump()
    data["providers"]["sim"]["latency_ms"] = latency_ms
    return parse_config(data, source="demo config")
