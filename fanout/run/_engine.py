"""``Engine``: providers, models and clock, built once; runs any number of requests concurrently."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from fanout.budget import Budget
from fanout.clock import Clock, SystemClock
from fanout.config import (
    Config,
    ProviderConfig,
    SimProviderConfig,
    default_config,
    load_config,
)
from fanout.dag import DAG, Plan, check_input_types
from fanout.errors import ConfigError
from fanout.limits import Limiter, LimiterState
from fanout.providers import Provider, build_http_provider
from fanout.retry import HedgePolicy
from fanout.run._approval import PAUSED
from fanout.run._cache import ResponseCache
from fanout.run._capabilities import check_media
from fanout.run._chat import ChatResult, traced_chat
from fanout.run._context import MapOffload, Router, RunContext
from fanout.run._embed_check import check_embeds
from fanout.run._escalation import EscalationSink
from fanout.run._executor import execute, run_items
from fanout.run._journal import CallJournal, Spend
from fanout.run._mcp import McpHub, check_sources
from fanout.run._outage import Outage, outage_of
from fanout.run._result import NodeResult, RunResult
from fanout.run._review import ReviewState, dump_outputs, load_outputs, needs_review
from fanout.run._session import check_session, fresh_inputs, open_session, summary_dag
from fanout.run._stream import TokenEvent
from fanout.run._tools import CpuRunner
from fanout.run._tracing import SpanSink, Tracer
from fanout.sim import SimProvider
from fanout.store import ReviewStore, SessionStore, SQLiteStore
from fanout.trace import (
    ContentPolicy,
    OtelSettings,
    OtelSink,
    Redactor,
    TeeSink,
    TraceWriter,
    current_parent,
    otel_settings,
    parse_traceparent,
)
from fanout.types import ChatRequest, RunStatus, Usage

__all__ = ["Engine", "check_inputs"]


class Engine:
    """Runs DAGs against configured providers.

    Build it once (``Engine.from_config("fanout.toml")``, or ``Engine()`` for the
    embedded simulated provider with aliases ``fast`` and ``smart``) and call
    :meth:`run` for each request; runs share the engine's providers and their
    concurrency limits. Use it as an async context manager, or call :meth:`aclose`.

    ``providers`` replaces the providers built from the config, by name (tests
    and custom backends pass their own :class:`fanout.providers.Provider`).
    ``escalation``: a JSONL file where LLM steps whose every option (retries,
    fallbacks, validation retries) failed are written for a person to handle.

    ``traces``: a directory for the trace (one Parquet row per run, node and attempt,
    see :mod:`fanout.trace`), or any object with ``emit(span)``; ``None``: no trace.
    The config's ``[traces]`` section says what is kept of prompts and replies;
    ``redact`` masks PII in them (and in error messages) before anything is
    hashed or written. ``job_id`` groups the rows of one job (default: random).
    ``otel``: live OpenTelemetry export of the same rows (the ``otel`` extra): settings
    (:class:`fanout.trace.OtelSettings`), ``True``/``False`` to force it on or off, or
    ``None``: as the config's ``[traces]`` and the standard ``OTEL_*`` environment say
    (on when an OTLP endpoint is named). Either sink works without the other.

    ``cpu_runner`` runs tools marked ``cpu=True`` elsewhere (the Ray backend passes
    one that starts a Ray task); without it they run in a thread. ``journal``: a
    :class:`CallJournal` of completed calls; a call found there is not made again
    (its cost was paid, and is counted, once: by the run that made it).
    ``job_budget``: a cap on what every run of this engine spends together, on top of
    each run's own budget; a call that would pass it is refused (its run ends
    ``budget_exceeded``), so a job stops at its cap.

    ``store``: where sessions live (a :class:`fanout.store.SessionStore`, or a path for a
    :class:`fanout.store.SQLiteStore`); default: ``sessions.db`` under the config's
    ``data_dir`` if it sets one, else none (a run given a ``session_id`` is then refused).
    ``reviews``: where paused runs and their reviews live (default: the same SQLite file
    as the sessions); a DAG with ``dag.review(...)`` steps needs one.

    ``cache``: a :class:`fanout.run.ResponseCache` (or its directory) of replies shared by
    any jobs and services pointing at it; a call found there is not made (default: the
    config's ``[cache]``, else none).
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        providers: Mapping[str, Provider] | None = None,
        clock: Clock | None = None,
        escalation: str | Path | None = None,
        traces: str | Path | SpanSink | None = None,
        redact: Redactor | None = None,
        job_id: str | None = None,
        cpu_runner: CpuRunner | None = None,
        journal: CallJournal | None = None,
        job_budget: Budget | None = None,
        map_offload: MapOffload | None = None,
        store: SessionStore | str | Path | None = None,
        reviews: ReviewStore | None = None,
        cache: ResponseCache | str | Path | None = None,
        otel: OtelSettings | bool | None = None,
    ) -> None:
        self.map_offload = map_offload
        self.job_budget = job_budget
        self.cpu_runner = cpu_runner
        self.journal = journal
        self.config = config if config is not None else default_config()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.cache = _cache(cache, self.config)
        path = escalation if escalation is not None else self.config.escalation_path
        self.escalation = EscalationSink(path, clock=self.clock) if path is not None else None
        if store is None and self.config.data_dir is not None:
            store = Path(self.config.data_dir)
        self.store: SessionStore | None = (
            SQLiteStore(store, clock=self.clock) if isinstance(store, str | Path) else store
        )
        if reviews is None and isinstance(self.store, SQLiteStore):
            reviews = ReviewStore(self.store.path, clock=self.clock)
        self.reviews = reviews
        self._resuming: dict[str, ReviewState] = {}  # request id -> what a resume restores
        self.job_id = job_id or uuid.uuid4().hex[:16]
        self.trace_writer: TraceWriter | None = None  # the writer this engine owns
        self._traces = traces
        # live export: settings given (a Ray worker gets its driver's), off (False), or
        # from the config's [traces] and the OTEL_* environment (None)
        if otel is None or otel is True:
            tcfg = self.config.traces
            if otel is True:
                tcfg = tcfg.model_copy(update={"otlp": True})
            otel = otel_settings(tcfg)
        self.otel: OtelSettings | None = otel or None
        self.otel_sink: OtelSink | None = None  # the live exporter this engine owns
        self._redact = redact
        self._tracer: Tracer | None = None
        built = dict(providers or {})
        for name, cfg in self.config.providers.items():
            if name not in built:
                built[name] = _build_provider(name, cfg, self.clock)
        self.providers: dict[str, Provider] = built
        self._router: Router | None = None
        self._router_loop: asyncio.AbstractEventLoop | None = None
        self._hub: McpHub | None = None  # MCP servers, on the router's loop
        self._plans: dict[int, _Checked] = {}

    @classmethod
    def from_config(
        cls,
        path: str | Path | None = None,
        *,
        clock: Clock | None = None,
        traces: str | Path | SpanSink | None = None,
        redact: Redactor | None = None,
        job_id: str | None = None,
        job_budget: Budget | None = None,
        cache: str | Path | None = None,
    ) -> Engine:
        """An engine from a TOML file; with ``None``, the embedded simulated default."""
        config = load_config(path) if path is not None else None
        return cls(
            config, clock=clock, traces=traces, redact=redact, job_id=job_id,
            job_budget=job_budget, cache=cache,
        )  # fmt: skip

    def open_traces(self) -> None:
        """Open the trace writer now (else the first run does): a bad directory is a
        :class:`ConfigError` here rather than in a run. Idempotent."""
        traces = self._traces
        if (traces is None and self.otel is None) or self._tracer is not None:
            return
        tcfg = self.config.traces
        if isinstance(traces, str | Path):
            traces = self.trace_writer = TraceWriter(
                traces,
                job_id=self.job_id,
                flush_interval_s=tcfg.flush_interval_s,
                row_group_rows=tcfg.row_group_rows,
                roll_interval_s=tcfg.roll_interval_s,
            )
        sinks: list[SpanSink] = [traces] if traces is not None else []
        if self.otel is not None:  # the same rows, live (each process exports its own)
            self.otel_sink = OtelSink(self.otel)
            sinks.append(self.otel_sink)
        sink = sinks[0] if len(sinks) == 1 else TeeSink(sinks)
        content = ContentPolicy(tcfg.content, key_env=tcfg.hmac_key_env, redact=self._redact)
        self._tracer = Tracer(
            sink, clock=self.clock, job_id=self.job_id, content=content, propagate=tcfg.propagate
        )

    async def check_tools(self, dag: DAG) -> None:
        """Start the MCP servers ``dag`` uses and list their tools now: a server that does
        not start, or a filter naming a tool it lacks, is a :class:`ConfigError` here
        (a batch job asks before its first record) rather than in every run."""
        checked = self._checked(dag)
        if checked.mcp:
            await self._get_hub().prepare(checked.plan)

    def validate(self, dag: DAG) -> Plan:
        """Check ``dag`` against this engine's model aliases; raises :class:`ConfigError`."""
        return self._checked(dag).plan

    def _checked(self, dag: DAG) -> _Checked:
        """``dag``'s plan, checked against the models once (a batch runs one DAG a million
        times), and what a run needs to know of it."""
        plan = dag.validate()  # cached by the DAG until it changes
        checked = self._plans.get(id(plan))
        if checked is None or checked.plan is not plan:
            plan.check_models(self.config.models.keys())
            check_media(plan, self.config, self.providers)
            check_embeds(plan, self.config, self.providers)
            if len(self._plans) >= 64:
                self._plans.clear()
            mcp = check_sources(plan, self.config.mcp)  # the extra, the servers named
            checked = self._plans[id(plan)] = _Checked(plan, needs_review(plan), mcp)
        return checked

    async def run(
        self,
        dag: DAG,
        inputs: Mapping[str, object],
        *,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        deadline_s: float | None = None,
        request_id: str | None = None,
        budget: Budget | None = None,
        record_key: str | None = None,
        interactive: bool = False,
        on_node: Callable[[NodeResult], None] | None = None,
        session_id: str | None = None,
        max_outage_s: float | None = None,
        on_token: Callable[[TokenEvent], None] | None = None,
        traceparent: str | None = None,
    ) -> RunResult:
        """Run one request of ``dag`` with ``inputs``.

        ``budget_usd`` / ``budget_tokens`` cap what this request may spend: a call
        whose worst case would pass the cap is not made. ``deadline_s``: nodes still
        running then are cancelled and the result says which finished. Raises
        :class:`ConfigError` (before any call) for an invalid DAG or missing inputs;
        every run-time failure is reported in the result instead.

        ``budget``: a :class:`Budget` shared with other runs (a job-level cap), used
        instead of ``budget_usd``/``budget_tokens``. ``record_key``: the batch record
        this request runs, for its trace rows. ``interactive``: its calls queue ahead of
        batch work at the rate limiters (which keeps a weighted share). ``on_node`` is
        called with each node's result as it finishes (it must not raise or block).
        ``on_token`` hears each piece of a streamed step's reply as it arrives (a
        :class:`~fanout.run.TokenEvent`; ``discard=True``: the attempt that sent the
        pieces so far failed and is tried again, so they are void).

        ``session_id`` (for a DAG that declares ``dag.session(...)``): the run continues
        that session (its history and state are loaded first) and, if it ends ``ok``,
        its turn and new state are saved. One run per session at a time: a run of a
        session another run holds raises :class:`fanout.errors.SessionBusy` before any call (and so
        does saving, if the session was taken over after this run's lease expired).

        ``max_outage_s`` (batch work): a call whose provider is down (connection errors,
        its circuit open) and has no fallback left waits for it to come back instead of
        failing; once it has been down this long the run ends ``error`` with
        :class:`fanout.errors.ProviderOutage` (a batch job then stops, resumably).
        ``None`` (a service): such a call fails at once, and the deadline decides.

        ``traceparent`` (a W3C header, as a service receives it): the run's trace rows
        join that trace, under that span. Without one, an OpenTelemetry span current
        around this call (the program's own) is the parent.
        """
        checked = self._checked(dag)
        plan, reviewed = checked.plan, checked.reviewed
        inputs = check_inputs(dag, plan, inputs)
        if reviewed:
            self._check_reviewable(dag, session_id)
        if session_id is not None:
            spec = check_session(dag)
            if spec.summarize is not None:
                self.validate(summary_dag(spec.summarize))
        if deadline_s is not None and deadline_s <= 0:
            raise ConfigError(f"deadline_s must be positive (got {deadline_s})")
        if checked.mcp:  # list the MCP servers' tools (once): a bad server fails here
            await self._get_hub().prepare(plan)
        if budget is not None and (budget_usd is not None or budget_tokens is not None):
            raise ConfigError("pass either budget= or budget_usd/budget_tokens, not both")
        if (budget_usd is not None and budget_usd < 0) or (
            budget_tokens is not None and budget_tokens < 0
        ):
            raise ConfigError("budget_usd and budget_tokens must be >= 0 (or None: no limit)")
        fresh = not request_id
        if not request_id:
            request_id = f"{_ids.getrandbits(128) or 1:032x}"
        if self._tracer is None and (self._traces is not None or self.otel is not None):
            self.open_traces()
        tracer = self._tracer
        trace_id = ""
        parent = None
        if tracer is not None:
            parent = parse_traceparent(traceparent) or current_parent()
            usable = fresh or _is_trace_id(request_id)
            trace_id = request_id if usable else tracer.new_trace_id()
            if parent is not None:
                trace_id = parent.trace_id
        if budget is None:
            budget = Budget(usd=budget_usd, tokens=budget_tokens)
        ctx = self._context(
            dag.name,
            budget=budget,
            deadline_s=deadline_s,
            trace_id=trace_id,
            record_key=record_key,
            request_id=request_id,
            map_offload=self.map_offload,
            mcp=checked.mcp,
        )
        ctx.interactive = interactive
        ctx.on_node = on_node
        ctx.on_token = on_token
        ctx.max_outage_s = max_outage_s
        ctx.session_id = session_id
        if parent is not None:
            ctx.trace_parent = parent.span_id
        if session_id is None and reviewed:
            state = self._resuming.pop(request_id, None) or ReviewState()
            result = await execute(plan, {**inputs, **fresh_inputs(dag)}, ctx, request_id, state)
            return await self._checkpoint(plan, inputs, result, state)
        if session_id is None:
            if dag.session_spec is not None:
                inputs = {**inputs, **fresh_inputs(dag)}
            return await execute(plan, inputs, ctx, request_id)
        lease_s = deadline_s + _LEASE_MARGIN_S if deadline_s is not None else _LEASE_S
        hold = await open_session(self.store, dag, session_id, lease_s)
        try:
            inputs = {**inputs, **hold.inputs()}
            result = await execute(plan, inputs, ctx, request_id)
        except BaseException:
            hold.release_now()
            raise
        alias = hold.spec.summarize

        async def summarize(transcript: str) -> RunResult:
            # a run of its own (its own trace rows), under this run's budget
            assert alias is not None and budget is not None
            return await self.run(
                summary_dag(alias),
                {"transcript": transcript},
                budget=budget,
                record_key=record_key,
                interactive=interactive,
            )

        return await hold.close(inputs, result, summarize)

    async def complete(
        self,
        alias: str,
        request: ChatRequest,
        *,
        budget: Budget | None = None,
        deadline_s: float | None = None,
        interactive: bool = True,
        record_key: str | None = None,
        dag_name: str = "gateway",
        on_token: Callable[[TokenEvent], None] | None = None,
    ) -> ChatResult:
        """One chat call on model alias ``alias``, not a DAG (the OpenAI-compatible
        gateway's): its fallbacks, retries, hedging and circuit, its limiter (queued as
        ``interactive`` or batch work), ``budget`` (shared with other calls: a virtual
        key's for its period) and the job budget, the journal, cache and trace (a run
        row named ``dag_name`` with ``record_key``). ``request.model`` is replaced by each
        route's model. Raises :class:`ConfigError` for an unknown alias or a bad
        deadline (before any call), else the call's last error once nothing is left to try.

        With ``request.stream``, the reply streams where the route's provider can, and
        ``on_token`` hears each piece as it arrives (and word that an attempt's pieces
        are void when it fails and the call goes on: :class:`TokenEvent`).
        """
        if alias not in self.config.models:
            known = ", ".join(sorted(self.config.models)) or "none"
            raise ConfigError(f"no model alias {alias!r}; this engine has: {known}")
        if deadline_s is not None and deadline_s <= 0:
            raise ConfigError(f"deadline_s must be positive (got {deadline_s})")
        if self._tracer is None and self._traces is not None:
            self.open_traces()
        tracer = self._tracer
        ctx = self._context(
            dag_name,
            budget=budget if budget is not None else Budget(),
            deadline_s=deadline_s,
            trace_id=tracer.new_trace_id() if tracer is not None else "",
            record_key=record_key,
        )
        ctx.interactive = interactive
        ctx.on_token = on_token
        return await traced_chat(ctx, tracer, alias, request)

    async def resume(
        self,
        dag: DAG,
        review_id: str,
        *,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        deadline_s: float | None = None,
        record_key: str | None = None,
        max_outage_s: float | None = None,
    ) -> RunResult:
        """Go on with the run that review ``review_id`` paused, once it is decided.

        The run starts from its checkpoint: nodes that finished are not run again (their
        outputs are restored; see :mod:`fanout.run._review` for which values can be),
        decided review steps take the decision (approved: the value; edited: the
        reviewer's value; rejected: the step fails) and the rest runs. Raises
        :class:`ConfigError` for an unknown or still pending review, a run that already
        ended, or another DAG than the one that paused; :class:`fanout.errors.ReviewBusy`
        (before any call) while another process resumes the same run.
        """
        store = self._review_store()
        review = await asyncio.to_thread(store.get, review_id)
        if review.status == "pending":
            raise ConfigError(
                f"review {review_id!r} is still pending; approve, edit or reject it first"
            )
        checkpoint = await asyncio.to_thread(store.load_checkpoint, review.run_id)
        if checkpoint.status != RunStatus.WAITING_FOR_REVIEW:
            raise ConfigError(
                f"the run of review {review_id!r} ({review.run_id}) already resumed and ended "
                f"{checkpoint.status}; nothing to resume"
            )
        if checkpoint.dag_name != dag.name:
            raise ConfigError(
                f"review {review_id!r} paused a run of DAG {checkpoint.dag_name!r}, not "
                f"{dag.name!r}; resume it with that pipeline"
            )
        plan = self.validate(dag)
        # one resume at a time, across processes: the claim re-checks, atomically, that
        # the run still waits (another resume may have finished it since it was read)
        owner = uuid.uuid4().hex
        lease_s = deadline_s + _LEASE_MARGIN_S if deadline_s is not None else _LEASE_S
        await asyncio.to_thread(store.claim_resume, review.run_id, owner, lease_s)
        try:
            decided = await asyncio.to_thread(store.list, run_id=review.run_id)
            paused = checkpoint.outputs.get(PAUSED)
            self._resuming[review.run_id] = ReviewState(
                restored=load_outputs(plan, checkpoint.outputs),
                decisions={r.node_id: r for r in decided if r.status != "pending"},
                paused=dict(paused) if isinstance(paused, dict) else {},
            )
            return await self.run(
                dag,
                checkpoint.inputs,
                request_id=review.run_id,
                budget_usd=budget_usd,
                budget_tokens=budget_tokens,
                deadline_s=deadline_s,
                record_key=record_key,
                max_outage_s=max_outage_s,
            )
        finally:
            self._resuming.pop(review.run_id, None)
            await asyncio.to_thread(store.release_resume, review.run_id, owner)

    def use_reviews(self, directory: str | Path) -> ReviewStore:
        """The engine's review store; without one, keep paused runs in ``directory``
        (a batch job's output directory)."""
        if self.reviews is None:
            self.reviews = ReviewStore(directory, clock=self.clock)
        return self.reviews

    def _review_store(self) -> ReviewStore:
        if self.reviews is None:
            raise ConfigError(
                "human review needs a store for paused runs: set data_dir in the config, "
                "or pass Engine(store=DIR)"
            )
        return self.reviews

    def _check_reviewable(self, dag: DAG, session_id: str | None) -> None:
        self._review_store()
        if session_id is not None:
            raise ConfigError(
                f"DAG {dag.name!r} has review steps; a run with a session_id cannot pause "
                "for review (run it without session_id)"
            )

    async def _checkpoint(
        self, plan: Plan, inputs: Mapping[str, object], result: RunResult, state: ReviewState
    ) -> RunResult:
        """Write a paused (or resumed) run's checkpoint and pending reviews to the store."""
        if not state.pending and not state.decisions:
            return result  # never paused: nothing to keep
        store = self._review_store()
        reviews = await asyncio.to_thread(
            store.checkpoint,
            result.request_id,
            plan.dag_name,
            inputs=dict(inputs),
            outputs=_with_paused(dump_outputs(plan, state.outputs), state.paused),
            status=str(result.status),
            result=result.to_dict(),
            pending=state.pending,
        )
        return dataclasses.replace(result, reviews=tuple(r.review_id for r in reviews))

    async def run_items(
        self,
        dag: DAG,
        map_id: str,
        inputs: Mapping[str, object],
        upstream: Mapping[str, object],
        items: list[tuple[int, object]],
        *,
        trace_id: str = "",
        span_id: str = "",
        record_key: str | None = None,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        deadline_s: float | None = None,
        max_outage_s: float | None = None,
    ) -> tuple[list[tuple[int, bool, object]], Usage, float, dict[str, float]]:
        """Run items of a map for a request that runs elsewhere (its map spread over the
        pool); returns ``(index, ok, value or error)`` per item, usage, cost and the
        node's counters (calls, retries, tool calls, guard verdicts, ...: ``NodeStats.counts``)."""
        checked = self._checked(dag)
        plan = checked.plan
        if checked.mcp:
            await self._get_hub().prepare(plan)
        if self._tracer is None and (self._traces is not None or self.otel is not None):
            self.open_traces()
        # never spread again from here: these items are the spread
        ctx = self._context(
            dag.name,
            budget=Budget(usd=budget_usd, tokens=budget_tokens),
            deadline_s=deadline_s,
            trace_id=trace_id,
            record_key=record_key,
            mcp=checked.mcp,
        )
        ctx.max_outage_s = max_outage_s
        done, stats = await run_items(plan, map_id, inputs, upstream, items, ctx, span_id)
        return done, stats.usage, stats.cost_usd, stats.counts()

    def _context(
        self,
        dag_name: str,
        *,
        budget: Budget,
        deadline_s: float | None,
        trace_id: str,
        record_key: str | None,
        request_id: str = "",
        map_offload: MapOffload | None = None,
        mcp: bool = False,
    ) -> RunContext:
        """One request's context over this engine's router, journal, budgets and trace."""
        return RunContext(
            router=self._get_router(),
            budget=budget,
            clock=self.clock,
            deadline_at=self.clock.now() + deadline_s if deadline_s is not None else None,
            request_id=request_id,
            dag_name=dag_name,
            escalation=self.escalation,
            tracer=self._tracer if trace_id else None,
            trace_id=trace_id,
            record_key=record_key,
            cpu_runner=self.cpu_runner,
            journal=self.journal,
            job_budget=self.job_budget,
            map_offload=map_offload,
            mcp=self._get_hub() if mcp else None,
            cache=self.cache,
        )

    def run_sync(
        self, dag: DAG, inputs: Mapping[str, object], **kwargs: float | str | None
    ) -> RunResult:
        """:meth:`run` from synchronous code (starts and closes an event loop)."""
        return asyncio.run(self.run(dag, inputs, **kwargs))  # type: ignore[arg-type]

    def limiters(self) -> list[Limiter]:
        """The (provider, model) limiters of the running event loop's router."""
        return self._get_router().limiters()

    def use_providers(self, providers: Mapping[str, Provider], *, config: Config) -> None:
        """Replace providers by name, and the config: a batch job in batch mode wraps a
        provider in its Batch API client and turns batch mode on for its models (each
        wrapper closes what it wraps). Routes are rebuilt for the next run."""
        self.config = config
        self.providers.update(providers)
        self._router = None
        self._plans.clear()

    def use_journal(self, directory: str | Path) -> None:
        """Record every completed call in ``directory`` (this process's own file) and
        answer a call found there from it, unpaid: what a resumed batch job needs."""
        if self.journal is not None:
            self.journal.close()
        self.journal = CallJournal(directory, writer_id=f"{self.job_id}-{os.getpid()}")

    def hedges(self) -> dict[str, HedgePolicy]:
        """Each hedged alias's policy (learned delay, calls, hedges sent) on this loop."""
        return self._router.hedges() if self._router else {}

    where = "this process"  # what runs the job (a RayEngine names its cluster)

    def outages(self) -> list[Outage]:
        """Each (provider, model) that is down now (its circuit open): since when, and why."""
        if self._router is None:
            return []
        found = (outage_of(lim.name, circ, self.clock) for lim, circ in self._router.circuits())
        return [outage for outage in found if outage is not None]

    def count_spent(self, spent: Spend) -> None:
        """Count what earlier runs of this batch job spent against the job budget (a
        resumed job stops at its cap, not at its cap again)."""
        if self.job_budget is not None:
            self.job_budget.charge(tokens=spent.tokens, usd=spent.usd)

    def limiter_states(self) -> list[LimiterState]:
        """Each (provider, model) limiter's pace, queue and waits: where the time goes."""
        return [limiter.state() for limiter in self._router.limiters()] if self._router else []

    async def aclose(self) -> None:
        """Close providers and write out the trace (an owned writer rolls into Parquet)."""
        if self.journal is not None:
            self.journal.close()
        try:
            if self._hub is not None:
                await self._hub.aclose()
            for provider in self.providers.values():
                await provider.aclose()
        finally:
            if self.trace_writer is not None:
                await asyncio.to_thread(self.trace_writer.close)
            if self.otel_sink is not None:  # what is queued goes out now
                await asyncio.to_thread(self.otel_sink.close)

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _get_router(self) -> Router:
        # Semaphores belong to one event loop; an engine reused under a new loop
        # (asyncio.run twice) gets fresh ones.
        loop = asyncio.get_running_loop()
        if self._router is None or self._router_loop is not loop:
            self._router = Router(self.config, self.providers, self.clock)
            self._router_loop = loop
            self._hub = None  # its sessions belonged to the old loop
        return self._router

    def _get_hub(self) -> McpHub:
        """The MCP servers on this loop (sessions start when a run first needs them)."""
        self._get_router()
        if self._hub is None:
            self._hub = McpHub(self.config.mcp, self.clock)
        return self._hub

    def __repr__(self) -> str:
        return f"Engine(providers={sorted(self.providers)}, models={sorted(self.config.models)})"


