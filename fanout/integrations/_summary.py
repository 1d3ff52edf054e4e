"""A batch job's progress line and summary, as a scheduler shows them (no scheduler needed)."""

from __future__ import annotations

from fanout.batch import JobStats

__all__ = ["progress_line", "summary", "summary_markdown"]


def progress_line(stats: JobStats) -> str:
    """One log line: records done of the total, by outcome, spend."""
    total = f"/{stats.total}" if stats.total is not None else ""
    return (
        f"fanout: {stats.records + stats.skipped}{total} records · ok {stats.ok} · "
        f"errors {stats.errors} · in flight {stats.in_flight} · skipped (done before) "
        f"{stats.skipped} · ${stats.total_cost_usd:.6f}"
    )


def summary(stats: JobStats, *, attempt: int) -> dict[str, object]:
    """The job's outcome as plain values (a task's return value, an artifact's rows)."""
    return {
        "output": str(stats.output_path),
        "attempt": attempt,
        "resumed": stats.resumed,
        "records": stats.records,
        "skipped": stats.skipped,
        "ok": stats.ok,
        "failed": dict(stats.failed),
        "dead_letters": stats.dead_letters,
        "input_tokens": stats.input_tokens,
        "output_tokens": stats.output_tokens,
        "cost_usd": stats.cost_usd,
        "spent_before_usd": stats.spent_before_usd,
        "total_cost_usd": stats.total_cost_usd,
        "wall_time_s": round(stats.wall_time_s, 3),
    }


def summary_markdown(stats: JobStats, *, attempt: int) -> str:
    """The summary as a Markdown table (a Prefect artifact)."""
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary(stats, attempt=attempt).items())
    return f"# fanout batch job\n\n| what | value |\n| --- | --- |\n{rows}\n"
