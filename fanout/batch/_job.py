"""``run_file``: a DAG once per record of a file, folder or glob, into a Parquet dataset.

Records stream in: at most ``max_in_flight`` run at once, and reading waits while
the window is full, so memory does not grow with the input. Rows are published in
parts as they finish (:class:`ResultWriter`); failed records also go to dead-letter
files. A job directory remembers what produced its rows (:func:`open_job`): run the
same job into it again and it resumes, skipping records that have a row and
answering calls the killed run had completed from the call journal
(``OUTPUT/calls``), so nothing is lost and nothing is paid twice.

On an engine with workers (:class:`fanout.distributed.RayEngine`) the input is cut
into shards that the workers read, run and write themselves (:mod:`._shards`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
from collections.abc import Callable, Coroutine
from pathlib import Path

from fanout.batch._batch_log import BATCHES_DIR
from fanout.batch._batch_mode import BatchMode, use_batch_mode
from fanout.batch._manifest import SUPERSEDED_DIR, JobState, fingerprint, lock_job, open_job
from fanout.batch._preflight import check_columns, check_first_records
from fanout.batch._readers import input_files, iter_records
from fanout.batch._review import decided_records
from fanout.batch._runner import INVALID_RECORD, Job, JobStats, Runner, close_records
from fanout.batch._schema import output_types
from fanout.batch._shards import ShardOptions, ShardRunner, run_sharded, unseen_by_workers
from fanout.batch._writer import DEAD_LETTER_DIR, RESULTS_DIR, ResultWriter
from fanout.dag import DAG
from fanout.errors import ConfigError
from fanout.run import Engine, Spend, compact_journal, journal_spend, needs_review
from fanout.store import ReviewStore

__all__ = ["CALLS_DIR", "DEFAULT_MAX_OUTAGE_S", "INVALID_RECORD", "JobStats", "Runner", "run_file"]

_log = logging.getLogger(__name__)

CALLS_DIR = "calls"
"""The job's call journal, under its output directory."""

DEFAULT_MAX_OUTAGE_S = 600.0
"""How long a job's records wait for a provider that is down before the job stops."""
BATCH_WINDOW = 10_000
"""Records in flight by default in batch mode: their calls fill the waves of batches."""


def _check_options(
    max_in_flight: int,
    budget_usd: float | None,
    budget_tokens: int | None,
    deadline_s: float | None,
    max_outage_s: float,
) -> None:
    if max_outage_s < 0 or math.isnan(max_outage_s):
        raise ConfigError(f"max_outage_s must be >= 0 (got {max_outage_s})")
    if max_in_flight < 1:
        raise ConfigError(f"max_in_flight must be at least 1 (got {max_in_flight})")
    if budget_usd is not None and budget_usd < 0:
        raise ConfigError(f"budget_usd must be >= 0 (got {budget_usd})")
    if budget_tokens is not None and budget_tokens < 0:
        raise ConfigError(f"budget_tokens must be >= 0 (got {budget_tokens})")
    if deadline_s is not None and deadline_s <= 0:
        raise ConfigError(f"deadline_s must be positive (got {deadline_s})")


def _check_not_inside(input_path: str | Path, output_dir: Path) -> None:
    """Refuse input from the directories the job writes or moves (its own dead letters)."""
    out = output_dir.resolve()
    owned = [
        out / name
        for name in (RESULTS_DIR, DEAD_LETTER_DIR, CALLS_DIR, SUPERSEDED_DIR, BATCHES_DIR)
    ]
    for file in input_files(input_path):
        resolved = file.resolve()
        if any(resolved.is_relative_to(place) for place in owned):
            raise ConfigError(
                f"input {str(file)!r} lies inside the output directory {str(output_dir)!r}, "
                "which this job rewrites; write to another --output (e.g. re-run dead "
                f"letters with --input {output_dir}/{DEAD_LETTER_DIR} --output "
                f"{output_dir}-retry)"
            )


