"""Executes one DAG instance: each node starts the moment its own inputs are ready.

No level-by-level barrier: completion of an event decrements its dependents'
counters and starts whichever reach zero. The task that finished a node goes on
with one newly ready node itself (the caller's own task runs the first one), and
only the others get tasks of their own: a chain, or a one-node request, creates
no task at all. (A task per node costs more than it seems: httpx/anyio set up
per-task state, ~20% of a call at zero latency.) Every task a request starts is
owned by it and awaited before the request returns (deadline, failure or caller
cancellation included), so reservations are always released.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass

from fanout.dag import (
    EmbedNode,
    InputNode,
    LLMNode,
    MapNode,
    Plan,
    Ref,
    ReviewNode,
    RouteNode,
    ToolNode,
    decide_event,
    render_value,
)
from fanout.errors import (
    BudgetExceeded,
    DeadlineExceeded,
    FanoutError,
    MaxStepsExceeded,
    NodeFailed,
    OutputValidationError,
    ProviderError,
    ProviderOutage,
    ReviewRejected,
    RunError,
    UpstreamFailed,
)
from fanout.run._approval import ToolPaused
from fanout.run._context import NodeStats, RunContext
from fanout.run._embed_step import run_embed
from fanout.run._llm import run_llm
from fanout.run._result import NodeResult, RunResult
from fanout.run._review import ReviewState
from fanout.run._tools import call_tool
from fanout.run._tracing import CallSite
from fanout.types import NO_USAGE, NodeStatus, RunStatus

__all__ = ["execute", "run_items"]


@dataclass(slots=True)
class _Outcome:
    status: NodeStatus
    value: object = None
    error: BaseException | None = None


_SKIPPED = _Outcome(NodeStatus.SKIPPED)
_WAITING = _Outcome(NodeStatus.WAITING_FOR_REVIEW)
_FAILED = frozenset({NodeStatus.ERROR, NodeStatus.MAX_STEPS_EXCEEDED})
Step = LLMNode | ToolNode | MapNode | EmbedNode


class _Run:
    def __init__(
        self,
        plan: Plan,
        inputs: Mapping[str, object],
        ctx: RunContext,
        review: ReviewState | None = None,
    ) -> None:
        self.review = review if review is not None else ReviewState()
        self.plan = plan
        self.inputs = inputs
        self.ctx = ctx
        self.outcomes: dict[str, _Outcome] = {}
        self.waiting = {e: len(d) for e, d in plan.deps.items()}
        self.unfinished = len(plan.deps)
        self.tasks: set[asyncio.Task[None]] = set()
        self.stats: dict[str, NodeStats] = {}
        self.times: dict[str, tuple[float, float | None]] = {}
        self.items: dict[str, tuple[int, int]] = {}
        # set when the run stops; made only if the caller's task must wait for others
        self.done: asyncio.Future[None] | None = None
        self.stop_status: RunStatus | None = None
        self.stop_error: BaseException | None = None
        self.budget_hit = False  # some call was refused by the budget (even in a map item)
        # a provider down longer than max_outage_s: the run stops, and its record gets no
        # row (the job stops; the next run runs it again)
        self.outage: ProviderOutage | None = None
        # maps cut short by the deadline: their items so far, and the unfinished indices
        self.partial: dict[str, tuple[list[object], tuple[int, ...]]] = {}
        self.t0 = ctx.clock.now()
        self.caller: asyncio.Task[object] | None = None
        self.inline_running = False  # the caller's task is running a node right now
        self.cancelled_inline = False  # ... and _stop cancelled it (to be uncancelled)
        self.tracer = ctx.tracer
        self.run_span_id = ctx.tracer.new_span_id() if ctx.tracer is not None else ""
        self.ready_at: dict[str, float] = {}  # traced runs only: when each step became ready

    # -- scheduling ----------------------------------------------------------

    async def run(self) -> None:
        watchdog = None
        if self.ctx.deadline_at is not None:
            watchdog = asyncio.ensure_future(self._watch_deadline(self.ctx.deadline_at))
        self.caller = asyncio.current_task()
        try:
            step = self._advance([e for e, n in self.waiting.items() if n == 0], keep=True)
            while step is not None and self.stop_status is None:
                self.inline_running = True
                try:
                    step = await self._step(step, inline=True)
                except asyncio.CancelledError:
                    if not self.cancelled_inline:
                        raise  # the caller was cancelled
                    # _stop cancelled the node this task was running, like asyncio.timeout
                    self.cancelled_inline = False
                    if self.caller is not None:
                        self.caller.uncancel()
                    step = None
                finally:
                    self.inline_running = False
            if self.unfinished and self.stop_status is None:  # else _stop already ran
                self.done = asyncio.get_running_loop().create_future()
                await self.done
        except asyncio.CancelledError:
            self.stop_status = self.stop_status or RunStatus.CANCELLED
            await self._cancel_all()
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
        await self._cancel_all()

    async def _watch_deadline(self, deadline_at: float) -> None:
        await self.ctx.clock.sleep(deadline_at - self.ctx.clock.now())
        self._stop(RunStatus.DEADLINE_EXCEEDED, DeadlineExceeded("the request's deadline passed"))

    def _stop(self, status: RunStatus, error: BaseException | None) -> None:
        if self.stop_status is None:
            self.stop_status = status
            self.stop_error = error
        if self.done is not None and not self.done.done():
            self.done.set_result(None)
        if self.inline_running and not self.cancelled_inline and self.caller is not None:
            self.cancelled_inline = True
            self.caller.cancel()

    async def _cancel_all(self) -> None:
        pending = [t for t in self.tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _advance(self, ready: list[str], *, keep: bool = False) -> Step | None:
        """Start every ready event; events that finish at once (skips, inputs) cascade here.

        With ``keep``, one step to run is returned instead of spawned: the calling
        task runs it itself.
        """
        kept: Step | None = None
        while ready:
            event = ready.pop()
            started = self._start(event)
            if isinstance(started, _Outcome):
                ready.extend(self._finish(event, started))
                continue
            if self.tracer is not None:
                self.ready_at[event] = self.ctx.clock.now()
            if keep and kept is None:
                kept = started
            else:
                self._spawn(started)
        return kept

    def _finish(self, event: str, outcome: _Outcome) -> list[str]:
        self.outcomes[event] = outcome
        self.unfinished -= 1
        node = self.plan.nodes.get(event)
        if self.ctx.on_node is not None and node is not None and not isinstance(node, InputNode):
            self.ctx.on_node(self._node_result(event))
        if outcome.status in _FAILED and node is not None and node.required:
            self._stop(
                RunStatus.ERROR, NodeFailed(f"required node {event!r} failed", node_id=event)
            )
        elif self.unfinished == 0:
            self._stop(RunStatus.OK, None)
        ready = []
        for dependent in self.plan.dependents[event]:
            self.waiting[dependent] -= 1
            if self.waiting[dependent] == 0:
                ready.append(dependent)
        return ready

    def _start(self, event: str) -> _Outcome | Step:
        """Decide an event now (its outcome), or return the step that must run for it."""
        if self.stop_status is not None:
            return _Outcome(NodeStatus.CANCELLED, error=self.stop_error)
        node = self.plan.nodes.get(event)
        if node is None:  # a route's decision
            return self._decide(self.plan.nodes[event.removesuffix(".decide")])  # type: ignore[arg-type]
        if isinstance(node, RouteNode):
            # Waits for every branch, but only the decision and the chosen one matter.
            blocked = self._blocked(event, deps=(decide_event(node.id),))
            return blocked if blocked is not None else self._route_output(node)
        blocked = self._blocked(event)
        if blocked is not None:
            return blocked
        if isinstance(node, InputNode):
            return _Outcome(NodeStatus.OK, self.inputs[node.id])
        if event in self.review.restored:  # finished before the run paused: not run again
            return _Outcome(NodeStatus.OK, self.review.restored[event])
        if isinstance(node, ReviewNode):
            return self._review(node)
        if isinstance(node, LLMNode) and node.review_on_failure:
            decided = self._decided(node.id, None)
            if decided is not None:  # edited or rejected; approved: run the step again
                return decided
        return node

    def _review(self, node: ReviewNode) -> _Outcome:
        """A review step: the decision if a person made one, else the branch waits."""
        value = self._value(node.value)
        decision = self.review.decisions.get(node.id)
        if decision is None or decision.status == "pending":
            self.review.pending.append((node.id, value, node.instructions))
            return _WAITING
        return self._decided(node.id, value) or _Outcome(NodeStatus.OK, value)

    def _decided(self, node_id: str, value: object) -> _Outcome | None:
        """A decided review's outcome: edited or rejected (approved: ``None``)."""
        decision = self.review.decisions.get(node_id)
        if decision is None or decision.status in ("pending", "approved"):
            return None
        if decision.status == "edited":
            return _Outcome(NodeStatus.OK, decision.edited_value)
        if decision.status == "rejected":
            by = f" by {decision.decided_by}" if decision.decided_by else ""
            why = f": {decision.reason}" if decision.reason else ""
            return _Outcome(
                NodeStatus.ERROR,
                error=ReviewRejected(f"review {decision.review_id!r} was rejected{by}{why}"),
            )
        return None

    def _blocked(self, event: str, deps: tuple[str, ...] | None = None) -> _Outcome | None:
        """Skipped or failed because of a dependency or a route that chose another branch."""
        for dep in self.plan.deps[event] if deps is None else deps:
            outcome = self.outcomes[dep]
            if outcome.status is NodeStatus.OK:
                continue
            if outcome.status is NodeStatus.SKIPPED:
                return _SKIPPED
            if outcome.status is NodeStatus.WAITING_FOR_REVIEW:
                return _WAITING
            if outcome.status is NodeStatus.CANCELLED:
                return _Outcome(NodeStatus.CANCELLED, error=outcome.error)
            return _Outcome(NodeStatus.ERROR, error=_upstream(dep, outcome))
        for route, keys in self.plan.gates.get(event, ()):
            if self.outcomes[decide_event(route)].value not in keys:
                return _SKIPPED
        return None

    def _decide(self, route: RouteNode) -> _Outcome:
        blocked = self._blocked(decide_event(route.id))
        if blocked is not None:
            return blocked
        where = f"route {route.id!r}"
        try:
            key = route.fn(*(self._value(a) for a in route.args))
        except Exception as exc:
            return _Outcome(
                NodeStatus.ERROR, error=RunError(f"{where}: {type(exc).__name__}: {exc}")
            )
        if key not in route.branches:
            return _Outcome(
                NodeStatus.ERROR,
                error=RunError(
                    f"{where}: the route function returned {key!r}; it must return one of "
                    f"{sorted(route.branches)}"
                ),
            )
        return _Outcome(NodeStatus.OK, key)

    def _route_output(self, route: RouteNode) -> _Outcome:
        branch = route.branches[str(self.outcomes[decide_event(route.id)].value)]
        if not isinstance(branch, Ref):
            return _Outcome(NodeStatus.OK, branch)
        chosen = self.outcomes[branch.node_id]
        if chosen.status in _FAILED:
            return _Outcome(NodeStatus.ERROR, error=_upstream(branch.node_id, chosen))
        return chosen

    # -- running nodes -----------------------------------------------------------

    def _spawn(self, step: Step) -> None:
        task = asyncio.get_running_loop().create_task(self._chain(step))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _chain(self, step: Step | None) -> None:
        """A spawned task: run a step, then whichever step its completion readied, and so on."""
        while step is not None:
            step = await self._step(step, inline=False)

    async def _step(self, node: Step, *, inline: bool) -> Step | None:
        """Run one node to its outcome; return a newly ready step for this task to run next."""
        node_id = node.id
        stats = self.stats[node_id] = NodeStats()
        if self.tracer is not None:
            stats.span_id = self.tracer.new_span_id()
        start = self.ctx.clock.now() - self.t0
        self.times[node_id] = (start, None)
        try:
            value = await self._execute(node, stats, {}, node_id)
        except asyncio.CancelledError:
            self.times[node_id] = (start, self.ctx.clock.now() - self.t0)
            partial = self.partial.get(node_id)
            value = partial[0] if partial is not None else None
            self.outcomes.setdefault(
                node_id, _Outcome(NodeStatus.CANCELLED, value, error=self.stop_error)
            )
            raise
        except DeadlineExceeded as exc:
            partial = self.partial.get(node_id)
            outcome = _Outcome(NodeStatus.CANCELLED, partial[0] if partial else None, exc)
        except ProviderOutage as exc:
            self.outage = exc
            outcome = _Outcome(NodeStatus.ERROR, error=exc)
        except MaxStepsExceeded as exc:
            outcome = _Outcome(NodeStatus.MAX_STEPS_EXCEEDED, error=exc)
        except ToolPaused as paused:  # a tool call waits for a person's approval
            self.review.pending.extend(paused.pending)
            self.review.paused[node_id] = paused.turn.to_json()
            outcome = _WAITING
        except (ProviderError, OutputValidationError) as exc:
            outcome = self._escalated(node, exc)
        except Exception as exc:
            outcome = _Outcome(NodeStatus.ERROR, error=exc)
        else:
            outcome = _Outcome(NodeStatus.OK, value)
        if inline:
            self.inline_running = False  # from here on, _stop must not cancel this task
        self.times[node_id] = (start, self.ctx.clock.now() - self.t0)
        if self.outage is not None:
            self._stop(RunStatus.ERROR, self.outage)  # nothing else of it runs
        return self._advance(self._finish(node_id, outcome), keep=True)

    def _escalated(self, node: Step, exc: RunError) -> _Outcome:
        """An escalated llm step: a review if the step asks for one (and none was
        decided yet: a step approved to run again fails for good), else a failure."""
        if (
            isinstance(node, LLMNode)
            and node.review_on_failure
            and node.id not in self.review.decisions
        ):
            value = {"error_type": type(exc).__name__, "error": str(exc)}
            instructions = (
                f"step {node.id!r} failed on every model option: edit in its output, "
                "approve to run it once more, or reject"
            )
            self.review.pending.append((node.id, value, instructions))
            return _WAITING
        return _Outcome(NodeStatus.ERROR, error=exc)

    async def _execute(
        self,
        node: LLMNode | ToolNode | MapNode | EmbedNode,
        stats: NodeStats,
        local: Mapping[str, object],
        owner_id: str,
    ) -> object:
        """Run a node (or, with ``local``, one item of the map ``owner_id``)."""
        if isinstance(node, MapNode):
            return await self._map(node, stats)
        index = local.get("index") if local else None
        index = index if isinstance(index, int) else None
        if isinstance(node, LLMNode):
            values = {k: self._value(v, local) for k, v in node.bindings.items()}
            where = f"node {node.id!r}" + (f" item {index}" if local else "")
            return await run_llm(node, values, self.ctx, stats, where, index, owner_id)
        if isinstance(node, EmbedNode):
            where = f"node {node.id!r}" + (f" item {index}" if local else "")
            site = None
            if self.tracer is not None:
                site = CallSite(self.ctx.trace_id, owner_id, stats.span_id, index, 0)
            text = self._value(node.text, local)
            return await run_embed(node, text, self.ctx, stats, where, site)
        args = tuple(self._value(a, local) for a in node.args)
        kwargs = {k: self._value(v, local) for k, v in node.kwargs.items()}
        call = call_tool(
            node.fn,
            args,
            kwargs,
            timeout_s=node.timeout_s,
            is_async=node.is_async,
            inline=node.inline,
            cpu_runner=self.ctx.cpu_runner if node.cpu else None,
            num_cpus=node.num_cpus,
        )
        if self.tracer is None:
            return await call
        return await self._traced_tool(node, call, stats, args, kwargs, owner_id, index)

    async def _traced_tool(
        self,
        node: ToolNode,
        call: Coroutine[object, None, object],
        stats: NodeStats,
        args: tuple[object, ...],
        kwargs: Mapping[str, object],
        owner_id: str,
        index: int | None,
    ) -> object:
        assert self.tracer is not None
        start = self.ctx.clock.now()
        value: object = None
        error: BaseException | None = None
        try:
            value = await call
            return value
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.tracer.tool(
                CallSite(self.ctx.trace_id, owner_id, stats.span_id, index),
                dag_name=self.ctx.dag_name,
                record_key=self.ctx.record_key,
                tool_name=getattr(node.fn, "__name__", node.id),
                start=start,
                end=self.ctx.clock.now(),
                error=error,
                input_text=render_value({"args": args, "kwargs": kwargs}),
                output_text=render_value(value) if error is None else None,
            )

    async def _map(self, node: MapNode, stats: NodeStats) -> list[object]:
        items = self._value(node.over)
        if not isinstance(items, list | tuple):
            raise RunError(
                f"map {node.id!r}: expected a list from {node.over.node_id!r}, got "
                f"{type(items).__name__}; make that step return a list"
            )
        results: list[object] = [None] * len(items)
        failed: list[int] = []
        body, mode = node.body, node.on_item_error
        offload = self.ctx.map_offload
        if offload is not None and len(items) >= offload.min_items:
            # Spread over the pool: items run on other workers, in chunks.
            upstream = {
                ref.node_id: self.outcomes[ref.node_id].value
                for ref in body.refs()
                if ref.dag != "" and ref.node_id in self.outcomes
            }
            outcomes = await offload.run(self, node, list(items), upstream, stats)
            for index, (ok, value) in enumerate(outcomes):
                if ok:
                    results[index] = value
                    continue
                failed.append(index)
                error = value if isinstance(value, BaseException) else RunError(str(value))
                self.budget_hit = self.budget_hit or isinstance(error, BudgetExceeded)
                if mode == "fail" or isinstance(error, ProviderOutage):
                    self.items[node.id] = (len(items), len(failed))
                    raise error
            return self._map_result(node, results, failed)

        finished: set[int] = set()  # items that ended, well or not (the rest: cut short)

        async def one(index: int) -> None:
            try:
                results[index] = await self._execute(
                    body, stats, {"item": items[index], "index": index}, node.id
                )
            except ProviderOutage:
                raise  # the whole run stops, whatever on_item_error says
            except DeadlineExceeded:
                return  # cut by the request's deadline: unfinished, not failed
            except Exception as exc:
                finished.add(index)
                failed.append(index)
                self.budget_hit = self.budget_hit or isinstance(exc, BudgetExceeded)
                if mode == "fail":
                    raise
            else:
                finished.add(index)

        limit = node.concurrency
        try:
            async with asyncio.TaskGroup() as group:
                if limit is None or limit >= len(items):
                    for index in range(len(items)):
                        group.create_task(one(index))
                else:
                    cursor = iter(range(len(items)))

                    async def worker() -> None:
                        for index in cursor:
                            await one(index)

                    for _ in range(limit):
                        group.create_task(worker())
        except BaseExceptionGroup as group_error:
            self.items[node.id] = (len(items), len(failed))
            raise _first(group_error) from None
        except asyncio.CancelledError:
            # the deadline (or the caller) stopped it: what finished is kept, and paid for
            self._keep_partial(node, results, failed, finished)
            raise
        if len(finished) < len(items):  # some item was cut by the deadline mid-call
            self._keep_partial(node, results, failed, finished)
            raise DeadlineExceeded(
                f"map {node.id!r}: the request's deadline passed with "
                f"{len(items) - len(finished)} of {len(items)} items unfinished"
            )
        return self._map_result(node, results, failed)

    def _keep_partial(
        self, node: MapNode, results: list[object], failed: list[int], finished: set[int]
    ) -> None:
        """A map cut short: its finished items (in place; ``None`` for the rest) and which
        did not finish, for the run's partial result."""
        self.items[node.id] = (len(results), len(failed))
        unfinished = tuple(i for i in range(len(results)) if i not in finished)
        self.partial[node.id] = (list(results), unfinished)

    def _map_result(self, node: MapNode, results: list[object], failed: list[int]) -> list[object]:
        """The map's output once every item ran: failed items kept as None or dropped."""
        self.items[node.id] = (len(results), len(failed))
        if failed and node.on_item_error == "drop":
            dropped = set(failed)
            return [r for i, r in enumerate(results) if i not in dropped]
        return results

    def _value(self, arg: object, local: Mapping[str, object] | None = None) -> object:
        if not isinstance(arg, Ref):
            return arg
        if arg.dag == "":  # item/index inside a map, or a template field bound to an input
            if local and arg.node_id in local:
                return local[arg.node_id]
            return self.inputs[arg.node_id]
        return self.outcomes[arg.node_id].value

    # -- result ----------------------------------------------------------------

    def result(self, request_id: str) -> RunResult:
        nodes: dict[str, NodeResult] = {}
        usage, cost = NO_USAGE, 0.0
        replayed, replayed_cost = NO_USAGE, 0.0
        root_error: BaseException | None = None
        budget_hit = self.budget_hit
        for node_id, node in self.plan.nodes.items():
            if isinstance(node, InputNode):
                continue
            res = nodes[node_id] = self._node_result(node_id)
            usage, cost = usage + res.usage, cost + res.cost_usd
            replayed, replayed_cost = replayed + res.replayed, replayed_cost + res.replayed_cost_usd
            outcome = self.outcomes.get(node_id)
            error = outcome.error if outcome is not None else self.stop_error
            if error is not None and not isinstance(error, UpstreamFailed):
                root_error = root_error or error
                budget_hit = budget_hit or isinstance(error, BudgetExceeded)
        outputs: dict[str, object] = {}
        all_ok = True
        only_waiting = True  # every output not available waits for a review
        for name, ref in self.plan.outputs.items():
            if not isinstance(ref, Ref):
                outputs[name] = ref
                continue
            out = self.outcomes.get(ref.node_id)
            ok = out is not None and out.status in (NodeStatus.OK, NodeStatus.SKIPPED)
            all_ok = all_ok and ok
            if not ok and (out is None or out.status is not NodeStatus.WAITING_FOR_REVIEW):
                only_waiting = False
            kept = ok or (out is not None and out.status is NodeStatus.CANCELLED)  # a map cut
            outputs[name] = out.value if kept and out is not None else None
        if self.stop_status is RunStatus.ERROR:
            all_ok = False
            root_error = self.stop_error if root_error is None else root_error
        status = RunStatus.OK
        # A call cut by the deadline may end the run a moment before the watchdog does.
        stop = self.stop_status
        if stop in (None, RunStatus.OK) and not all_ok and any(
            isinstance(o.error, DeadlineExceeded) for o in self.outcomes.values()
        ):
            stop = RunStatus.DEADLINE_EXCEEDED
        if not all_ok or budget_hit or stop not in (None, RunStatus.OK):
            if stop in (RunStatus.DEADLINE_EXCEEDED, RunStatus.CANCELLED):
                status = stop
                root_error = self.stop_error or root_error
            elif budget_hit:
                status = RunStatus.BUDGET_EXCEEDED
            elif only_waiting and root_error is None:
                status = RunStatus.WAITING_FOR_REVIEW
            else:
                status = RunStatus.ERROR
        if self.outage is not None:  # not this record's failure: it names the outage
            status, root_error = RunStatus.ERROR, self.outage
        if status in (RunStatus.OK, RunStatus.WAITING_FOR_REVIEW):
            root_error = None
        if status is RunStatus.DEADLINE_EXCEEDED:  # partial: every value that was paid for
            for node_id, res in nodes.items():
                outcome = self.outcomes.get(node_id)
                if outcome is not None and outcome.status in (NodeStatus.OK, NodeStatus.CANCELLED):
                    res.output = outcome.value
        return RunResult(
            request_id=request_id,
            dag_name=self.plan.dag_name,
            status=status,
            outputs=outputs,
            nodes=nodes,
            usage=usage,
            cost_usd=cost,
            wall_time_s=self.ctx.clock.now() - self.t0,
            error_type=type(root_error).__name__ if root_error is not None else None,
            error_message=str(root_error) if root_error is not None else None,
            trace_id=self.ctx.trace_id or None,
            replayed=replayed,
            replayed_cost_usd=replayed_cost,
        )


    def _node_result(self, node_id: str) -> NodeResult:
        """One node's result as it stands (a node not finished yet is ``cancelled``)."""
        node = self.plan.nodes[node_id]
        outcome = self.outcomes.get(node_id) or _Outcome(
            NodeStatus.CANCELLED, error=self.stop_error
        )
        stats = self.stats.get(node_id) or NodeStats()
        error = outcome.error
        start, end = self.times.get(node_id, (None, None))
        total, failed = self.items.get(node_id, (None, None))
        partial = self.partial.get(node_id)
        return NodeResult(
            node_id=node_id,
            kind=str(node.kind),
            status=outcome.status,
            error_type=type(error).__name__ if error is not None else None,
            error_message=str(error) if error is not None else None,
            usage=stats.usage,
            cost_usd=stats.cost_usd,
            calls=stats.calls,
            fallbacks=stats.fallbacks,
            hedges=stats.hedges,
            start_s=start,
            end_s=end,
            items_total=total,
            items_failed=failed,
            tool_calls=stats.tool_calls,
            tool_errors=stats.tool_errors,
            guard_rejections=stats.guard_rejections,
            guard_repairs=stats.guard_repairs,
            transcript=list(stats.transcript) if stats.transcript is not None else None,
            replayed=stats.replayed,
            replayed_cost_usd=stats.replayed_cost_usd,
            unfinished_items=partial[1] if partial is not None else None,
        )

    def trace(self, result: RunResult) -> None:
        """Emit the run's row and one row per node (attempt rows went out as they ended)."""
        tracer = self.tracer
        if tracer is None:
            return
        ctx, t0 = self.ctx, self.t0
        for node_id, node in self.plan.nodes.items():
            if isinstance(node, InputNode):
                continue
            res = result.nodes[node_id]
            outcome = self.outcomes.get(node_id)
            stats = self.stats.get(node_id)
            ready = self.ready_at.get(node_id)
            start = t0 + res.start_s if res.start_s is not None else None
            tracer.node(
                trace_id=ctx.trace_id,
                span_id=stats.span_id if stats is not None else tracer.new_span_id(),
                parent_span_id=self.run_span_id,
                dag_name=self.plan.dag_name,
                record_key=ctx.record_key,
                node_id=node_id,
                kind=res.kind,
                status=str(res.status),
                error=outcome.error if outcome is not None else self.stop_error,
                start=start,
                end=t0 + res.end_s if res.end_s is not None else None,
                queue_wait_s=start - ready if start is not None and ready is not None else None,
                model_alias=_model_of(node),
            )
        tracer.run(
            trace_id=ctx.trace_id,
            span_id=self.run_span_id,
            dag_name=self.plan.dag_name,
            record_key=ctx.record_key,
            status=str(result.status),
            error_type=result.error_type,
            error_message=result.error_message,
            start=t0,
            end=t0 + result.wall_time_s,
            budget=ctx.budget,
            inputs=self.inputs,
            parent_span_id=ctx.trace_parent,
            session_id=ctx.session_id,
        )


