"""Export a traces directory as OTLP protobuf: to a file, or POSTed to a collector.

The same mapping as the live export (:mod:`fanout.trace._otel`): each row becomes one
OpenTelemetry span with its ids (and an attempt's waits spans of their own), encoded
by the SDK's OTLP encoder. ``SpanFilter`` selects rows by job, trace and time; the
JSON export takes it too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import IO

import duckdb

from fanout.errors import ConfigError
from fanout.trace._query import connect
from fanout.trace._span import Span, span_columns

__all__ = ["SpanFilter", "export_otlp_proto", "post_otlp"]

_TIMES = frozenset(
    f.name for f in fields(Span) if f.name in ("start_time", "end_time")
    or f.name.endswith("_at")
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SpanFilter:
    """Rows of one job, one trace (a unique prefix of its id), started within a range."""

    job: str | None = None
    trace: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def sql(self) -> tuple[str, dict[str, object]]:
        """A WHERE clause (``TRUE`` for no filter) and its parameters."""
        clauses: list[str] = ["TRUE"]
        params: dict[str, object] = {}
        if self.job is not None:
            clauses.append("job_id = $job")
            params["job"] = self.job
        if self.trace is not None:
            clauses.append("starts_with(lower(trace_id), $trace)")
            params["trace"] = self.trace.strip().lower()
        if self.since is not None:
            clauses.append("start_time >= $since")
            params["since"] = self.since
        if self.until is not None:
            clauses.append("start_time < $until")
            params["until"] = self.until
        return " AND ".join(clauses), params


def _spans(directory: str | Path, where: SpanFilter, batch: int) -> Iterator[list[Span]]:
    """The selected rows as :class:`Span` objects (timestamps as epoch seconds), in batches."""
    columns = span_columns()
    clause, params = where.sql()
    con = connect(directory)
    try:
        query = f"SELECT {', '.join(columns)} FROM spans WHERE {clause}"
        with con.sql(query, params=params).to_arrow_reader(batch_size=batch) as reader:
            for record_batch in reader:
                out = []
                for row in record_batch.to_pylist():
                    for name in _TIMES:
                        value = row[name]
                        if isinstance(value, datetime):
                            row[name] = value.timestamp()
                    out.append(Span(**row))
                if out:
                    yield out
    except duckdb.Error as exc:
        raise ConfigError(f"cannot read the traces in {str(directory)!r}: {exc}") from None
    finally:
        con.close()


def _requests(
    directory: str | Path, where: SpanFilter, resource: Mapping[str, str], batch: int
) -> Iterator[tuple[bytes, int]]:
    """Serialized ``ExportTraceServiceRequest`` messages, each with its span count (the
    live export's encoder: no OpenTelemetry package needed)."""
    from fanout.trace._otlp_wire import encode_request, encode_spans

    scope = _scope()
    for spans in _spans(directory, where, batch):
        encoded = [s for span in spans for s in encode_spans(span)]
        yield encode_request(encoded, dict(resource), scope), len(encoded)


def _scope() -> tuple[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "fanout", version("fanout")
    except PackageNotFoundError:
        return "fanout", None


def export_otlp_proto(
    directory: str | Path,
    out: IO[bytes],
    *,
    where: SpanFilter | None = None,
    resource: Mapping[str, str] | None = None,
    batch: int = 1000,
) -> int:
    """Write the spans as OTLP protobuf: ``ExportTraceServiceRequest`` messages, each
    preceded by its length as a varint (protobuf's delimited stream; one message per
    ``batch`` rows). Returns the span count."""
    count = 0
    for message, n in _requests(directory, where or SpanFilter(), resource or _RESOURCE, batch):
        out.write(_varint(len(message)) + message)
        count += n
    return count


def post_otlp(
    directory: str | Path,
    endpoint: str,
    *,
    headers: Mapping[str, str] | None = None,
    where: SpanFilter | None = None,
    resource: Mapping[str, str] | None = None,
    batch: int = 1000,
    timeout_s: float = 30.0,
) -> int:
    """POST the spans to an OTLP/HTTP ``endpoint`` (its full URL: ``.../v1/traces``), one
    request per ``batch`` rows; returns the span count. A refused request is a
    :class:`ConfigError` naming the endpoint and its answer (never the headers)."""
    import httpx

    sent = 0
    send_headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
    with httpx.Client(timeout=timeout_s) as client:
        for message, n in _requests(
            directory, where or SpanFilter(), resource or _RESOURCE, batch
        ):
            try:
                reply = client.post(endpoint, content=message, headers=send_headers)
            except httpx.HTTPError as exc:
                raise ConfigError(
                    f"cannot send traces to {endpoint}: {type(exc).__name__}: {exc} "
                    f"({sent:,} spans sent before)"
                ) from None
            if reply.status_code >= 300:
                raise ConfigError(
                    f"{endpoint} refused the traces: HTTP {reply.status_code} "
                    f"{reply.text[:200]!r} ({sent:,} spans sent before)"
                )
            sent += n
    return sent


_RESOURCE = {"service.name": "fanout"}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
