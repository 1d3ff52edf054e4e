"""``run_file``: a DAG once per record of a file, a bounded window at a time, into Parquet."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fanout.batch._readers import Record, iter_records
from fanout.batch._writer import ResultWriter
from fanout.clock import Clock
from fanout.dag import DAG, Plan
from fanout.errors import ConfigError
from fanout.run import RunResult
from fanout.types import RunStatus

__all__ = ["JobStats", "Runner", "run_file"]

_log = logging.getLogger(__name__)

INVALID_RECORD = "InvalidRecord"
"""``error_type`` of a record that could not be run: malformed, or missing an input."""


class Runner(Protocol):
    """What a job needs of an engine: :class:`fanout.Engine` (one process) and
    :class:`fanout.distributed.RayEngine` (a Ray cluster) both are one."""

    @property
    def clock(self) -> Clock: ...

    def validate(self, dag: DAG) -> Plan: ...

    def open_traces(self) -> None: ...

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
    ) -> RunResult: ...


@dataclass(frozen=True, slots=True)
class JobStats:
    """Where a job stands: records finished (and written), by outcome, with usage and time.

    ``failed`` counts records by status (``error``, ``budget_exceeded``, ...);
    records that could not be parsed or lack an input count as ``error``.
    ``in_flight`` is how many records were running when this snapshot was taken.
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

    @property
    def errors(self) -> int:
        return sum(self.failed.values())

    @property
    def records_per_s(self) -> float:
        return self.records / self.wall_time_s if self.wall_time_s > 0 else 0.0


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
    )

    def __init__(self) -> None:
        self.records = 0
        self.ok = 0
        self.failed: dict[str, int] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0
        self.in_flight = 0

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

    def snapshot(self, output_path: Path, wall_time_s: float) -> JobStats:
        return JobStats(
            output_path=output_path,
            records=self.records,
            ok=self.ok,
            failed=dict(self.failed),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd,
            wall_time_s=wall_time_s,
            in_flight=self.in_flight,
        )


def _check_options(
    concurrency: int,
    budget_usd: float | None,
    budget_tokens: int | None,
    deadline_s: float | None,
) -> None:
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1 (got {concurrency})")
    if budget_usd is not None and budget_usd < 0:
        raise ConfigError(f"budget_usd must be >= 0 (got {budget_usd})")
    if budget_tokens is not None and budget_tokens < 0:
        raise ConfigError(f"budget_tokens must be >= 0 (got {budget_tokens})")
    if deadline_s is not None and deadline_s <= 0:
        raise ConfigError(f"deadline_s must be positive (got {deadline_s})")


async def run_file(
    engine: Runner,
    dag: DAG,
    input_path: str | Path,
    output_dir: str | Path,
    *,
    concurrency: int = 64,
    budget_usd: float | None = None,
    budget_tokens: int | None = None,
    deadline_s: float | None = None,
    on_progress: Callable[[JobStats], None] | None = None,
) -> JobStats:
    """Run ``dag`` once per record of ``input_path``; a row each in ``output_dir/results.parquet``.

    Records stream from the file: at most ``concurrency`` are in flight, and the
    next is read only when one finishes, so memory stays bounded whatever the
    file's size. ``budget_usd``, ``budget_tokens`` and ``deadline_s`` apply to each
    record. A record that is malformed, lacks one of the DAG's inputs or fails in
    any way gets an error row and the job goes on. ``on_progress`` receives a
    :class:`JobStats` snapshot after each record is written.

    Raises :class:`ConfigError` before reading any record for an invalid DAG (against
    the engine's models), a missing or unsupported input file, bad options or an
    unwritable output directory. If the job is cancelled (Ctrl-C), records already
    finished stay written and ``results.parquet`` is closed properly; records still
    running then have no row.
    """
    _check_options(concurrency, budget_usd, budget_tokens, deadline_s)
    plan = engine.validate(dag)
    inputs = plan.inputs
    records = iter_records(input_path)
    clock = engine.clock
    started = clock.now()
    tally = _Tally()
    writer = ResultWriter(output_dir, tuple(plan.outputs))
    try:
        engine.open_traces()  # a bad traces directory is a usage error, before any record
    except ConfigError:
        writer.abort()
        raise
    slots = asyncio.Semaphore(concurrency)

    async def run_record(record: Record) -> RunResult | tuple[str, str]:
        """The run's result, or (error_type, message) for a record that did not run."""
        if record.data is None:
            return INVALID_RECORD, record.error or f"row {record.index}: unreadable record"
        missing = [name for name in inputs if name not in record.data]
        if missing:
            names = ", ".join(repr(name) for name in missing)
            return INVALID_RECORD, (
                f"row {record.index}: missing input {names}; each record needs the DAG's "
                f"inputs {list(inputs)} (it has {sorted(record.data)})"
            )
        try:
            return await engine.run(
                dag,
                {name: record.data[name] for name in inputs},
                budget_usd=budget_usd,
                budget_tokens=budget_tokens,
                deadline_s=deadline_s,
                record_key=str(record.key),
            )
        except ConfigError as exc:
            return type(exc).__name__, f"row {record.index}: {exc}"
        except Exception as exc:
            # One record's failure must not stop the job; the row carries it.
            _log.debug("record %s failed unexpectedly", record.key, exc_info=True)
            return type(exc).__name__, f"row {record.index}: unexpected {type(exc).__name__}: {exc}"

    async def one(record: Record) -> None:
        try:
            outcome = await run_record(record)
            if isinstance(outcome, RunResult):
                writer.write_result(record.key, outcome)
                tally.add(str(outcome.status), outcome)
            else:
                writer.write_error(record.key, *outcome)
                tally.add(str(RunStatus.ERROR))
        finally:
            tally.in_flight -= 1
            slots.release()
        if on_progress is not None:
            on_progress(tally.snapshot(writer.path, clock.now() - started))

    read_error: ConfigError | None = None
    try:
        async with asyncio.TaskGroup() as group:
            while True:
                await slots.acquire()
                try:
                    record = next(records)
                except StopIteration:
                    slots.release()
                    break
                except ConfigError as exc:
                    # The file broke mid-way (a truncated .gz): finish what is running, then say so.
                    slots.release()
                    read_error = exc
                    break
                tally.in_flight += 1
                group.create_task(one(record))
    finally:
        _close(records)
        writer.close()
    if read_error is not None:
        raise read_error
    return tally.snapshot(writer.path, clock.now() - started)


def _close(records: Iterator[Record]) -> None:
    close: Callable[[], None] | None = getattr(records, "close", None)
    if close is not None:
        close()
