"""``Span``: one row of the trace table — a run, a node of it, or one attempt of a call."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

import pyarrow as pa

__all__ = [
    "KIND_COLUMNS",
    "SCHEMA_VERSION",
    "SPAN_SCHEMA",
    "Span",
    "SpanKind",
    "new_span",
    "span_columns",
    "span_of",
]

SCHEMA_VERSION = 1
_NOT_NULL = frozenset(
    {"trace_id", "span_id", "record_type", "span_name", "job_id", "dag_name", "status",
     "schema_version", "writer_id", "seq_no"}
)

SpanKind = Literal["run", "node", "attempt"]


@dataclass
class Span:
    """One flat trace row. Tokens and cost live on ``attempt`` rows only, so sums are exact.

    Names follow the OpenTelemetry GenAI / OpenInference conventions in spirit; the
    table keeps these stable names and exporters map them.
    """

    # identity
    trace_id: str  # 32 hex chars, one per request
    span_id: str  # 16 hex chars
    parent_span_id: str | None
    record_type: SpanKind
    span_name: str
    job_id: str = ""
    dag_name: str = ""
    node_id: str | None = None
    map_index: int | None = None
    record_key: str | None = None
    attempt: int | None = None  # 1-based, per model of the fallback chain
    fallback_index: int | None = None  # 0 for the primary model
    model_alias: str | None = None
    # time: seconds since the epoch (UTC) here; the table stores timestamp[us, UTC]
    start_time: float | None = None
    end_time: float | None = None
    duration_ms: float | None = None
    queue_wait_ms: float | None = None  # ready -> started
    limiter_wait_ms: float | None = None  # waiting for rate-limit capacity
    backoff_ms: float | None = None  # sleeping between retries
    hedge_delay_ms: float | None = None  # a hedged duplicate: how long after the first it went
    # outcome
    status: str = "ok"  # ok / error / cancelled / skipped / max_steps_exceeded / waiting_for_review
    error_type: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    retryable: bool | None = None
    hedged: bool | None = None  # True: a duplicate of a slow call still in flight (attempts)
    # True: answered from the call journal, not the provider (an earlier process made and
    # paid for the call; its tokens and cost are on that attempt's row, so here 0)
    replayed: bool | None = None
    # with a call journal (batch jobs): 16 hex digits of the call's key, on its attempt rows
    # and on a later run's replayed row of it (a summary counts a call's cost once)
    call_key: str | None = None
    # True: answered from the response cache (--cache), at zero cost and no provider call
    cache_hit: bool | None = None
    # batch mode: the provider batch that answered (or failed) the call, and its times
    batch_id: str | None = None
    batch_submitted_at: float | None = None
    batch_completed_at: float | None = None
    # GenAI
    provider: str | None = None  # the config's provider name (an alias, e.g. "emu")
    provider_name: str | None = None  # its well-known name (gen_ai.provider.name): openai, ...
    server_address: str | None = None  # the host the call went to (an HTTP provider's)
    response_id: str | None = None  # the provider's id of its reply (gen_ai.response.id)
    request_max_tokens: int | None = None
    request_temperature: float | None = None
    request_tools: str | None = None  # the tools offered, as JSON (OpenAI tool schema)
    request_model: str | None = None
    response_model: str | None = None
    finish_reason: str | None = None
    tool_name: str | None = None  # a tool call's tool, or a guard row's guard
    tool_call_id: str | None = None  # a tool call's id, as the model gave it
    guard_outcome: str | None = None  # guard rows only: accept / reject / repair
    input_tokens: int | None = None
    output_tokens: int | None = None
    estimated_input_tokens: int | None = None
    # of input_tokens: read from the provider's prompt cache / written to it, each priced
    # at its own rate in cost_usd (cached_input_usd_per_mtok, cache_write_usd_per_mtok)
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    cost_usd: float | None = None
    # streamed attempts: time to the first piece of text, and output tokens a second
    # after it (the decode rate; null for a reply that came in one piece)
    streamed: bool | None = None
    time_to_first_token_ms: float | None = None
    output_tokens_per_s: float | None = None
    # embeddings: the inputs of this node the row covers, and how many inputs the HTTP
    # request carrying them held (several nodes' inputs are packed into one request)
    embedding_inputs: int | None = None
    request_inputs: int | None = None
    input_cost_usd: float | None = None  # the prompt's part of cost_usd (the rest: the reply's)
    session_id: str | None = None  # run rows of a session's turn
    # budget at the time of the span
    budget_limit_usd: float | None = None
    budget_spent_usd: float | None = None
    # content: an HMAC by default, the text only with content = "full"
    input_hmac: str | None = None
    output_hmac: str | None = None
    input_chars: int | None = None
    output_chars: int | None = None
    input_text: str | None = None
    output_text: str | None = None
    # bookkeeping (set by the writer)
    schema_version: int = SCHEMA_VERSION
    writer_id: str = ""
    seq_no: int = 0


def new_span(**values: Any) -> Span:
    """A span with ``values`` set and every other column at its default.

    Three times cheaper than ``Span(...)``, which assigns every one of its fields: only the
    given ones go into the instance, the rest are read from the class defaults.
    Used on the executor's path, once per run, node and attempt.
    """
    span = object.__new__(Span)
    span.__dict__.update(values)
    return span


def span_of(values: dict[str, Any]) -> Span:
    """:func:`new_span` taking its dict of values as the span's own (no copy)."""
    span = object.__new__(Span)
    span.__dict__ = values
    return span


