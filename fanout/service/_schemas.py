"""The HTTP API's request and response bodies (pydantic): validation and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from fanout.run import NodeResult, RunResult
from fanout.types import RunStatus

__all__ = [
    "BudgetIn",
    "DecisionIn",
    "ErrorBody",
    "NodeOut",
    "PipelineInfo",
    "RunRequest",
    "RunResponse",
    "ServiceStatus",
    "SessionRunRequest",
    "UsageOut",
    "request_model",
    "to_node_out",
    "to_response",
]

ServiceStatus = Literal[
    "ok", "partial", "error", "budget_exceeded", "cancelled", "waiting_for_review"
]

_STATUS: dict[RunStatus, ServiceStatus] = {
    RunStatus.OK: "ok",
    RunStatus.DEADLINE_EXCEEDED: "partial",  # what finished, the rest cancelled
    RunStatus.BUDGET_EXCEEDED: "budget_exceeded",
    RunStatus.CANCELLED: "cancelled",
    RunStatus.ERROR: "error",
    RunStatus.WAITING_FOR_REVIEW: "waiting_for_review",  # paused: see GET /v1/reviews
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecisionIn(_Strict):
    """``POST /v1/reviews/{id}/approve|reject|edit``: who decides, why, the edited value."""

    by: str | None = Field(default=None, max_length=200, description="default: the tenant")
    reason: str | None = Field(default=None, max_length=2000, description="why (a rejection)")
    value: Any = Field(default=None, description="edit: the corrected value (JSON)")


class BudgetIn(_Strict):
    """What one run may spend; a call whose worst case would pass it is not made."""

    usd: float | None = Field(default=None, ge=0, description="spend cap in USD")
    tokens: int | None = Field(default=None, ge=0, description="token cap (input + output)")


class RunRequest(_Strict):
    """``POST /v1/pipelines/{name}/runs``: one run of a pipeline."""

    inputs: dict[str, Any] = Field(description="the pipeline's inputs, by name")
    deadline_ms: int | None = Field(
        default=None,
        gt=0,
        le=3_600_000,
        description="nodes still running then are cancelled; the response says what finished",
    )
    budget: BudgetIn | None = None
    stream: bool = Field(
        default=False,
        description="server-sent events: one `node` event per finished node, then `result`",
    )
    priority: Literal["interactive", "batch"] = Field(
        default="interactive",
        description="interactive calls queue ahead of batch work sharing the provider quota",
    )


class SessionRunRequest(RunRequest):
    """A run of a pipeline that declares a session: it may continue one."""

    session_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description=(
            "continue this session (a pipeline that declares one): its history and state are "
            "loaded and the turn saved; a session another run holds answers 409 session_busy"
        ),
    )


class UsageOut(BaseModel):
    input_tokens: int
    output_tokens: int


class NodeOut(BaseModel):
    """One node of the run; a ``map`` counts all its items."""

    node: str
    status: Literal[
        "ok", "error", "skipped", "cancelled", "max_steps_exceeded", "waiting_for_review"
    ]
    kind: str
    error_type: str | None = None
    error_message: str | None = None
    usage: UsageOut
    cost_usd: float
    calls: int = Field(description="provider calls made (every attempt, hedge and fallback)")
    fallbacks: int
    hedges: int = Field(description="duplicates sent for calls slower than the learned p95")
    start_ms: float | None = Field(default=None, description="since the run started")
    end_ms: float | None = None
    items_total: int | None = None
    items_failed: int | None = None
    tool_calls: int = Field(default=0, description="an llm node's Python tool calls")
    tool_errors: int = Field(default=0, description="tool calls that went back as errors")
    guard_rejections: int = Field(
        default=0, description="guard rejections (outputs retried, inputs refused)"
    )
    guard_repairs: int = Field(
        default=0, description="guard repairs (outputs fixed, inputs masked)"
    )
    transcript: list[dict[str, Any]] | None = Field(
        default=None,
        description="an llm node with tools: its messages (tool calls, tool results, answer)",
    )
    unfinished_items: list[int] | None = Field(
        default=None,
        description="a map the deadline cut: the items that did not finish (null in its output)",
    )
    output: Any = Field(
        default=None,
        description="status partial only: this node's value if it finished, a cut map's "
        "items so far (every value that was paid for)",
    )


class RunResponse(BaseModel):
    """A finished run. ``status`` is ``partial`` when the deadline passed: ``outputs``
    holds what finished (``null`` for the rest) and ``nodes`` says which."""

    run_id: str
    pipeline: str
    status: ServiceStatus
    outputs: dict[str, Any]
    nodes: dict[str, NodeOut]
    usage: UsageOut
    cost_usd: float
    duration_ms: float
    error_type: str | None = None
    error_message: str | None = None
    trace_id: str | None = None


class PipelineInfo(BaseModel):
    name: str
    description: str
    inputs: list[str]
    outputs: list[str]
    input_schema: dict[str, Any] = Field(description="JSON Schema of the `inputs` object")
    runs_url: str


class ErrorField(BaseModel):
    field: str
    reason: str


class ErrorDetail(BaseModel):
    type: str
    message: str
    fields: list[ErrorField] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """Every 4xx/5xx: what went wrong, and for bad input which fields and why."""

    error: ErrorDetail


def _not_null(value: object) -> object:
    if value is None:
        raise ValueError("null is not a value; send the input")
    return value


_AnyValue = Annotated[Any, AfterValidator(_not_null)]
"""An input declared without a type: any JSON value but null (a missing value)."""


def request_model(
    pipeline: str, inputs: Mapping[str, object], *, session: bool = False
) -> type[RunRequest]:
    """``RunRequest`` whose ``inputs`` must hold exactly the pipeline's inputs, each of its
    declared type (``inputs``: name -> type, ``None`` for any value); ``session_id`` only
    for a pipeline that declares a session (``session``)."""
    fields: dict[str, Any] = {
        name: (_AnyValue if kind is None else kind, Field(description=f"input {name!r}"))
        for name, kind in inputs.items()
    }
    safe = "".join(c if c.isalnum() else "_" for c in pipeline)
    inputs_model = create_model(
        f"{safe}_inputs",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )
    model: type[RunRequest] = create_model(
        f"{safe}_run_request",
        __base__=SessionRunRequest if session else RunRequest,
        inputs=(inputs_model, Field(description=f"the inputs of {pipeline!r}")),
    )
    return model


def to_node_out(node: NodeResult) -> NodeOut:
    return NodeOut(
        node=node.node_id,
        status=str(node.status),  # type: ignore[arg-type]
        kind=node.kind,
        error_type=node.error_type,
        error_message=node.error_message,
        usage=UsageOut(
            input_tokens=node.usage.input_tokens, output_tokens=node.usage.output_tokens
        ),
        cost_usd=node.cost_usd,
        calls=node.calls,
        fallbacks=node.fallbacks,
        hedges=node.hedges,
        start_ms=node.start_s * 1000 if node.start_s is not None else None,
        end_ms=node.end_s * 1000 if node.end_s is not None else None,
        items_total=node.items_total,
        items_failed=node.items_failed,
        tool_calls=node.tool_calls,
        tool_errors=node.tool_errors,
        guard_rejections=node.guard_rejections,
        guard_repairs=node.guard_repairs,
        transcript=[dict(m) for m in node.transcript] if node.transcript is not None else None,
        unfinished_items=list(node.unfinished_items) if node.unfinished_items is not None else None,
        output=node.jsonable_output(),
    )


def to_response(pipeline: str, result: RunResult) -> RunResponse:
    data = result.to_dict()
    outputs = data["outputs"]
    assert isinstance(outputs, dict)
    return RunResponse(
        run_id=result.request_id,
        pipeline=pipeline,
        status=_STATUS[result.status],
        outputs=outputs,
        nodes={k: to_node_out(v) for k, v in result.nodes.items()},
        usage=UsageOut(
            input_tokens=result.usage.input_tokens, output_tokens=result.usage.output_tokens
        ),
        cost_usd=result.cost_usd,
        duration_ms=result.wall_time_s * 1000,
        error_type=result.error_type,
        error_message=result.error_message,
        trace_id=result.trace_id,
    )
