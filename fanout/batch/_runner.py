"""The records of a job in flight: a window of them on an engine, each one's row written.

:class:`Job` is what :func:`fanout.batch.run_file` runs in one process, and what each
worker runs for its shard of a job on Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fanout.batch._batch_lines import BatchStats
from fanout.batch._manifest import JobState
from fanout.batch._readers import Record, count_records
from fanout.batch._review import record_run_id
from fanout.batch._writer import DEAD_LETTER_DIR, ResultWriter
from fanout.clock import Clock
from fanout.config import Config
from fanout.dag import DAG, Plan, check_input_types
from fanout.errors import ConfigError, ProviderOutage
from fanout.limits import LimiterState
from fanout.run import Outage, RunResult
from fanout.types import RunStatus

__all__ = ["INVALID_RECORD", "Job", "JobStats", "Runner", "close_records"]

_log = logging.getLogger(__name__)

INVALID_RECORD = "InvalidRecord"
"""``error_type`` of a record that could not be run: malformed, or missing an input."""


class Runner(Protocol):
    """What a job needs of an engine: :class:`fanout.Engine` (one process) and
    :class:`fanout.distributed.RayEngine` (a Ray cluster) both are one."""

    @property
    def clock(self) -> Clock: ...

    @property
    def config(self) -> Config: ...

    def validate(self, dag: DAG) -> Plan: ...

    def open_traces(self) -> None: ...

    def use_journal(self, directory: str | Path) -> None: ...

    def limiter_states(self) -> list[LimiterState]: ...

    def outages(self) -> list[Outage]: ...

    async def run(
        self,
        dag: DAG,
        inputs: Mapping[str, object],
        *,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        deadline_s: float | None = None,
        request_id: str | None = None,
        record_key: str | None = None,
        max_outage_s: float | None = None,
    ) -> RunResult: ...


@dataclass(frozen=True, slots=True)
class JobStats:
    """Where a job stands: records finished this run, by outcome, with usage and time.

    ``failed`` counts records by status (``error``, ``budget_exceeded``, ...);
    records that could not be parsed or lack an input count as ``error``.
    ``skipped``: records that already had a row from an earlier run (resumed).
    ``total``: the input's records, when cheap to know (``None`` for gzip).
    ``in_flight``: records running when this snapshot was taken. ``limits``: each
    provider/model limit's state (on Ray, the cluster-wide one), for rate-vs-limit
    progress. ``batches``: in batch mode, the provider batches by state and their lines.
    """

    output_path: Path
    records: int = 0
    ok: int = 0
    failed: Mapping[str, int] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    wall_time_s: float = 0.0
    in_flight: int = 0
    skipped: int = 0
    total: int | None = None
    dead_letters: int = 0
    resumed: bool = False
    limits: tuple[LimiterState, ...] = ()
    # the job's wall time when ``limits`` were read (on Ray they are polled: older)
    limits_at_s: float | None = None
    outages: tuple[Outage, ...] = ()  # providers down now: their records wait
    spent_before_usd: float = 0.0  # what earlier runs of this job spent (resumed)
    spent_before_tokens: int = 0
    where: str = ""  # what ran it: "this process", "Ray cluster at ..., 4 workers"
    batches: BatchStats | None = None  # batch mode: provider batches by state, lines answered
    detached: bool = False  # --detach: the job left its batches running and exited

    @property
    def total_cost_usd(self) -> float:
        """What the job has spent, this run and earlier ones (its budget counts this)."""
        return self.spent_before_usd + self.cost_usd

    @property
    def errors(self) -> int:
        """Records that did not end ``ok``, not counting those waiting for a review."""
        return sum(self.failed.values()) - self.waiting

    @property
    def waiting(self) -> int:
        """Records paused at a review step: a person decides, a later run resumes them."""
        return self.failed.get(RunStatus.WAITING_FOR_REVIEW, 0)

    @property
    def records_per_s(self) -> float:
        return self.records / self.wall_time_s if self.wall_time_s > 0 else 0.0

    @property
    def remaining(self) -> int | None:
        if self.total is None:
            return None
        return max(0, self.total - self.skipped - self.records)

    @property
    def dead_letter_path(self) -> Path:
        return self.output_path.parent / DEAD_LETTER_DIR


class _Tally:
    """The mutable counters behind :class:`JobStats` snapshots."""

    __slots__ = (
        "cost_usd",
        "failed",
        "in_flight",
        "input_tokens",
        "ok",
        "output_tokens",
        "records",
        "skipped",
        "total",
    )

    def __init__(self) -> None:
        self.records = 0
        self.ok = 0
        self.failed: dict[str, int] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0
        self.in_flight = 0
        self.skipped = 0
        self.total: int | None = None

    def add(self, status: str, result: RunResult | None = None) -> None:
        self.records += 1
        if status == RunStatus.OK:
            self.ok += 1
        else:
            self.failed[status] = self.failed.get(status, 0) + 1
        if result is not None:
            self.input_tokens += result.usage.input_tokens
            self.output_tokens += result.usage.output_tokens
            self.cost_usd += result.cost_usd


class Job:
    """One run of :func:`fanout.batch.run_file` (or of one shard of it on a worker): the
    window of records in flight, and their rows."""

    def __init__(
        self,
        engine: Runner,
        dag: DAG,
        plan: Plan,
        writer: ResultWriter,
        state: JobState,
        budget_usd: float | None,
        budget_tokens: int | None,
        deadline_s: float | None,
        max_outage_s: float | None = None,
    ) -> None:
        self.engine = engine
        self.max_outage_s = max_outage_s
        self.dag = dag
        self.plan = plan
        self.inputs = plan.inputs
        self.writer = writer
        self.state = state
        self.budget_usd = budget_usd
        self.budget_tokens = budget_tokens
        self.deadline_s = deadline_s
        self.tally = _Tally()
        # a DAG with review steps: the job's directory, and the decided records to resume
        self.reviews: tuple[Path, dict[str, str]] | None = None
        self.batch_stats: Callable[[], BatchStats] | None = None  # batch mode
        self.clock = engine.clock
        self.started = time.monotonic()

    def snapshot(self) -> JobStats:
        t = self.tally
        wall_s = time.monotonic() - self.started
        limits_age: Callable[[], float] | None = getattr(self.engine, "limits_age_s", None)
        spent = self.state.spent
        return JobStats(
            output_path=self.writer.results_dir,
            records=t.records,
            ok=t.ok,
            failed=dict(t.failed),
            input_tokens=t.input_tokens,
            output_tokens=t.output_tokens,
            cost_usd=t.cost_usd,
            wall_time_s=wall_s,
            in_flight=t.in_flight,
            skipped=t.skipped,
            total=t.total,
            dead_letters=self.writer.dead_letters + self.writer.buffered_dead_letters,
            resumed=self.state.resumed,
            limits=tuple(self.engine.limiter_states()),
            limits_at_s=wall_s - (limits_age() if limits_age is not None else 0.0),
            outages=tuple(self.engine.outages()),
            spent_before_usd=spent.usd,
            spent_before_tokens=spent.tokens,
            where=getattr(self.engine, "where", ""),
            batches=self.batch_stats() if self.batch_stats is not None else None,
        )

    async def run_record(self, record: Record) -> RunResult | tuple[str, str]:
        """The run's result, or (error_type, message) for a record that did not run."""
        data = record.data
        if data is None:
            return INVALID_RECORD, record.error or f"{record.origin}: unreadable record"
        inputs = self.inputs
        missing = [name for name in inputs if name not in data]
        if missing:
            names = ", ".join(repr(name) for name in missing)
            return INVALID_RECORD, (
                f"{record.origin}: missing input {names}; each record needs the DAG's "
                f"inputs {list(inputs)} (it has {sorted(data)})"
            )
        try:
            values = check_input_types(self.plan, {name: data[name] for name in inputs})
        except ConfigError as exc:
            return INVALID_RECORD, f"{record.origin}: {exc}"
        try:
            if self.reviews is not None:
                return await self.run_reviewed(record, values)
            return await self.engine.run(
                self.dag,
                values,
                budget_usd=self.budget_usd,
                budget_tokens=self.budget_tokens,
                deadline_s=self.deadline_s,
                record_key=record.key,
                max_outage_s=self.max_outage_s,
            )
        except ConfigError as exc:
            return type(exc).__name__, f"{record.origin}: {exc}"
        except Exception as exc:
            # One record's failure must not stop the job; the row carries it.
            _log.debug("record %s failed unexpectedly", record.key, exc_info=True)
            return type(exc).__name__, f"{record.origin}: unexpected {type(exc).__name__}: {exc}"

    async def run_reviewed(self, record: Record, inputs: Mapping[str, object]) -> RunResult:
        """A record of a DAG with review steps: resumed if a person decided its review,
        else run under its stable run id (so a later job finds its reviews)."""
        assert self.reviews is not None
        output, decided = self.reviews
        review_id = decided.get(record.key)
        if review_id is not None:
            resume: Callable[..., Awaitable[RunResult]] = getattr(self.engine, "resume")  # noqa: B009
            return await resume(
                self.dag,
                review_id,
                budget_usd=self.budget_usd,
                budget_tokens=self.budget_tokens,
                deadline_s=self.deadline_s,
                record_key=record.key,
                max_outage_s=self.max_outage_s,
            )
        return await self.engine.run(
            self.dag,
            inputs,
            budget_usd=self.budget_usd,
            budget_tokens=self.budget_tokens,
            deadline_s=self.deadline_s,
            record_key=record.key,
            request_id=record_run_id(output, record.key),
            max_outage_s=self.max_outage_s,
        )

    async def one(self, record: Record) -> None:
        tally, writer = self.tally, self.writer
        outcome = await self.run_record(record)
        if isinstance(outcome, RunResult) and outcome.error_type == ProviderOutage.__name__:
            # the provider, not the record: no row (the next run runs it); the job stops
            raise ProviderOutage(outcome.error_message or "a provider is down")
        if isinstance(outcome, RunResult):
            writer.write_result(record.key, outcome, record)
            tally.add(str(outcome.status), outcome)
        else:
            writer.write_error(record.key, *outcome, record)
            tally.add(str(RunStatus.ERROR))
        if writer.due():
            writer.commit()

    async def ticker(self, on_progress: Callable[[JobStats], None] | None, every_s: float) -> None:
        """Publish a part when its time is up even if no record finishes, and report."""
        while True:
            await asyncio.sleep(every_s)
            if self.writer.due():
                self.writer.commit()
            if on_progress is not None:
                on_progress(self.snapshot())

    async def count(self, input_path: str | Path) -> None:
        try:
            self.tally.total = await asyncio.to_thread(count_records, input_path)
        except Exception:  # the total is for progress only; the reader reports bad files
            self.tally.total = None

    async def run(
        self,
        records: Iterator[Record],
        input_path: str | Path | None,
        max_in_flight: int,
        on_progress: Callable[[JobStats], None] | None,
        progress_every_s: float,
    ) -> JobStats:
        tally, done, writer = self.tally, self.state.done, self.writer
        # a shard's job (input_path None) leaves counting to the job's driver
        counting = asyncio.create_task(self.count(input_path) if input_path else asyncio.sleep(0))
        side = [counting, asyncio.create_task(self.ticker(on_progress, progress_every_s))]
        read_error: ConfigError | None = None
        window = _Window(max_in_flight, tally)
        try:
            while await window.room():
                try:
                    record = next(records)
                except StopIteration:
                    break
                except ConfigError as exc:
                    # The file broke mid-way (a truncated .gz): finish what runs, then say so.
                    read_error = exc
                    break
                resumable = self.reviews is not None and record.key in self.reviews[1]
                if done and record.key in done and not resumable:
                    tally.skipped += 1
                    continue
                window.start(self.one(record))
            await window.drain()
            await counting  # the last snapshot has the total, even for a job this short
        except BaseException:
            await window.cancel()  # Ctrl-C or a failed write: nothing keeps running
            raise
        finally:
            for task in side:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*side, return_exceptions=True)
            close_records(records)
            writer.close()
        if read_error is not None:
            raise read_error
        stats = self.snapshot()
        if on_progress is not None:
            on_progress(stats)
        return stats


class _Window:
    """At most ``size`` records in flight, a task each (cheaper than a TaskGroup and a
    semaphore, which cost ~5% of a record at zero latency). A record's task that raises
    (its row could not be written) stops the job: ``room`` and ``drain`` raise it."""

    __slots__ = ("_failure", "_size", "_tally", "_tasks", "_waiter")

    def __init__(self, size: int, tally: _Tally) -> None:
        self._size = size
        self._tally = tally
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiter: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None

    async def room(self) -> bool:
        """Wait until another record may start (always ``True``; raises a failure)."""
        while len(self._tasks) >= self._size and self._failure is None:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if self._failure is not None:
            raise self._failure
        return True

    def start(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        self._tally.in_flight += 1
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._tally.in_flight -= 1
        if not task.cancelled():
            # read every task's exception, not only the first: the others would be
            # reported as never retrieved when their tasks are freed
            failure = task.exception()  # None when it ended well
            if self._failure is None:
                self._failure = failure
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Wait for every started record; raises the first failure."""
        while self._tasks and self._failure is None:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if self._failure is not None:
            raise self._failure

    async def cancel(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def close_records(records: Iterator[Record]) -> None:
    close: Callable[[], None] | None = getattr(records, "close", None)
    if close is not None:
        close()