def span_columns() -> tuple[str, ...]:
    """Column names in table order."""
    return tuple(f.name for f in fields(Span))


_STR, _INT, _FLOAT, _TS = pa.string(), pa.int64(), pa.float64(), pa.timestamp("us", tz="UTC")
_TYPES: dict[str, pa.DataType] = {
    "map_index": _INT,
    "attempt": _INT,
    "fallback_index": _INT,
    "start_time": _TS,
    "end_time": _TS,
    "http_status": _INT,
    "retryable": pa.bool_(),
    "hedged": pa.bool_(),
    "streamed": pa.bool_(),
    "embedding_inputs": _INT,
    "request_inputs": _INT,
    "replayed": pa.bool_(),
    "cache_hit": pa.bool_(),
    "batch_submitted_at": _TS,
    "batch_completed_at": _TS,
    "input_tokens": _INT,
    "output_tokens": _INT,
    "estimated_input_tokens": _INT,
    "request_max_tokens": _INT,
    "cached_input_tokens": _INT,
    "cache_write_tokens": _INT,
    "input_chars": _INT,
    "output_chars": _INT,
    "schema_version": pa.int32(),
    "seq_no": _INT,
}
for _name in ("duration_ms", "queue_wait_ms", "limiter_wait_ms", "backoff_ms", "cost_usd",
              "budget_limit_usd", "budget_spent_usd", "time_to_first_token_ms",
              "output_tokens_per_s", "hedge_delay_ms", "request_temperature",
              "input_cost_usd"):
    _TYPES[_name] = _FLOAT

SPAN_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field(name, _TYPES.get(name, _STR), nullable=name not in _NOT_NULL)
        for name in span_columns()
    ],
    metadata={"fanout.trace.schema_version": str(SCHEMA_VERSION)},
)
"""The trace table's Arrow schema: the same columns as :class:`Span`, in order."""

_COMMON = frozenset(
    {
        "trace_id", "span_id", "parent_span_id", "record_type", "span_name", "job_id",
        "dag_name", "record_key", "start_time", "end_time", "duration_ms", "status",
        "error_type", "error_message", "schema_version", "writer_id", "seq_no",
    }
)
KIND_COLUMNS: dict[str, frozenset[str]] = {
    # a run's input: the record's inputs as JSON (under the content policy)
    "run": _COMMON | {"budget_limit_usd", "budget_spent_usd", "input_hmac", "input_chars",
                      "input_text", "session_id"},
    "node": _COMMON | {"node_id", "model_alias", "queue_wait_ms", "map_index"},
    "attempt": frozenset(span_columns()) - {"queue_wait_ms", "session_id"},
}
"""The columns a span of each kind may fill; the writer converts only these (the rest are null)."""
