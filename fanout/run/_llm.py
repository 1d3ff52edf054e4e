"""Runs one llm step: render the prompt, call with fallbacks, the tool loop, validation retries."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from pydantic import BaseModel, ValidationError

from fanout.dag import HISTORY, LLMNode, Template, Tool
from fanout.errors import (
    ConfigError,
    GuardRejected,
    MaxStepsExceeded,
    OutputValidationError,
    ProviderError,
    ProviderOutage,
    RunError,
    TemplateError,
    ToolError,
)
from fanout.run._approval import (
    PausedTurn,
    ToolPaused,
    decide,
    review_key,
    review_request,
    take_paused,
)
from fanout.run._context import ModelRoute, NodeStats, RunContext
from fanout.run._guards import check_input, check_output
from fanout.run._mcp import McpTool
from fanout.run._tools import call_tool
from fanout.run._tracing import CallSite
from fanout.types import ChatRequest, JSONSchema, Message, ToolCall

__all__ = ["build_messages", "run_llm"]

_ERROR = "error: "  # how a failed tool call's result starts, for the model and the counts


def build_messages(node: LLMNode, values: Mapping[str, object], where: str) -> list[Message]:
    """The node's chat messages for these bound values."""
    prompt = node.prompt
    if isinstance(prompt, Template):
        messages: list[Message] = [{"role": "user", "content": prompt.render(values, where=where)}]
    else:
        try:
            messages = list(prompt(values))
        except Exception as exc:
            raise TemplateError(
                f"{where}: prompt function raised {type(exc).__name__}: {exc}"
            ) from exc
        if not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise TemplateError(
                f"{where}: prompt function must return a non-empty list of message dicts "
                "with 'role' and 'content'"
            )
    if node.conversation:
        messages[:0] = _history(values.get(HISTORY), where)
    if node.system is not None:
        messages.insert(0, {"role": "system", "content": node.system.render(values, where=where)})
    return messages


