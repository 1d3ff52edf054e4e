"""Runs one embed step: its texts through the route's packer, under the request's budget,
with a trace row per request that carried them."""

from __future__ import annotations

import asyncio

from fanout.dag import EmbedNode
from fanout.errors import TemplateError
from fanout.run._context import NodeStats, RunContext
from fanout.run._embed import PackAttempt
from fanout.run._tracing import CallSite
from fanout.types import Usage, estimate_text_tokens

__all__ = ["run_embed"]

Vector = tuple[float, ...]


def _texts(value: object, where: str) -> tuple[tuple[str, ...], bool]:
    """The texts to embed and whether the step's output is a list of vectors."""
    if isinstance(value, str):
        texts, many = (value,), False
    elif isinstance(value, list | tuple) and all(isinstance(t, str) for t in value):
        texts, many = tuple(value), True
    else:
        raise TemplateError(
            f"{where}: embed needs a string or a list of strings (got {type(value).__name__})"
        )
    if not texts or not all(texts):
        raise TemplateError(f"{where}: embed got an empty text; drop empty texts before it")
    return texts, many


async def run_embed(
    node: EmbedNode,
    value: object,
    ctx: RunContext,
    stats: NodeStats,
    where: str,
    site: CallSite | None,
) -> object:
    """The vector of a text (a list of floats), or the vectors of a list of texts."""
    texts, many = _texts(value, where)
    route, packer = ctx.router.embed_route(node.model)
    estimate = sum(max(1, estimate_text_tokens(t)) for t in texts)
    worst_usd = route.cost_usd(Usage(estimate, 0))
    budget, job = ctx.budget, ctx.job_budget
    reservation = budget.reserve(tokens=estimate, usd=worst_usd) if budget.limited else None
    job_reservation = None
    if job is not None:
        try:
            job_reservation = await job.reserve_or_refill(tokens=estimate, usd=worst_usd)
        except BaseException:
            if reservation is not None:
                budget.release(reservation)
            raise
    pieces = packer.submit(texts, node.dimensions or route.config.dimensions)
    try:
        results = await asyncio.gather(*(p.done for p in pieces))
    except BaseException:
        if reservation is not None:
            budget.release(reservation)
        if job_reservation is not None and job is not None:
            job.release(job_reservation)
        for piece in pieces:
            piece.done.cancel()
        _trace(
            ctx,
            route.alias,
            route.config.provider,
            site,
            [a for p in pieces for a in p.attempts],
            texts,
        )
        raise
    attempts = [a for _, found in results for a in found]
    usage = Usage(sum(a.usage.input_tokens for a in attempts), 0)
    cost = route.cost_usd(usage)
    if reservation is not None:
        budget.settle(reservation, tokens=usage.total_tokens, usd=cost)
    if job_reservation is not None and job is not None:
        job.settle(job_reservation, tokens=usage.total_tokens, usd=cost)
    stats.usage = stats.usage + usage
    stats.cost_usd += cost
    stats.calls += len(attempts)
    stats.retries += len(attempts) - len(pieces)
    _trace(ctx, route.alias, route.config.provider, site, attempts, texts)
    vectors: list[Vector] = [v for found, _ in results for v in found]
    if many:
        return [list(v) for v in vectors]
    return list(vectors[0])


def _trace(
    ctx: RunContext,
    alias: str,
    provider: str,
    site: CallSite | None,
    attempts: list[PackAttempt],
    texts: tuple[str, ...],
) -> None:
    if ctx.tracer is None or site is None:
        return
    route = ctx.router.route(alias)
    for attempt in attempts:
        ctx.tracer.embedding(
            site,
            dag_name=ctx.dag_name,
            record_key=ctx.record_key,
            model_alias=alias,
            provider=provider,
            request_model=route.config.model,
            attempt=attempt,
            cost_usd=route.cost_usd(attempt.usage),
            budget=ctx.budget,
            texts=texts,
        )
