"""Export to OTLP/JSON: one ``ExportTraceServiceRequest`` per line, as the collector's file
exporter writes and its ``otlpjsonfile`` receiver reads.

The protobuf JSON mapping: ids are hex, 64-bit integers (times, ``intValue``) are
strings, enums are numbers, absent fields are left out. Attributes follow the
OpenTelemetry GenAI conventions (``gen_ai.*``) and OpenInference
(``openinference.span.kind``, ``llm.*``), so Phoenix, Langfuse or any OTLP backend
shows LLM calls as such; every other column goes along as ``fanout.<column>``.

DuckDB renders each span's JSON text (one SQL expression, no Python per row) and
streams it in batches: an export never holds the table in memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

import duckdb

from fanout.errors import ConfigError
from fanout.trace._export import SpanFilter
from fanout.trace._query import LLM_CALL, connect, sql_literal

__all__ = ["export_otlp"]

SPAN_KIND_INTERNAL = 1
SPAN_KIND_CLIENT = 3
STATUS_OK, STATUS_ERROR = 1, 2

IS_LLM = f"(record_type = 'attempt' AND {LLM_CALL})"
IS_TOOL = f"(record_type = 'attempt' AND NOT {LLM_CALL})"
FAILED = "status IN ('error', 'cancelled', 'max_steps_exceeded')"

# Columns that become span fields or named attributes rather than ``fanout.*`` ones.
_MAPPED = frozenset(
    {
        "trace_id", "span_id", "parent_span_id", "span_name", "start_time", "end_time",
        "provider_name", "request_model", "response_model", "finish_reason",
        "input_tokens", "output_tokens", "input_text", "output_text", "server_address",
        "response_id", "request_max_tokens", "request_temperature", "tool_call_id",
        "session_id", "input_cost_usd",
    }
)  # fmt: skip

# (attribute, SQL expression, AnyValue kind); a NULL expression leaves the attribute out.
_NAMED: tuple[tuple[str, str, str], ...] = (
    (
        "gen_ai.operation.name",
        f"CASE WHEN {IS_LLM} AND span_name LIKE 'embeddings %' THEN 'embeddings' "
        f"WHEN {IS_LLM} THEN 'chat' WHEN {IS_TOOL} THEN 'execute_tool' END",
        "string",
    ),
    ("gen_ai.tool.name", f"CASE WHEN {IS_TOOL} THEN tool_name END", "string"),
    ("gen_ai.provider.name", f"CASE WHEN {IS_LLM} THEN coalesce(provider_name, provider) END",
     "string"),
    ("gen_ai.system", f"CASE WHEN {IS_LLM} THEN coalesce(provider_name, provider) END",
     "string"),  # the name before semconv 1.37
    ("server.address", "server_address", "string"),
    ("gen_ai.response.id", "response_id", "string"),
    ("gen_ai.request.max_tokens", "request_max_tokens", "int"),
    ("gen_ai.request.temperature", "request_temperature", "double"),
    ("gen_ai.tool.call.id", "tool_call_id", "string"),
    ("session.id", "session_id", "string"),
    ("llm.cost.total", f"CASE WHEN {IS_LLM} THEN cost_usd END", "double"),
    ("llm.cost.prompt", f"CASE WHEN {IS_LLM} THEN input_cost_usd END", "double"),
    ("llm.cost.completion", f"CASE WHEN {IS_LLM} THEN cost_usd - input_cost_usd END", "double"),
    ("gen_ai.request.model", "request_model", "string"),
    ("gen_ai.response.model", "response_model", "string"),
    ("gen_ai.response.finish_reasons", "finish_reason", "string_array"),
    ("gen_ai.usage.input_tokens", "input_tokens", "int"),
    ("gen_ai.usage.output_tokens", "output_tokens", "int"),
    ("error.type", f"CASE WHEN {FAILED} THEN coalesce(error_type, '_OTHER') END", "string"),
    (
        "openinference.span.kind",
        f"CASE WHEN {IS_LLM} AND span_name LIKE 'embeddings %' THEN 'EMBEDDING' "
        f"WHEN {IS_LLM} THEN 'LLM' WHEN {IS_TOOL} THEN 'TOOL' ELSE 'CHAIN' END",
        "string",
    ),
    ("tool.name", f"CASE WHEN {IS_TOOL} THEN tool_name END", "string"),
    ("llm.model_name", "coalesce(response_model, request_model)", "string"),
    ("llm.provider", "provider", "string"),
    ("llm.token_count.prompt", "input_tokens", "int"),
    ("llm.token_count.completion", "output_tokens", "int"),
    (
        "llm.token_count.total",
        "CASE WHEN input_tokens IS NOT NULL OR output_tokens IS NOT NULL "
        "THEN coalesce(input_tokens, 0) + coalesce(output_tokens, 0) END",
        "int",
    ),
    ("input.value", "input_text", "string"),
    ("output.value", "output_text", "string"),
)

_KINDS = {  # DuckDB column type -> AnyValue kind
    "VARCHAR": "string",
    "BIGINT": "int",
    "INTEGER": "int",
    "SMALLINT": "int",
    "TINYINT": "int",
    "HUGEINT": "int",
    "UBIGINT": "int",
    "UINTEGER": "int",
    "DOUBLE": "double",
    "FLOAT": "double",
    "BOOLEAN": "bool",
}


def export_otlp(
    directory: str | Path, out: TextIO, *, batch: int = 1000, where: SpanFilter | None = None
) -> int:
    """Write the spans of ``directory`` (``where`` selects some) to ``out`` as OTLP/JSON
    lines; returns the span count.

    Each line is one request of at most ``batch`` spans under the resource
    ``service.name=fanout`` and the instrumentation scope ``fanout``.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1 (got {batch})")
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "fanout"}}]}
    head = json.dumps(
        {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": _scope()}]}]},
        separators=(",", ":"),
    )
    # ...,"scope":{...}}]}]}  ->  ...,"scope":{...},"spans":[ SPANS ]}]}]}
    prefix, suffix = head[: -len("}]}]}")] + ',"spans":[', "]}]}]}\n"
    count = 0
    con = connect(directory)
    try:
        columns = con.execute("DESCRIBE spans").fetchall()
        clause, params = (where or SpanFilter()).sql()
        query = _query({str(c[0]): str(c[1]) for c in columns}) + f" WHERE {clause}"
        with con.sql(query, params=params).to_arrow_reader(batch_size=batch) as reader:
            for record_batch in reader:
                spans: list[str] = record_batch.column(0).to_pylist()
                if spans:
                    out.write(prefix + ",".join(spans) + suffix)
                    count += len(spans)
    except duckdb.Error as exc:  # a part that went bad after the view was made
        raise ConfigError(f"cannot read the traces in {str(directory)!r}: {exc}") from None
    finally:
        con.close()
    return count


def _query(columns: dict[str, str]) -> str:
    """SELECT one JSON text per span (an OTLP ``Span``) from the ``spans`` view.

    Built by concatenating JSON fragments around ``to_json``-escaped values: DuckDB's
    JSON-object functions keep far more memory per thread for the same output.
    A NULL value drops its attribute (``concat_ws`` skips NULLs).
    """
    attributes = [_attribute(key, expr, kind) for key, expr, kind in _NAMED]
    for name, sql_type in columns.items():
        if name in _MAPPED:
            continue
        column = '"' + name.replace('"', '""') + '"'
        expr = f"CASE WHEN NOT {IS_TOOL} THEN tool_name END" if name == "tool_name" else column
        attributes.append(_attribute(f"fanout.{name}", expr, _KINDS.get(sql_type, "string")))
    kind = f"CASE WHEN {IS_LLM} THEN '{SPAN_KIND_CLIENT}' ELSE '{SPAN_KIND_INTERNAL}' END"
    status = (
        f"CASE WHEN status = 'ok' THEN '{{\"code\":{STATUS_OK}}}' "
        f'WHEN {FAILED} THEN \'{{"code":{STATUS_ERROR},"message":\' '
        "|| to_json(coalesce(error_message, error_type, status)) || '}' "
        "ELSE '{}' END"
    )
    parts = [
        """'{"traceId":' || to_json(trace_id)""",
        """',"spanId":' || to_json(span_id)""",
        """CASE WHEN coalesce(parent_span_id, '') <> ''"""
        """ THEN ',"parentSpanId":' || to_json(parent_span_id) ELSE '' END""",
        """',"name":' || to_json(span_name)""",
        f"""',"kind":' || {kind}""",
        _time("startTimeUnixNano", "start_time"),
        _time("endTimeUnixNano", "end_time"),
        f"""',"attributes":[' || concat_ws(',', {", ".join(attributes)}) || ']'""",
        f"""',"status":' || {status} || '}}'""",
    ]
    return f"SELECT {' || '.join(parts)} AS span FROM spans"


def _time(field: str, column: str) -> str:
    # fixed64: a string of nanoseconds; a span not started (skipped) has none
    return f"""coalesce(',"{field}":"' || CAST(epoch_ns({column}) AS VARCHAR) || '"', '')"""


def _attribute(key: str, expr: str, kind: str) -> str:
    """SQL for one OTLP ``KeyValue`` as JSON text, NULL when ``expr`` is NULL."""
    if kind == "int":  # int64 in the protobuf JSON mapping: a string
        value = f"""'"intValue":"' || CAST({expr} AS VARCHAR) || '"'"""
    elif kind == "double":  # JSON has no NaN or infinities; the mapping spells them
        value = (
            f"""'"doubleValue":' || CASE WHEN isfinite({expr}) THEN CAST({expr} AS VARCHAR) """
            f"""WHEN isnan({expr}) THEN '"NaN"' WHEN {expr} > 0 THEN '"Infinity"' """
            """ELSE '"-Infinity"' END"""
        )
    elif kind == "bool":
        value = f"""'"boolValue":' || CAST({expr} AS VARCHAR)"""
    elif kind == "string_array":
        value = (
            f"""'"arrayValue":{{"values":[{{"stringValue":' || to_json(CAST({expr} AS VARCHAR))"""
            """ || '}]}'"""
        )
    else:
        value = f"""'"stringValue":' || to_json(CAST({expr} AS VARCHAR))"""
    head = sql_literal('{"key":' + json.dumps(key) + ',"value":{')
    return f"CASE WHEN ({expr}) IS NOT NULL THEN {head} || {value} || '}}}}' END"


def _scope() -> dict[str, str]:
    # Not `fanout.__version__`: the package root imports the engine, which imports this.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {"name": "fanout", "version": version("fanout")}
    except PackageNotFoundError:
        return {"name": "fanout"}