def _history(value: object, where: str) -> list[Message]:
    """The session's history, checked: it comes from a store another program may write."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(m, dict) and "role" in m for m in value):
        raise TemplateError(f"{where}: the session's history is not a list of chat messages")
    return [cast(Message, dict(m)) for m in value]


async def run_llm(
    node: LLMNode,
    values: Mapping[str, object],
    ctx: RunContext,
    stats: NodeStats,
    where: str,
    map_index: int | None = None,
    owner_id: str | None = None,
) -> object:
    """The node's output: text, a validated ``output`` model, or tool calls (schema-only tools).

    ``map_index`` and ``owner_id`` (the map running this node as its body) place the
    calls' trace rows. A node with Python or MCP tools outside a map keeps its conversation
    in ``stats.transcript`` as it goes, so a loop ended by ``max_steps``, the deadline
    or the budget still leaves it.
    """
    messages = build_messages(node, values, where)
    paused = take_paused(ctx.review, node.id) if map_index is None else None
    if node.input_guards and paused is None:  # before any call; a refusal raises InputRefused
        site = None
        if ctx.tracer is not None:
            site = CallSite(ctx.trace_id, owner_id or node.id, stats.span_id, map_index, 0)
        messages = await check_input(node, messages, ctx, stats, where, site)
    chain = ctx.router.chain(node.model)
    for position, route in enumerate(chain):
        resumed = None
        if paused is not None:  # go on with the conversation where it paused
            if route.alias != paused.alias and any(r.alias == paused.alias for r in chain):
                continue
            resumed, paused = paused, None
        site = None
        if ctx.tracer is not None or ctx.on_token is not None:  # tokens name their step too
            site = CallSite(ctx.trace_id, owner_id or node.id, stats.span_id, map_index, position)
        try:
            conversation = list(resumed.messages if resumed is not None else messages)
            if map_index is None and (node.mcp or any(t.fn is not None for t in node.tools)):
                stats.transcript = conversation  # a fallback model starts a new one
            last = position == len(chain) - 1
            return await _converse(
                node, route, conversation, ctx, stats, where, site, last, resumed
            )
        except ProviderOutage:
            raise  # the job's business (it stops), not this step's: nothing to escalate
        except (ProviderError, OutputValidationError) as exc:
            # A guard's rejection may pass on a stronger model; so may most provider errors.
            fallback_ok = isinstance(exc, GuardRejected) or (
                isinstance(exc, ProviderError) and exc.fallback_ok
            )
            if fallback_ok and not last:
                stats.fallbacks += 1
                continue
            if ctx.escalation is not None:
                ctx.escalation.escalate(
                    request_id=ctx.request_id,
                    dag=ctx.dag_name,
                    node=where,
                    models=[r.alias for r in chain[: position + 1]],
                    messages=messages,
                    error=exc,
                )
            raise
    raise AssertionError("unreachable: the chain always has a primary")


@functools.lru_cache(maxsize=256)
def _schema(model: type[BaseModel]) -> JSONSchema:
    return model.model_json_schema()


async def _converse(
    node: LLMNode,
    route: ModelRoute,
    messages: list[Message],
    ctx: RunContext,
    stats: NodeStats,
    where: str,
    site: CallSite | None,
    last: bool = True,
    resumed: PausedTurn | None = None,
) -> object:
    """The conversation with one model of the chain (``last``: no fallback follows it;
    ``resumed``: a turn that waited for approval, finished first)."""
    remote = await ctx.mcp.tools(node) if node.mcp and ctx.mcp is not None else ()
    specs = tuple(t.spec for t in node.tools) + tuple(t.spec for t in remote)
    runnable: dict[str, Tool | McpTool] = {t.name: t for t in node.tools if t.fn is not None}
    runnable.update((t.name, t) for t in remote)
    schema = _schema(node.output) if node.output is not None else None
    schema_name = node.output.__name__ if node.output is not None else "output"
    invalid_replies = 0
    steps = 0  # model turns that called tools
    if resumed is not None:  # finish the turn that waited for approval, then go on
        steps = resumed.steps
        turn = _Turn(node.id, route.alias, resumed.calls, steps, resumed.done)
        await _run_turn(turn, runnable, messages, ctx, stats, site)
    while True:
        request = ChatRequest(
            model=route.config.model,
            messages=list(messages),  # a snapshot: the conversation grows after the call
            max_tokens=node.max_tokens,
            temperature=node.temperature,
            tools=specs,
            response_schema=schema,
            response_schema_name=schema_name,
            # a batch route's reply comes whole, hours later: nothing to stream
            stream=(node.stream or route.config.stream) and not route.batched,
        )
        response = await ctx.call(route, request, stats, site, last=last)
        if response.tool_calls:
            if not runnable:
                return list(response.tool_calls)
            messages.append(
                {
                    "role": "assistant",
                    "content": response.content,
                    "tool_calls": [c.to_wire() for c in response.tool_calls],
                }
            )
            steps += 1
            if steps > node.max_steps:
                raise MaxStepsExceeded(
                    f"{where}: the model still called tools after max_steps={node.max_steps} "
                    "turns; raise max_steps or check the tools' results",
                    max_steps=node.max_steps,
                )
            turn = _Turn(node.id, route.alias, response.tool_calls, steps, {})
            await _run_turn(turn, runnable, messages, ctx, stats, site)
            continue
        content = response.content or ""
        value: object = content
        if node.output is not None:
            try:
                value = node.output.model_validate_json(_strip_fences(content))
            except ValidationError as exc:
                invalid_replies += 1
                if invalid_replies > node.max_output_retries:
                    raise OutputValidationError(
                        f"{where}: reply is not a valid {schema_name} after "
                        f"{invalid_replies} tries: {_brief(exc)}"
                    ) from None
                messages.append({"role": "assistant", "content": content})
                messages.append(
                    {
                        "role": "user",
                        "content": (
                            f"Your reply is not valid JSON for the {schema_name} schema: "
                            f"{_brief(exc)}. Reply again with only the corrected JSON document."
                        ),
                    }
                )
                continue
        messages.append({"role": "assistant", "content": content})
        if not node.guards:
            return value
        value, rejection = await check_output(node, value, ctx, stats, where, site)
        if rejection is None:
            return value
        invalid_replies += 1  # validation and guards share max_output_retries
        if invalid_replies > node.max_output_retries:
            raise GuardRejected(
                f"{where}: output guard {rejection.guard!r} rejected the reply of "
                f"{route.alias!r} after {invalid_replies} tries: {rejection.reason}",
                guard=rejection.guard,
                reason=rejection.reason,
            )
        messages.append(
            {
                "role": "user",
                "content": (
                    f"Your reply was rejected by the {rejection.guard} check: "
                    f"{rejection.reason}. Reply again with a corrected answer."
                ),
            }
        )


@dataclass(frozen=True, slots=True)
class _Turn:
    """One model turn's tool calls (``done``: results of those that already ran)."""

    node_id: str
    alias: str
    calls: tuple[ToolCall, ...]
    steps: int
    done: dict[str, str]


