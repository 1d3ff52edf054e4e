"""The live progress of a job: a bar on a terminal, a plain line every few seconds otherwise.

On a terminal the line is fitted to its width: fields are dropped by priority (the
count, the rate and the ETA last), so an 80-column terminal still shows where the
job stands and a wide one shows everything.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console, ConsoleOptions, RenderResult
from rich.progress_bar import ProgressBar
from rich.table import Table

if TYPE_CHECKING:
    from rich.live import Live

    from fanout.batch import JobStats

__all__ = ["ProgressLine", "ProgressReporter", "make_console"]

LOG_EVERY_S = 5.0
RATE_WINDOW_S = 3.0  # request rates are averaged over this long: a snapshot's gap is noise
_BAR_MIN, _BAR_MAX = 10, 40
_SEP = " · "
_BAR_KEEP = 4  # the bar's priority among the fields (see _details)


def make_console(*, stderr: bool = False) -> Console:
    # markup=False: record keys, outputs and errors are data, not rich markup.
    console = Console(stderr=stderr, highlight=False, markup=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # a pipe or a log file: wide tables are not wrapped into columns
    return console


@dataclass(frozen=True, slots=True)
class _Field:
    text: str
    keep: int  # lower: dropped later when the line is too narrow


def _clock(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _eta(stats: JobStats) -> float | None:
    remaining = stats.remaining
    if remaining is None or stats.records_per_s <= 0:
        return None
    return remaining / stats.records_per_s


def _rates(stats: JobStats, previous: JobStats | None) -> list[_Field]:
    """``sim/sim-small 2,950/3,000 rpm`` per limiter: requests granted per minute since the
    last snapshot, against the limit it paces to (those with a limit first)."""
    if previous is None or not stats.limits:
        return []
    # between the readings of the limits, not of the snapshots: on Ray they are polled
    # (once a second) apart from the snapshots, and a stale reading would show 0 then 2x
    now = stats.limits_at_s if stats.limits_at_s is not None else stats.wall_time_s
    then = previous.limits_at_s if previous.limits_at_s is not None else previous.wall_time_s
    elapsed = now - then
    if elapsed <= 0:
        return []
    before = {s.name: s.granted for s in previous.limits}
    parts = []
    for state in stats.limits:
        per_min = (state.granted - before.get(state.name, 0)) / elapsed * 60
        limit = state.configured_requests_per_min or state.requests_per_min
        rate = f"{state.name} {per_min:,.0f}"
        parts.append(_Field(f"{rate}/{limit:,.0f} rpm", 5) if limit else _Field(f"{rate} rpm", 7))
    return sorted(parts, key=lambda f: f.keep)


def _outages(stats: JobStats) -> list[_Field]:
    """``sim/sim-small DOWN since 14:02:11 (3:05, ProviderConnectionError)``: its records
    wait, and the job stops once it has been down --max-outage."""
    fields = []
    for outage in stats.outages:
        cause = outage.cause.split(":", 1)[0] or "failing"
        since = outage.since.astimezone().strftime("%H:%M:%S")
        fields.append(
            _Field(f"{outage.name} DOWN since {since} ({_clock(outage.down_s)}, {cause})", 0)
        )
    return fields


def _batches(stats: JobStats) -> list[_Field]:
    """Batch mode: ``batches 2 in_progress 1 completed · lines 40,000/100,000`` (answered of
    submitted) and the calls queued for the next batch."""
    batches = stats.batches
    if batches is None:
        return []
    states = " ".join(f"{n} {state}" for state, n in sorted(batches.batches.items()))
    fields = [
        _Field(f"batches {states or '-'}", 4),
        _Field(f"lines {batches.lines_answered:,}/{batches.lines_submitted:,}", 5),
    ]
    if batches.buffered:
        fields.append(_Field(f"queued {batches.buffered:,}", 8))
    return fields


def _count(stats: JobStats) -> str:
    done = f"{stats.records:,}"
    if stats.total is not None:
        done += f"/{stats.total - stats.skipped:,}"
    return done


def _details(stats: JobStats, previous: JobStats | None) -> list[_Field]:
    """Everything after the bar, in display order, each with its priority."""
    eta = _eta(stats)
    fields = [
        *_outages(stats),
        _Field(f"{stats.records_per_s:,.1f}/s", 1),
        _Field(f"eta {_clock(eta)}" if eta is not None else "eta -", 2),
        _Field(f"ok {stats.ok:,}", 7),
        _Field(f"errors {stats.errors:,}", 3 if stats.errors else 8),
    ]
    if stats.waiting:
        fields.append(_Field(f"waiting for review {stats.waiting:,}", 4))
    fields += _batches(stats)
    fields += _rates(stats, previous)
    fields += [
        _Field(f"{stats.input_tokens + stats.output_tokens:,} tok", 10),
        _Field(f"${stats.total_cost_usd:.4f}", 9),  # a resumed job's whole spend
        _Field(_clock(stats.wall_time_s), 6),
    ]
    if stats.where and stats.where != "this process":  # a cluster: which, and its workers
        fields.append(_Field(f"on {stats.where}", 11))
    return fields


class ProgressLine:
    """One snapshot as a line that fits the width it is given (a rich renderable)."""

    def __init__(self, stats: JobStats, previous: JobStats | None = None) -> None:
        self.stats = stats
        self.previous = previous

    def fit(self, width: int) -> tuple[str, int, str]:
        """The text before the bar, the bar's width (0: no bar) and the text after it.

        While the line is too wide, the field of least priority goes first; the bar
        ranks below the rate, the ETA, errors and waiting records, above the rest.
        """
        head = f"records {_count(self.stats)}"
        kept = _details(self.stats, self.previous)
        bar = self.stats.total is not None
        while True:
            tail = _SEP.join(f.text for f in kept)
            if bar:
                room = width - len(head) - (len(tail) + 2 if tail else 1)
                if room >= _BAR_MIN:
                    return head, min(room, _BAR_MAX), tail
            elif len(head) + (len(_SEP) + len(tail) if tail else 0) <= width:
                return head, 0, tail
            if not kept and not bar:
                return head[:width], 0, ""  # too narrow even for the count
            worst = max(kept, key=lambda f: f.keep, default=None)
            if bar and (worst is None or worst.keep <= _BAR_KEEP):
                bar = False
            elif worst is not None:
                kept.remove(worst)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        head, bar_width, tail = self.fit(options.max_width)
        if not bar_width:
            yield head + (_SEP + tail if tail else "")
            return
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(width=bar_width, no_wrap=True)
        grid.add_column(no_wrap=True)
        total = self.stats.total - self.stats.skipped if self.stats.total is not None else None
        grid.add_row(head, ProgressBar(total=total, completed=self.stats.records), tail)
        yield grid

    def plain(self) -> str:
        """The whole line, for logs: ``progress: 20/20 records · ok 20 · errors 0 · ...``."""
        details = _details(self.stats, self.previous)
        down = [f.text for f in details if f.keep == 0]
        rate, eta, *rest = [f.text for f in details if f.keep != 0]
        return _SEP.join([f"progress: {_count(self.stats)} records", *down, *rest, rate, eta])


class ProgressReporter:
    """A live line on a terminal; otherwise a plain line for the first snapshot, then every 5 s.

    Shows records done of the total (when known), the rate, the ETA, errors, records
    waiting for a person's review, tokens, cost so far, in batch mode the provider
    batches by state and their lines answered, and, per provider/model, the request rate
    now against its limit (from the limiters' grant counters between two snapshots).
    """

    def __init__(self, console: Console, *, log_every_s: float = LOG_EVERY_S) -> None:
        self.console = console
        self.last: JobStats | None = None
        self._log_every_s = log_every_s
        self._logged_at = -log_every_s
        self._live: Live | None = None
        self._recent: deque[JobStats] = deque()

    def __enter__(self) -> ProgressReporter:
        if self.console.is_terminal:
            from rich.live import Live

            self._live = Live(console=self.console, transient=True, refresh_per_second=4)
            self._live.start()
        return self

    def __call__(self, stats: JobStats) -> None:
        self.last = stats
        recent = self._recent
        while len(recent) > 1 and stats.wall_time_s - recent[1].wall_time_s >= RATE_WINDOW_S:
            recent.popleft()
        line = ProgressLine(stats, recent[0] if recent else None)
        recent.append(stats)
        if self._live is not None:
            self._live.update(line)
        elif stats.wall_time_s - self._logged_at >= self._log_every_s:
            self._logged_at = stats.wall_time_s
            self.console.print(line.plain(), markup=False, soft_wrap=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()
