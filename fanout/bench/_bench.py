"""``run_bench``: one load benchmark end to end — emulator, engine, load, traces, report files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fanout.bench._arrivals import ArrivalSpec
from fanout.bench._emulate import EmulatedProvider, EmulateSpec, emulated_config, run_emulator
from fanout.bench._html import write_html
from fanout.bench._load import Arrival, LoadResult, Runner, generate_load
from fanout.bench._plots import write_plots
from fanout.bench._report import ModelLimit, build_report, write_report
from fanout.bench._table import headline
from fanout.clock import SystemClock
from fanout.config import Config
from fanout.dag import DAG
from fanout.errors import ConfigError

__all__ = [
    "BenchOptions",
    "check_inputs",
    "default_warmup_s",
    "replay_arrivals",
    "run_bench",
    "sample_inputs",
]

_SAMPLE_TEXTS = (
    "Great kettle, I love how fast it boils.",
    "The parcel arrived damaged and late. I want a refund.",
    "It is a chair. It has four legs.",
    "Excellent service, thanks to the helpful support team!",
    "Worst purchase ever: broken on arrival, and the seller was rude.",
)


@dataclass(frozen=True, slots=True)
class BenchOptions:
    duration_s: float
    warmup_s: float
    drain_s: float = 30.0
    ray: str | None = None  # a --ray address: run on RayEngine
    workers: int = 2
    seed: int = 0
    plots: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_s < self.duration_s:
            raise ConfigError(
                f"the warm-up ({self.warmup_s:g} s) must be shorter than the duration "
                f"({self.duration_s:g} s); shorten --warmup or lengthen --duration"
            )


def default_warmup_s(duration_s: float) -> float:
    """The start of the steady window: 20% of the run, between 1 and 10 s (less than it)."""
    return min(max(1.0, 0.2 * duration_s), 10.0, duration_s / 2)


def sample_inputs(dag: DAG, count: int = 50) -> list[dict[str, object]]:
    """Inputs for a bench without ``--input``: every DAG input gets a short review text."""
    names = dag.validate().inputs
    return [
        {name: f"{_SAMPLE_TEXTS[i % len(_SAMPLE_TEXTS)]} (#{i})" for name in names}
        for i in range(count)
    ]


def check_inputs(
    dag: DAG, inputs: Sequence[Mapping[str, object]] | Sequence[Arrival], source: str
) -> None:
    """Raise :class:`ConfigError` before any load if a record lacks one of the DAG's inputs."""
    names = dag.validate().inputs
    values: Sequence[Mapping[str, object] | Arrival] = inputs
    for i, value in enumerate(values):
        record = value.inputs if isinstance(value, Arrival) else value
        missing = [n for n in names if n not in record]
        if missing:
            key = value.key if isinstance(value, Arrival) else f"#{i}"
            raise ConfigError(
                f"{source}: record {key} lacks the DAG's input(s) {missing} (DAG {dag.name!r} "
                f"takes {list(names)}); give records with those fields"
            )


def replay_arrivals(
    traces: Path, records: Mapping[str, Mapping[str, object]] | None = None
) -> list[Arrival]:
    """Arrival times and inputs of an earlier job, from its traces' run rows.

    Inputs come from the run rows (kept when the job traced with ``content = "full"``),
    else from ``records`` by record key (the job's ``--input`` file).
    """
    from fanout.trace import connect

    con = connect(traces)
    try:
        rows = con.execute(
            "SELECT record_key, epoch_us(start_time), input_text, trace_id FROM spans "
            "WHERE record_type = 'run' AND start_time IS NOT NULL ORDER BY start_time"
        ).fetchall()
    finally:
        con.close()
    if not rows:
        raise ConfigError(f"--arrivals replay:{traces}: the traces hold no run rows to replay")
    first = rows[0][1]
    out = []
    for key, start_us, text, trace_id in rows:
        inputs: Mapping[str, object] | None = None
        if text:
            inputs = json.loads(text)
        elif records is not None and key is not None:
            inputs = records.get(str(key))
        if inputs is None:
            raise ConfigError(
                f"--arrivals replay:{traces}: run {key or trace_id} has no inputs in the trace "
                "(the job traced with [traces] content = 'hmac' or 'none'); pass the job's "
                "records with --input FILE, or trace the job with content = 'full'"
            )
        out.append(Arrival((start_us - first) / 1e6, str(key or trace_id), inputs))
    return out


