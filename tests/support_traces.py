"""Synthetic trace files for the reader tests: Span rows written as Parquet parts and log segments.

``sample_traces`` lays out a small directory whose summary figures are worked out
by hand in the tests (see the table in its docstring).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from fanout.trace import SPAN_SCHEMA, Span
from fanout.trace._files import WAL_DIR, part_path

T0 = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)

TRACE_1 = "1111aaaa" + "0" * 24
TRACE_2 = "1111aabb" + "0" * 24  # shares the prefix "1111aa" with TRACE_1
TRACE_3 = "3333cccc" + "0" * 24  # in the open log segment only: its run row is not written


def sid(name: str) -> str:
    """A readable test name as a 16-hex-char span id (``sid("a11")``)."""
    return name.encode().hex().rjust(16, "0")


def row(
    trace_id: str,
    span_id: str,
    parent: str | None,
    record_type: str,
    name: str,
    *,
    start_ms: float | None,
    duration_ms: float | None,
    **fields: object,
) -> dict[str, object]:
    """One table row; span ids by name (see ``sid``), times in ms after T0."""
    span = Span(
        trace_id=trace_id,
        span_id=sid(span_id),
        parent_span_id=sid(parent) if parent is not None else None,
        record_type=record_type,  # type: ignore[arg-type]
        span_name=name,
        job_id=str(fields.pop("job_id", "job-a")),
        dag_name=str(fields.pop("dag_name", "triage")),
    )
    data = asdict(span) | fields
    data["duration_ms"] = duration_ms
    if start_ms is not None:
        data["start_time"] = T0 + timedelta(milliseconds=start_ms)
        if duration_ms is not None:
            data["end_time"] = T0 + timedelta(milliseconds=start_ms + duration_ms)
    return data


def table(rows: list[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"seq_no": i, "writer_id": "w1", **r} for i, r in enumerate(rows)], schema=SPAN_SCHEMA
    )


def write_part(
    root: Path, rows: list[dict[str, object]], name: str, *, job_id: str = "job-a"
) -> Path:
    path = part_path(root, T0.date().isoformat(), job_id, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table(rows), path)
    return path


def segment_bytes(*batches: list[dict[str, object]]) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, SPAN_SCHEMA) as writer:
        for rows in batches:
            writer.write_table(table(rows))
    return bytes(sink.getvalue().to_pybytes())


def write_segment(
    root: Path, name: str, *batches: list[dict[str, object]], torn: bool = False
) -> Path:
    """A log segment; ``torn`` cuts the last batch in half, as a killed writer leaves it."""
    data = segment_bytes(*batches)
    if torn:
        whole = len(segment_bytes(*batches[:-1])) - 8  # without the end-of-stream marker
        data = data[: whole + (len(data) - whole) // 2]
    path = root / WAL_DIR / f"{name}.arrows"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def attempt(
    trace_id: str,
    span_id: str,
    parent: str,
    node_id: str,
    *,
    start_ms: float,
    duration_ms: float,
    **fields: object,
) -> dict[str, object]:
    """An LLM attempt on model ``fast`` (sim/sim-small) unless fields say otherwise."""
    defaults: dict[str, object] = {
        "model_alias": "fast",
        "provider": "sim",
        "request_model": "sim-small",
        "attempt": 1,
        "fallback_index": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
    }
    merged = defaults | fields
    name = f"chat {merged['request_model']}" if merged.get("request_model") else "attempt"
    return row(
        trace_id,
        span_id,
        parent,
        "attempt",
        str(fields.pop("span_name", name)),
        start_ms=start_ms,
        duration_ms=duration_ms,
        node_id=node_id,
        **{k: v for k, v in merged.items() if k != "span_name"},
    )


def sample_traces(root: Path) -> Path:
    """Two finished runs of job-a in two Parquet parts; job-b still running in a log segment.

    LLM attempts on fast (sim/sim-small), durations in ms::

        a11  TRACE_1 classify #1   100  error RateLimited 429  limiter 5
        a12  TRACE_1 classify #2   200  ok  100/10 tok  $0.001  limiter 15
        a21  TRACE_2 classify #1   400  error ProviderTimeout  limiter 20
        a22  TRACE_2 classify #2   500  error RateLimited 429  limiter 0
        a31  TRACE_3 classify #1   300  ok  50/5 tok  $0.0005  (asked for tool "search")

    and on smart (sim/sim-large): a13 TRACE_1 summarize 300 ok 200/50 $0.01; one tool
    attempt (lookup, 50 ms) in TRACE_1. Runs: TRACE_1 ok, TRACE_2 error.
    """
    t1 = [
        row(TRACE_1, "r1", None, "run", "run triage", start_ms=0, duration_ms=1000,
            record_key="rec-1"),
        row(TRACE_1, "n1c", "r1", "node", "llm classify", start_ms=10, duration_ms=590,
            node_id="classify", model_alias="fast", record_key="rec-1"),
        attempt(TRACE_1, "a12", "n1c", "classify", start_ms=200, duration_ms=200, attempt=2,
                input_tokens=100, output_tokens=10, cost_usd=0.001, limiter_wait_ms=15.0,
                backoff_ms=85.0, record_key="rec-1"),
        attempt(TRACE_1, "a11", "n1c", "classify", start_ms=10, duration_ms=100,
                status="error", error_type="RateLimited", http_status=429, retryable=True,
                error_message="slow down", limiter_wait_ms=5.0, record_key="rec-1"),
        row(TRACE_1, "n1s", "r1", "node", "llm summarize", start_ms=700, duration_ms=300,
            node_id="summarize", model_alias="smart", record_key="rec-1"),
        attempt(TRACE_1, "a13", "n1s", "summarize", start_ms=700, duration_ms=300,
                model_alias="smart", request_model="sim-large", response_model="sim-large-v2",
                finish_reason="stop", input_tokens=200, output_tokens=50, cost_usd=0.01,
                limiter_wait_ms=0.0, record_key="rec-1", input_text="hello",
                output_text="a summary"),
        row(TRACE_1, "n1l", "r1", "node", "tool lookup", start_ms=600, duration_ms=100,
            node_id="lookup", record_key="rec-1"),
        attempt(TRACE_1, "a14", "n1l", "lookup", start_ms=620, duration_ms=50,
                model_alias=None, provider=None, request_model=None, fallback_index=None,
                tool_name="lookup", span_name="tool lookup", record_key="rec-1"),
    ]  # fmt: skip
    t2 = [
        row(TRACE_2, "r2", None, "run", "run triage", start_ms=2000, duration_ms=1500,
            status="error", error_type="NodeFailed", record_key="rec-2"),
        row(TRACE_2, "n2c", "r2", "node", "llm classify", start_ms=2000, duration_ms=1500,
            node_id="classify", model_alias="fast", status="error", record_key="rec-2"),
        attempt(TRACE_2, "a21", "n2c", "classify", start_ms=2000, duration_ms=400,
                status="error", error_type="ProviderTimeout", limiter_wait_ms=20.0,
                record_key="rec-2"),
        attempt(TRACE_2, "a22", "n2c", "classify", start_ms=2600, duration_ms=500, attempt=2,
                status="error", error_type="RateLimited", http_status=429,
                limiter_wait_ms=0.0, record_key="rec-2"),
    ]  # fmt: skip
    t3 = [
        row(TRACE_3, "n3c", "r3", "node", "llm classify", start_ms=5000, duration_ms=300,
            node_id="classify", model_alias="fast", job_id="job-b", record_key="rec-3"),
        attempt(TRACE_3, "a31", "n3c", "classify", start_ms=5000, duration_ms=300,
                input_tokens=50, output_tokens=5, cost_usd=0.0005, tool_name="search",
                job_id="job-b", record_key="rec-3"),
    ]  # fmt: skip
    write_part(root, t1, "w1-000001")
    write_part(root, t2, "w1-000002")
    write_segment(root, "w2-000001", t3)
    return root
