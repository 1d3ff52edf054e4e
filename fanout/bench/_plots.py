"""PNG plots of a bench report: throughput and limit over time, latency CDF, time per node."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["PLOTS", "write_plots"]

PLOTS = {
    "throughput": "throughput.png",
    "latency_cdf": "latency_cdf.png",
    "node_time": "node_time.png",
}

_STACK = (
    ("queue_wait", "queue wait", "#bbbbbb"),
    ("limiter_wait", "rate-limit wait", "#e07b39"),
    ("backoff", "retry back-off", "#c03d3d"),
    ("provider", "provider call", "#3a78b5"),
)


def write_plots(
    report: dict[str, Any], latencies_ms: Sequence[float], directory: Path
) -> list[Path]:
    """Write the three PNGs into ``directory``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    title = f"{report['setup'].get('dag', '')} · {report['setup'].get('arrivals', '')}"
    timeline = report["timeline"]

    # Legends sit to the right of the axes and limit/pace lines are thin, pale and drawn
    # under the data, so neither hides what was measured.
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, dpi=90)
    seconds = timeline["second"]
    top.step(seconds, timeline["offered"], where="post", label="offered", color="#999999")
    top.step(seconds, timeline["completed"], where="post", label="completed", color="#3a78b5")
    top.step(seconds, timeline["ok"], where="post", label="ok", color="#2e9b4f", linestyle=":")
    top.set_ylabel("requests / s")
    top.set_title(title, fontsize=10)
    top.legend(**_OUTSIDE)
    for i, (name, calls) in enumerate(sorted(timeline["calls"].items())):
        color = f"C{i}"
        bottom.step(
            seconds[: len(calls)], calls, where="post", label=f"{name} accepted", color=color,
            zorder=3,
        )  # fmt: skip
        limit = timeline["limit_calls_per_s"].get(name)
        if limit:
            bottom.axhline(limit, color=color, linestyle="--", linewidth=0.8, alpha=0.6,
                           zorder=1, label=f"{name} limit")  # fmt: skip
    for i, (name, points) in enumerate(sorted(timeline["pace_calls_per_s"].items())):
        xs = [p[0] for p in points if p[1] is not None]
        ys = [p[1] for p in points if p[1] is not None]
        if xs:
            bottom.plot(xs, ys, color=f"C{i}", linestyle=":", linewidth=0.8, alpha=0.6, zorder=2,
                        label=f"{name} pace")  # fmt: skip
    duration = report["setup"]["duration_s"]
    for ax in (top, bottom):
        ax.axvline(duration, color="black", linewidth=0.5)
        ax.axvspan(0, report["setup"]["warmup_s"], color="#eeeeee", zorder=0)
    bottom.set_ylabel("provider calls / s")
    bottom.set_xlabel("seconds since the load started (grey: warm-up; line: end of arrivals)")
    if timeline["calls"]:
        bottom.legend(**_OUTSIDE)
    fig.tight_layout()
    paths.append(_save(fig, directory / PLOTS["throughput"]))

    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=90)
    values = sorted(latencies_ms)
    if values:
        ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], color="#3a78b5",
                zorder=3)  # fmt: skip
        # the report's own quantiles, so the labels read as the tables do
        quantiles = report["latency_ms"]["end_to_end"]
        for q, key, style in ((0.5, "p50", ":"), (0.9, "p90", "--"), (0.99, "p99", "-.")):
            ax.axhline(q, color="#999999", linestyle=style, linewidth=0.8, zorder=1)
            if quantiles.get(key) is not None:
                ax.plot([quantiles[key]], [q], marker="o", markersize=3, color="#555555")
                ax.text(0.01, q + 0.015, f"{key} {quantiles[key]:,.0f} ms", fontsize=8,
                        color="#555555", transform=ax.get_yaxis_transform())  # fmt: skip
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("share of requests")
    ax.set_title(f"latency CDF · {len(values):,} requests", fontsize=10)
    fig.tight_layout()
    paths.append(_save(fig, directory / PLOTS["latency_cdf"]))

    nodes = report["latency_ms"].get("per_node", {})
    fig, ax = plt.subplots(figsize=(9, 0.6 * max(2, len(nodes)) + 1.2), dpi=90)
    names = sorted(nodes)
    left = [0.0] * len(names)
    for key, label, color in _STACK:
        widths = [float(nodes[n]["time_ms"][key]) for n in names]
        ax.barh(names, widths, left=left, label=label, color=color)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlabel("mean ms per node run (a map's calls add up)")
    ax.set_title("where time goes, per node", fontsize=10)
    ax.legend(**_OUTSIDE)
    fig.tight_layout()
    paths.append(_save(fig, directory / PLOTS["node_time"]))
    return paths


_OUTSIDE: dict[str, Any] = {
    "loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 7, "frameon": False,
}  # fmt: skip


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path)
    plt.close(fig)
    return path
