"""``FanoutWorker``: an async Ray actor running the local executor, thousands of calls in flight.

Work arrives in micro-batches (many requests per actor call) and results stream
back one by one as they finish (a Ray streaming generator), so a batch's slow
request never holds the others and a dead actor loses only what had not been
returned. Each worker writes its own trace files into the job's traces directory
(no central writer), enforces its lease of every cluster-wide limit, and sends
CPU-bound tools to Ray tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import ray
from ray import cloudpickle

from fanout.budget import Allowance, Budget
from fanout.config import Config
from fanout.dag import DAG
from fanout.errors import ConfigError
from fanout.limits import Lease
from fanout.run import CallJournal, Engine, RunResult
from fanout.trace import OtelSettings
from fanout.types import Usage

Handle = Any  # a Ray actor handle (Ray types them loosely)

__all__ = ["FanoutWorker", "WorkItem", "WorkOutcome", "WorkerJob"]

_log = logging.getLogger(__name__)

WorkItem = tuple[int, Mapping[str, object], Mapping[str, object]]
"""(sequence number, the DAG's inputs, run options: budget_usd, deadline_s, record_key ...)"""
WorkOutcome = tuple[int, RunResult | tuple[str, str]]
"""(sequence number, the result, or (error_type, message) for a request that could not run)"""
WorkerJob = Callable[[Engine, DAG, Any, Any, Callable[[object], None]], Awaitable[object]]
"""A piece of work run whole on one worker (a batch job's shard): ``job(engine, dag,
payload, shared, report)``; ``report(snapshot)`` keeps its latest progress for the driver."""


@ray.remote(num_cpus=0)
def _cpu_tool(
    fn: Callable[..., object], args: tuple[object, ...], kwargs: dict[str, object]
) -> object:
    return fn(*args, **kwargs)


async def ray_cpu_runner(
    fn: Callable[..., object],
    args: tuple[object, ...],
    kwargs: Mapping[str, object],
    num_cpus: float,
) -> object:
    """Runs a CPU-bound tool as a Ray task with its declared CPUs, off the actor's loop."""
    ref = _cpu_tool.options(num_cpus=num_cpus).remote(fn, args, dict(kwargs))
    try:
        return await ref
    except ray.exceptions.RayTaskError as exc:
        raise exc.as_instanceof_cause() from None  # type: ignore[no-untyped-call]


class _Allowance:
    """This worker's share of the job budget: a :class:`Budget` refilled from the coordinator."""

    def __init__(self, instance_id: str, coordinator: Handle, usd: bool, tokens: bool) -> None:
        self.instance_id = instance_id
        self.coordinator = coordinator
        self.budget = Budget(usd=0.0 if usd else None, tokens=0 if tokens else None)
        self.budget.refill = self.refill
        self._lock = asyncio.Lock()
        self.exhausted = False

    async def refill(self, tokens: int, usd: float) -> bool:
        async with self._lock:  # one request at a time; the others find it done
            budget = self.budget
            before = (budget.usd, budget.tokens)
            fits_now = (
                budget.usd is None or budget.spent_usd + budget.held_usd + usd <= budget.usd
            ) and (
                budget.tokens is None
                or budget.spent_tokens + budget.held_tokens + tokens <= budget.tokens
            )
            if fits_now:
                return True  # another call's refill already made room
            if self.exhausted:
                return False
            try:
                allowance: Allowance = await self.coordinator.grant.remote(
                    self.instance_id,
                    budget.spent_usd,
                    budget.spent_tokens,
                    usd + budget.held_usd,
                    tokens + budget.held_tokens,
                )
            except ray.exceptions.RayError:
                return False  # the coordinator is restarting: this call is refused
            budget.usd, budget.tokens = allowance.usd, allowance.tokens
            self.exhausted = allowance.exhausted
            return (budget.usd, budget.tokens) != before

    async def report(self) -> None:
        with contextlib.suppress(ray.exceptions.RayError):
            await self.coordinator.grant.remote(
                self.instance_id, self.budget.spent_usd, self.budget.spent_tokens, 0.0, 0
            )


class _SpreadMaps:
    """A :class:`fanout.run.MapOffload`: a large map's items go to every worker of the
    pool in chunks (this one included, without a Ray call); a peer that fails hands its
    chunk back to run here."""

    def __init__(self, worker: FanoutWorker, min_items: int) -> None:
        self.worker = worker
        self.min_items = min_items
        self._handles: dict[str, Handle] = {}

    def _peer(self, name: str) -> Handle | None:
        if name == self.worker.worker_id:
            return None
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = ray.get_actor(name)
        return handle

    async def run(
        self,
        executor: Any,
        node: Any,
        items: list[object],
        upstream: Mapping[str, object],
        stats: Any,
    ) -> list[tuple[bool, object]]:
        ctx = executor.ctx
        dag_id, blob = self.worker.dag_blobs[ctx.dag_name]
        peers = self.worker.peers or [self.worker.worker_id]
        size = max(16, -(-len(items) // (len(peers) * 4)))
        chunks = [
            [(i, items[i]) for i in range(start, min(len(items), start + size))]
            for start in range(0, len(items), size)
        ]
        budget = ctx.budget
        per_chunk_usd = None
        if budget.usd is not None:  # each chunk gets an equal part of what is left
            per_chunk_usd = max(0.0, budget.usd - budget.spent_usd - budget.held_usd) / len(chunks)
        options: dict[str, object] = {
            "trace_id": ctx.trace_id,
            "span_id": stats.span_id,
            "record_key": ctx.record_key,
            "budget_usd": per_chunk_usd,
            "deadline_s": (
                max(0.001, ctx.deadline_at - ctx.clock.now()) if ctx.deadline_at else None
            ),
            "max_outage_s": ctx.max_outage_s,  # batch work waits out an outage here too
        }
        inputs = dict(executor.inputs)

        async def chunk_on(name: str, chunk: list[tuple[int, object]]) -> _ItemsDone:
            handle = self._peer(name)
            if handle is not None:
                try:
                    done: _ItemsDone = await handle.run_items.remote(
                        dag_id, blob, node.id, inputs, upstream, chunk, options
                    )
                    return done
                except ray.exceptions.RayError as exc:
                    _log.warning("peer %s failed a map chunk (%s); running it here", name, exc)
            return await self.worker.run_items(
                dag_id, blob, node.id, inputs, upstream, chunk, options
            )

        parts = await asyncio.gather(
            *(chunk_on(peers[n % len(peers)], chunk) for n, chunk in enumerate(chunks))
        )
        outcomes: list[tuple[bool, object]] = [(False, None)] * len(items)
        for done, usage, cost, counts in parts:
            for index, ok, value in done:
                outcomes[index] = (ok, value)
            stats.add(usage, cost, counts)  # calls, tool calls, guard verdicts, ...
            if budget.limited:  # what the items spent counts against the request's budget
                budget.charge(tokens=usage.total_tokens, usd=cost)
        return outcomes


_ItemsDone = tuple[list[tuple[int, bool, object]], Usage, float, dict[str, float]]


class _LeaseKeeper:
    """Reports each limiter's counters to its coordinator and applies the lease returned."""

    def __init__(
        self,
        worker_id: str,
        engine: Engine,
        coordinators: Mapping[str, Handle],
        allowance: _Allowance | None = None,
    ) -> None:
        self.allowance = allowance
        self.worker_id = worker_id
        self.engine = engine
        self.coordinators = coordinators
        self.leases: dict[str, Lease] = {}
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        limiters = [lim for lim in self.engine.limiters() if lim.name in self.coordinators]
        replies = await asyncio.gather(
            *(
                self.coordinators[lim.name].report.remote(self.worker_id, lim.lease_report())
                for lim in limiters
            ),
            return_exceptions=True,
        )
        for limiter, reply in zip(limiters, replies, strict=True):
            if isinstance(reply, Lease):
                self.leases[limiter.name] = reply
                limiter.set_lease(
                    reply.requests_per_min,
                    reply.tokens_per_min,
                    reply.max_concurrency,
                    burst_requests=reply.burst_requests,
                    burst_tokens=reply.burst_tokens,
                )
            else:  # the coordinator is restarting: keep the lease we hold
                self.failures += 1
                _log.debug("lease refresh for %s failed: %s", limiter.name, reply)

    def start(self, every_s: float) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(every_s))

    async def _loop(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(Exception):
                await self.refresh()
                if self.allowance is not None:
                    await self.allowance.report()  # alive, and what it spent

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for name, coordinator in self.coordinators.items():
            with contextlib.suppress(Exception):
                await coordinator.leave.remote(self.worker_id)
            self.leases.pop(name, None)


@ray.remote(num_cpus=0, max_restarts=-1)  # max_concurrency is set where it is created
class FanoutWorker:
    def __init__(
        self,
        config_json: str,
        *,
        worker_id: str,
        job_id: str,
        traces: str | None,
        coordinators: Mapping[str, str],
        lease_refresh_s: float = 0.2,
        linger_s: float = 0.01,
        journal: str | None = None,
        budget: tuple[str, bool, bool] | None = None,
        spread_map_items: int | None = 256,
        otel: OtelSettings | None = None,
    ) -> None:
        # Small, plain arguments (JSON, actor names): inlined in the actor's creation
        # task, so Ray can always restart it (object-store arguments may be gone by then).
        self.worker_id = worker_id
        config = Config.model_validate_json(config_json)
        # The job's completed calls (every worker's, a dead one's included): a request
        # re-sent after a worker died does not pay again for calls that worker finished.
        self.journal = CallJournal(journal, writer_id=worker_id) if journal else None
        # The job budget (coordinator name, usd?, tokens?): an allowance per process, so
        # a restarted worker starts a new account and the old one's spending stays counted.
        self.allowance = None
        if budget is not None:
            name, usd, tokens = budget
            instance = f"{worker_id}-{os.getpid()}"
            self.allowance = _Allowance(instance, ray.get_actor(name), usd, tokens)
        self.peers: list[str] = []  # every worker of the pool, as the driver last said
        self.dag_blobs: dict[str, tuple[str, bytes]] = {}
        self.items_run = 0
        spread = _SpreadMaps(self, spread_map_items) if spread_map_items else None
        # A config error here (a provider key missing from the cluster's environment) is
        # kept for ready() to raise: an actor whose constructor raises dies, and the
        # driver would only see ActorDiedError, restart after restart.
        self.config_error: str | None = None
        try:
            self.engine = Engine(
                config,
                traces=traces,
                job_id=job_id,
                cpu_runner=ray_cpu_runner,
                journal=self.journal,
                job_budget=self.allowance.budget if self.allowance is not None else None,
                map_offload=spread,
                # the driver's live-export settings (its OTEL_* environment, which the
                # cluster's processes may not have): each worker exports its own spans
                otel=otel if otel is not None else False,
            )
        except ConfigError as exc:
            self.config_error = str(exc)
            self.engine = Engine(Config(), job_id=job_id)  # an empty one: nothing runs
        self.coordinators = {key: ray.get_actor(name) for key, name in coordinators.items()}
        self.lease_refresh_s = lease_refresh_s
        self.linger_s = linger_s
        self._leases: _LeaseKeeper | None = None
        self._dags: dict[str, DAG] = {}
        self.completed = 0
        self._reports: dict[int, object] = {}  # each running job's latest progress
        self.jobs_run = 0

    def ready(self) -> str:
        """The node this worker runs on; raises the :class:`ConfigError` its engine could
        not be built with (the driver says it as one line)."""
        node = ray.get_runtime_context().get_node_id()[:12]
        if self.config_error is not None:
            raise ConfigError(
                f"a Ray worker (node {node}) cannot build its engine: {self.config_error} "
                "(on Ray, in the environment the cluster's nodes were started with, or in "
                "the job's runtime_env env_vars)"
            )
        return node

    async def _ready(self) -> None:
        if self.config_error is not None:
            self.ready()  # raises it
        if self._leases is None:
            self._leases = _LeaseKeeper(
                self.worker_id, self.engine, self.coordinators, self.allowance
            )
            await self._leases.refresh()  # a share before the first call, never the whole limit
            self._leases.start(self.lease_refresh_s)

    async def run_batch(
        self,
        dag_id: str,
        dag_blob: bytes,
        items: list[WorkItem],
        resent: bool = False,
        peers: list[str] | None = None,
    ) -> AsyncIterator[list[WorkOutcome]]:
        """Run every item of a micro-batch concurrently; yield outcomes as they finish.

        Outcomes that finish close together leave together (within ``linger_s``): one
        streamed object per group, not per request, keeps Ray's cost per result small.
        """
        await self._ready()
        if resent and self.journal is not None:
            self.journal.reload()  # what the dead worker finished before it died
        if peers:
            self.peers = peers
        dag = self._dag(dag_id, dag_blob)
        self.dag_blobs[dag.name] = (dag_id, dag_blob)  # what peers need for its large maps
        pending = {asyncio.ensure_future(self._one(dag, item)) for item in items}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if pending and self.linger_s > 0:
                    more, pending = await asyncio.wait(pending, timeout=self.linger_s)
                    done |= more
                outcomes = [task.result() for task in done]
                self.completed += len(outcomes)
                yield outcomes
        finally:
            for task in pending:
                task.cancel()

    def _dag(self, dag_id: str, blob: bytes) -> DAG:
        dag = self._dags.get(dag_id)
        if dag is None:
            dag = self._dags[dag_id] = cloudpickle.loads(blob)
        return dag

    async def run_items(
        self,
        dag_id: str,
        dag_blob: bytes,
        map_id: str,
        inputs: Mapping[str, object],
        upstream: Mapping[str, object],
        items: list[tuple[int, object]],
        options: Mapping[str, Any],
    ) -> _ItemsDone:
        """Items of a large map of a request running on some worker of the pool."""
        await self._ready()
        done = await self.engine.run_items(
            self._dag(dag_id, dag_blob), map_id, inputs, upstream, items, **options
        )
        self.items_run += len(items)
        return done

    async def _one(self, dag: DAG, item: WorkItem) -> WorkOutcome:
        seq, inputs, options = item
        try:
            result = await self.engine.run(dag, inputs, **options)  # type: ignore[arg-type]
        except ConfigError as exc:
            return seq, (type(exc).__name__, str(exc))
        except Exception as exc:  # one request's failure never stops the batch
            _log.debug("request %s failed unexpectedly", seq, exc_info=True)
            return seq, (type(exc).__name__, f"unexpected {type(exc).__name__}: {exc}")
        return seq, result

    async def run_job(
        self,
        job: WorkerJob,
        dag_id: str,
        dag_blob: bytes,
        index: int,
        payload: object,
        shared: object,
        attempt: int,
    ) -> object:
        """Run ``job`` (see :data:`WorkerJob`) with this worker's engine; ``index`` names
        it for :meth:`job_reports`. ``attempt`` > 1: it ran before on a worker that died,
        so the journal is read again for the calls that one completed."""
        await self._ready()
        if attempt > 1 and self.journal is not None:
            self.journal.reload()

        def report(snapshot: object) -> None:
            self._reports[index] = snapshot

        try:
            result = await job(self.engine, self._dag(dag_id, dag_blob), payload, shared, report)
        finally:
            self._reports.pop(index, None)
        if index >= 0:  # a payload of run_on_workers (ask_workers' questions count < 0)
            self.jobs_run += 1
        return result

    def outages(self) -> list[object]:
        """The providers this worker finds down now (their calls wait)."""
        return list(self.engine.outages())

    def job_reports(self) -> dict[int, object]:
        """The latest progress each running job reported, by index."""
        return dict(self._reports)

    def info(self) -> dict[str, object]:
        """Where this worker runs and what it did (for tests, progress and benchmarks)."""
        leases = self._leases.leases if self._leases is not None else {}
        return {
            "worker_id": self.worker_id,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "completed": self.completed,
            "leases": {k: (v.requests_per_min, v.tokens_per_min) for k, v in leases.items()},
            "lease_failures": self._leases.failures if self._leases is not None else 0,
            "replayed": self.journal.replayed if self.journal is not None else 0,
            "items_run": self.items_run,
            "jobs_run": self.jobs_run,
        }

    async def close(self) -> None:
        if self._leases is not None:
            await self._leases.stop()
        await self.engine.aclose()
