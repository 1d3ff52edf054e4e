"""The live progress of a job: a bar on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import os
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from fanout.batch import JobStats

__all__ = ["ProgressReporter", "make_console"]

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
