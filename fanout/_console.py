"""Terminal output of the CLI: progress while a job runs, summaries and tables after."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from datetime import datetime
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
    from fanout.trace import CallStats, JobSummary, TraceSummary, TreeRow

__all__ = [
    "ProgressReporter",
    "make_console",
    "print_examples",
    "print_plan",
    "print_summary",
    "print_trace_summary",
    "print_trace_tree",
]

LOG_EVERY_S = 5.0


def make_console(*, stderr: bool = False) -> Console:
    # markup=False: record keys, outputs and errors are data, not rich markup.
    console = Console(stderr=stderr, highlight=False, markup=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # a pipe or a log file: wide tables are not wrapped into columns
    return console


class ProgressReporter:
    """A live bar on a terminal; otherwise a plain line for the first snapshot, then every 5 s.

    Shows records done of the total (when known), the rate, the ETA, errors,
    tokens, cost so far and, per provider/model, the request rate now against its
    limit (from the limiters' grant counters between two snapshots).
    """

    def __init__(self, console: Console, *, log_every_s: float = LOG_EVERY_S) -> None:
        self.console = console
        self.last: JobStats | None = None
        self._log_every_s = log_every_s
        self._logged_at = -log_every_s
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
                TimeRemainingColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("records"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[detail]}"),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("job", total=None, detail="")
        return self

    def __call__(self, stats: JobStats) -> None:
        previous, self.last = self.last, stats
        detail = _brief(stats, previous)
        if self._progress is not None and self._task is not None:
            total = stats.total - stats.skipped if stats.total is not None else None
            self._progress.update(self._task, completed=stats.records, total=total, detail=detail)
        elif stats.wall_time_s - self._logged_at >= self._log_every_s:
            self._logged_at = stats.wall_time_s
            done = f"{stats.records:,}"
            if stats.total is not None:
                done += f"/{stats.total - stats.skipped:,}"
            eta = _eta(stats)
            self.console.print(
                f"progress: {done} records · {detail} · {stats.wall_time_s:.0f} s"
                + (f" · eta {eta:.0f} s" if eta is not None else ""),
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


def _eta(stats: JobStats) -> float | None:
    remaining = stats.remaining
    if remaining is None or stats.records_per_s <= 0:
        return None
    return remaining / stats.records_per_s


def _rates(stats: JobStats, previous: JobStats | None) -> str:
    """``model 2,950/3,000 rpm`` per limiter: requests granted per minute since the last
    snapshot, against the limit it paces to."""
    if previous is None or not stats.limits:
        return ""
    elapsed = stats.wall_time_s - previous.wall_time_s
    if elapsed <= 0:
        return ""
    before = {s.name: s.granted for s in previous.limits}
    parts = []
    for state in stats.limits:
        per_min = (state.granted - before.get(state.name, 0)) / elapsed * 60
        limit = state.configured_requests_per_min or state.requests_per_min
        parts.append(
            f"{state.name} {per_min:,.0f}/{limit:,.0f} rpm"
            if limit
            else f"{state.name} {per_min:,.0f} rpm"
        )
    return " · ".join(parts)


def _brief(stats: JobStats, previous: JobStats | None = None) -> str:
    text = (
        f"ok {stats.ok:,} · errors {stats.errors:,} · {stats.records_per_s:,.1f}/s · "
        f"{stats.input_tokens + stats.output_tokens:,} tok · ${stats.cost_usd:.4f}"
    )
    rates = _rates(stats, previous)
    return f"{text} · {rates}" if rates else text


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
    table.add_row("wall time", f"{stats.wall_time_s:.2f} s")
    table.add_row("records/s", f"{stats.records_per_s:.1f}")
    table.add_row("output", str(stats.output_path))
    if stats.dead_letters:
        table.add_row("dead letters", f"{stats.dead_letters:,} in {stats.dead_letter_path}")
    console.print(table)


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
    from fanout.dag import InputNode, LLMNode, MapNode, ReviewNode, RouteNode, ToolNode

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


# -- traces ---------------------------------------------------------------------------


def print_trace_summary(console: Console, summary: TraceSummary, *, as_json: bool = False) -> None:
    """Tables per model, per node and per job (or the same figures as one JSON object)."""
    if as_json:
        console.out(json.dumps(_summary_dict(summary), indent=2), highlight=False)
        return
    parts, logs = summary.parts, summary.segments
    open_logs = f" + {logs} open log segment{'s' if logs != 1 else ''}" if logs else ""
    console.print(
        f"traces in {summary.directory}: {summary.spans:,} spans "
        f"({parts} part{'s' if parts != 1 else ''}{open_logs})",
        soft_wrap=True,
    )
    calls = ("#calls", "#errors", "#429s", "#retries", "#p50/p95/p99 ms", "#limiter wait ms")
    money = ("#tokens in/out", "#cost")

    models = _table("per model", "model", "provider/model", *calls, *money)
    for m in summary.models:
        target = f"{m.provider or '?'}/{m.request_model or '?'}"
        models.add_row(m.model_alias or "", target, *_call_cells(m.stats))
    console.print(models)

    nodes = _table("per node", "dag", "node", *calls, *money)
    for n in summary.nodes:
        nodes.add_row(n.dag_name, n.node_id or "", *_call_cells(n.stats))
    console.print(nodes)

    failed = [(f"model {m.model_alias or m.request_model}", m.stats) for m in summary.models]
    failed += [(f"node {n.dag_name}.{n.node_id}", n.stats) for n in summary.nodes]
    failed = [(where, stats) for where, stats in failed if stats.errors_by_type]
    if failed:
        errors = _table("errors by type", "where", "error type", "#attempts")
        for where, stats in failed:
            for error_type, count in stats.errors_by_type.items():
                errors.add_row(where, error_type, f"{count:,}")
        console.print(errors)

    jobs = _table(
        "per job", "job", "#runs", "by status", "#unfinished", *money, "started", "#wall s"
    )
    for j in summary.jobs:
        jobs.add_row(
            j.job_id,
            f"{j.runs:,}",
            ", ".join(f"{status} {count:,}" for status, count in j.runs_by_status.items()),
            f"{j.unfinished:,}",
            f"{j.input_tokens:,}/{j.output_tokens:,}",
            f"${j.cost_usd:.4f}",
            j.first_start.strftime("%Y-%m-%d %H:%M:%S") if j.first_start else "",
            f"{j.wall_s:.1f}" if j.wall_s is not None else "",
        )
    console.print(jobs)


def _table(title: str, *columns: str) -> Table:
    """A titled table; a column named ``#name`` holds numbers (right-aligned)."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        number = column.startswith("#")
        name = column.removeprefix("#")
        table.add_column(name, justify="right" if number else "left", overflow="fold")
    return table


def _call_cells(stats: CallStats) -> tuple[str, ...]:
    quantiles = (stats.p50_ms, stats.p95_ms, stats.p99_ms)
    mean = stats.mean_limiter_wait_ms
    return (
        f"{stats.calls:,}",
        f"{stats.errors:,}",
        f"{stats.rate_limited:,}",
        f"{stats.retries:,}",
        "/".join(f"{q:.0f}" if q is not None else "-" for q in quantiles),
        f"{stats.limiter_wait_ms:,.0f}" + (f" (mean {mean:.1f})" if mean is not None else ""),
        f"{stats.input_tokens:,}/{stats.output_tokens:,}",
        f"${stats.cost_usd:.4f}",
    )


def _summary_dict(summary: TraceSummary) -> dict[str, object]:
    def plain(value: object) -> object:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, Path):
            return str(value)
        return value

    def as_dict(item: TraceSummary | JobSummary) -> dict[str, object]:
        return dataclasses.asdict(item, dict_factory=lambda kv: {k: plain(v) for k, v in kv})

    data = as_dict(summary)
    data["jobs"] = [as_dict(job) | {"wall_s": job.wall_s} for job in summary.jobs]
    return data