def _limits(config: Config, emulate: EmulateSpec | None) -> list[ModelLimit]:
    out = []
    for model in {(m.provider, m.model): m for m in config.models.values()}.values():
        provider = config.providers[model.provider]
        if emulate is not None:
            rpm, tpm, source = emulate.requests_per_min, emulate.tokens_per_min, "emulator"
            burst_s = emulate.burst_s
        else:
            rpm = model.requests_per_min or provider.requests_per_min
            tpm = model.tokens_per_min or provider.tokens_per_min
            source = "config"
            burst_s = 1.0  # what the limiter assumes of a provider it only has a limit for
        out.append(ModelLimit(model.provider, model.model, rpm, tpm, source, burst_s))
    return out


def _setup(
    pipeline: str,
    dag: DAG,
    config: Config,
    arrivals: ArrivalSpec,
    options: BenchOptions,
    emulate: EmulateSpec | None,
    inputs_source: str,
) -> dict[str, Any]:
    return {
        "pipeline": pipeline,
        "dag": dag.name,
        "arrivals": arrivals.text,
        "arrival_kind": arrivals.kind,
        "offered_per_s": arrivals.offered_per_s,
        "clients": arrivals.clients,
        "duration_s": options.duration_s,
        "drain_s": options.drain_s,
        "inputs": inputs_source,
        "emulate": emulate.to_dict() if emulate is not None else None,
        "ray": options.ray,
        "workers": options.workers if options.ray else None,
        # limits, concurrency and prices: what `fanout plan --check` predicts from
        "config": json.loads(config.model_dump_json(exclude={"traces", "escalation_path"})),
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
    }


def run_bench(
    pipeline: str,
    dag: DAG,
    config: Config,
    arrivals: ArrivalSpec,
    inputs: Sequence[Mapping[str, object]] | Sequence[Arrival],
    report_dir: Path,
    options: BenchOptions,
    *,
    emulate: EmulateSpec | None = None,
    inputs_source: str = "generated",
) -> dict[str, Any]:
    """Run the load, then write ``report.json``, the PNG plots and ``report.html``."""
    dag.validate(models=config.models.keys())
    if report_dir.exists() and not report_dir.is_dir():
        raise ConfigError(f"--report {str(report_dir)!r} exists and is not a directory")
    report_dir.mkdir(parents=True, exist_ok=True)
    traces = report_dir / "traces"
    if traces.exists() and any(traces.iterdir()):
        raise ConfigError(
            f"--report {str(report_dir)!r} already holds a bench's traces; pick a new directory"
        )
    setup = _setup(pipeline, dag, config, arrivals, options, emulate, inputs_source)
    if emulate is None:
        return _bench(dag, config, arrivals, inputs, report_dir, options, setup, None)
    with run_emulator(emulate) as emulator:
        cfg = emulated_config(config, emulator.base_url)
        return _bench(dag, cfg, arrivals, inputs, report_dir, options, setup, emulator)


def _bench(
    dag: DAG,
    config: Config,
    arrivals: ArrivalSpec,
    inputs: Sequence[Mapping[str, object]] | Sequence[Arrival],
    report_dir: Path,
    options: BenchOptions,
    setup: dict[str, Any],
    emulator: EmulatedProvider | None,
) -> dict[str, Any]:
    clock = SystemClock()
    traces = report_dir / "traces"
    job_id = f"bench-{uuid.uuid4().hex[:8]}"

    async def go() -> LoadResult:
        runner: Runner
        closer: contextlib.AbstractAsyncContextManager[object]
        if options.ray is None:
            from fanout.run import Engine

            engine = Engine(config, traces=traces, job_id=job_id)
            engine.open_traces()
            states = engine.limiter_states
            runner = closer = engine
        else:
            from fanout.distributed import RayEngine

            ray_engine = RayEngine(
                config,
                workers=options.workers,
                address=options.ray,
                traces=traces,
                job_id=job_id,
            )
            states = None
            runner = closer = ray_engine
            await ray_engine.start()
            # the load starts once every worker actor answers: the bench measures the
            # pool, not the cluster's start-up (actors importing fanout, minutes on a busy box)
            await ray_engine.worker_info()
        async with closer:
            if emulator is not None:
                await asyncio.to_thread(emulator.reset)  # count this load only
            return await generate_load(
                runner,
                dag,
                arrivals,
                inputs,
                duration_s=options.duration_s,
                clock=clock,
                drain_s=options.drain_s,
                limiter_states=states,
                seed=options.seed,
            )

    load = asyncio.run(go())
    stats = emulator.stats() if emulator is not None else None
    report = build_report(
        setup,
        load,
        t0_wall=load.started_wall,
        traces=traces if traces.exists() else None,
        limits=_limits(config, emulator.spec if emulator else None),
        warmup_s=options.warmup_s,
        emulator=stats,
    )
    write_report(report, report_dir)
    if options.plots:
        write_plots(report, [r.latency_s * 1000 for r in load.records], report_dir)
    write_html(report, report_dir, headline(report))
    return report
