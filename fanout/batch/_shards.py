"""A batch job on workers: the input cut into shards that each worker reads, runs and writes.

The driver plans the shards (:func:`plan_shards`: byte ranges of JSON Lines files,
row groups of Parquet files, whole files otherwise), hands them out one per worker
at a time, sums the workers' progress and returns the job's totals; it reads no
record and writes no row, so the job's rate grows with its workers. Each shard's
rows go into parts tagged with the shard (``part-000004-s00012.parquet``), so
writers never collide and every part is published whole, as in a local job.

Exactly once, as locally: a shard skips the keys the job had finished when it
started, and the keys of its own published parts (a shard runs again when its
worker died); the call journal answers the calls a dead worker had completed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyarrow.parquet as pq

from fanout.batch._keys import KeySet
from fanout.batch._manifest import MANIFEST_FILE, JobState
from fanout.batch._readers import Shard, count_records, input_files, iter_shard, plan_shards
from fanout.batch._runner import Job, JobStats, Runner
from fanout.batch._schema import output_types
from fanout.batch._writer import RESULTS_DIR, ResultWriter, remove_orphan_letters, result_parts
from fanout.dag import DAG
from fanout.errors import ConfigError
from fanout.limits import LimiterState
from fanout.run import Outage

__all__ = ["ShardOptions", "ShardRunner", "run_shard", "run_sharded", "unseen_by_workers"]

SHARDS_PER_WORKER = 4
"""Shards planned per worker: a worker that finishes early takes another."""


@runtime_checkable
class ShardRunner(Protocol):
    """An engine with workers that can each run a piece of a job whole
    (:class:`fanout.distributed.RayEngine`)."""

    @property
    def size(self) -> int: ...

    @property
    def max_workers(self) -> int: ...

    def limiter_states(self) -> list[LimiterState]: ...

    def outages(self) -> list[Outage]: ...

    async def ask_workers(
        self, dag: DAG, job: Callable[..., object], payload: object
    ) -> list[object]: ...

    async def run_on_workers(
        self,
        dag: DAG,
        job: Callable[..., object],
        payloads: Sequence[object],
        *,
        shared: object = None,
        on_report: Callable[[dict[int, object]], None] | None = None,
        on_result: Callable[[int, object], None] | None = None,
        report_every_s: float = 0.5,
    ) -> list[object]: ...


@dataclass(frozen=True, slots=True)
class ShardOptions:
    """What every shard of a job runs with (the job's options, per worker)."""

    output_dir: str
    key: str | None
    metadata: dict[str, str]
    part_rows: int
    part_interval_s: float
    max_in_flight: int  # per worker
    budget_usd: float | None
    budget_tokens: int | None
    deadline_s: float | None
    resumed: bool
    progress_every_s: float
    max_outage_s: float | None = None

    @classmethod
    def of(cls, output: Path, **options: Any) -> ShardOptions:
        """With ``output`` as an absolute path (workers have another working directory)."""
        return cls(output_dir=os.path.abspath(output), **options)


@dataclass(frozen=True, slots=True)
class _Task:
    shard: Shard
    options: ShardOptions


async def run_shard(
    engine: Runner,
    dag: DAG,
    task: _Task,
    done: KeySet,
    report: Callable[[object], None],
) -> JobStats:
    """One shard on a worker's engine (a :data:`fanout.distributed.WorkerJob`)."""
    shard, options = task.shard, task.options
    plan = engine.validate(dag)
    output = Path(options.output_dir)
    _check_reachable(Path(shard.path), output)
    # rows this shard published before its last worker died: not run again
    mine = result_parts(output, tag=shard.tag)
    if mine:
        done = done.union(_keys(mine))
    records = iter_shard(shard, key=options.key)
    writer = ResultWriter(
        output,
        output_types(plan, getattr(engine, "config", None)),
        metadata=options.metadata,
        part_rows=options.part_rows,
        part_interval_s=options.part_interval_s,
        tag=shard.tag,
    )
    job = Job(
        engine,
        dag,
        plan,
        writer,
        JobState(done, resumed=options.resumed),
        options.budget_usd,
        options.budget_tokens,
        options.deadline_s,
        options.max_outage_s,
    )
    return await job.run(records, None, options.max_in_flight, report, options.progress_every_s)


async def unseen_by_workers(
    engine: ShardRunner, dag: DAG, input_path: str | Path, output: Path
) -> str | None:
    """What some worker does not see as this process does (the job's output directory,
    an input file), or ``None``: shards need both on storage every node mounts."""
    marker, files = _probe_payload(input_path, output)
    try:
        answers = await engine.ask_workers(dag, _probe, (str(marker), files))
    finally:
        marker.unlink(missing_ok=True)
    return next((str(answer) for answer in answers if answer), None)


def _probe_payload(
    input_path: str | Path, output: Path
) -> tuple[Path, tuple[tuple[str, int], ...]]:
    """A new marker file in ``output``, and each input file's absolute path and size
    (absolute: a worker's working directory is not the driver's)."""
    files = tuple((str(f.resolve()), f.stat().st_size) for f in input_files(input_path))
    marker = Path(os.path.abspath(output)) / f".fanout-probe-{secrets.token_hex(8)}"
    marker.write_bytes(b"")
    return marker, files


async def _probe(
    engine: Runner,
    dag: DAG,
    payload: tuple[str, tuple[tuple[str, int], ...]],
    shared: object,
    report: Callable[[object], None],
) -> str | None:
    """On a worker: ``None`` if its node sees the driver's marker file and input files."""
    return _unseen(*payload)


def _unseen(marker: str, files: tuple[tuple[str, int | None], ...]) -> str | None:
    """What this node does not see of the driver's: an input file (of that size, if
    given), or the output directory (the driver's ``marker`` file in it)."""
    node = socket.gethostname()
    for path, size in files:
        try:
            seen = Path(path).stat().st_size
        except OSError:
            return f"input file {path!r} cannot be read on node {node!r}"
        if size is not None and seen != size:
            return f"input file {path!r} on node {node!r} is not the driver's ({seen} bytes)"
    where = Path(marker)
    if not where.is_file():
        return (
            f"the output directory {str(where.parent)!r} is not shared with node {node!r} "
            f"(its {where.name} is missing there)"
        )
    return None


def _check_reachable(source: Path, output: Path) -> None:
    """Refuse a shard whose input or output directory this worker's node does not see
    (the driver wrote the job's manifest there: rows written on a node's own disk would
    be lost to the job)."""
    unseen = _unseen(str(output / MANIFEST_FILE), ((str(source), None),))
    if unseen is not None:
        raise ConfigError(f"{unseen}; put it on storage every node mounts, or add --read-on-driver")


def _keys(parts: Iterable[Path]) -> Iterable[str]:
    for part in parts:
        yield from pq.read_table(part, columns=["key"]).column("key").to_pylist()


async def run_sharded(
    engine: ShardRunner,
    dag: DAG,
    input_path: str | Path,
    state: JobState,
    options: ShardOptions,
    shard_min_bytes: int,
    on_progress: Callable[[JobStats], None] | None,
) -> JobStats:
    """The driver of a sharded job: plan, hand out, sum (see the module doc)."""
    started = time.monotonic()
    output = Path(options.output_dir)
    shards = plan_shards(  # enough for the pool it may grow to
        input_path, pieces=engine.max_workers * SHARDS_PER_WORKER, min_bytes=shard_min_bytes
    )
    remove_orphan_letters(output)  # no writer runs yet: any tag's
    (output / RESULTS_DIR).mkdir(parents=True, exist_ok=True)
    finished: dict[int, JobStats] = {}
    running: dict[int, JobStats] = {}
    counting = asyncio.create_task(asyncio.to_thread(_count, input_path))

    def snapshot() -> JobStats:
        total = counting.result() if counting.done() else None
        wall_s = time.monotonic() - started
        summed = _sum(
            [*finished.values(), *running.values()],
            output / RESULTS_DIR,
            wall_s,
            total,
            state.resumed,
            tuple(engine.limiter_states()),
        )
        limits_age: Callable[[], float] | None = getattr(engine, "limits_age_s", None)
        return dataclasses.replace(
            summed,
            limits_at_s=wall_s - (limits_age() if limits_age is not None else 0.0),
            outages=tuple(engine.outages()) or summed.outages,
            spent_before_usd=state.spent.usd,
            spent_before_tokens=state.spent.tokens,
            where=getattr(engine, "where", ""),
        )

    def on_report(reports: dict[int, object]) -> None:
        running.clear()
        for index, stats in reports.items():
            if isinstance(stats, JobStats) and index not in finished:
                running[index] = stats
        if on_progress is not None:
            on_progress(snapshot())

    def on_result(index: int, stats: object) -> None:
        if isinstance(stats, JobStats):
            finished[index] = stats
            running.pop(index, None)

    try:
        await engine.run_on_workers(
            dag,
            run_shard,
            [_Task(shard, options) for shard in shards],
            shared=state.done,
            on_report=on_report,
            on_result=on_result,
            report_every_s=options.progress_every_s,
        )
        await counting
    finally:
        counting.cancel()
    running.clear()
    stats = snapshot()
    if on_progress is not None:
        on_progress(stats)
    return stats


def _count(input_path: str | Path) -> int | None:
    try:
        return count_records(input_path)
    except Exception:  # the total is for progress only; the shards report bad files
        return None


def _sum(
    parts: Sequence[JobStats],
    output_path: Path,
    wall_time_s: float,
    total: int | None,
    resumed: bool,
    limits: tuple[LimiterState, ...],
) -> JobStats:
    failed: dict[str, int] = {}
    outages: dict[str, Outage] = {}
    for part in parts:
        for status, count in part.failed.items():
            failed[status] = failed.get(status, 0) + count
        for outage in part.outages:
            outages.setdefault(outage.name, outage)
    return JobStats(
        output_path=output_path,
        records=sum(p.records for p in parts),
        ok=sum(p.ok for p in parts),
        failed=failed,
        input_tokens=sum(p.input_tokens for p in parts),
        output_tokens=sum(p.output_tokens for p in parts),
        cost_usd=sum(p.cost_usd for p in parts),
        wall_time_s=wall_time_s,
        in_flight=sum(p.in_flight for p in parts),
        skipped=sum(p.skipped for p in parts),
        total=total,
        dead_letters=sum(p.dead_letters for p in parts),
        resumed=resumed,
        limits=limits,
        outages=tuple(outages.values()),
    )
