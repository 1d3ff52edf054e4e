"""Structured traces: span rows (run, node, attempt), content policy, Parquet writer, readers.

The readers (``connect``, ``summarize``, ``list_traces``, ``trace_tree``, ``export_otlp``)
load DuckDB (the ``traces`` extra), so they are imported on first use: the engine's
import stays light, and a missing extra is one clear error.
"""

from typing import TYPE_CHECKING, Any

from fanout.trace._content import ContentMode, ContentPolicy, Redactor
from fanout.trace._files import TraceFiles, read_segment, trace_files
from fanout.trace._otel import ExportStats, OtelSettings, OtelSink, TeeSink, otel_settings
from fanout.trace._propagation import (
    TraceParent,
    current_parent,
    format_traceparent,
    parse_traceparent,
)
from fanout.trace._semconv import provider_identity
from fanout.trace._span import (
    KIND_COLUMNS,
    SCHEMA_VERSION,
    SPAN_SCHEMA,
    Span,
    SpanKind,
    new_span,
    span_columns,
    span_of,
)
from fanout.trace._writer import TraceWriter, recover_segments, spans_to_batch

if TYPE_CHECKING:
    from fanout.trace._export import SpanFilter, export_otlp_proto, post_otlp
    from fanout.trace._listing import TraceListing, TraceRow, list_traces
    from fanout.trace._otlp import export_otlp
    from fanout.trace._query import (
        CallStats,
        JobSummary,
        ModelSummary,
        NodeSummary,
        TraceSummary,
        TreeRow,
        connect,
        summarize,
        trace_tree,
    )

_READERS = {
    "export_otlp": "fanout.trace._otlp",
    **{n: "fanout.trace._export" for n in ("SpanFilter", "export_otlp_proto", "post_otlp")},
    **{name: "fanout.trace._listing" for name in ("TraceListing", "TraceRow", "list_traces")},
    **{
        name: "fanout.trace._query"
        for name in (
            "CallStats",
            "JobSummary",
            "ModelSummary",
            "NodeSummary",
            "TraceSummary",
            "TreeRow",
            "connect",
            "summarize",
            "trace_tree",
        )
    },
}


def __getattr__(name: str) -> Any:
    module = _READERS.get(name)
    if module is None:
        raise AttributeError(f"module 'fanout.trace' has no attribute {name!r}")
    import importlib

    from fanout._extras import require

    require(f"fanout.trace.{name} (reading traces)", "duckdb", extra="traces")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "KIND_COLUMNS",
    "SCHEMA_VERSION",
    "SPAN_SCHEMA",
    "CallStats",
    "ContentMode",
    "ContentPolicy",
    "ExportStats",
    "JobSummary",
    "ModelSummary",
    "NodeSummary",
    "OtelSettings",
    "OtelSink",
    "Redactor",
    "Span",
    "SpanFilter",
    "SpanKind",
    "TeeSink",
    "TraceFiles",
    "TraceListing",
    "TraceParent",
    "TraceRow",
    "TraceSummary",
    "TraceWriter",
    "TreeRow",
    "connect",
    "current_parent",
    "export_otlp",
    "export_otlp_proto",
    "format_traceparent",
    "list_traces",
    "new_span",
    "otel_settings",
    "parse_traceparent",
    "post_otlp",
    "provider_identity",
    "read_segment",
    "recover_segments",
    "span_columns",
    "span_of",
    "spans_to_batch",
    "summarize",
    "trace_files",
    "trace_tree",
]
