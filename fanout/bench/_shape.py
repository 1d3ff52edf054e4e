"""A DAG's shape, measured offline: calls and tokens per record per node and model.

The DAG runs on sample records against the in-process simulated provider at zero
latency with no limits (no provider is called): its templates are rendered with real
inputs, its tools run, its maps fan out over the lists they really get and its routes
pick their branches, so calls per record come from the DAG itself, not from a guess.
The same run measures the engine's CPU time per record on this machine. A sample of
real traces (``--traces``) can replace the simulated token counts and latencies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fanout.config import Config, parse_config
from fanout.dag import DAG, LLMNode, MapNode
from fanout.errors import ConfigError
from fanout.sim import SimProvider

__all__ = ["NodeShape", "Shape", "measure_shape", "shape_from_traces"]

_CPU_SAMPLE_S = 0.5  # how long the CPU measurement runs at least
_CPU_WINDOW = 64  # records in flight while measuring


@dataclass(slots=True)
class NodeShape:
    """Mean figures of one node per record (a map's items add up)."""

    node_id: str
    kind: str
    model: str | None  # the model alias, for llm nodes and maps of llm nodes
    ran: float = 0.0  # share of records in which it ran (routes skip branches)
    calls: float = 0.0  # provider calls per record
    input_tokens: float = 0.0  # per record
    output_tokens: float = 0.0
    items: float = 0.0  # a map's items per record
    concurrency: int | None = None  # a map's cap on items in flight


@dataclass(slots=True)
class Shape:
    records: int
    nodes: dict[str, NodeShape]
    cpu_records_per_s: float | None = None  # engine only (no HTTP), one core
    latency_ms: dict[str, float] = field(default_factory=dict)  # per model alias, measured
    source: str = "dry run on the simulated provider"


def _model(node: object) -> str | None:
    body = node.body if isinstance(node, MapNode) else node
    return body.model if isinstance(body, LLMNode) else None


def _offline(config: Config) -> tuple[Config, dict[str, SimProvider]]:
    """``config`` with no limits and every provider replaced by a zero-latency sim."""
    data = config.model_dump()
    for provider in data["providers"].values():
        provider.update(requests_per_min=None, tokens_per_min=None, max_concurrency=100_000)
    for model in data["models"].values():
        model.update(requests_per_min=None, tokens_per_min=None)
    offline = parse_config(data, source="dry-run config")
    sims = {name: SimProvider(name, latency_ms=0.0, jitter_sigma=0.0) for name in offline.providers}
    return offline, sims


def measure_shape(
    dag: DAG, config: Config, samples: Sequence[Mapping[str, object]], *, cpu: bool = True
) -> Shape:
    """Run ``dag`` once per sample record offline; then, if ``cpu``, time it for CPU cost."""
    from fanout.run import Engine

    plan = dag.validate(models=config.models.keys())
    if not samples:
        raise ConfigError("plan: no sample records to measure the DAG's shape with")
    offline, sims = _offline(config)
    shapes = {
        node_id: NodeShape(
            node_id,
            str(node.kind),
            _model(node),
            concurrency=node.concurrency if isinstance(node, MapNode) else None,
        )
        for node_id, node in plan.nodes.items()
        if str(node.kind) != "input"
    }

    async def go() -> float | None:
        async with Engine(offline, providers=sims) as engine:
            results = await asyncio.gather(*(engine.run(dag, s) for s in samples))
            for result in results:
                for node_id, node in result.nodes.items():
                    shape = shapes.get(node_id)
                    if shape is None:
                        continue
                    shape.ran += node.status != "skipped"
                    shape.calls += node.calls
                    shape.input_tokens += node.usage.input_tokens
                    shape.output_tokens += node.usage.output_tokens
                    shape.items += node.items_total or 0
            if not cpu:
                return None
            return await _records_per_s(engine, dag, samples)

    cpu_rate = asyncio.run(go())
    n = len(samples)
    for shape in shapes.values():
        shape.ran /= n
        shape.calls /= n
        shape.input_tokens /= n
        shape.output_tokens /= n
        shape.items /= n
    return Shape(n, shapes, cpu_rate)


async def _records_per_s(
    engine: object, dag: DAG, samples: Sequence[Mapping[str, object]]
) -> float:
    from fanout.run import Engine

    assert isinstance(engine, Engine)
    window = asyncio.Semaphore(_CPU_WINDOW)

    async def one(i: int) -> None:
        async with window:
            await engine.run(dag, samples[i % len(samples)])

    done = 0
    start = time.perf_counter()  # wall time of a busy loop on one core: its CPU time
    while True:
        batch = max(len(samples), 100)
        await asyncio.gather(*(one(done + i) for i in range(batch)))
        done += batch
        elapsed = time.perf_counter() - start
        if elapsed >= _CPU_SAMPLE_S:
            return done / elapsed


def shape_from_traces(dag: DAG, traces: Path, base: Shape) -> Shape:
    """``base`` with calls and tokens per record per node, and each model's call latency,
    replaced by what a sample of real traces measured."""
    from fanout.trace import connect

    con = connect(traces)
    try:
        runs = con.execute(
            "SELECT count(*) FROM spans WHERE record_type = 'run' AND dag_name = ?", [dag.name]
        ).fetchone()
        run_count = int(runs[0]) if runs else 0
        if run_count == 0:
            raise ConfigError(
                f"--traces {str(traces)!r}: no run of DAG {dag.name!r} in these traces; "
                "pass the traces of a job (or bench) of this pipeline"
            )
        per_node = con.execute(
            """
            SELECT n.node_id, count(DISTINCT n.span_id), count(a.span_id),
                   coalesce(sum(a.input_tokens), 0), coalesce(sum(a.output_tokens), 0)
            FROM spans n LEFT JOIN spans a
              ON a.parent_span_id = n.span_id AND a.record_type = 'attempt'
             AND (a.tool_name IS NULL OR a.span_name LIKE 'chat%')
            WHERE n.record_type = 'node' AND n.dag_name = ? AND n.status <> 'skipped'
            GROUP BY n.node_id
            """,
            [dag.name],
        ).fetchall()
        latency = con.execute(
            """
            SELECT model_alias, avg(duration_ms)
            FROM spans WHERE record_type = 'attempt' AND status = 'ok' AND dag_name = ?
             AND (tool_name IS NULL OR span_name LIKE 'chat%') GROUP BY model_alias
            """,
            [dag.name],
        ).fetchall()
    finally:
        con.close()
    nodes = {k: dataclasses.replace(v) for k, v in base.nodes.items()}
    for node_id, ran, calls, tokens_in, tokens_out in per_node:
        shape = nodes.get(str(node_id))
        if shape is None:
            continue
        shape.ran = ran / run_count
        if shape.model is not None:
            shape.calls = calls / run_count
            shape.input_tokens = tokens_in / run_count
            shape.output_tokens = tokens_out / run_count
    return Shape(
        run_count,
        nodes,
        base.cpu_records_per_s,
        {str(alias): float(ms) for alias, ms in latency if alias is not None and ms is not None},
        f"{run_count:,} runs in {traces}",
    )
