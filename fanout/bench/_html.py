"""``report.html``: one self-contained page with what the terminal shows and the plots inline."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fanout.bench._plots import PLOTS
from fanout.bench._table import ReportTable, report_tables

__all__ = ["HTML_FILE", "write_html"]

HTML_FILE = "report.html"
_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}"
    "figure{margin:1em 0}img{max-width:100%}"
    "pre{background:#f6f6f6;padding:8px;font-size:12px}"
)


def _pairs(pairs: Sequence[tuple[str, object]]) -> str:
    return "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in pairs
    )


def _table(data: ReportTable) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in data.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td{"" if i < data.left else " class=n"}>{html.escape(cell)}</td>'
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in data.rows
    )
    return f"<h2>{html.escape(data.title)}</h2><table><tr>{head}</tr>{body}</table>"


def write_html(report: dict[str, Any], directory: Path, headline: list[tuple[str, str]]) -> Path:
    """Write ``report.html`` into ``directory``, embedding the PNGs there as data URIs."""
    images = []
    for name, file in PLOTS.items():
        path = directory / file
        if path.exists():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            images.append(f'<figure><img alt="{name}" src="data:image/png;base64,{data}"></figure>')
    tables = "".join(_table(t) for t in report_tables(report))
    setup = html.escape(json.dumps(report["setup"], indent=2))
    dag = html.escape(str(report["setup"].get("dag")))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fanout bench: {dag}</title>
<style>{_STYLE}</style></head>
<body><h1>fanout bench · {dag}</h1>
<table>{_pairs(headline)}</table>
{tables}
<h2>Plots</h2>{"".join(images)}
<h2>Setup</h2><pre>{setup}</pre></body></html>
"""
    path = directory / HTML_FILE
    path.write_text(page, encoding="utf-8")
    return path
