"""Per-request state shared by node executors, and the one path every provider call takes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from fanout.budget import Budget
from fanout.clock import Clock
from fanout.config import Config, ModelConfig
from fanout.errors import (
    CircuitOpen,
    ConfigError,
    DeadlineExceeded,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    RequestTooLarge,
)
from fanout.limits import Limiter, Permit
from fanout.providers import (
    CALL_HEADERS,
    BatchingProvider,
    EmbeddingProvider,
    Provider,
    StreamingProvider,
    media_estimator,
)
from fanout.retry import CircuitBreaker, HedgePolicy, RetryPolicy, provider_fault
from fanout.run._cache import ResponseCache
from fanout.run._capabilities import accepts, refused_content
from fanout.run._embed import EmbedPacker
from fanout.run._escalation import EscalationSink
from fanout.run._journal import CallJournal, call_key
from fanout.run._outage import describe, is_outage, wait_until_up
from fanout.run._stream import TokenEvent, TokenTap
from fanout.run._tools import CpuRunner
from fanout.run._tracing import CallSite, Tracer, Wire
from fanout.trace import format_traceparent, provider_identity
from fanout.types import (
    MODALITIES,
    NO_USAGE,
    ChatRequest,
    ChatResponse,
    Message,
    Usage,
    estimate_prompt_tokens,
)

if TYPE_CHECKING:
    from fanout.run._mcp import McpHub
    from fanout.run._result import NodeResult
    from fanout.run._review import ReviewState

__all__ = [
    "MapOffload",
    "ModelRoute",
    "NodeStats",
    "Router",
    "RunContext",
]


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A model alias resolved to its provider, model name, prices, limiter, circuit, retries.

    Aliases naming the same (provider, model) share one limiter and one circuit.
    ``hedge``: the alias's learned hedge delay and budget (``None``: never hedged);
    ``hedge_to``: where its duplicates go (itself, or its first fallback).
    """

    alias: str
    provider: Provider
    config: ModelConfig
    timeout_s: float
    limiter: Limiter
    circuit: CircuitBreaker
    retry: RetryPolicy
    hedge: HedgePolicy | None = None
    hedge_to: str | None = None
    batched: bool = False  # through the provider's Batch API
    # content kinds the alias takes: its provider's, narrowed by the model's modalities
    accepts: frozenset[str] = frozenset(MODALITIES)
    wire: Wire | None = None  # the provider's well-known name and host, for trace rows

    def cost_usd(self, usage: Usage) -> float:
        return self.config.cost_usd(
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_input_tokens,
            usage.cache_write_tokens,
        )


