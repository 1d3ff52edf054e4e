"""``RayEngine``: the engine's ``run`` on a pool of Ray worker actors.

Requests submitted one by one (by a batch job, a service, a script) queue here and
leave in micro-batches of ``batch_size``: one actor call carries many requests, and
each result streams back on its own as it finishes. The dispatcher keeps at most
``batches_per_worker`` batches on each worker, to the least loaded first. When an
actor dies, Ray restarts it and every request of its batches that had not come
back is sent again (a request whose result came back is never run again).

Rate limits are cluster-wide: one :class:`QuotaCoordinator` per (provider, model)
leases shares of the real limit to the workers, which enforce them locally.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import inspect
import itertools
import logging
import math
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import ray
from ray import cloudpickle

from fanout.clock import Clock, SystemClock
from fanout.config import Config, default_config
from fanout.dag import DAG, Plan
from fanout.distributed._cluster import ensure_ray
from fanout.distributed._coordinator import BudgetCoordinator, QuotaCoordinator
from fanout.distributed._worker import FanoutWorker, WorkerJob, WorkItem
from fanout.errors import ConfigError, RunError
from fanout.limits import LimiterState
from fanout.run import Outage, RunResult, Spend, check_capabilities, check_inputs
from fanout.trace import otel_settings

Handle = Any  # a Ray actor handle (Ray types them loosely)

__all__ = ["RayEngine"]

_log = logging.getLogger(__name__)

_RESTART_PAUSE_S = 1.0  # a worker that lost a batch gets no new one for this long
_STOP_JOBS_S = 30.0  # how long cancelled worker jobs get to publish what they finished

_ACTOR_LOST = (
    ray.exceptions.RayActorError,
    ray.exceptions.ActorUnavailableError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
)


@dataclass(slots=True)
class _Request:
    dag_id: str
    blob: ray.ObjectRef[bytes]  # the pickled DAG, in the object store once
    item: WorkItem
    future: asyncio.Future[RunResult | tuple[str, str]]
    sends: int = 0


@dataclass(slots=True)
class _Worker:
    handle: Handle
    worker_id: str
    requests: int = 0
    down_until: float = 0.0  # lost a batch: Ray is restarting it, give it a moment
    idle_since: float = math.inf  # with no request in flight since then


@dataclass
class PoolStats:
    """What the pool did: batches sent, requests re-sent after an actor died (and pieces
    of :meth:`RayEngine.run_on_workers` run again, in ``resent`` too)."""

    batches: int = 0
    requests: int = 0
    resent: int = 0
    lost_batches: int = 0
    scaled_up: int = 0
    scaled_down: int = 0
    per_worker: dict[str, int] = field(default_factory=dict)


class RayEngine:
    """Runs DAG requests on ``workers`` async Ray actors (``fanout run --ray ...``).

    With ``max_workers``, the pool grows one worker at a time (``scale_up_every_s``
    apart) while more than a full worker's window of requests waits, and shrinks back
    to ``workers`` as workers stay idle for ``scale_down_idle_s``.

    ``address``: ``local`` (start Ray here), ``auto`` (join the running cluster, else
    start one) or a cluster address. ``traces``: the job's traces directory; each
    worker writes its own files there (it must be reachable from every node).
    ``journal``: a directory (reachable from every node) where workers record the
    calls they complete; a request re-sent after its worker died is answered from it
    for every call that worker had finished, so no completed call is paid twice.
    ``job_budget_usd`` / ``job_budget_tokens``: what the whole job may spend, held by
    one coordinator; workers draw allowances in chunks, so the job stops within one
    chunk per worker of its cap, cluster-wide.
    ``spread_map_items``: a map with at least this many items spreads them over the
    whole pool in chunks (``None``: a request's maps run on its own worker).
    ``worker_cpus``: the CPUs each worker actor reserves (its calls are I/O; CPU-bound
    tools go to Ray tasks with their own ``num_cpus``). ``num_cpus``: for a local Ray.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        workers: int = 2,
        max_workers: int | None = None,
        scale_up_every_s: float = 2.0,
        scale_down_idle_s: float = 30.0,
        address: str = "local",
        traces: str | Path | None = None,
        job_id: str | None = None,
        batch_size: int = 32,
        batches_per_worker: int = 4,
        lease_refresh_s: float = 0.2,
        lease_ttl_s: float = 3.0,
        max_sends: int = 5,
        num_cpus: int | None = None,
        worker_cpus: float = 0.05,
        journal: str | Path | None = None,
        job_budget_usd: float | None = None,
        job_budget_tokens: int | None = None,
        spread_map_items: int | None = 256,
    ) -> None:
        if workers < 1 or batch_size < 1 or batches_per_worker < 1:
            raise ConfigError("workers, batch_size and batches_per_worker must be at least 1")
        self.config = config if config is not None else default_config()
        self.clock: Clock = SystemClock()
        self.job_id = job_id or uuid.uuid4().hex[:16]
        self.address = address
        self.traces = Path(traces).resolve() if traces is not None else None
        # live export, resolved here (the driver's OTEL_* environment) for every worker
        self.otel = otel_settings(self.config.traces)
        self.batch_size = batch_size
        self.batches_per_worker = batches_per_worker
        # a worker with room for a quarter batch gets one: its window stays nearly full
        self._min_batch = max(1, batch_size // 4)
        self.lease_refresh_s = lease_refresh_s
        self.lease_ttl_s = lease_ttl_s
        self.max_sends = max_sends
        self.num_cpus = num_cpus
        self.worker_cpus = worker_cpus
        self.journal = Path(journal).resolve() if journal is not None else None
        self._capable: dict[int, Plan] = {}  # plans whose capabilities were checked
        if (job_budget_usd is not None and job_budget_usd < 0) or (
            job_budget_tokens is not None and job_budget_tokens < 0
        ):
            raise ConfigError("job_budget_usd and job_budget_tokens must be >= 0")
        self.spread_map_items = spread_map_items
        self.job_budget_usd = job_budget_usd
        self.job_budget_tokens = job_budget_tokens
        self.budget_coordinator: Handle | None = None
        self.size = workers
        self.max_workers = max(workers, max_workers or workers)
        self.scale_up_every_s = scale_up_every_s
        self.scale_down_idle_s = scale_down_idle_s
        self._last_scale_up = -math.inf
        self._worker_numbers = itertools.count()
        self._retiring: set[asyncio.Task[None]] = set()
        self._budget_spec: tuple[str, bool, bool] | None = None
        self.stats = PoolStats()
        self.cluster = ""
        self.coordinators: dict[str, Handle] = {}
        self._coordinator_names: dict[str, str] = {}
        self._workers: list[_Worker] = []
        self._queue: collections.deque[_Request] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._limits_poller: asyncio.Task[None] | None = None
        self._limit_states: list[LimiterState] = []
        self._limits_at = time.monotonic()  # when _limit_states were read
        self._outages: list[Outage] = []  # as the workers last said
        self._spent_before = Spend()  # what earlier runs of the batch job spent
        self._sends: set[asyncio.Task[None]] = set()
        self._dags: dict[int, tuple[str, ray.ObjectRef[bytes]]] = {}
        self._seq = itertools.count()
        self._started_ray = False

    # -- the engine interface (what batch jobs and services call) -----------------

    def validate(self, dag: DAG) -> Plan:
        """Check ``dag`` as :meth:`Engine.validate` does (model names, each step's media
        and embed steps against their protocols) on the driver, before any worker runs it."""
        plan = dag.validate(models=self.config.models.keys())
        if self._capable.get(id(plan)) is not plan:
            check_capabilities(plan, self.config)
            if len(self._capable) >= 64:
                self._capable.clear()
            self._capable[id(plan)] = plan
        return plan

    def use_journal(self, directory: str | Path) -> None:
        """Have the workers record completed calls in ``directory`` (reachable from every
        node) and answer calls found there from it. Workers get it when they start (a
        restarted worker too), so once the pool runs it must be the ``journal`` given
        at construction."""
        path = Path(directory).resolve()
        if path == self.journal:
            return
        if self._workers:
            now = f"with call journal {self.journal}" if self.journal else "without a call journal"
            raise ConfigError(
                f"this RayEngine's workers are running {now}; for a batch job into this "
                f"output, construct it with journal={str(path)!r}"
            )
        self.journal = path

    def limiter_states(self) -> list[LimiterState]:
        """Each shared limit as its quota coordinator last reported it (polled every second
        while the pool runs): the cluster's request rate against the limit."""
        return list(self._limit_states)

    def limits_age_s(self) -> float:
        """How long ago :meth:`limiter_states` were read (a rate over snapshots uses the
        times they were read, not the times they were shown)."""
        return time.monotonic() - self._limits_at

    def outages(self) -> list[Outage]:
        """Providers some worker finds down (as last polled, every second)."""
        return list(self._outages)

    @property
    def where(self) -> str:
        """Where it runs: the cluster and the workers (for summaries and progress)."""
        if not self.cluster:
            return f"Ray ({self.address}), {self.size} workers"
        return f"{self.cluster}, {len(self._workers) or self.size} workers"

    def count_spent(self, spent: Spend) -> None:
        """Count what earlier runs of the batch job spent against the job budget."""
        self._spent_before = spent
        self._report_spent()

    def _report_spent(self) -> None:
        # as a holder of its own that never expires; sent again with every poll, so a
        # restarted budget coordinator has it back within a second
        spent = self._spent_before
        if self.budget_coordinator is not None and (spent.usd or spent.tokens):
            self.budget_coordinator.grant.remote("earlier runs", spent.usd, spent.tokens, 0.0, 0)

    def open_traces(self) -> None:
        if self.traces is None:
            return
        try:
            self.traces.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot use traces directory {str(self.traces)!r}: {exc.strerror or exc}; "
                "pick a writable directory"
            ) from None

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
    ) -> RunResult:
        """Run one request on the pool; same contract as :meth:`fanout.Engine.run`."""
        plan = self.validate(dag)
        inputs = check_inputs(dag, plan, inputs)
        await self.start()
        assert self._wake is not None
        dag_id, blob = self._dag_ref(dag, plan)
        options: dict[str, object] = {
            "budget_usd": budget_usd,
            "budget_tokens": budget_tokens,
            "deadline_s": deadline_s,
            "request_id": request_id,
            "record_key": record_key,
            "max_outage_s": max_outage_s,
        }
        future: asyncio.Future[RunResult | tuple[str, str]] = (
            asyncio.get_running_loop().create_future()
        )
        request = _Request(dag_id, blob, (next(self._seq), dict(inputs), options), future)
        self._queue.append(request)
        self._wake.set()
        outcome = await future
        if isinstance(outcome, RunResult):
            return outcome
        error_type, message = outcome
        if error_type == "ConfigError":
            raise ConfigError(message)
        raise RunError(f"{error_type}: {message}")

    async def run_on_workers(
        self,
        dag: DAG,
        job: WorkerJob,
        payloads: Sequence[object],
        *,
        shared: object = None,
        on_report: Callable[[dict[int, object]], None] | None = None,
        on_result: Callable[[int, object], None] | None = None,
        report_every_s: float = 0.5,
    ) -> list[object]:
        """Run ``job(engine, dag, payload, shared, report)`` once per payload on the
        workers, each worker one payload at a time and the next as it finishes (so a
        slow piece holds no other); returns the jobs' results in payload order.

        With ``max_workers``, the pool grows a worker at a time (``scale_up_every_s``
        apart) while payloads wait and every worker is busy. A payload whose worker died
        runs again (``max_sends`` times at most) on a worker that is up: the job must
        make a second run safe (a batch shard skips what it published; the journal
        answers the calls it completed). ``shared`` goes to the object store once.
        ``on_report`` gets the latest report of every running job, by payload index,
        every ``report_every_s``; ``on_result`` each job's result (with its index) as
        it comes back.
        """
        dag_id, blob = await self._started_with(dag)
        shared_ref = ray.put(shared)
        todo = collections.deque((i, 1) for i in range(len(payloads)))
        results: dict[int, object] = {}
        running: dict[asyncio.Future[object], tuple[_Worker, int, int, Any]] = {}
        poller = None
        if on_report is not None:
            poller = asyncio.get_running_loop().create_task(
                self._poll_reports(on_report, report_every_s)
            )
        try:
            while todo or running:
                now = time.monotonic()
                busy = {id(w) for w, _, _, _ in running.values()}
                for worker in self._workers:
                    if todo and id(worker) not in busy and worker.down_until <= now:
                        index, attempt = todo.popleft()
                        ref = worker.handle.run_job.remote(
                            job, dag_id, blob, index, payloads[index], shared_ref, attempt
                        )
                        running[asyncio.ensure_future(ref)] = (worker, index, attempt, ref)
                        busy.add(id(worker))
                        worker.requests += 1  # busy: never retired as idle meanwhile
                if (  # with --max-workers: grow while pieces wait and every worker works
                    # (judged after handing out: a piece that just finished frees its
                    # worker only until the next one is handed to it)
                    todo
                    and len(busy) >= len(self._workers) < self.max_workers
                    and now - self._last_scale_up >= self.scale_up_every_s
                ):
                    self._last_scale_up = now
                    self._add_worker()
                    self.stats.scaled_up += 1
                    continue  # hand the new worker a piece at once
                if not running:  # every worker is restarting: look again shortly
                    await asyncio.sleep(_RESTART_PAUSE_S / 4)
                    continue
                wait_s = min(_RESTART_PAUSE_S, self.scale_up_every_s) if todo else None
                done, _ = await asyncio.wait(
                    running, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
                )
                for future in done:
                    worker, index, attempt, _ = running.pop(future)
                    worker.requests -= 1
                    try:
                        results[index] = future.result()
                    except ray.exceptions.RayTaskError as exc:
                        # the job raised: its own error (a ConfigError stays one), not Ray's
                        raise exc.cause if isinstance(exc.cause, Exception) else exc from None
                    except _ACTOR_LOST as exc:
                        worker.down_until = time.monotonic() + _RESTART_PAUSE_S
                        if attempt >= self.max_sends:
                            raise RunError(
                                f"piece {index} of the job was sent {attempt} times and its "
                                f"worker died each time: {exc}"
                            ) from exc
                        _log.warning("worker %s died running piece %d; running it again",
                                     worker.worker_id, index)  # fmt: skip
                        self.stats.resent += 1
                        todo.appendleft((index, attempt + 1))
                        continue
                    if on_result is not None:
                        on_result(index, results[index])
        except BaseException:
            # Cancelled (Ctrl-C) or failed: stop the jobs still running, so they publish
            # what they finished (a batch shard writes its buffered rows) before the end.
            for *_, ref in running.values():
                ray.cancel(ref)  # an async actor's task: asyncio cancellation, finally blocks run
            if running:
                await asyncio.wait(running, timeout=_STOP_JOBS_S)
            raise
        finally:
            if poller is not None:
                poller.cancel()
                await asyncio.gather(poller, return_exceptions=True)
        return [results[i] for i in range(len(payloads))]

    async def ask_workers(self, dag: DAG, job: WorkerJob, payload: object) -> list[object]:
        """Run ``job(engine, dag, payload, None, report)`` once on every worker (a question
        about where it runs, say); their answers, in worker order."""
        dag_id, blob = await self._started_with(dag)
        refs = [
            w.handle.run_job.remote(job, dag_id, blob, -1 - i, payload, None, 1)
            for i, w in enumerate(self._workers)
        ]
        return list(await asyncio.gather(*refs))

    async def _started_with(self, dag: DAG) -> tuple[str, ray.ObjectRef[bytes]]:
        """The pool up, and ``dag`` (checked) in the object store for its workers."""
        plan = self.validate(dag)
        await self.start()
        return self._dag_ref(dag, plan)

    async def _poll_reports(
        self, on_report: Callable[[dict[int, object]], None], every_s: float
    ) -> None:
        while True:
            await asyncio.sleep(every_s)
            replies = await asyncio.gather(
                *(w.handle.job_reports.remote() for w in self._workers), return_exceptions=True
            )
            merged: dict[int, object] = {}
            for reply in replies:
                if isinstance(reply, dict):
                    merged.update(reply)
            on_report(merged)

    # -- the pool ------------------------------------------------------------------

    async def start(self) -> None:
        """Join or start Ray, then create the coordinators and the workers (once)."""
        if self._dispatcher is not None:
            return
        self._started_ray = not ray.is_initialized()
        self.cluster = ensure_ray(self.address, num_cpus=self.num_cpus)
        self._make_coordinators()
        budget = None
        if self.job_budget_usd is not None or self.job_budget_tokens is not None:
            name = f"fanout-budget-{self.job_id}"
            self.budget_coordinator = BudgetCoordinator.options(  # type: ignore[attr-defined]
                name=name
            ).remote(self.job_budget_usd, self.job_budget_tokens)
            budget = (name, self.job_budget_usd is not None, self.job_budget_tokens is not None)
        self._budget_spec = budget
        for _ in range(self.size):
            self._add_worker()
        await self._check_workers()
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._dispatcher = loop.create_task(self._dispatch())
        self._limits_poller = loop.create_task(self._poll_limits())

    async def _check_workers(self) -> None:
        """Every worker built its engine: a config error on a worker (a provider key the
        cluster's environment lacks) is a :class:`ConfigError` here, before any record."""
        try:
            await asyncio.gather(*(w.handle.ready.remote() for w in self._workers))
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, ConfigError):
                await self.aclose()
                raise ConfigError(str(exc.cause)) from None
            raise

    async def _poll_limits(self, every_s: float = 1.0) -> None:
        while True:
            asked = time.monotonic()
            states, down = await asyncio.gather(
                asyncio.gather(
                    *(c.limiter_state.remote() for c in self.coordinators.values()),
                    return_exceptions=True,
                ),
                asyncio.gather(
                    *(w.handle.outages.remote() for w in self._workers), return_exceptions=True
                ),
            )
            self._limit_states = [s for s in states if isinstance(s, LimiterState)]
            self._limits_at = asked
            self._outages = _merge_outages(down)
            self._report_spent()
            await asyncio.sleep(every_s)

    def _add_worker(self) -> _Worker:
        worker_id = f"{self.job_id}-w{next(self._worker_numbers)}"
        handle = FanoutWorker.options(  # type: ignore[attr-defined]
            name=worker_id,
            max_concurrency=10_000,  # async actor: calls in flight, not threads
            num_cpus=self.worker_cpus,  # a token share, so SPREAD sees and spreads them
            scheduling_strategy="SPREAD",  # over the nodes; a restart may go anywhere
        ).remote(
            self.config.model_dump_json(),
            worker_id=worker_id,
            job_id=self.job_id,
            traces=str(self.traces) if self.traces is not None else None,
            coordinators=self._coordinator_names,
            journal=str(self.journal) if self.journal is not None else None,
            budget=self._budget_spec,
            lease_refresh_s=self.lease_refresh_s,
            spread_map_items=self.spread_map_items,
            otel=self.otel,
        )
        worker = _Worker(handle, worker_id, idle_since=time.monotonic())
        self._workers.append(worker)
        return worker

    def _scale(self, now: float) -> None:
        """Add a worker while the queue holds more than a full window beyond what the
        pool can take (one at a time, ``scale_up_every_s`` apart); retire workers idle
        for ``scale_down_idle_s`` down to the minimum."""
        window = self.batch_size * self.batches_per_worker
        if (
            len(self._workers) < self.max_workers
            and len(self._queue) > window
            and now - self._last_scale_up >= self.scale_up_every_s
        ):
            self._last_scale_up = now
            self._add_worker()
            self.stats.scaled_up += 1
            return
        if len(self._workers) <= self.size:
            return
        for worker in self._workers:
            if worker.requests == 0:
                worker.idle_since = min(worker.idle_since, now)
            else:
                worker.idle_since = math.inf
        idle = [
            w
            for w in self._workers
            if w.requests == 0 and now - w.idle_since >= self.scale_down_idle_s
        ]
        for worker in idle[: len(self._workers) - self.size]:
            self._workers.remove(worker)
            self.stats.scaled_down += 1
            self._retiring.add(asyncio.get_running_loop().create_task(self._retire(worker)))

    async def _retire(self, worker: _Worker) -> None:
        with contextlib.suppress(Exception):
            await worker.handle.close.remote()  # its traces roll into Parquet first
        ray.kill(worker.handle, no_restart=True)

    def _make_coordinators(self) -> None:
        seen: set[tuple[str, str]] = set()
        for model in self.config.models.values():
            key = (model.provider, model.model)
            if key in seen:
                continue
            seen.add(key)
            pcfg = self.config.providers[model.provider]
            name = f"{model.provider}/{model.model}"
            actor_name = f"fanout-quota-{self.job_id}-{name}"
            self._coordinator_names[name] = actor_name
            self.coordinators[name] = QuotaCoordinator.options(  # type: ignore[attr-defined]
                name=actor_name
            ).remote(
                name,
                model.requests_per_min or pcfg.requests_per_min,
                model.tokens_per_min or pcfg.tokens_per_min,
                pcfg.max_concurrency,
                pcfg.adaptive,
                self.lease_ttl_s,
                self.size,
                pcfg.window_s,
            )

    def _dag_ref(self, dag: DAG, plan: Plan) -> tuple[str, ray.ObjectRef[bytes]]:
        cached = self._dags.get(id(dag))
        if cached is not None:
            return cached
        for module in _user_modules(plan):
            cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call]
        blob: bytes = cloudpickle.dumps(dag)  # type: ignore[no-untyped-call]
        entry = (hashlib.sha256(blob).hexdigest()[:16], ray.put(blob))
        self._dags[id(dag)] = entry
        return entry

    async def _dispatch(self) -> None:
        """Send micro-batches to the least loaded worker while it has room for one.

        A worker holds at most ``batch_size * batches_per_worker`` requests; room is
        counted per request, freed as each result streams back, so a batch's slowest
        request does not idle the worker.
        """
        assert self._wake is not None
        window = self.batch_size * self.batches_per_worker
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.max_workers > self.size:
                self._scale(time.monotonic())
                # look again in a second: idle workers retire, a waiting queue grows the pool
                asyncio.get_running_loop().call_later(1.0, self._wake.set)
            while self._queue:
                now = time.monotonic()
                up = [w for w in self._workers if w.down_until <= now]
                if not up:  # every worker is restarting: look again shortly
                    retry_at = min(w.down_until for w in self._workers)
                    asyncio.get_running_loop().call_later(retry_at - now, self._wake.set)
                    break
                worker = min(up, key=lambda w: w.requests)
                room = window - worker.requests
                if room < min(self._min_batch, len(self._queue)):
                    break  # every worker is full: wait for results to come back
                batch = self._take_batch(min(room, self.batch_size))
                if not batch:
                    break
                worker.requests += len(batch)
                task = asyncio.get_running_loop().create_task(self._send(worker, batch))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)

    def _take_batch(self, size: int) -> list[_Request]:
        batch: list[_Request] = []
        dag_id = None
        skipped: list[_Request] = []
        while self._queue and len(batch) < size:
            request = self._queue.popleft()
            if request.future.done():  # its caller went away
                continue
            if dag_id is None:
                dag_id = request.dag_id
            if request.dag_id != dag_id:
                skipped.append(request)  # one DAG per batch; the others wait their turn
                continue
            batch.append(request)
        self._queue.extendleft(reversed(skipped))
        return batch

    async def _send(self, worker: _Worker, batch: list[_Request]) -> None:
        assert self._wake is not None
        pending = {r.item[0]: r for r in batch}
        dag_id = batch[0].dag_id
        blob = batch[0].blob
        resent = any(r.sends for r in batch)
        for request in batch:
            request.sends += 1
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.per_worker[worker.worker_id] = self.stats.per_worker.get(
            worker.worker_id, 0
        ) + len(batch)
        try:
            stream: Any = worker.handle.run_batch.options(num_returns="streaming").remote(
                dag_id, blob, [r.item for r in batch], resent, [w.worker_id for w in self._workers]
            )
            async for ref in stream:
                for seq, outcome in await ref:
                    done = pending.pop(seq) if seq in pending else None
                    if done is not None and not done.future.done():
                        done.future.set_result(outcome)
                    worker.requests -= 1  # room for the next batch, not waiting for this one
                self._wake.set()
        except _ACTOR_LOST as exc:
            self.stats.lost_batches += 1
            worker.down_until = time.monotonic() + _RESTART_PAUSE_S
            _log.warning("worker %s lost a batch (%s); re-sending", worker.worker_id, exc)
            self._resend(list(pending.values()), exc)
        except Exception as exc:  # anything else fails the requests, never the pool
            for request in pending.values():
                if not request.future.done():
                    request.future.set_result((type(exc).__name__, str(exc)))
        finally:
            worker.requests -= len(pending)  # those that never came back
            self._wake.set()

    def _resend(self, requests: list[_Request], error: BaseException) -> None:
        again = []
        for request in requests:
            if request.future.done():
                continue
            if request.sends >= self.max_sends:
                request.future.set_result(
                    ("WorkerLost", f"sent {request.sends} times; every worker died: {error}")
                )
            else:
                again.append(request)
        self.stats.resent += len(again)
        self._queue.extendleft(reversed(again))

    # -- inspection and shutdown ---------------------------------------------------------

    async def worker_info(self) -> list[dict[str, object]]:
        """Each worker's placement and counters (waits for a restarting one, up to 30 s)."""

        async def info(handle: Handle) -> dict[str, object]:
            for _ in range(150):
                try:
                    reply = await handle.info.remote()
                    return dict(reply)
                except ray.exceptions.ActorUnavailableError:
                    await asyncio.sleep(0.2)
            return dict(await handle.info.remote())

        return list(await asyncio.gather(*(info(w.handle) for w in self._workers)))

    def worker_handles(self) -> list[Handle]:
        return [w.handle for w in self._workers]

    def worker_load(self) -> list[tuple[Handle, int]]:
        """Each worker's handle and the requests it holds now, the busiest first."""
        ranked = sorted(self._workers, key=lambda w: w.requests, reverse=True)
        return [(w.handle, w.requests) for w in ranked]

    async def aclose(self) -> None:
        """Close the workers (their traces roll into Parquet), then remove the actors."""
        if self._limits_poller is not None:
            self._limits_poller.cancel()
            await asyncio.gather(self._limits_poller, return_exceptions=True)
            self._limits_poller = None
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            for task in list(self._sends):
                task.cancel()
            await asyncio.gather(self._dispatcher, *self._sends, return_exceptions=True)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        closing = [w.handle.close.remote() for w in self._workers]
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)
        extra = [self.budget_coordinator] if self.budget_coordinator is not None else []
        handles = [w.handle for w in self._workers] + list(self.coordinators.values()) + extra
        for handle in handles:
            ray.kill(handle, no_restart=True)
        self.budget_coordinator = None
        self._workers.clear()
        self.coordinators.clear()
        self._dispatcher = None
        if self._started_ray and ray.is_initialized():
            ray.shutdown()

    async def __aenter__(self) -> RayEngine:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"RayEngine(workers={self.size}, address={self.address!r}, job_id={self.job_id!r})"


