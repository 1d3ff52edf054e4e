"""What sends trace rows to a backend: OTLP protobuf over HTTP, gRPC, or any SDK exporter.

Each takes a batch of rows (:class:`Span` objects, or anything with their attributes)
and answers whether the batch went out; ``exported`` and ``failed`` count spans (a row
is itself plus its waits). They run where the export runs: in the exporter process
(:mod:`fanout.trace._otel_process`), or on a thread of the job's process when a caller
hands :class:`~fanout.trace.OtelSink` an SDK exporter of its own.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from fanout.trace._semconv import otel_attributes, otel_kind, wait_spans
from fanout.trace._span import Span

if TYPE_CHECKING:
    from fanout.trace._otel import OtelSettings

__all__ = ["RowExporter", "SdkExporter", "WireExporter", "build_exporter", "to_readable_spans"]

_log = logging.getLogger("fanout.trace.otel")
_RETRY_STATUS = frozenset({429, 502, 503, 504})


class RowExporter(Protocol):
    exported: int
    failed: int

    def export(self, rows: Sequence[Span]) -> bool: ...

    def shutdown(self) -> None: ...


def build_exporter(settings: OtelSettings, pid: int) -> RowExporter:
    """The exporter ``settings`` name, for the spans of process ``pid``."""
    if settings.protocol == "grpc":
        return SdkExporter(_grpc_exporter(settings), sdk_resource(settings.resource, pid))
    return WireExporter(settings, dict(sdk_resource(settings.resource, pid).attributes))


def _ns(value: float | datetime | None) -> int | None:
    if value is None:
        return None
    seconds = value.timestamp() if isinstance(value, datetime) else float(value)
    return round(seconds * 1e9)


def to_readable_spans(span: Span, resource: Any, scope: Any) -> list[Any]:
    """The row as OpenTelemetry SDK spans: itself, then its waits (an attempt's)."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    trace_id = int(span.trace_id, 16)
    flags = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(trace_id, int(span.span_id, 16), False, flags)
    parent = None
    if span.parent_span_id:
        parent = SpanContext(trace_id, int(span.parent_span_id, 16), True, flags)
    if span.status == "ok":
        status = Status(StatusCode.OK)
    elif span.status in ("error", "cancelled", "max_steps_exceeded"):
        status = Status(StatusCode.ERROR, span.error_message or span.error_type or span.status)
    else:
        status = Status(StatusCode.UNSET)
    start, end = _ns(span.start_time), _ns(span.end_time)
    kind = SpanKind.CLIENT if otel_kind(span) == 3 else SpanKind.INTERNAL
    out = [
        ReadableSpan(
            span.span_name, context, parent, resource, otel_attributes(span),
            kind=kind, status=status, start_time=start, end_time=end if end else start,
            instrumentation_scope=scope,
        )
    ]  # fmt: skip
    for wait in wait_spans(span):
        out.append(
            ReadableSpan(
                wait.name, SpanContext(trace_id, int(wait.span_id, 16), False, flags), parent,
                resource, wait.attributes, kind=SpanKind.INTERNAL, status=Status(StatusCode.OK),
                start_time=_ns(wait.start), end_time=_ns(wait.end), instrumentation_scope=scope,
            )
        )  # fmt: skip
    return out


def sdk_resource(attributes: Mapping[str, str], pid: int | None = None) -> Any:
    from opentelemetry.sdk.resources import Resource

    # the pid of the process whose spans these are (a Ray worker's spans tell their
    # process); Resource.create adds telemetry.sdk.* and, from OTEL_RESOURCE_ATTRIBUTES,
    # nothing that is not set here
    return Resource.create({"process.pid": os.getpid() if pid is None else pid, **attributes})


def sdk_scope() -> Any:
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    name, version = scope_name()
    return InstrumentationScope(name, version)


def scope_name() -> tuple[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "fanout", version("fanout")
    except PackageNotFoundError:
        return "fanout", None


class SdkExporter:
    """An OpenTelemetry SDK ``SpanExporter`` fed ``ReadableSpan`` objects made from rows."""

    def __init__(self, exporter: Any, resource: Any) -> None:
        self.exporter, self._resource, self._scope = exporter, resource, sdk_scope()
        self.exported = self.failed = 0

    def export(self, rows: Sequence[Span]) -> bool:
        from opentelemetry.sdk.trace.export import SpanExportResult

        spans = [s for row in rows for s in to_readable_spans(row, self._resource, self._scope)]
        try:
            ok = bool(self.exporter.export(spans) == SpanExportResult.SUCCESS)
        except Exception as exc:  # an exporter's failure must not end the export
            _log.warning("live trace export failed: %s: %s", type(exc).__name__, exc)
            ok = False
        if ok:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
        return ok

    def shutdown(self) -> None:
        self.exporter.shutdown()


class WireExporter:
    """OTLP protobuf over HTTP: rows encoded by :mod:`fanout.trace._otlp_wire`, POSTed with
    httpx; a 429, a 502-504 or a lost connection is tried again (3 tries in all)."""

    def __init__(self, settings: OtelSettings, resource: Mapping[str, Any]) -> None:
        import httpx

        self._endpoint = settings.endpoint
        self._resource = dict(resource)
        self._scope = scope_name()
        headers = {"Content-Type": "application/x-protobuf", **settings.headers}
        self._client = httpx.Client(timeout=settings.timeout_s, headers=headers)
        self.exported = self.failed = 0

    def export(self, rows: Sequence[Span]) -> bool:
        import httpx

        from fanout.trace._otlp_wire import encode_request, encode_spans

        spans = [s for row in rows for s in encode_spans(row)]
        body = encode_request(spans, self._resource, self._scope)
        for attempt in range(3):
            try:
                reply = self._client.post(self._endpoint, content=body)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if reply.status_code < 300:
                    self.exported += len(spans)
                    return True
                error = f"HTTP {reply.status_code}"
                if reply.status_code not in _RETRY_STATUS:
                    break
            if attempt < 2:
                time.sleep(0.5 * 2**attempt)
        self.failed += len(spans)
        _log.warning("live trace export to %s failed: %s", self._endpoint, error)
        return False

    def shutdown(self) -> None:
        self._client.close()


def _grpc_exporter(settings: OtelSettings) -> Any:
    from fanout._extras import require

    require("live trace export over gRPC", "grpc", extra="otel")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    insecure = settings.endpoint.startswith("http://")
    return OTLPSpanExporter(
        endpoint=settings.endpoint, insecure=insecure, headers=dict(settings.headers),
        timeout=settings.timeout_s,
    )  # fmt: skip
