"""What a request returns: outputs, per-node status, usage, cost and timing."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields

from pydantic import BaseModel

from fanout.dag import render_value
from fanout.types import Message, NodeStatus, RunStatus, ToolCall, Usage

__all__ = ["NodeResult", "RunResult"]


# Not frozen (treat them as read-only): a frozen dataclass sets each field through
# object.__setattr__, five times the cost of a plain one, and a batch job builds one
# of each per record.
@dataclass(slots=True)
class NodeResult:
    """One node of one request. For a ``map``, counts cover all its items."""

    node_id: str
    kind: str
    status: NodeStatus
    error_type: str | None = None
    error_message: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    calls: int = 0  # provider calls made (every attempt, fallback and validation retry)
    fallbacks: int = 0
    hedges: int = 0  # duplicates sent for slow calls (see ``[models.NAME.hedge]``)
    start_s: float | None = None  # seconds since the request started
    end_s: float | None = None
    items_total: int | None = None
    items_failed: int | None = None
    # An llm node's Python tool calls (a map: over the items run in this process).
    tool_calls: int = 0
    tool_errors: int = 0  # ... those that went back to the model as errors (bad args, raised)
    # Guard verdicts of an llm node: Reject (an output retried, an input refused) and
    # Repair (an output corrected, an input masked).
    guard_rejections: int = 0
    guard_repairs: int = 0
    # An llm node with Python tools (outside a map): every message of its conversation,
    # prompt first, then assistant turns with tool_calls, tool results and the final
    # answer; kept when max_steps, the deadline or the budget ended the loop.
    transcript: list[Message] | None = None
    # Calls answered from a batch job's call journal: paid by the earlier run that made
    # them, so not in ``usage``/``cost_usd`` (what this run spent) nor in ``calls``.
    replayed: Usage = field(default_factory=Usage)
    replayed_cost_usd: float = 0.0
    # A map the deadline cut: the indices of its items that did not finish (its output,
    # in ``output``, holds the finished ones in place and None for these).
    unfinished_items: tuple[int, ...] | None = None
    # Only in a run the deadline cut (``deadline_exceeded``): this node's value if it
    # finished, a cut map's items so far; every value that was paid for is returned.
    output: object = None

    def __reduce__(self) -> tuple[type[NodeResult], tuple[object, ...]]:
        return NodeResult, _node_values(self)

    def jsonable_output(self) -> object:
        return _jsonable(self.output)

    def to_dict(self) -> dict[str, object]:
        return {
            "status": str(self.status),
            "kind": self.kind,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "cost_usd": self.cost_usd,
            "calls": self.calls,
            "fallbacks": self.fallbacks,
            "hedges": self.hedges,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "items_total": self.items_total,
            "items_failed": self.items_failed,
            "tool_calls": self.tool_calls,
            "tool_errors": self.tool_errors,
            "guard_rejections": self.guard_rejections,
            "guard_repairs": self.guard_repairs,
            "transcript": self.transcript,
            "unfinished_items": list(self.unfinished_items)
            if self.unfinished_items is not None
            else None,
            "output": self.jsonable_output(),
        }


@dataclass(slots=True)
class RunResult:
    """The result of one request (one DAG run).

    ``outputs`` holds every declared output; an output whose node did not finish is
    ``None`` and its node's status says why. ``usage`` and ``cost_usd`` are what this
    run spent; ``replayed`` and ``replayed_cost_usd`` what its calls answered from a
    batch job's journal cost the earlier run that made them (the request's whole cost is
    the sum: :attr:`total_cost_usd`). ``status`` is ``ok`` only when every
    output is available; otherwise, in order of precedence, ``deadline_exceeded``,
    ``cancelled``, ``budget_exceeded``, ``waiting_for_review`` (every missing output
    waits for a person: ``reviews`` holds the pending reviews' ids) or ``error``.
    """

    request_id: str
    dag_name: str
    status: RunStatus
    outputs: dict[str, object]
    nodes: dict[str, NodeResult]
    usage: Usage
    cost_usd: float
    wall_time_s: float
    error_type: str | None = None
    error_message: str | None = None
    trace_id: str | None = None  # the request's rows in the trace (None: tracing off)
    reviews: tuple[str, ...] = ()  # ids of the reviews this run waits for
    # what calls answered from the call journal cost when an earlier run made them
    replayed: Usage = field(default_factory=Usage)
    replayed_cost_usd: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.OK

    def __reduce__(self) -> tuple[type[RunResult], tuple[object, ...]]:
        return RunResult, _run_values(self)

    def jsonable_outputs(self) -> dict[str, object]:
        """The outputs as JSON values (models dumped, others rendered like prompt values)."""
        return {k: _jsonable(v) for k, v in self.outputs.items()}

    @property
    def total_cost_usd(self) -> float:
        """What the request's calls cost, whichever run of the job paid for them."""
        return self.cost_usd + self.replayed_cost_usd

    @property
    def calls(self) -> int:
        """Provider calls this run made: every attempt, fallback and validation retry."""
        return sum(node.calls for node in self.nodes.values())

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly view (outputs rendered like prompt values when not plain JSON)."""
        return {
            "request_id": self.request_id,
            "dag": self.dag_name,
            "status": str(self.status),
            "outputs": self.jsonable_outputs(),
            "nodes": {k: v.to_dict() for k, v in self.nodes.items()},
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "cost_usd": self.cost_usd,
            "wall_time_s": self.wall_time_s,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "trace_id": self.trace_id,
            "reviews": list(self.reviews),
        }


# Pickled by position: a slots dataclass pickles its fields by name through
# dataclasses.fields() (its generated __getstate__), and a batch job on Ray sends every
# record's result from a worker to the driver: by position a result is half the bytes
# (314 vs 646 for a one-node run) and pickles in 11 µs instead of 28.
_node_values = operator.attrgetter(*(f.name for f in fields(NodeResult)))
_run_values = operator.attrgetter(*(f.name for f in fields(RunResult)))


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, ToolCall):
        return {"id": value.id, "name": value.name, "arguments": value.arguments}
    return render_value(value)
