"""The bench report's tables, built once and shown on a terminal (rich) and in report.html."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["ReportTable", "headline", "print_report", "report_tables"]


@dataclass(frozen=True, slots=True)
class ReportTable:
    """A titled table of text cells; ``left`` columns are text, the others numbers."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    left: int = 1  # how many leading columns are text (left-aligned)


def _ms(summary: dict[str, Any]) -> str:
    if not summary or not summary.get("count"):
        return "-"
    return "/".join(f"{summary[k]:,.0f}" for k in ("p50", "p90", "p99", "max"))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def headline(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures a reader looks at first, in order."""
    req, setup = report["requests"], report["setup"]
    cost, tokens = report["cost_usd"], report["tokens"]
    status = ", ".join(f"{k} {v:,}" for k, v in sorted(req["by_status"].items())) or "-"
    rows = [
        (
            "arrivals",
            f"{setup['arrivals']} for {setup['duration_s']:g} s (warm-up {setup['warmup_s']:g} s)",
        ),
        (
            "offered / completed",
            f"{req['offered']:,} / {req['completed']:,} ({status}); "
            f"unfinished {req['unfinished']:,}",
        ),
        ("offered rate", f"{req['offered_per_s']:,.2f} /s"),
        (
            "completed rate",
            f"{req['completed_per_s']:,.2f} /s (steady {req['steady_completed_per_s']:,.2f} /s)",
        ),
        ("goodput (ok, steady)", f"{req['goodput_per_s']:,.2f} /s"),
        ("latency p50/p90/p99/max ms", _ms(report["latency_ms"]["end_to_end"])),
        ("tokens per request", f"{tokens['per_request'] or 0:,.1f}"),
        ("cost per 1,000 records", f"${cost['per_1000_records'] or 0:,.4f}"),
    ]
    if "emulator" in report:
        emu = report["emulator"]
        rows.append(
            (
                "emulator counts",
                f"accepted {emu['accepted']:,}, 429 {emu['limited']:,}, "
                f"5xx {emu['errors']:,}, tokens {emu['tokens']:,}",
            )
        )
    return rows


def _providers(report: dict[str, Any]) -> ReportTable:
    rows = []
    for p in report.get("providers", []):
        wait = p["limiter_wait_ms"]
        rows.append(
            (
                f"{p['provider']}/{p['model']}",
                f"{p['calls']:,}",
                f"{p['rate_limited']:,}",
                f"{p['retries']:,}",
                f"{p['errors']:,}",
                f"{p['steady_calls_per_s']:,.2f}",
                _pct(p["utilisation_requests"]),
                _pct(p["utilisation_tokens"]),
                _ms(p["call_latency_ms"]),
                "-" if not wait.get("count") else f"{wait['p50']:,.0f}/{wait['p99']:,.0f}",
            )
        )
    columns = ("provider/model", "calls", "429s", "retries", "errors", "calls/s", "RPM util.",
               "TPM util.", "call p50/p90/p99/max ms", "limiter wait p50/p99 ms")  # fmt: skip
    return ReportTable("per provider/model", columns, tuple(rows))


def _nodes(report: dict[str, Any]) -> ReportTable:
    rows = []
    for name, node in sorted(report["latency_ms"].get("per_node", {}).items()):
        t = node["time_ms"]
        rows.append(
            (
                name,
                f"{node['runs']:,}",
                f"{node['calls']:,}",
                _ms(node["latency_ms"]),
                *(f"{t[k]:,.1f}" for k in ("queue_wait", "limiter_wait", "backoff", "provider")),
            )
        )
    columns = ("node", "runs", "calls", "p50/p90/p99/max ms", "queue ms", "limiter ms",
               "back-off ms", "provider ms")  # fmt: skip
    return ReportTable("per node (mean time per run in each stage)", columns, tuple(rows))


def _errors(report: dict[str, Any]) -> ReportTable:
    errors = report["errors"]
    rows = [
        (where, kind, f"{count:,}")
        for where, key in (("requests", "requests_by_type"), ("attempts", "attempts_by_type"))
        for kind, count in sorted(errors.get(key, {}).items())
    ]
    return ReportTable("errors by type", ("where", "error type", "count"), tuple(rows), left=2)


def report_tables(report: dict[str, Any]) -> list[ReportTable]:
    """The tables after the headline: providers, nodes and errors (those with rows)."""
    tables = [_providers(report), _nodes(report), _errors(report)]
    return [t for t in tables if t.rows]


def print_report(console: Console, report: dict[str, Any], directory: str) -> None:
    table = Table(title=f"fanout bench: {report['setup'].get('dag')}", show_header=False)
    table.add_column("figure")
    table.add_column("value", overflow="fold")
    for key, value in headline(report):
        table.add_row(key, value)
    console.print(table)
    for data in report_tables(report):
        shown = Table(title=data.title)
        for i, column in enumerate(data.columns):
            shown.add_column(column, justify="left" if i < data.left else "right")
        for row in data.rows:
            shown.add_row(*row)
        console.print(shown)
    console.print(f"report: {directory}/report.json, report.html and PNG plots", soft_wrap=True)