def _merge_outages(replies: Sequence[object]) -> list[Outage]:
    """One outage per provider/model over the workers' replies: the longest."""
    longest: dict[str, Outage] = {}
    for reply in replies:
        for outage in reply if isinstance(reply, list) else ():
            if isinstance(outage, Outage):
                seen = longest.get(outage.name)
                if seen is None or outage.down_s > seen.down_s:
                    longest[outage.name] = outage
    return list(longest.values())


def _user_modules(plan: Plan) -> list[ModuleType]:
    """Modules of the DAG's functions and models that workers may not be able to import
    (a pipeline file, a test module, ``__main__``): they are pickled by value."""
    found: dict[str, ModuleType] = {}

    def visit(value: object, depth: int = 0) -> None:
        if depth > 3:
            return
        if callable(value) or inspect.isclass(value):
            module = inspect.getmodule(value)
            if module is not None and _is_user_module(module):
                found[module.__name__] = module
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                visit(getattr(value, f.name), depth + 1)
        elif isinstance(value, list | tuple):
            for v in value:
                visit(v, depth + 1)
        elif isinstance(value, Mapping):
            for v in value.values():
                visit(v, depth + 1)

    for node in plan.nodes.values():
        visit(node)
    return list(found.values())


def _is_user_module(module: ModuleType) -> bool:
    name = module.__name__
    if name == "__main__" or name.startswith("fanout.") or name == "fanout":
        return False
    path = getattr(module, "__file__", None)
    if path is None:
        return False
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    return not any(str(path).startswith(p) for p in prefixes)
