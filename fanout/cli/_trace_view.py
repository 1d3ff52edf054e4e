"""The traces commands' output: summary tables, one request's timeline."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from fanout.trace import CallStats, JobSummary, TraceListing, TraceSummary, TreeRow

__all__ = ["print_trace_list", "print_trace_summary", "print_trace_tree"]


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
    calls = (
        "#calls", "#errors", "#429s", "#retries", "#call p50/p95/p99 ms",
        "#wait p50/p95 ms", "#limiter wait ms",
    )  # fmt: skip
    money = ("#tokens in/out", "#cost")

    models = _table("per model", "model", "provider/model", "mode", *calls, *money)
    for m in summary.models:
        target = f"{m.provider or '?'}/{m.request_model or '?'}"
        models.add_row(m.model_alias or "", target, m.mode, *_call_cells(m.stats))
    console.print(models)

    nodes = _table("per node", "dag", "node", *calls, *money)
    for n in summary.nodes:
        nodes.add_row(n.dag_name, n.node_id or "", *_call_cells(n.stats))
    console.print(nodes)

    failed = [
        (f"model {m.model_alias or m.request_model} ({m.mode})", m.stats) for m in summary.models
    ]
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
    waits = (stats.wait_p50_ms, stats.wait_p95_ms)
    mean = stats.mean_limiter_wait_ms
    replayed = f" (+{stats.replayed:,} replayed)" if stats.replayed else ""
    return (
        f"{stats.calls:,}{replayed}",  # answered from a job's journal: not calls
        f"{stats.errors:,}",
        f"{stats.rate_limited:,}",
        f"{stats.retries:,}",
        "/".join(f"{q:.0f}" if q is not None else "-" for q in quantiles),
        "/".join(f"{q:.0f}" if q is not None else "-" for q in waits),
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


def print_trace_list(
    console: Console, listing: TraceListing, directory: str, *, as_json: bool = False
) -> None:
    """The requests, newest first: trace id, status, start, duration, calls, cost, key."""
    if as_json:
        for row in listing.rows:
            data = dataclasses.asdict(row)
            data["started"] = row.started.isoformat() if row.started else None
            console.out(json.dumps(data, ensure_ascii=False), highlight=False)
        return
    # A trace id is 32 characters and is what the reader copies: never folded. The start
    # time and the job fit on a wide terminal; the job only says something if several.
    wide = console.width >= 110
    several_jobs = len({row.job_id for row in listing.rows}) > 1
    columns = ["trace id", "status", "#took ms", "#calls", "#cost", "record key"]
    columns += ["started"] if wide else []
    columns += ["job"] if several_jobs else []
    table = Table(box=None, title=f"requests in {directory}", title_justify="left")
    for column in columns:
        number = column.startswith("#")
        table.add_column(
            column.removeprefix("#"),
            justify="right" if number else "left",
            no_wrap=column == "trace id",
            overflow="fold",
        )
    for row in listing.rows:
        cells = [
            row.trace_id,
            row.status,
            f"{row.duration_ms:,.0f}" if row.duration_ms is not None else "",
            f"{row.calls:,}",
            f"${row.cost_usd:.6f}",
            row.record_key or "",
        ]
        if wide:
            cells.append(row.started.strftime("%Y-%m-%d %H:%M:%S") if row.started else "")
        if several_jobs:
            cells.append(row.job_id)
        table.add_row(*cells)
    console.print(table)
    shown = len(listing.rows)
    more = f" (--limit {listing.matched} shows all)" if listing.matched > shown else ""
    console.print(
        f"{shown:,} of {listing.matched:,} requests{more}; "
        f"one as a timeline: fanout traces show {directory} TRACE_ID",
        soft_wrap=True,
    )