ERROR_CHARS = 160  # longer error messages are cut in the timeline


def print_trace_tree(console: Console, rows: list[TreeRow]) -> None:
    """One request as an indented timeline: offset from the run's start, duration, outcome."""
    if not rows:
        return
    first = rows[0]
    record = f" · record {first.record_key}" if first.record_key is not None else ""
    console.print(
        f"trace {first.trace_id} · job {first.job_id} · dag {first.dag_name}{record}",
        soft_wrap=True,
    )
    header = ["start ms", "took ms", "span", "status", "model/tool", "tokens in/out", "cost"]
    lines = [[*header, "error"]]
    for row in rows:
        lines.append(
            [
                f"+{row.offset_ms:,.1f}" if row.offset_ms is not None else "",
                f"{row.duration_ms:,.1f}" if row.duration_ms is not None else "",
                "  " * row.depth + _span_label(row),
                row.status,
                _model_or_tool(row),
                _tokens(row),
                f"${row.cost_usd:.6f}" if row.cost_usd is not None else "",
                _error(row),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {0, 1, 5, 6}  # numbers line up on the right
    for line in lines:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=False))
        ]
        console.print("  ".join([*cells, line[-1]]).rstrip(), soft_wrap=True)


def _span_label(row: TreeRow) -> str:
    label = row.span_name
    if row.map_index is not None:
        label += f"[{row.map_index}]"
    if row.record_type == "attempt" and row.attempt is not None:
        label += f" #{row.attempt}"
    if row.fallback_index:
        label += f" (fallback {row.fallback_index})"
    return label


def _model_or_tool(row: TreeRow) -> str:
    if row.record_type == "attempt" and not row.is_llm_call:
        return row.tool_name or ""
    if row.record_type == "attempt" and row.provider and row.request_model:
        return f"{row.model_alias or '?'} ({row.provider}/{row.request_model})"
    return row.model_alias or ""


def _tokens(row: TreeRow) -> str:
    if row.input_tokens is None and row.output_tokens is None:
        return ""
    return f"{row.input_tokens or 0:,}/{row.output_tokens or 0:,}"


def _error(row: TreeRow) -> str:
    if row.error_type is None and row.error_message is None:
        return ""
    text = row.error_type or ""
    if row.http_status is not None:
        text += f" (HTTP {row.http_status})"
    if row.error_message:
        text += f": {row.error_message}"
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"