class Router:
    """Model aliases to routes; one concurrency cap per provider, one limiter per model.

    An alias with ``batch.enabled`` whose provider is a :class:`BatchingProvider` (a
    batch job in batch mode) gets a batch route (:func:`_batch_route`); with
    ``batch.online_fallback`` its chain tries the same model online next.
    """

    def __init__(self, config: Config, providers: Mapping[str, Provider], clock: Clock) -> None:
        self._routes: dict[str, ModelRoute] = {}
        self._online: dict[str, ModelRoute] = {}  # batch aliases' online twins
        self._clock = clock
        self._packers: dict[tuple[str, str], EmbedPacker] = {}  # per (provider, model)
        shared: dict[tuple[str, str], tuple[Limiter, CircuitBreaker]] = {}
        for alias, model in config.models.items():
            pcfg = config.providers[model.provider]
            if model.provider not in providers:
                raise ConfigError(f"provider {model.provider!r} of model {alias!r} was not built")
            provider = providers[model.provider]
            online = provider.online if isinstance(provider, BatchingProvider) else provider
            key = (model.provider, model.model)
            if key not in shared:
                limiter = Limiter(
                    clock=clock,
                    name=f"{model.provider}/{model.model}",
                    requests_per_min=model.requests_per_min or pcfg.requests_per_min,
                    tokens_per_min=model.tokens_per_min or pcfg.tokens_per_min,
                    max_concurrency=pcfg.max_concurrency,
                    window_s=pcfg.window_s,
                    adaptive=pcfg.adaptive,
                )
                circuit = CircuitBreaker(
                    clock,
                    failure_threshold=pcfg.circuit.failure_threshold,
                    cooldown_s=pcfg.circuit.cooldown_s,
                )
                shared[key] = (limiter, circuit)
            limiter, circuit = shared[key]
            retry = RetryPolicy(
                max_attempts=pcfg.retry.max_attempts,
                max_elapsed_s=pcfg.retry.max_elapsed_s,
                initial_backoff_s=pcfg.retry.initial_backoff_s,
                max_backoff_s=pcfg.retry.max_backoff_s,
                retry_on=frozenset(pcfg.retry.retry_on),
            )
            hedge = hedge_to = None
            if model.hedge is not None:
                hedge = HedgePolicy(
                    quantile=model.hedge.quantile,
                    max_extra=model.hedge.max_extra,
                    min_samples=model.hedge.min_samples,
                )
                hedge_to = alias
                if model.hedge.to == "fallback" and model.fallbacks:
                    hedge_to = model.fallbacks[0]
            wire = Wire(*provider_identity(pcfg.kind, getattr(pcfg, "base_url", None)))
            route = ModelRoute(
                alias, online, model, pcfg.timeout_s, limiter, circuit, retry, hedge, hedge_to,
                accepts=accepts(alias, model, online, pcfg.kind),
                wire=wire,
            )  # fmt: skip
            self._routes[alias] = route
            if model.batch.enabled and provider is not online:
                batching = getattr(pcfg, "batch", None)  # only kinds with a Batch API have one
                discount = batching.discount if batching is not None else 0.5
                self._routes[alias] = _batch_route(
                    route, provider, clock, pcfg.retry.max_attempts, discount
                )
                if model.batch.online_fallback:
                    self._online[alias] = dataclasses.replace(route, hedge=None, hedge_to=None)

    @property
    def aliases(self) -> frozenset[str]:
        return frozenset(self._routes)

    def route(self, alias: str) -> ModelRoute:
        return self._routes[alias]

    def embed_route(self, alias: str) -> tuple[ModelRoute, EmbedPacker]:
        """The alias's online route and the packer of its (provider, model)."""
        route = self._online.get(alias) or self._routes[alias]
        model = route.config
        key = (model.provider, model.model)
        packer = self._packers.get(key)
        if packer is None:
            provider = route.provider
            if not isinstance(provider, EmbeddingProvider):
                raise ConfigError(
                    f"model {alias!r}: provider {model.provider!r} has no embeddings endpoint; "
                    "embed with a model of a provider that has one "
                    "(kind openai, azure, gemini, bedrock or sim)"
                )
            packer = self._packers[key] = EmbedPacker(
                provider=provider, model=model.model, limiter=route.limiter,
                circuit=route.circuit, retry=route.retry, clock=self._clock,
                timeout_s=route.timeout_s, max_inputs=model.embed_max_inputs,
                max_tokens=model.embed_max_tokens, linger_s=model.embed_linger_ms / 1000,
                verdict=lambda exc, permit: _verdict(route, exc, permit),
            )  # fmt: skip
        return route, packer

    def hedges(self) -> dict[str, HedgePolicy]:
        """The hedge policy of each hedged alias (delay learned, hedges sent)."""
        return {a: r.hedge for a, r in self._routes.items() if r.hedge is not None}

    def chain(self, alias: str) -> tuple[ModelRoute, ...]:
        """The alias's route followed by its fallbacks, in order."""
        route = self._routes[alias]
        twin = self._online.get(alias)
        first = (route,) if twin is None else (route, twin)
        return (*first, *(self._routes[f] for f in route.config.fallbacks))

    def limiters(self) -> list[Limiter]:
        routes = [*self._routes.values(), *self._online.values()]
        return list({id(r.limiter): r.limiter for r in routes if not r.batched}.values())

    def circuits(self) -> list[tuple[Limiter, CircuitBreaker]]:
        """Each online (provider, model)'s limiter (its name) and circuit, once."""
        routes = [*self._routes.values(), *self._online.values()]
        shared = {id(r.circuit): (r.limiter, r.circuit) for r in routes if not r.batched}
        return list(shared.values())


