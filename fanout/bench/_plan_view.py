"""A prediction (and its check against a bench report) on a terminal."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from fanout.bench._check import CheckRow
from fanout.bench._plan import Prediction

__all__ = ["print_check", "print_prediction"]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.1f} h"


def print_prediction(console: Console, p: Prediction) -> None:
    table = Table(title=f"fanout plan: {p.dag} · {p.records:,} records", show_header=False)
    table.add_column("figure")
    table.add_column("value", overflow="fold")
    b = p.binding
    rows = [
        ("throughput", f"{p.throughput_per_s:,.2f} records/s ({p.throughput_per_s * 3600:,.0f}/h)"),
        ("wall time", _duration(p.wall_time_s)),
        ("binding constraint", f"{b.kind} · {b.where}: {b.detail}"),
        ("latency of one request", "-" if p.latency_ms is None else f"{p.latency_ms:,.0f} ms"),
        ("tokens per record", f"{p.tokens_per_record:,.1f}"),
        ("cost", f"${p.cost_usd:,.4f} (${p.cost_usd_per_record * 1000:,.4f} per 1,000 records)"),
        ("DAG shape from", p.shape_source),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    constraints = Table(title="ceilings, lowest first")
    for col in ("constraint", "where", "records/s", "from"):
        constraints.add_column(col, justify="right" if col == "records/s" else "left")
    for c in p.constraints:
        constraints.add_row(c.kind, c.where, f"{c.records_per_s:,.2f}", c.detail)
    console.print(constraints)
    console.print("to halve the time:")
    for step in p.halve or ["nothing listed: no ceiling is below twice the throughput"]:
        console.print(f"  - {step}", soft_wrap=True)
    for note in p.notes:
        console.print(f"note: {note}", soft_wrap=True)


def print_check(console: Console, rows: Sequence[CheckRow], report_dir: str) -> None:
    table = Table(title=f"plan vs bench ({report_dir})")
    for col in ("figure", "predicted", "measured", "error", "note"):
        table.add_column(col, justify="left" if col in ("figure", "note") else "right")
    for row in rows:
        err = row.error
        table.add_row(
            row.figure,
            "-" if row.predicted is None else f"{row.predicted:,.4g}",
            "-" if row.measured is None else f"{row.measured:,.4g}",
            "-" if err is None else f"{err:+.1%}",
            row.note,
        )
    console.print(table)
