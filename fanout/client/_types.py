"""The pipeline API's answers as typed values (pydantic: unknown fields are ignored, so a
newer service does not break an older client), and its errors."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from fanout.errors import FanoutError

__all__ = ["NodeReport", "PipelineInfo", "PipelineRun", "ServiceError", "UsageReport"]

RunState = Literal["ok", "partial", "budget_exceeded", "cancelled", "error", "waiting_for_review"]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class UsageReport(_Answer):
    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class NodeReport(_Answer):
    """One node of a run (a ``node`` event of a streamed run, or ``PipelineRun.nodes``)."""

    node: str
    status: str
    kind: str
    usage: UsageReport
    cost_usd: float
    calls: int = 0
    fallbacks: int = 0
    hedges: int = 0
    error_type: str | None = None
    error_message: str | None = None
    start_ms: float | None = None
    end_ms: float | None = None
    output: Any = None


class PipelineRun(_Answer):
    """A finished run: ``status`` ``partial`` when its deadline passed (``outputs`` of the
    nodes that did not finish are ``None``)."""

    run_id: str
    pipeline: str
    status: RunState
    outputs: dict[str, Any]
    nodes: dict[str, NodeReport]
    usage: UsageReport
    cost_usd: float
    duration_ms: float
    error_type: str | None = None
    error_message: str | None = None
    trace_id: str | None = None


class PipelineInfo(_Answer):
    name: str
    description: str
    inputs: list[str]
    outputs: list[str]
    input_schema: dict[str, Any]
    runs_url: str


class ServiceError(FanoutError):
    """The service refused a request: its HTTP ``status``, the error ``kind`` (``type``
    in the body: ``invalid_request``, ``unauthorized``, ...), the message, and for a 422
    the ``fields`` at fault. ``retry_after_s``: the service's hint (429, 503)."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        kind: str = "",
        fields: list[dict[str, str]] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.fields = fields or []
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (str(self), self.status, self.kind, self.fields, self.retry_after_s))


def _rebuild(
    message: str, status: int, kind: str, fields: list[dict[str, str]], retry: float | None
) -> ServiceError:
    return ServiceError(message, status=status, kind=kind, fields=fields, retry_after_s=retry)