_NEVER = 2**62  # failures before a batch route's circuit opens: a line's failure is its own


class _Unpaced(Limiter):
    """A batch route's limiter: every call passes at once (a limiter's start-up window
    would hold all but a few until the first answer, hours away); the Batch API's own
    limits (requests and bytes per batch, enqueued tokens) are the batching client's."""

    async def acquire(self, tokens: int = 0, *, interactive: bool = False) -> Permit:
        return self._grant(tokens, self.clock.now(), 0.0)


def _batch_route(
    online: ModelRoute, provider: Provider, clock: Clock, max_attempts: int, discount: float
) -> ModelRoute:
    """An alias in batch mode: its calls wait in the provider's batch queue, not at the
    online limiter (the Batch API has its own pool), answer when their batch ends (hours:
    no timeout, a retry joins a later batch at once) and cost the batch prices."""
    return ModelRoute(
        online.alias,
        provider,
        online.config.batch_priced(discount),
        _BATCH_TIMEOUT_S,
        _Unpaced(clock=clock, name=f"{online.limiter.name}@batch", adaptive=False),
        CircuitBreaker(clock, failure_threshold=_NEVER),
        RetryPolicy(
            max_attempts=max_attempts,
            max_elapsed_s=float("inf"),
            initial_backoff_s=0.0,
            max_backoff_s=0.0,
            retry_on=online.retry.retry_on,
        ),
        batched=True,
        wire=online.wire,
    )


_BATCH_TIMEOUT_S = 2 * 86_400.0  # unused by a batching provider; the window is its own


@dataclass(slots=True)
class NodeStats:
    """Usage, cost and time of one node, summed over its calls (and, for a map, its items)."""

    usage: Usage = NO_USAGE
    cost_usd: float = 0.0
    # calls answered from the call journal: paid by an earlier run (not in usage/cost)
    replayed: Usage = NO_USAGE
    replayed_cost_usd: float = 0.0
    calls: int = 0
    retries: int = 0
    fallbacks: int = 0
    limiter_wait_s: float = 0.0
    backoff_s: float = 0.0
    hedges: int = 0  # duplicates sent for calls slower than their alias's learned quantile
    span_id: str = ""  # the node's trace span, parent of its attempt rows
    tool_calls: int = 0  # an llm node's Python tool calls (its agent loop)
    tool_errors: int = 0  # ... those that went back to the model as errors
    guard_rejections: int = 0  # guard verdicts Reject (outputs retried, inputs refused)
    guard_repairs: int = 0  # guard verdicts Repair (outputs corrected, inputs masked)
    # An llm node with Python tools (not inside a map): its conversation so far.
    transcript: list[Message] | None = None

    def counts(self) -> dict[str, float]:
        """The counters that add up across processes (a map's items run on other workers)."""
        counts: dict[str, float] = {name: getattr(self, name) for name in _ADDITIVE}
        counts["replayed_input_tokens"] = self.replayed.input_tokens
        counts["replayed_output_tokens"] = self.replayed.output_tokens
        return counts

    def add(self, usage: Usage, cost_usd: float, counts: Mapping[str, float]) -> None:
        """Add what items run elsewhere used and counted (see :meth:`counts`)."""
        self.usage = self.usage + usage
        self.cost_usd += cost_usd
        for name in _ADDITIVE:
            setattr(self, name, getattr(self, name) + counts.get(name, 0))
        self.replayed = self.replayed + Usage(
            int(counts.get("replayed_input_tokens", 0)),
            int(counts.get("replayed_output_tokens", 0)),
        )