@dataclasses.dataclass(frozen=True, slots=True)
class _Checked:
    plan: Plan
    reviewed: bool  # a run may pause for a person
    mcp: bool = False  # some llm node calls MCP tools


# Request ids: 128 random bits (a W3C trace id as they are) from a generator of our own,
# seeded from the OS and again in a forked child: a fifth of uuid4's cost, and no
# user's random.seed() makes two runs share an id.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)

# How long a run without a deadline holds its session (or a paused run it resumes)
# before another run may take it over (a crashed process's lease lapses then); a run
# with a deadline: that plus a margin.
_LEASE_S = 600.0
_LEASE_MARGIN_S = 60.0


def check_inputs(dag: DAG, plan: Plan, inputs: Mapping[str, object]) -> Mapping[str, object]:
    """``inputs``, each typed one validated against its declared type; raise
    :class:`ConfigError` naming the inputs that ``inputs`` lacks or that do not fit."""
    missing = [name for name in plan.inputs if name not in inputs]
    if missing:
        raise ConfigError(
            f"DAG {dag.name!r}: missing input(s) {missing}; pass them in inputs="
            f"{{...}} (expected: {list(plan.inputs)})"
        )
    return check_input_types(plan, inputs)


def _with_paused(outputs: dict[str, object], paused: dict[str, object]) -> dict[str, object]:
    """The checkpoint's outputs, with the agent turns waiting for approval (if any)."""
    return {**outputs, PAUSED: paused} if paused else outputs


