"""Terminal output of the CLI: progress while a job runs, summaries and tables after."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from fanout.batch import JobStats
    from fanout.config import Config
    from fanout.dag import DAG, Plan

__all__ = [
    "ProgressReporter",
    "make_console",
    "print_examples",
    "print_plan",
    "print_summary",
]

LOG_EVERY_S = 5.0


def make_console(*, stderr: bool = False) -> Console:
    # markup=False: record keys, outputs and errors are data, not rich markup.
    return Console(stderr=stderr, highlight=False, markup=False)


class ProgressReporter:
    """A live bar on a terminal; otherwise a plain line for the first record, then every 5 s."""

    def __init__(self, console: Console, total: int | None) -> None:
        self.console = console
        self.total = total
        self.last: JobStats | None = None
        self._logged_at = 0.0
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> ProgressReporter:
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("records"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("job", total=self.total, detail="")
        return self

    def __call__(self, stats: JobStats) -> None:
        first, self.last = self.last is None, stats
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=stats.records, detail=_brief(stats))
        elif first or stats.wall_time_s - self._logged_at >= LOG_EVERY_S:
            self._logged_at = stats.wall_time_s
            self.console.print(
                f"progress: {stats.records} done · {_brief(stats)} · {stats.wall_time_s:.0f} s",
                markup=False,
            )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()


def _brief(stats: JobStats) -> str:
    return (
        f"ok {stats.ok} · errors {stats.errors} · {stats.records_per_s:.1f}/s · "
        f"${stats.cost_usd:.4f}"
    )


def print_summary(console: Console, dag_name: str, stats: JobStats) -> None:
    table = Table(title=f"fanout run: {dag_name}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("records", f"{stats.records:,}")
    table.add_row("ok", f"{stats.ok:,}")
    for status, count in sorted(stats.failed.items()):
        table.add_row(status, f"{count:,}")
    table.add_row("input tokens", f"{stats.input_tokens:,}")
    table.add_row("output tokens", f"{stats.output_tokens:,}")
    table.add_row("cost", f"${stats.cost_usd:.6f}")
    table.add_row("wall time", f"{stats.wall_time_s:.2f} s")
    table.add_row("records/s", f"{stats.records_per_s:.1f}")
    table.add_row("output", str(stats.output_path))
    console.print(table)


def print_examples(console: Console, results: Path, limit: int = 5) -> None:
    """A few result rows: some urgent, some normal, and an error if there is one."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]  # pyarrow ships no type hints

    columns = ["key", "status", "output_label", "output_summary", "error_message"]
    rows: list[dict[str, str | None]] = pq.read_table(results, columns=columns).to_pylist()
    picked: list[dict[str, str | None]] = []
    for want, count in (('"urgent"', 2), ('"normal"', 2), (None, 1)):
        matches = [r for r in rows if r["output_label"] == want and r not in picked]
        picked.extend(matches[:count])
    table = Table(title="example rows", title_justify="left")
    for name in ("key", "status", "label", "summary / error"):
        table.add_column(name, overflow="fold")
    for row in picked[:limit]:
        label = json.loads(row["output_label"]) if row["output_label"] else ""
        summary = json.loads(row["output_summary"]) if row["output_summary"] else None
        table.add_row(
            row["key"] or "", row["status"] or "", str(label), summary or row["error_message"] or ""
        )
    console.print(table)


def print_plan(console: Console, dag: DAG, plan: Plan, cfg: Config, source: str) -> None:
    from fanout.dag import InputNode, LLMNode, MapNode, RouteNode, ToolNode

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
        if isinstance(node, MapNode):
            return f"over {node.over.node_id}: {node.body.kind} {describe(node.body)}"
        if isinstance(node, RouteNode):
            branches = ", ".join(
                f"{key} → {getattr(value, 'node_id', repr(value))}"
                for key, value in node.branches.items()
            )
            return f"{fn_name(node.fn)}() picks: {branches}"
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