async def _run_turn(
    turn: _Turn,
    tools: Mapping[str, Tool | McpTool],
    messages: list[Message],
    ctx: RunContext,
    stats: NodeStats,
    site: CallSite | None,
) -> None:
    """Run a turn's calls at once and append their results; calls that need a person's
    approval run once decided, else the turn pauses (``ToolPaused``) after the others ran."""
    results = dict(turn.done)
    todo: list[ToolCall] = []
    waiting: list[tuple[str, object, str]] = []
    decisions = ctx.review.decisions if ctx.review is not None else {}
    for index, call in enumerate(turn.calls):
        tool = tools.get(call.name)
        if call.id in results:
            continue
        if tool is None or not tool.approval:
            todo.append(call)
            continue
        key = review_key(turn.node_id, turn.steps, index, call)
        decided = decide(call, decisions.get(key))
        if decided is None:
            waiting.append(review_request(key, call, getattr(tool, "server", None)))
        elif isinstance(decided, str):
            results[call.id] = decided  # rejected: the model hears why
        else:
            todo.append(decided)
    ran = await asyncio.gather(*(_run_tool_call(tools, call, ctx, site) for call in todo))
    stats.tool_calls += len(ran)
    stats.tool_errors += sum(r.startswith(_ERROR) for r in ran)
    results.update((call.id, result) for call, result in zip(todo, ran, strict=True))
    if waiting:
        paused = PausedTurn(turn.alias, list(messages), turn.calls, results, turn.steps)
        raise ToolPaused(paused, waiting)
    for call in turn.calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": results[call.id]})


async def _run_tool_call(
    tools: Mapping[str, Tool | McpTool], call: ToolCall, ctx: RunContext, site: CallSite | None
) -> str:
    """A tool's result as text for the model (errors too), with its trace row."""
    tool = tools.get(call.name)
    if isinstance(tool, McpTool) and ctx.mcp is not None:  # traced per attempt by the hub
        return await ctx.mcp.call(tool, call, ctx, site)
    if ctx.tracer is None or site is None:
        return await _tool_result(tools, call, ctx)
    start = ctx.clock.now()
    result = await _tool_result(tools, call, ctx)
    failed = result.startswith(_ERROR)
    ctx.tracer.tool(
        site,
        dag_name=ctx.dag_name,
        record_key=ctx.record_key,
        tool_name=call.name,
        start=start,
        end=ctx.clock.now(),
        error=ToolError(result.removeprefix(_ERROR)) if failed else None,
        input_text=call.arguments,
        output_text=result,
        call_id=call.id,
    )
    return result


async def _tool_result(tools: Mapping[str, Tool | McpTool], call: ToolCall, ctx: RunContext) -> str:
    """A tool's result as text for the model; errors go back to the model, not up."""
    tool = tools.get(call.name)
    if not isinstance(tool, Tool) or tool.fn is None:
        return f"error: there is no tool named {call.name!r}; available: {sorted(tools)}"
    try:
        args = tool.args_model.model_validate(call.parsed_arguments())
    except (ValueError, ValidationError) as exc:
        return f"error: invalid arguments for {call.name}: {_brief(exc)}"
    kwargs = {name: getattr(args, name) for name in type(args).model_fields}
    try:
        result = await call_tool(
            tool.fn,
            (),
            kwargs,
            timeout_s=tool.timeout_s,
            cpu_runner=ctx.cpu_runner if tool.cpu else None,
            num_cpus=tool.num_cpus,
        )
    except (RunError, ConfigError) as exc:
        return f"error: {exc}"
    if isinstance(result, str):
        return result
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    return json.dumps(result, default=str, ensure_ascii=False)


def _strip_fences(text: str) -> str:
    # Models often wrap JSON in ```json fences even when asked not to.
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[-1]
        if stripped.rstrip().endswith("```"):
            stripped = stripped.rstrip()[:-3]
    return stripped


def _brief(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        ]
        return "; ".join(parts[:5])
    return str(exc)
