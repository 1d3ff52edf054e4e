"""One chat call by model alias, not a DAG: the gateway's path through the engine.

The call takes the path every llm step's call takes (:meth:`RunContext.call`): the
budget's reservation, the circuit, the (provider, model) limiter and its priority
queue, retries with back-off, hedging, the call journal and cache, trace rows; and the
alias's fallbacks in order, as :func:`fanout.run._llm.run_llm` tries them. Nothing here
is a second way to reach a provider.

A request with ``stream`` streams on each route whose provider can (its pieces go to the
context's ``on_token``); a route whose provider cannot answers whole, so a fallback of
another protocol still answers a streamed call.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

from fanout.errors import BudgetExceeded, DeadlineExceeded, ProviderError, ProviderOutage
from fanout.providers import StreamingProvider
from fanout.run._context import NodeStats, RunContext
from fanout.run._tracing import CallSite, Tracer
from fanout.types import ChatRequest, ChatResponse, Usage

__all__ = ["ChatResult", "complete_chat", "traced_chat"]


@dataclass(frozen=True, slots=True)
class ChatResult:
    """The answer of one chat call, the alias that gave it, and what it took."""

    response: ChatResponse
    alias: str  # the chain's alias that answered (a fallback, perhaps)
    usage: Usage
    cost_usd: float
    calls: int
    retries: int
    fallbacks: int
    limiter_wait_s: float


async def complete_chat(
    ctx: RunContext, alias: str, request: ChatRequest, stats: NodeStats
) -> ChatResult:
    """``request`` (its ``model`` is replaced by each route's) on ``alias``'s chain; raises
    the last error once no fallback is left. ``stats`` holds what was spent either way."""
    chain = ctx.router.chain(alias)
    for position, route in enumerate(chain):
        last = position == len(chain) - 1
        site = None
        if ctx.tracer is not None:
            site = CallSite(ctx.trace_id, "chat", stats.span_id, None, position)
        stream = request.stream and isinstance(route.provider, StreamingProvider)
        call = dataclasses.replace(request, model=route.config.model, stream=stream)
        try:
            response = await ctx.call(route, call, stats, site, last=last)
        except ProviderOutage:
            raise
        except ProviderError as exc:
            if exc.fallback_ok and not last:
                stats.fallbacks += 1
                continue
            raise
        return ChatResult(
            response=response,
            alias=route.alias,
            usage=stats.usage,
            cost_usd=stats.cost_usd,
            calls=stats.calls,
            retries=stats.retries,
            fallbacks=stats.fallbacks,
            limiter_wait_s=stats.limiter_wait_s,
        )
    raise AssertionError("unreachable: the chain always has a primary")


async def traced_chat(
    ctx: RunContext, tracer: Tracer | None, alias: str, request: ChatRequest
) -> ChatResult:
    """:func:`complete_chat` with a run row and a node row (``chat``) around its attempt
    rows, as a one-node DAG's run would leave: ``dag_name`` and ``record_key`` (the
    gateway's: ``gateway`` and the caller's key id) say whose call it was."""
    if tracer is None:
        return await complete_chat(ctx, alias, request, NodeStats())
    run_span = tracer.new_span_id()
    stats = NodeStats(span_id=tracer.new_span_id())
    start = ctx.clock.now()
    error: BaseException | None = None
    try:
        return await complete_chat(ctx, alias, request, stats)
    except BaseException as exc:
        error = exc
        raise
    finally:
        end = ctx.clock.now()
        status = _status(error)
        tracer.node(
            trace_id=ctx.trace_id, span_id=stats.span_id, parent_span_id=run_span,
            dag_name=ctx.dag_name, record_key=ctx.record_key, node_id="chat", kind="llm",
            status="ok" if error is None else "cancelled" if status == "cancelled" else "error",
            error=error, start=start, end=end, queue_wait_s=0.0, model_alias=alias,
        )  # fmt: skip
        tracer.run(
            trace_id=ctx.trace_id, span_id=run_span, dag_name=ctx.dag_name,
            record_key=ctx.record_key, status=status,
            error_type=type(error).__name__ if error is not None else None,
            error_message=str(error) if error is not None else None,
            start=start, end=end, budget=ctx.budget,
        )  # fmt: skip


def _status(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    if isinstance(error, BudgetExceeded):
        return "budget_exceeded"
    if isinstance(error, DeadlineExceeded):
        return "deadline_exceeded"
    return "error"
