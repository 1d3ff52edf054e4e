"""Runs an llm node's guards: input guards before any call, output guards on each answer.

Every verdict is counted on the node's stats and, with tracing on, written as a
``guard ...`` attempt row (see ``Tracer.guard``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from fanout.dag import Accept, Guard, LLMNode, Reject, Repair, render_value
from fanout.errors import GuardRejected, InputRefused, ToolError
from fanout.run._context import NodeStats, RunContext
from fanout.run._tracing import CallSite
from fanout.types import Message

__all__ = ["Rejection", "check_input", "check_output"]

Stage = Literal["input", "output"]


@dataclass(frozen=True, slots=True)
class Rejection:
    """An output guard's ``Reject``: which guard, and the reason to feed back."""

    guard: str
    reason: str


async def check_input(
    node: LLMNode,
    messages: list[Message],
    ctx: RunContext,
    stats: NodeStats,
    where: str,
    site: CallSite | None,
) -> list[Message]:
    """The messages after the input guards (masked, maybe); raises ``InputRefused``."""
    for guard in node.input_guards:
        start = ctx.clock.now()
        verdict = await _verdict(guard, messages, where, "input")
        if isinstance(verdict, Reject):
            stats.guard_rejections += 1
            error = InputRefused(
                f"{where}: input guard {guard.name!r} refused the prompt: {verdict.reason}; "
                "no provider call was made",
                guard=guard.name,
                reason=verdict.reason,
            )
            _trace(ctx, site, "input", guard, "reject", error, start, messages, verdict.reason)
            raise error
        if isinstance(verdict, Repair):
            masked = verdict.value
            if not isinstance(masked, list) or not all(
                isinstance(m, dict) and "role" in m for m in masked
            ):
                raise ToolError(
                    f"{where}: input guard {guard.name!r} returned Repair({masked!r:.80}); "
                    "an input guard repairs with the new list of message dicts"
                )
            stats.guard_repairs += 1
            _trace(ctx, site, "input", guard, "repair", None, start, messages, masked)
            messages = masked
        else:
            _trace(ctx, site, "input", guard, "accept", None, start, messages, None)
    return messages


async def check_output(
    node: LLMNode,
    value: object,
    ctx: RunContext,
    stats: NodeStats,
    where: str,
    site: CallSite | None,
) -> tuple[object, Rejection | None]:
    """``(value, None)`` when every output guard passed (value repaired, maybe),
    else the first rejection."""
    for guard in node.guards:
        start = ctx.clock.now()
        verdict = await _verdict(guard, value, where, "output")
        if isinstance(verdict, Reject):
            stats.guard_rejections += 1
            # the row's error: its message is the reason (the node's error comes later)
            error = GuardRejected(verdict.reason, guard=guard.name, reason=verdict.reason)
            _trace(ctx, site, "output", guard, "reject", error, start, value, verdict.reason)
            return value, Rejection(guard.name, verdict.reason)
        if isinstance(verdict, Repair):
            repaired = _repaired(node, guard, verdict.value, where)
            stats.guard_repairs += 1
            _trace(ctx, site, "output", guard, "repair", None, start, value, repaired)
            value = repaired
        else:
            _trace(ctx, site, "output", guard, "accept", None, start, value, None)
    return value, None


async def _verdict(guard: Guard, value: object, where: str, stage: Stage) -> object:
    try:
        verdict = guard.fn(value)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except Exception as exc:
        raise ToolError(
            f"{where}: {stage} guard {guard.name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    if verdict is not None and not isinstance(verdict, Accept | Reject | Repair):
        raise ToolError(
            f"{where}: {stage} guard {guard.name!r} returned {verdict!r:.80}; return None, "
            "Accept(), Reject(reason) or Repair(value) (from fanout.guards)"
        )
    return verdict


def _repaired(node: LLMNode, guard: Guard, value: object, where: str) -> object:
    """A repaired output of the node's kind: text, or its ``output`` model (validated)."""
    model = node.output
    if model is None:
        if not isinstance(value, str):
            raise ToolError(
                f"{where}: output guard {guard.name!r} repaired a text answer with a "
                f"{type(value).__name__}; return Repair(text)"
            )
        return value
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ToolError(
            f"{where}: output guard {guard.name!r} repaired the answer with a value that is "
            f"not a valid {model.__name__}: {exc.error_count()} error(s); return "
            f"Repair({model.__name__}(...))"
        ) from None


def _trace(
    ctx: RunContext,
    site: CallSite | None,
    stage: Stage,
    guard: Guard,
    outcome: str,
    error: BaseException | None,
    start: float,
    seen: object,
    result: object,
) -> None:
    if ctx.tracer is None or site is None:
        return
    ctx.tracer.guard(
        site,
        dag_name=ctx.dag_name,
        record_key=ctx.record_key,
        stage=stage,
        guard_name=guard.name,
        outcome=outcome,
        error=error,
        start=start,
        end=ctx.clock.now(),
        input_text=render_value(seen),
        output_text=render_value(result) if result is not None else None,
    )