async def run_file(
    engine: Runner,
    dag: DAG,
    input_path: str | Path,
    output_dir: str | Path,
    *,
    key: str | None = None,
    max_in_flight: int | None = None,
    resume: bool | None = None,
    force_rerun_changed: bool = False,
    budget_usd: float | None = None,
    budget_tokens: int | None = None,
    deadline_s: float | None = None,
    on_progress: Callable[[JobStats], None] | None = None,
    progress_every_s: float = 0.5,
    part_rows: int = 50_000,
    part_interval_s: float = 10.0,
    shard: bool | None = None,
    shard_min_bytes: int = 64 << 10,
    max_outage_s: float = DEFAULT_MAX_OUTAGE_S,
    provider_batch: bool = False,
    online_fallback: bool = False,
    detach: bool = False,
) -> JobStats:
    """Run ``dag`` once per record of ``input_path``; a row each in ``output_dir/results/``.

    ``max_in_flight``: records in progress at once (default 64; in batch mode
    10,000, the records whose calls fill one wave of batches).

    ``key``: the column that identifies a record (else a hash of its content).
    ``resume``: ``None`` resumes when ``output_dir`` holds an earlier run of the same
    job; ``True`` insists on one. ``force_rerun_changed``: when the pipeline or config
    changed since that run, move its rows aside and run every record again (instead
    of refusing). ``budget_usd``, ``budget_tokens`` and ``deadline_s`` apply to each
    record. A record that is malformed, lacks one of the DAG's inputs or fails in any
    way gets an error row (and a dead letter) and the job goes on. ``on_progress``
    receives a :class:`JobStats` snapshot every ``progress_every_s`` and at the end.

    ``shard``: on an engine with workers (Ray), cut the input into shards of at least
    ``shard_min_bytes`` that the workers read and write themselves (``None``: whenever
    the engine has workers; the input and ``output_dir`` must then be reachable from
    every node). ``False``: this process reads every record and the workers only run
    them (for input only this machine can read).

    Outages wait: a call whose provider is down (connection errors, its circuit open)
    and has no fallback left holds its record until the provider answers again; once
    it has been down ``max_outage_s`` (``math.inf``: wait for ever) the job stops with
    :class:`fanout.errors.ProviderOutage` naming the cause. A record is never a dead
    letter because of an outage: those that waited have no row, and running the job
    again resumes them.

    The job's spending is part of its state: a resumed job counts what earlier runs
    spent (its call journal's account) against the engine's job budget, and its
    :class:`JobStats` report it (``spent_before_usd``, ``total_cost_usd``).

    ``provider_batch``: send the calls of every model whose provider has a Batch API
    through it (half price, answers within 24 h; models with ``[models.NAME.batch]
    enabled`` do so anyway), journaling the batches in ``output_dir/batches``; a
    re-run into the same directory polls them and submits no call twice.
    ``online_fallback``: a call still failing after its batch retries goes online.
    ``detach``: once every record in the window waits for a batch, leave them running
    and return (``JobStats.detached``); the next run into ``output_dir`` collects them.

    Raises :class:`ConfigError` before running any record for an invalid DAG (against
    the engine's models), missing or unsupported input, a Parquet or CSV file without a
    column the DAG or ``key`` needs, an input whose first records all fail the same
    input check (see :mod:`._preflight`), bad options, an unwritable output directory
    or a changed job. If the job is cancelled (Ctrl-C), records already finished are
    published; records still running have no row (a resume runs them, answering their
    completed calls from the journal).
    """
    batching = provider_batch or any(m.batch.enabled for m in engine.config.models.values())
    if max_in_flight is None:
        max_in_flight = BATCH_WINDOW if batching else 64
    _check_options(max_in_flight, budget_usd, budget_tokens, deadline_s, max_outage_s)
    plan = engine.validate(dag)
    output = Path(output_dir)
    _check_not_inside(input_path, output)
    check_columns(input_path, plan.inputs, key)
    reviewed = needs_review(plan)
    if batching and not isinstance(engine, Engine):
        raise ConfigError("batch mode (--provider-batch) runs on the local engine; drop --ray")
    if (detach or online_fallback) and not batching:
        raise ConfigError(
            "--detach and --online-fallback apply to batch mode; add --provider-batch"
        )
    sharded = isinstance(engine, ShardRunner) and shard is not False and not reviewed
    if shard and not sharded:
        raise ConfigError(
            "sharded input needs an engine with workers (--ray) and a pipeline without "
            "review steps"
        )
    records = iter_records(input_path, key=key)  # checks every file now, sharded or not
    records = check_first_records(records, plan, input_path, key)
    lock = None
    writer = None
    try:
        lock = lock_job(output)
        current = fingerprint(plan, engine.config, key)
        state = open_job(output, current, resume=resume, force_rerun_changed=force_rerun_changed)
        state = dataclasses.replace(state, spent=_prepare_journal(engine, output, state))
        mode: BatchMode | None = None
        if batching:
            assert isinstance(engine, Engine)
            mode = use_batch_mode(
                engine, output, all_models=provider_batch, online_fallback=online_fallback
            )
        decided = _prepare_reviews(engine, output, state) if reviewed else {}
        metadata = {"fanout.job": json.dumps(current, sort_keys=True)}
        if sharded:
            assert isinstance(engine, ShardRunner)
            unseen = await unseen_by_workers(engine, dag, input_path, output)
            if unseen is not None and shard:
                raise ConfigError(
                    f"workers cannot read shards: {unseen}; put the input and --output on "
                    "storage every node mounts, or read on the driver"
                )
            if unseen is not None:
                _log.warning(
                    "reading the input on the driver (workers only run records): %s; put the "
                    "input and --output on storage every node mounts to let each worker read "
                    "and write its own shards",
                    unseen,
                )
                sharded = False
        if not sharded:
            writer = ResultWriter(
                output,
                output_types(plan, getattr(engine, "config", None)),
                metadata=metadata,
                part_rows=part_rows,
                part_interval_s=part_interval_s,
            )
        engine.open_traces()  # a bad traces directory is a usage error, before any record
        check_tools = getattr(engine, "check_tools", None)  # the local engine: MCP servers
        if check_tools is not None:  # start and list their tools before any record
            await check_tools(dag)
    except BaseException:
        close_records(records)
        if lock is not None:
            lock.close()
        raise
    try:
        if writer is None:
            assert isinstance(engine, ShardRunner)
            close_records(records)
            options = ShardOptions.of(
                output,
                key=key,
                metadata=metadata,
                part_rows=part_rows,
                part_interval_s=part_interval_s,
                max_in_flight=max(1, max_in_flight // engine.size),
                budget_usd=budget_usd,
                budget_tokens=budget_tokens,
                deadline_s=deadline_s,
                resumed=state.resumed,
                progress_every_s=progress_every_s,
                max_outage_s=max_outage_s,
            )
            return await run_sharded(
                engine, dag, input_path, state, options, shard_min_bytes, on_progress
            )
        job = Job(
            engine, dag, plan, writer, state, budget_usd, budget_tokens, deadline_s, max_outage_s
        )
        if reviewed:
            job.reviews = (output, decided)
        run = job.run(records, input_path, max_in_flight, on_progress, progress_every_s)
        if mode is None:
            return await run
        job.batch_stats = mode.stats
        if not detach:
            return await run
        return await _detached(job, run, mode)
    finally:
        lock.close()


async def _detached(job: Job, run: Coroutine[None, None, JobStats], mode: BatchMode) -> JobStats:
    """Run the job until it finishes or only waits for its provider batches; then leave
    those running (they are journaled) and return."""
    running = asyncio.ensure_future(run)
    settled = asyncio.ensure_future(mode.settled())
    try:
        await asyncio.wait((running, settled), return_when=asyncio.FIRST_COMPLETED)
    finally:
        settled.cancel()
    if running.done():
        return running.result()
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    return dataclasses.replace(job.snapshot(), detached=True)


def _prepare_journal(engine: Runner, output: Path, state: JobState) -> Spend:
    """The journal compacted (a resume) and in use; returns what earlier runs spent, now
    counted against the engine's job budget."""
    calls = output / CALLS_DIR
    if state.resumed and len(state.done):
        done = state.done
        kept, dropped = compact_journal(calls, lambda record: record not in done)
        _log.info("call journal: %d calls kept for unfinished records, %d dropped", kept, dropped)
    # a job started afresh in a directory (another pipeline's rows moved aside) starts
    # its account afresh too; a resumed one goes on with it
    spent = journal_spend(calls) if state.resumed else Spend()
    engine.use_journal(calls)
    count_spent: Callable[[Spend], None] | None = getattr(engine, "count_spent", None)
    if count_spent is not None and (spent.usd or spent.tokens):
        count_spent(spent)
    return spent


def _prepare_reviews(engine: Runner, output: Path, state: JobState) -> dict[str, str]:
    """A store for records that pause (the engine's, else one in ``output``); on resume,
    the waiting records a person decided since (key -> review id)."""
    use_reviews: Callable[[Path], ReviewStore] | None = getattr(engine, "use_reviews", None)
    if use_reviews is None:
        raise ConfigError(
            "a pipeline with review steps runs as a batch job on the local engine only "
            "(not on Ray); drop --ray"
        )
    store = use_reviews(output)
    return decided_records(output, store) if state.resumed else {}
