"""``Tracer``: builds the trace rows of a run (run, node, attempt) and hands them to a sink.

Built only when a sink is configured: with tracing off, the executor pays nothing.
Rows are cheap value objects; the sink (``fanout.trace.TraceWriter``) does all I/O
on its own thread.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

import orjson

from fanout.budget import Budget
from fanout.clock import Clock
from fanout.dag import render_value
from fanout.errors import ProviderError
from fanout.trace import ContentPolicy, Span, new_span, span_of
from fanout.types import BatchRef, ChatRequest, ChatResponse, ToolSpec

if TYPE_CHECKING:
    from fanout.run._embed import PackAttempt

__all__ = ["CallSite", "SpanSink", "Tracer", "Wire"]


class SpanSink(Protocol):
    def emit(self, span: Span) -> None: ...


@dataclass(frozen=True, slots=True)
class Wire:
    """Who a route's calls go to, for their rows: the well-known provider name
    (``gen_ai.provider.name``) and the server's host."""

    provider_name: str
    server_address: str | None = None


_last_tools: list[tuple[tuple[ToolSpec, ...], str]] = []


def _tools_json(tools: tuple[ToolSpec, ...]) -> str:
    """The tools offered, as JSON; the last tuple's text is kept (a conversation sends the
    same tuple on every turn)."""
    if _last_tools and _last_tools[0][0] is tools:
        return _last_tools[0][1]
    text = orjson.dumps([t.to_wire() for t in tools]).decode()
    _last_tools[:] = [(tools, text)]
    return text


class CallSite(NamedTuple):
    """Where a provider or tool call comes from, for its attempt rows (a named tuple: built
    once or twice a call, a third of a frozen dataclass's cost)."""

    trace_id: str
    node_id: str
    parent_span_id: str
    map_index: int | None = None
    fallback_index: int = 0
    call_key: str | None = None  # with a call journal: the call's key (rows of one call)


