"""What the job commands print after the work: the summary, example rows, a DAG's plan."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from fanout.batch import JobStats
    from fanout.config import Config
    from fanout.dag import DAG, Plan

__all__ = [
    "print_demo_intro",
    "print_demo_outro",
    "print_examples",
    "print_plan",
    "print_summary",
]


def print_summary(console: Console, dag_name: str, stats: JobStats) -> None:
    table = Table(title=f"fanout run: {dag_name}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    if stats.skipped or stats.resumed:
        table.add_row("resumed: done before", f"{stats.skipped:,}")
    table.add_row("records", f"{stats.records:,}")
    table.add_row("ok", f"{stats.ok:,}")
    for status, count in sorted(stats.failed.items()):
        table.add_row(status, f"{count:,}")
    table.add_row("input tokens", f"{stats.input_tokens:,}")
    table.add_row("output tokens", f"{stats.output_tokens:,}")
    table.add_row("cost", f"${stats.cost_usd:.6f}")
    if stats.spent_before_usd or stats.spent_before_tokens:  # a resumed job's own account
        table.add_row("cost, earlier runs", f"${stats.spent_before_usd:.6f}")
        table.add_row("cost, whole job", f"${stats.total_cost_usd:.6f}")
    table.add_row("wall time", f"{stats.wall_time_s:.2f} s")
    table.add_row("records/s", f"{stats.records_per_s:.1f}")
    if stats.where:
        table.add_row("ran on", stats.where)
    if stats.batches is not None:
        states = ", ".join(f"{n} {state}" for state, n in sorted(stats.batches.batches.items()))
        table.add_row("provider batches", states or "none")
    if stats.detached:
        table.add_row("detached", "batches still run; the same command again collects them")
    table.add_row("output", str(stats.output_path))
    if stats.dead_letters:
        table.add_row("dead letters", f"{stats.dead_letters:,} in {stats.dead_letter_path}")
    console.print(table)


def print_demo_intro(console: Console, records: int, latency_ms: float, rpm: float) -> None:
    """What the demo runs, before it runs it."""
    from fanout._demo import pipeline

    console.print(
        f"fanout demo: the 'triage' pipeline over {records:,} sample customer reviews, "
        f"offline (the simulated provider, {latency_ms:g} ms a call)\n"
        "  per review: split into sentences -> map: rate each sentence on 'fast' "
        f"(limited to {rpm:,.0f} requests/min)\n"
        "              -> route: urgent reviews get an apology from 'smart' "
        "-> a one-line summary on 'smart'\n"
        f"  the pipeline: {pipeline.__file__}",
        soft_wrap=True,
    )


def print_demo_outro(console: Console, out: Path, sample: Path, bad_record: str) -> None:
    """Where things are, and why one record failed."""
    console.print(
        f"{bad_record} failed on purpose: that sample record has no 'text' field, to show "
        "a bad record's error row and dead letter (the job went on without it).\n"
        f"input: {sample}\n"
        f"results: {out / 'results'} (Parquet; one row per record)\n"
        f"traces: fanout traces summary {out / 'traces'}{_needs_traces_extra()}",
        soft_wrap=True,
    )


def _needs_traces_extra() -> str:
    from fanout._extras import require
    from fanout.errors import MissingExtra

    try:
        require("fanout traces", "duckdb", extra="traces")
    except MissingExtra:
        return "   (first: pip install 'fanout[traces]')"
    return ""


def print_examples(console: Console, results: Path, limit: int = 5) -> None:
    """A few result rows: some urgent, some normal, and an error if there is one."""
    import pyarrow.parquet as pq

    columns = ["key", "status", "output_label", "output_summary", "error_message"]
    rows: list[dict[str, str | None]] = pq.read_table(results, columns=columns).to_pylist()
    picked: list[dict[str, str | None]] = []
    for want, count in (("urgent", 2), ("normal", 2), (None, 1)):
        matches = [r for r in rows if r["output_label"] == want and r not in picked]
        picked.extend(matches[:count])
    table = Table(title="example rows", title_justify="left")
    for name in ("key", "status", "label", "summary / error"):
        table.add_column(name, overflow="fold")
    for row in picked[:limit]:
        table.add_row(
            row["key"] or "",
            row["status"] or "",
            row["output_label"] or "",
            row["output_summary"] or row["error_message"] or "",
        )
    console.print(table)


def print_plan(console: Console, dag: DAG, plan: Plan, cfg: Config, source: str) -> None:
    from fanout.dag import EmbedNode, InputNode, LLMNode, MapNode, ReviewNode, RouteNode, ToolNode

    console.print(f"DAG {dag.name!r} is valid against {source}.", markup=False)
    if dag.description:
        console.print(dag.description, markup=False)
    console.print(f"inputs: {', '.join(plan.inputs) or '(none)'}", markup=False)
    console.print(f"outputs: {', '.join(plan.outputs)}", markup=False)

    def fn_name(fn: Callable[..., object]) -> str:
        return getattr(fn, "__name__", repr(fn))

    def describe(node: object) -> str:
        if isinstance(node, LLMNode):
            extra = f", tools: {', '.join(t.name for t in node.tools)}" if node.tools else ""
            return f"model {node.model}, max_tokens {node.max_tokens}{extra}"
        if isinstance(node, ToolNode):
            return f"{fn_name(node.fn)}(){' inline' if node.inline else ''}"
        if isinstance(node, EmbedNode):
            return f"model {node.model}, embeddings"
        if isinstance(node, MapNode):
            return f"over {node.over.node_id}: {node.body.kind} {describe(node.body)}"
        if isinstance(node, RouteNode):
            branches = ", ".join(
                f"{key} → {getattr(value, 'node_id', repr(value))}"
                for key, value in node.branches.items()
            )
            return f"{fn_name(node.fn)}() picks: {branches}"
        if isinstance(node, ReviewNode):
            return f"a person reviews {getattr(node.value, 'node_id', repr(node.value))}"
        return ""

    nodes = Table(title="nodes", title_justify="left")
    for name in ("id", "kind", "what", "after"):
        nodes.add_column(name, overflow="fold")
    for node_id in plan.order:
        node = plan.nodes.get(node_id)
        if node is None or isinstance(node, InputNode):
            continue
        after = sorted({ref.node_id for ref in node.refs()} - {"item", "index"})
        nodes.add_row(node.id, str(node.kind), describe(node), ", ".join(after))
    console.print(nodes)

    models = Table(title="models", title_justify="left")
    for name in ("alias", "provider", "model", "fallbacks", "$/Mtok in", "$/Mtok out"):
        models.add_column(name, overflow="fold")
    for alias in sorted(_reachable_models(plan.models, cfg)):
        model = cfg.models[alias]
        used = "" if alias in plan.models else " (fallback)"
        models.add_row(
            alias + used,
            model.provider,
            model.model,
            ", ".join(model.fallbacks),
            f"{model.input_usd_per_mtok:g}",
            f"{model.output_usd_per_mtok:g}",
        )
    console.print(models)


def _reachable_models(used: frozenset[str], cfg: Config) -> set[str]:
    seen: set[str] = set()
    todo = [alias for alias in used if alias in cfg.models]
    while todo:
        alias = todo.pop()
        if alias not in seen:
            seen.add(alias)
            todo.extend(f for f in cfg.models[alias].fallbacks if f in cfg.models)
    return seen