_ADDITIVE = (
    "calls", "retries", "fallbacks", "limiter_wait_s", "backoff_s", "hedges",
    "tool_calls", "tool_errors", "guard_rejections", "guard_repairs", "replayed_cost_usd",
)  # fmt: skip


class MapOffload(Protocol):
    """Runs a large map's items elsewhere (the Ray backend: on the other workers).

    ``run(executor, node, items, upstream, stats)`` returns ``(ok, value or error)``
    per item, in order, and adds the calls' usage and cost to ``stats``.
    """

    min_items: int

    async def run(
        self,
        executor: Any,
        node: Any,
        items: list[object],
        upstream: Mapping[str, object],
        stats: NodeStats,
    ) -> list[tuple[bool, object]]: ...


class RunContext:
    """One request's budget and deadline, and the single path every provider call takes."""

    __slots__ = (
        "budget",
        "cache",
        "clock",
        "cpu_runner",
        "dag_name",
        "deadline_at",
        "escalation",
        "interactive",
        "job_budget",
        "journal",
        "map_offload",
        "max_outage_s",
        "mcp",
        "on_node",
        "on_token",
        "record_key",
        "request_id",
        "review",
        "router",
        "session_id",
        "trace_id",
        "trace_parent",
        "tracer",
    )

    def __init__(
        self,
        *,
        router: Router,
        budget: Budget,
        clock: Clock,
        deadline_at: float | None,
        request_id: str = "",
        dag_name: str = "",
        escalation: EscalationSink | None = None,
        tracer: Tracer | None = None,
        trace_id: str = "",
        record_key: str | None = None,
        cpu_runner: CpuRunner | None = None,
        journal: CallJournal | None = None,
        job_budget: Budget | None = None,
        map_offload: MapOffload | None = None,
        interactive: bool = False,
        on_node: Callable[[NodeResult], None] | None = None,
        max_outage_s: float | None = None,
        mcp: McpHub | None = None,
        cache: ResponseCache | None = None,
        on_token: Callable[[TokenEvent], None] | None = None,
    ) -> None:
        self.on_token = on_token  # told each piece of a streamed reply (a service's caller)
        self.cache = cache  # replies shared across jobs and services, by call key
        # batch work: a call whose provider is down waits up to this long (else fails fast)
        self.max_outage_s = max_outage_s
        self.mcp = mcp  # the engine's MCP servers (tools=[mcp(...)])
        self.review: ReviewState | None = None  # a run that may pause: decisions, paused turns
        self.interactive = interactive  # queue ahead of batch work at the limiters
        self.on_node = on_node  # told of each node as it finishes (a service streams them)
        self.map_offload = map_offload
        self.job_budget = job_budget
        self.cpu_runner = cpu_runner
        self.journal = journal
        self.router = router
        self.budget = budget
        self.clock = clock
        self.deadline_at = deadline_at
        self.request_id = request_id
        self.dag_name = dag_name
        self.escalation = escalation
        self.tracer = tracer
        self.trace_id = trace_id
        self.trace_parent: str | None = None  # the span this run's row hangs under
        self.session_id: str | None = None  # the session this run is a turn of
        self.record_key = record_key

    async def call(
        self,
        route: ModelRoute,
        request: ChatRequest,
        stats: NodeStats,
        site: CallSite | None,
        *,
        last: bool = True,
    ) -> ChatResponse:
        """One logical call; with a journal, a call completed before (by a worker that
        died, by an earlier run of the job) is answered from it and not paid again; with
        a cache, a call any job or service made before is answered from it, unpaid.

        ``last``: no fallback model follows ``route`` in its node's chain, so in batch
        work (``max_outage_s`` set) an outage of its provider waits instead of failing.
        """
        refused = refused_content(route, request)
        if refused is not None:
            raise refused
        journal, cache = self.journal, self.cache
        if cache is not None and not cache.cacheable(request):
            cache = None
        if journal is None and cache is None:
            return await self._held(route, request, stats, site, last)
        key = call_key(route.config.provider, request)
        if site is not None:  # the call's rows (its attempts, a later replay) share the key
            site = CallSite(
                site.trace_id, site.node_id, site.parent_span_id, site.map_index,
                site.fallback_index, key[:16],
            )  # fmt: skip  # not dataclasses.replace: a third of its cost, once a call
        done = cache.get(key) if cache is not None else None
        hit, cost = done is not None, 0.0
        if done is None and journal is not None:
            found = journal.get_paid(key)
            if found is not None:
                done, paid = found
                cost = paid if paid is not None else route.cost_usd(done.usage)
        if done is not None:
            if request.stream and self.on_token is not None and site is not None and done.content:
                # answered whole from the journal or the cache: its text as one piece
                self.on_token(TokenEvent(site.node_id, done.content, 1, site.map_index))
            if not hit:  # already spent (by the run that made it): the record's, not this run's
                stats.replayed = stats.replayed + done.usage
                stats.replayed_cost_usd += cost
            if self.tracer is not None and site is not None:  # every step leaves a row
                self.tracer.replayed(
                    site, self.dag_name, self.record_key, route.alias, route.config.provider,
                    request, done, self.clock.now(), self.budget, cost, cache_hit=hit,
                    wire=route.wire,
                )  # fmt: skip
            return done
        response = await self._held(route, request, stats, site, last)
        if journal is not None:
            cost = route.cost_usd(response.usage)
            journal.put(key, response, record=self.record_key, cost_usd=cost)
        if cache is not None:
            cache.put(key, response)
        return response

    async def _held(
        self,
        route: ModelRoute,
        request: ChatRequest,
        stats: NodeStats,
        site: CallSite | None,
        last: bool,
    ) -> ChatResponse:
        """:meth:`_call`; in batch work, an outage of the provider (connection errors, its
        circuit open) with no fallback left waits for it to come back and tries again."""
        max_outage_s = self.max_outage_s
        if max_outage_s is None or not last:
            return await self._call(route, request, stats, site)
        while True:
            try:
                return await self._call(route, request, stats, site)
            except ProviderError as exc:
                if not is_outage(exc, route.circuit):
                    raise
            await wait_until_up(
                route.limiter.name, route.config.provider, route.circuit, self.clock, max_outage_s
            )

    async def _call(
        self, route: ModelRoute, request: ChatRequest, stats: NodeStats, site: CallSite | None
    ) -> ChatResponse:
        """Attempts with back-off on retryable errors (tenacity).

        The first attempt runs without tenacity's machinery (the common case stays cheap),
        hedged when the alias hedges; retries are not hedged.
        """
        try:
            if route.hedge is not None:
                return await self._hedged(route, route.hedge, request, stats, site)
            return await self._attempt(route, request, stats, site, 1, 0.0)
        except ProviderError as exc:
            if not route.retry.retryable(exc) or route.retry.max_attempts <= 1:
                raise
            first_error = exc
        start = self.clock.now()
        policy = route.retry

        def stop(state: RetryCallState) -> bool:
            # attempt_number counts tenacity's attempts; the first one ran above.
            return (
                state.attempt_number + 1 >= policy.max_attempts
                or self.clock.now() - start >= policy.max_elapsed_s
            )

        backoff = [0.0]  # the sleep before the next attempt, for its trace row

        async def sleep(seconds: float) -> None:
            if self.deadline_at is not None and self.clock.now() + seconds >= self.deadline_at:
                raise first_error  # no time left for another attempt
            stats.backoff_s += seconds
            backoff[0] = seconds
            await self.clock.sleep(seconds)

        retrying = AsyncRetrying(
            stop=stop,
            wait=policy.wait_s,
            sleep=sleep,
            retry=retry_if_exception(policy.retryable),
            reraise=True,
        )
        await sleep(policy.wait_s(_first_state(retrying, first_error)))
        async for attempt in retrying:
            with attempt:
                stats.retries += 1
                number = attempt.retry_state.attempt_number + 1
                return await self._attempt(route, request, stats, site, number, backoff[0])
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _hedged(
        self,
        route: ModelRoute,
        hedge: HedgePolicy,
        request: ChatRequest,
        stats: NodeStats,
        site: CallSite | None,
    ) -> ChatResponse:
        """The first attempt; if it has not answered by the alias's learned delay and the
        hedge budget allows, a duplicate goes out too. The first answer wins and the
        other attempt is cancelled (its budget reservation and permit released).

        The first attempt runs in the caller's task and only a clock timer is armed, so
        a call that answers in time costs next to nothing more; the duplicate gets a
        task, and if it answers first it cancels the caller's attempt (the way
        ``asyncio.timeout`` does, telling its own cancellation from anyone else's).
        """
        delay_s = hedge.delay_s()
        hedge.note_call()
        start = self.clock.now()
        if delay_s is None:  # not learned yet: a plain attempt that teaches the delay
            response = await self._attempt(route, request, stats, site, 1, 0.0)
            hedge.observe(self.clock.now() - start)
            return response
        caller = asyncio.current_task()
        assert caller is not None
        race = _Race()

        def won(task: asyncio.Task[ChatResponse]) -> None:
            if race.first_done or task.cancelled() or task.exception() is not None:
                return
            race.won = True
            caller.cancel()  # the duplicate answered first: stop the first attempt

        def fire() -> None:
            # a stream that has begun is answering: its pieces are already the caller's
            streaming = race.tap is not None and race.tap.chunks > 0
            if race.first_done or streaming or not hedge.try_hedge():
                return
            target = self.router.route(route.hedge_to or route.alias)
            duplicate = request
            if target.config.model != request.model:  # hedged to the fallback model
                duplicate = dataclasses.replace(request, model=target.config.model)
            stats.hedges += 1
            race.task = asyncio.get_running_loop().create_task(
                self._attempt(
                    target, duplicate, stats, site, 1, 0.0, hedged=True, hedge_delay_s=delay_s
                )
            )
            race.task.add_done_callback(won)

        timer = self.clock.call_later(delay_s, fire)
        cancelling = caller.cancelling()
        try:
            try:
                response = await self._attempt(route, request, stats, site, 1, 0.0, race=race)
            finally:
                race.first_done = True
                timer.cancel()
        except asyncio.CancelledError:
            if race.won and race.task is not None and caller.uncancel() <= cancelling:
                response = race.task.result()  # ours: the duplicate won
            else:
                raise
        except ProviderError as first_error:
            if race.task is None:
                raise
            try:  # the first attempt failed: the duplicate in flight may still answer
                response = await race.task
            except ProviderError:
                raise first_error from None  # both failed: the first attempt's error decides
        finally:
            hedged = race.task
            if hedged is not None and not hedged.done():
                hedged.cancel()
                await asyncio.gather(hedged, return_exceptions=True)
        # The first attempt's time to answer, or (lost to the duplicate) at least this
        # long: slow calls stay in the sample, so the quantile holds.
        hedge.observe(self.clock.now() - start)
        return response

    async def _attempt(
        self,
        route: ModelRoute,
        request: ChatRequest,
        stats: NodeStats,
        site: CallSite | None,
        number: int,
        backoff_s: float,
        *,
        hedged: bool = False,
        hedge_delay_s: float | None = None,
        race: _Race | None = None,
    ) -> ChatResponse:
        """One attempt; traced, its row's time is the call on the wire (from the request
        going out, once the budget and the limiter let it, to the answer). ``race``: the
        hedge this first attempt may be raced by (it sees whether the stream began)."""
        tap = None
        if request.stream:
            listener = None if hedged else self.on_token
            node_id, index = (site.node_id, site.map_index) if site is not None else ("", None)
            tap = TokenTap(self.clock, listener, node_id, index, number)
            if race is not None:
                race.tap = tap
        if self.tracer is None or site is None:
            try:
                return await self._attempt_untraced(route, request, stats, None, tap)
            except BaseException:
                if tap is not None:
                    tap.discard()
                raise
        note = _AttemptNote()
        start = self.clock.now()
        response: ChatResponse | None = None
        error: BaseException | None = None
        span_id = token = None
        if self.tracer.propagate:  # the call names its row as the parent of the provider's
            span_id = self.tracer.new_span_id()
            token = CALL_HEADERS.set({"traceparent": format_traceparent(site.trace_id, span_id)})
        try:
            response = await self._attempt_untraced(route, request, stats, note, tap)
            return response
        except BaseException as exc:
            error = exc
            if tap is not None:
                tap.discard()
            raise
        finally:
            if token is not None:
                CALL_HEADERS.reset(token)
            if note.called:  # a call refused locally (budget, circuit, deadline) is no attempt
                self.tracer.attempt(
                    site,
                    dag_name=self.dag_name,
                    record_key=self.record_key,
                    attempt=number,
                    model_alias=route.alias,
                    provider=route.config.provider,
                    request=request,
                    response=response,
                    error=error,
                    start=note.sent_at if note.sent_at is not None else start,
                    end=self.clock.now(),
                    limiter_wait_s=note.wait_s,
                    backoff_s=backoff_s,
                    estimated_input_tokens=note.estimated_input_tokens,
                    cost_usd=note.cost_usd,
                    budget=self.budget,
                    hedged=hedged,
                    first_token_at=tap.first_at if tap is not None else None,
                    wire=route.wire,
                    input_cost_usd=(
                        route.config.cost_usd(response.usage.input_tokens, 0)
                        if response is not None
                        else None
                    ),
                    hedge_delay_s=hedge_delay_s,
                    span_id=span_id,
                )

    async def _attempt_untraced(
        self,
        route: ModelRoute,
        request: ChatRequest,
        stats: NodeStats,
        note: _AttemptNote | None,
        tap: TokenTap | None = None,
    ) -> ChatResponse:
        """Budget reservation, circuit check, limiter permit, the call (streamed through
        ``tap`` when the request streams), then settle."""
        circuit = route.circuit
        if not circuit.allow():
            cause = circuit.cause or "repeated failures"
            raise CircuitOpen(
                f"{route.limiter.name}: not called, its circuit is open after "
                f"{circuit.failure_threshold} failures in a row (last: {cause})",
                provider=route.config.provider,
                cause=cause,
            )
        estimate_in = estimate_prompt_tokens(
            request.messages, request.tools, media_estimator(route.provider)
        )
        estimate = Usage(estimate_in, request.max_tokens)
        budget, job = self.budget, self.job_budget
        worst_usd = route.cost_usd(estimate)
        reservation = job_reservation = None
        if budget.limited:
            reservation = budget.reserve(tokens=estimate.total_tokens, usd=worst_usd)
        if job is not None:
            try:
                job_reservation = await job.reserve_or_refill(
                    tokens=estimate.total_tokens, usd=worst_usd
                )
            except BaseException:
                if reservation is not None:
                    budget.release(reservation)
                raise
        permit = None
        sent = False  # the request went out and got no answer: the provider may bill it
        try:
            permit = await route.limiter.acquire(
                estimate.total_tokens, interactive=self.interactive
            )
            stats.limiter_wait_s += permit.wait_s
            timeout_s = route.timeout_s
            capped = False
            if self.deadline_at is not None:
                left = self.deadline_at - self.clock.now()
                if left <= 0:
                    raise DeadlineExceeded("the request's deadline passed before this call")
                capped = left < timeout_s
                timeout_s = min(timeout_s, left)
            stats.calls += 1
            if note is not None:
                note.called, note.wait_s = True, permit.wait_s
                note.estimated_input_tokens = estimate_in
                note.sent_at = self.clock.now()
            try:
                if tap is not None:
                    streaming: StreamingProvider = route.provider  # type: ignore[assignment]
                    response = await streaming.stream(request, on_delta=tap, timeout_s=timeout_s)
                else:
                    response = await route.provider.complete(request, timeout_s=timeout_s)
            except ProviderTimeout as exc:
                sent = exc.sent
                if capped:  # the request's deadline, not the provider, ran out
                    raise DeadlineExceeded("the request's deadline passed during a call") from None
                raise
        except BaseException as exc:
            if sent:  # counted as spent at its estimate: the worst case, never zero
                if reservation is not None:
                    budget.settle(reservation, tokens=estimate.total_tokens, usd=worst_usd)
                if job_reservation is not None and job is not None:
                    job.settle(job_reservation, tokens=estimate.total_tokens, usd=worst_usd)
                self._spent_unanswered(stats, note, estimate.total_tokens, worst_usd)
            else:
                if reservation is not None:
                    budget.release(reservation)
                if job_reservation is not None and job is not None:
                    job.release(job_reservation)
            if permit is not None:
                _verdict(route, exc, permit)
                permit.release()
            raise
        usage = response.usage
        permit.settle(usage.total_tokens)
        permit.release()
        route.limiter.observe(response.headers, tokens=usage.total_tokens)
        route.circuit.record_success()
        cost = route.cost_usd(usage)
        if reservation is not None:
            budget.settle(reservation, tokens=usage.total_tokens, usd=cost)
        if job_reservation is not None and job is not None:
            job.settle(job_reservation, tokens=usage.total_tokens, usd=cost)
        stats.usage = stats.usage + usage
        stats.cost_usd += cost
        if note is not None:
            note.cost_usd = cost
        return response

    def _spent_unanswered(
        self, stats: NodeStats, note: _AttemptNote | None, tokens: int, usd: float
    ) -> None:
        """A call that went out and timed out: its estimate counts as spent."""
        stats.cost_usd += usd
        if note is not None:
            note.cost_usd = usd
        if self.journal is not None:
            self.journal.spend(usd=usd, tokens=tokens, record=self.record_key)