class Tracer:
    """Turns executor events into :class:`Span` rows for one engine."""

    def __init__(
        self,
        sink: SpanSink,
        *,
        clock: Clock,
        job_id: str,
        content: ContentPolicy,
        propagate: bool = False,
    ) -> None:
        self.sink = sink
        self.propagate = propagate  # provider calls send a traceparent naming their row
        self.job_id = job_id
        self.content = content
        self._clock = clock
        # a clock reading plus this: seconds since the epoch (one formula for every row)
        self._wall_offset = clock.wall().timestamp() - clock.now()
        self._rng = random.Random()
        # span ids: a random 32-bit prefix per tracer and a counter (unique, and cheap)
        self._span_prefix = self._rng.getrandbits(32) << 32
        self._span_counter = itertools.count(1)

    def new_trace_id(self) -> str:
        return f"{self._rng.getrandbits(128):032x}"

    def new_span_id(self) -> str:
        return f"{self._span_prefix | next(self._span_counter):016x}"

    def wall(self, mono: float) -> float:
        """A clock reading as seconds since the epoch."""
        return self._wall_offset + mono

    def attempt(
        self,
        site: CallSite,
        *,
        dag_name: str,
        record_key: str | None,
        attempt: int,
        model_alias: str,
        provider: str,
        request: ChatRequest,
        response: ChatResponse | None,
        error: BaseException | None,
        start: float,
        end: float,
        limiter_wait_s: float,
        backoff_s: float,
        estimated_input_tokens: int,
        cost_usd: float,
        budget: Budget,
        hedged: bool = False,
        replayed: bool = False,
        cache_hit: bool = False,
        first_token_at: float | None = None,
        wire: Wire | None = None,
        input_cost_usd: float | None = None,
        hedge_delay_s: float | None = None,
        span_id: str | None = None,
    ) -> None:
        """One attempt of a provider call. ``start``..``end`` is the call on the wire;
        the wait for rate-limit capacity before it (``limiter_wait_s``), the retry
        back-off before that (``backoff_s``) and a hedge's delay are columns of their
        own (a live exporter shows them as spans of their own, ending where the call
        starts): an LLM span's latency is the provider's."""
        wall0 = self._wall_offset
        span = span_of(
            {
                "trace_id": site.trace_id,
                "span_id": span_id if span_id is not None else self.new_span_id(),
                "parent_span_id": site.parent_span_id,
                "record_type": "attempt",
                "span_name": f"chat {request.model}",
                "job_id": self.job_id,
                "dag_name": dag_name,
                "node_id": site.node_id,
                "map_index": site.map_index,
                "record_key": record_key,
                "start_time": wall0 + start,
                "end_time": wall0 + end,
                "duration_ms": (end - start) * 1000,
                "attempt": attempt,
                "fallback_index": site.fallback_index,
                "model_alias": model_alias,
                "limiter_wait_ms": limiter_wait_s * 1000,
                "backoff_ms": backoff_s * 1000,
                "provider": provider,
                "request_model": request.model,
                "estimated_input_tokens": estimated_input_tokens,
                "budget_limit_usd": budget.usd,
                "budget_spent_usd": budget.spent_usd,
                "request_max_tokens": request.max_tokens,
                "request_temperature": request.temperature,
            }
        )  # one dict, the span's own: no keyword arguments packed and unpacked twice
        if wire is not None:
            span.provider_name = wire.provider_name
            if wire.server_address is not None:
                span.server_address = wire.server_address
        if request.tools:
            span.request_tools = _tools_json(request.tools)
        if hedged:
            span.hedged = True
            if hedge_delay_s is not None:
                span.hedge_delay_ms = hedge_delay_s * 1000
        if request.stream and not replayed and not cache_hit:
            _stream_columns(span, first_token_at, start, end, response)
        if site.call_key is not None:
            span.call_key = site.call_key
        batch = response.batch if response is not None else getattr(error, "batch", None)
        if isinstance(batch, BatchRef):
            span.batch_id = batch.batch_id
            span.batch_submitted_at = batch.submitted_at
            span.batch_completed_at = batch.completed_at
        output = None
        if response is not None:
            span.response_model = response.model or None
            span.finish_reason = response.finish_reason
            if response.id:
                span.response_id = response.id
            if cache_hit:  # answered by the cache: no provider call, nothing paid by this job
                span.cache_hit = True
                span.input_tokens = span.output_tokens = 0
                span.cost_usd = 0.0
            else:
                if replayed:  # paid for by the run that made the call
                    span.replayed = True
                usage = response.usage
                span.input_tokens = usage.input_tokens
                span.output_tokens = usage.output_tokens
                if usage.cached_input_tokens or usage.cache_write_tokens:
                    span.cached_input_tokens = usage.cached_input_tokens
                    span.cache_write_tokens = usage.cache_write_tokens
                span.cost_usd = cost_usd
                if input_cost_usd is not None:
                    span.input_cost_usd = input_cost_usd
            output = response.content
            if response.tool_calls:
                span.tool_name = ",".join(c.name for c in response.tool_calls)
                if output is None:
                    output = orjson.dumps([c.to_wire() for c in response.tool_calls]).decode()
        else:
            self._fail(span, error)
            span.input_tokens = span.output_tokens = 0
            span.cost_usd = cost_usd  # a call that timed out once sent: its estimate
        self.content.fill(span, orjson.dumps(request.messages).decode(), output)
        self.sink.emit(span)

    def replayed(
        self,
        site: CallSite,
        dag_name: str,
        record_key: str | None,
        model_alias: str,
        provider: str,
        request: ChatRequest,
        response: ChatResponse,
        at: float,
        budget: Budget,
        cost_usd: float = 0.0,
        *,
        cache_hit: bool = False,
        wire: Wire | None = None,
    ) -> None:
        """A call answered from the call journal: an attempt row marked ``replayed``,
        taking no time, with the tokens and cost the call had when an earlier run made
        it (already spent: ``fanout traces summary`` counts them only where the original
        row is missing, a kill having lost it, and never as a call). ``cache_hit``: from
        the response cache instead, a row marked ``cache_hit`` with no tokens or cost
        (another job paid for the call)."""
        self.attempt(
            site, dag_name=dag_name, record_key=record_key, attempt=1,
            model_alias=model_alias, provider=provider, request=request, response=response,
            error=None, start=at, end=at, limiter_wait_s=0.0, backoff_s=0.0,
            estimated_input_tokens=0, cost_usd=cost_usd, budget=budget,
            replayed=not cache_hit, cache_hit=cache_hit, wire=wire,
        )  # fmt: skip

    def embedding(
        self,
        site: CallSite,
        *,
        dag_name: str,
        record_key: str | None,
        model_alias: str,
        provider: str,
        request_model: str,
        attempt: PackAttempt,
        cost_usd: float,
        budget: Budget,
        texts: tuple[str, ...],
    ) -> None:
        """One embeddings request as it carried a step's texts: the step's share of its
        usage and cost (the shares of one request add up to its usage exactly)."""
        span = self._attempt_span(
            site, f"embeddings {request_model}", dag_name, record_key, attempt.start,
            attempt.end, attempt=attempt.attempt, fallback_index=0, model_alias=model_alias,
            limiter_wait_ms=attempt.limiter_wait_s * 1000, backoff_ms=attempt.backoff_s * 1000,
            provider=provider, request_model=request_model,
            response_model=attempt.model or None,
            estimated_input_tokens=attempt.estimated_tokens,
            input_tokens=attempt.usage.input_tokens, output_tokens=0,
            cost_usd=cost_usd if attempt.error is None else 0.0,
            embedding_inputs=attempt.inputs, request_inputs=attempt.request_inputs,
            budget_limit_usd=budget.usd, budget_spent_usd=budget.spent_usd,
        )  # fmt: skip
        self._fail(span, attempt.error)
        self.content.fill(span, orjson.dumps(list(texts)).decode(), None)
        self.sink.emit(span)

    def tool(
        self,
        site: CallSite,
        *,
        dag_name: str,
        record_key: str | None,
        tool_name: str,
        start: float,
        end: float,
        error: BaseException | None,
        input_text: str | None,
        output_text: str | None,
        server: str | None = None,
        attempt: int = 1,
        limiter_wait_s: float = 0.0,
        backoff_s: float = 0.0,
        call_id: str | None = None,
    ) -> None:
        """One tool call (one attempt of an MCP tool's call: ``server`` names the MCP
        server, in the ``provider`` column as ``mcp:NAME``), named ``execute_tool NAME``
        as the GenAI conventions name it; ``call_id``: the model's id of the call."""
        columns: dict[str, object] = {"tool_name": tool_name}
        if call_id:
            columns["tool_call_id"] = call_id
        if server is not None:
            columns.update(
                provider=f"mcp:{server}", attempt=attempt,
                limiter_wait_ms=limiter_wait_s * 1000, backoff_ms=backoff_s * 1000,
            )  # fmt: skip
        self._local_step(
            site, f"execute_tool {tool_name}", dag_name, record_key, start, end, error,
            input_text, output_text, **columns,
        )  # fmt: skip

    def guard(
        self,
        site: CallSite,
        *,
        dag_name: str,
        record_key: str | None,
        stage: str,
        guard_name: str,
        outcome: str,
        error: BaseException | None,
        start: float,
        end: float,
        input_text: str | None,
        output_text: str | None,
    ) -> None:
        """One guard's verdict: a tool-like attempt row named ``guard <stage> <name>``.

        ``tool_name`` holds the guard's name (so LLM-call queries leave the row out)
        and ``guard_outcome`` the verdict; a rejection is an ``error`` row whose
        message is the reason.
        """
        self._local_step(
            site, f"guard {stage} {guard_name}", dag_name, record_key, start, end, error,
            input_text, output_text, tool_name=guard_name, guard_outcome=outcome,
        )  # fmt: skip

    def _local_step(
        self,
        site: CallSite,
        name: str,
        dag_name: str,
        record_key: str | None,
        start: float,
        end: float,
        error: BaseException | None,
        input_text: str | None,
        output_text: str | None,
        **columns: object,
    ) -> None:
        """An attempt row for work done in-process (a tool call, a guard): no tokens, no
        cost (the columns stay null: a tool span carries no token counts)."""
        columns.setdefault("attempt", 1)
        span = self._attempt_span(site, name, dag_name, record_key, start, end, **columns)
        self._fail(span, error)
        self.content.fill(span, input_text, output_text)
        self.sink.emit(span)

    def _attempt_span(
        self,
        site: CallSite,
        name: str,
        dag_name: str,
        record_key: str | None,
        start: float,
        end: float,
        **columns: object,
    ) -> Span:
        """An attempt row placed by its call site (trace, parent node, map item)."""
        span_id = columns.pop("span_id", None)
        return new_span(
            trace_id=site.trace_id,
            span_id=span_id if isinstance(span_id, str) else self.new_span_id(),
            parent_span_id=site.parent_span_id,
            record_type="attempt",
            span_name=name,
            job_id=self.job_id,
            dag_name=dag_name,
            node_id=site.node_id,
            map_index=site.map_index,
            record_key=record_key,
            start_time=self.wall(start),
            end_time=self.wall(end),
            duration_ms=(end - start) * 1000,
            **columns,
        )

    def node(
        self,
        *,
        trace_id: str,
        span_id: str,
        parent_span_id: str,
        dag_name: str,
        record_key: str | None,
        node_id: str,
        kind: str,
        status: str,
        error: BaseException | None,
        start: float | None,
        end: float | None,
        queue_wait_s: float | None,
        model_alias: str | None,
    ) -> None:
        span = span_of(
            {
                "trace_id": trace_id,
                "span_id": span_id,
                "parent_span_id": parent_span_id,
                "record_type": "node",
                "span_name": f"{kind} {node_id}",
                "job_id": self.job_id,
                "dag_name": dag_name,
                "node_id": node_id,
                "record_key": record_key,
                "model_alias": model_alias,
                "start_time": self.wall(start) if start is not None else None,
                "end_time": self.wall(end) if end is not None else None,
                "duration_ms": (
                    (end - start) * 1000 if start is not None and end is not None else None
                ),
                "queue_wait_ms": queue_wait_s * 1000 if queue_wait_s is not None else None,
            }
        )
        self._fail(span, error)
        span.status = status
        self.sink.emit(span)

    def run(
        self,
        *,
        trace_id: str,
        span_id: str,
        dag_name: str,
        record_key: str | None,
        status: str,
        error_type: str | None,
        error_message: str | None,
        start: float,
        end: float,
        budget: Budget,
        inputs: Mapping[str, object] | None = None,
        parent_span_id: str | None = None,
        session_id: str | None = None,
    ) -> None:
        """The run's row; ``parent_span_id``: the caller's span it runs under (an incoming
        ``traceparent``, or the OpenTelemetry span current around ``engine.run``)."""
        wall0 = self._wall_offset
        span = span_of(
            {
                "trace_id": trace_id,
                "span_id": span_id,
                "parent_span_id": parent_span_id,
                "record_type": "run",
                "span_name": f"run {dag_name}",
                "job_id": self.job_id,
                "dag_name": dag_name,
                "record_key": record_key,
                "start_time": wall0 + start,
                "end_time": wall0 + end,
                "duration_ms": (end - start) * 1000,
                "status": status,
                "error_type": error_type,
                "error_message": self.content.scrub(error_message),
                "budget_limit_usd": budget.usd,
                "budget_spent_usd": budget.spent_usd,
            }
        )
        if session_id is not None:
            span.session_id = session_id
        if inputs is not None:  # the record's inputs, under the content policy (replay reads them)
            text = orjson.dumps(
                inputs, default=render_value, option=orjson.OPT_NON_STR_KEYS
            ).decode()
            self.content.fill(span, text, None)
        self.sink.emit(span)

    def _fail(self, span: Span, error: BaseException | None) -> None:
        if error is None:
            return
        span.status = "cancelled" if isinstance(error, asyncio.CancelledError) else "error"
        span.error_type = type(error).__name__
        message = str(error) or None
        span.error_message = self.content.scrub(message)
        if isinstance(error, ProviderError):
            span.http_status = error.status_code
            span.retryable = error.retryable


def _stream_columns(
    span: Span, first_at: float | None, start: float, end: float, response: ChatResponse | None
) -> None:
    """A streamed attempt's time to first token and decode rate (tokens a second after it)."""
    span.streamed = True
    if first_at is None:
        return
    span.time_to_first_token_ms = (first_at - start) * 1000
    decoding_s = end - first_at
    if response is not None and decoding_s > 0 and response.usage.output_tokens > 1:
        span.output_tokens_per_s = response.usage.output_tokens / decoding_s