def _model_of(node: object) -> str | None:
    if isinstance(node, MapNode):
        node = node.body
    return node.model if isinstance(node, LLMNode | EmbedNode) else None


def _upstream(dep: str, outcome: _Outcome) -> UpstreamFailed:
    error = outcome.error
    if isinstance(error, UpstreamFailed):
        return UpstreamFailed(str(error), upstream=error.upstream)
    kind = type(error).__name__ if error is not None else "error"
    return UpstreamFailed(f"upstream node {dep!r} failed ({kind}: {error})", upstream=dep)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error of a task group (cancellations of siblings are not errors)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if isinstance(exc, FanoutError | Exception):
            return exc
    return group.exceptions[0]


async def run_items(
    plan: Plan,
    map_id: str,
    inputs: Mapping[str, object],
    upstream: Mapping[str, object],
    items: list[tuple[int, object]],
    ctx: RunContext,
    span_id: str,
) -> tuple[list[tuple[int, bool, object]], NodeStats]:
    """Run some items of the map ``map_id`` of a request that runs elsewhere.

    ``upstream`` holds the outputs of the nodes the map's body reads; trace rows go
    under the map's node span (``span_id``). Returns ``(index, ok, value or error)``
    per item and the calls' usage and cost.
    """
    node = plan.nodes[map_id]
    assert isinstance(node, MapNode)
    run = _Run(plan, inputs, ctx)
    for node_id, value in upstream.items():
        run.outcomes[node_id] = _Outcome(NodeStatus.OK, value)
    stats = NodeStats(span_id=span_id)

    async def one(index: int, item: object) -> tuple[int, bool, object]:
        try:
            value = await run._execute(node.body, stats, {"item": item, "index": index}, map_id)
        except Exception as exc:
            return index, False, exc
        return index, True, value

    done = await asyncio.gather(*(one(i, item) for i, item in items))
    return list(done), stats


async def execute(
    plan: Plan,
    inputs: Mapping[str, object],
    ctx: RunContext,
    request_id: str,
    review: ReviewState | None = None,
) -> RunResult:
    """Run one instance of ``plan`` to completion (or deadline, failure, cancellation).

    ``review``: decisions and restored outputs in; pending reviews and every finished
    node's output out (what a paused run's checkpoint holds)."""
    run = _Run(plan, inputs, ctx, review)
    ctx.review = review
    try:
        await run.run()
    except asyncio.CancelledError:
        run.trace(run.result(request_id))  # a cancelled request leaves its rows too
        raise
    finally:
        if ctx.mcp is not None:  # a stateful MCP server's session lasts one run
            await ctx.mcp.end_run(ctx.request_id)
    result = run.result(request_id)
    run.trace(result)
    if review is not None:
        review.outputs = {
            node_id: outcome.value
            for node_id, outcome in run.outcomes.items()
            if outcome.status is NodeStatus.OK
            and node_id in plan.nodes
            and not isinstance(plan.nodes[node_id], InputNode)
        }
    return result