def _verdict(route: ModelRoute, exc: BaseException, permit: Permit) -> None:
    """What a failed call tells the limiter and the circuit.

    Only a real rate-limit 429 paces the queue; a request's own error (too large,
    invalid, filtered) neither pauses anything nor counts against the provider; only
    the provider's own failures (down, timeouts, 5xx) open its circuit.
    """
    circuit = route.circuit
    if isinstance(exc, RateLimited):
        permit.settle(0)  # a 429 is not counted against the provider's tokens
        route.limiter.rate_limited(
            retry_after_s=exc.retry_after_s, headers=exc.headers, permit=permit
        )
        circuit.abandon()  # it answered: a half-open probe lets the next one go
    elif isinstance(exc, ProviderError):
        if isinstance(exc, RequestTooLarge):
            permit.settle(0)  # refused whole: none of its tokens were spent
        if provider_fault(exc):
            circuit.record_failure(describe(exc))
        else:
            circuit.abandon()
        route.limiter.failed()
    else:
        circuit.abandon()  # cancelled: a half-open probe did not decide


class _Race:
    """A hedged call's state: the duplicate's task, and who answered first."""

    __slots__ = ("first_done", "tap", "task", "won")

    def __init__(self) -> None:
        self.first_done = False  # the first attempt ended (answered or failed)
        self.won = False  # the duplicate answered while the first was still out
        self.task: asyncio.Task[ChatResponse] | None = None
        self.tap: TokenTap | None = None  # the first attempt's, when it streams


class _AttemptNote:
    """What one attempt's trace row needs to know from inside the call path."""

    __slots__ = ("called", "cost_usd", "estimated_input_tokens", "sent_at", "wait_s")

    def __init__(self) -> None:
        self.called = False
        self.sent_at: float | None = None  # when the request went out (after the waits)
        self.wait_s = 0.0
        self.estimated_input_tokens = 0
        self.cost_usd = 0.0


def _first_state(retrying: AsyncRetrying, error: BaseException) -> RetryCallState:
    state = RetryCallState(retrying, fn=None, args=(), kwargs={})
    state.set_exception((type(error), error, error.__traceback__))
    return state