def _is_trace_id(value: str) -> bool:
    """A request id usable as the trace id: 32 lowercase hex digits, not all zero."""
    return len(value) == 32 and value.strip("0123456789abcdef") == "" and value != "0" * 32


def _cache(cache: ResponseCache | str | Path | None, config: Config) -> ResponseCache | None:
    """The engine's response cache: ``cache``, a directory for one (sized as ``[cache]``
    says), else the config's ``[cache]``, else none."""
    ccfg = config.cache
    if isinstance(cache, str | Path) and ccfg is None:
        return ResponseCache(cache)
    if isinstance(cache, str | Path) or (cache is None and ccfg is not None):
        assert ccfg is not None
        return ResponseCache(cache or ccfg.dir, max_bytes=ccfg.max_bytes, sampled=ccfg.sampled)
    return cache


def check_capabilities(plan: Plan, config: Config) -> None:
    """What :meth:`Engine.validate` checks beyond model names, for an engine that builds
    no providers of its own (a Ray driver): each step's media and each embed step against
    what its model's protocol takes. Raises :class:`ConfigError` before any call."""
    clock = SystemClock()
    providers = {name: _build_provider(name, cfg, clock) for name, cfg in config.providers.items()}
    check_media(plan, config, providers)
    check_embeds(plan, config, providers)


def _build_provider(name: str, cfg: ProviderConfig, clock: Clock) -> Provider:
    if isinstance(cfg, SimProviderConfig):
        return SimProvider.from_config(name, cfg, clock=clock)
    return build_http_provider(name, cfg)
