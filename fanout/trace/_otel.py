"""Live export: trace rows as OpenTelemetry spans, sent over OTLP while the job runs.

A sink beside the Parquet writer, fed the same :class:`Span` objects: each row becomes
one OpenTelemetry span with the row's own trace and span ids (so the backend's tree is
the Parquet tree), plus one span per wait before an attempt's call (the limiter's, a
hedge's delay, the retry back-off: :func:`fanout.trace._semconv.wait_spans`). The
OpenTelemetry SDK's ``BatchSpanProcessor`` queues them and its thread exports them
(OTLP protobuf over HTTP, or gRPC): ``emit`` does no I/O.

Settings come from the standard ``OTEL_*`` environment and the config's ``[traces]``
section (:func:`otel_settings`); they are a plain value, so a Ray driver resolves them
once and hands them to every worker, each of which exports its own spans.

The OpenTelemetry SDK is the ``otel`` extra, imported only when a sink is built.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fanout.errors import ConfigError
from fanout.trace._semconv import otel_attributes, otel_kind, wait_spans
from fanout.trace._span import Span

if TYPE_CHECKING:
    from fanout.config import TraceConfig

__all__ = ["OtelSettings", "OtelSink", "otel_settings", "to_readable_spans"]

_log = logging.getLogger(__name__)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PROTOCOLS = ("http/protobuf", "grpc")
_SAMPLERS = (
    "always_on", "always_off", "traceidratio",
    "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio",
)  # fmt: skip


@dataclass(frozen=True)
class OtelSettings:
    """Where and how the spans go. ``headers`` may hold credentials: never in the repr."""

    endpoint: str
    protocol: str = "http/protobuf"
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    resource: dict[str, str] = field(default_factory=dict)
    sample_ratio: float = 1.0  # of traces, by trace id (the same choice in every process)
    timeout_s: float = 10.0
    schedule_delay_ms: float = 500.0
    max_queue_size: int = 65_536
    max_export_batch_size: int = 2_048

    def __repr__(self) -> str:
        return (
            f"OtelSettings(endpoint={self.endpoint!r}, protocol={self.protocol!r}, "
            f"headers=[{', '.join(sorted(self.headers))}], resource={self.resource!r}, "
            f"sample_ratio={self.sample_ratio})"
        )


def otel_settings(
    traces: TraceConfig, environ: Mapping[str, str] | None = None
) -> OtelSettings | None:
    """The live export's settings, or ``None`` when it is off.

    On when ``[traces] otlp = true``, or (``otlp`` unset) when the environment names an
    endpoint (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``)
    or the config does (``otlp_endpoint``); ``OTEL_SDK_DISABLED=true`` or
    ``OTEL_TRACES_EXPORTER=none`` turn an environment-only setup off.
    """
    env = os.environ if environ is None else environ
    explicit = traces.otlp
    if explicit is False:
        return None
    named = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or traces.otlp_endpoint
    )
    if explicit is None:
        disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
        if not named or disabled or env.get("OTEL_TRACES_EXPORTER", "").strip() == "none":
            return None
    protocol = (
        traces.otlp_protocol
        or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol not in _PROTOCOLS:
        raise ConfigError(
            f"OTLP protocol {protocol!r} is not supported: use http/protobuf or grpc "
            "(OTEL_EXPORTER_OTLP_PROTOCOL, or [traces] otlp_protocol)"
        )
    headers = _parse_pairs(env.get("OTEL_EXPORTER_OTLP_HEADERS", ""))
    headers.update(_parse_pairs(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "")))
    headers.update(_expand(traces.otlp_headers, env))
    resource = {"service.name": "fanout"}
    resource.update(_parse_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    if env.get("OTEL_SERVICE_NAME"):
        resource["service.name"] = env["OTEL_SERVICE_NAME"]
    if traces.service_name:
        resource["service.name"] = traces.service_name
    if traces.project:
        resource["openinference.project.name"] = traces.project
    return OtelSettings(
        endpoint=_endpoint(traces, env, protocol),
        protocol=protocol,
        headers=headers,
        resource=resource,
        sample_ratio=_sample_ratio(env),
        timeout_s=_float(env, "OTEL_EXPORTER_OTLP_TIMEOUT", 10_000.0) / 1000,
        schedule_delay_ms=_float(env, "OTEL_BSP_SCHEDULE_DELAY", 500.0),
    )


def _endpoint(traces: TraceConfig, env: Mapping[str, str], protocol: str) -> str:
    grpc = protocol == "grpc"
    if traces.otlp_endpoint:  # a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is
        base = traces.otlp_endpoint
    elif env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):  # used as it is
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    else:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or (
            "http://localhost:4317" if grpc else "http://localhost:4318"
        )
    return base if grpc else base.rstrip("/") + "/v1/traces"


def _parse_pairs(text: str) -> dict[str, str]:
    """``k1=v1,k2=v2`` (URL-encoded values), as the OTEL_* lists are written."""
    out: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return out


def _expand(values: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in values.items():

        def sub(found: re.Match[str], key: str = key) -> str:
            name = found.group(1)
            if name not in env:
                raise ConfigError(
                    f"[traces] otlp_headers: {key} reads the environment variable {name}, "
                    f"which is not set; export {name}=... before the run"
                )
            return env[name]

        out[key] = _VAR.sub(sub, value)
    return out


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number") from None


def _sample_ratio(env: Mapping[str, str]) -> float:
    """OTEL_TRACES_SAMPLER as a ratio of traces (parent-based samplers decide a trace by
    its id too: every span of a run is in one process's hands, or in the same ratio)."""
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if name not in _SAMPLERS:
        raise ConfigError(
            f"OTEL_TRACES_SAMPLER={name!r} is not supported here: use one of "
            + ", ".join(_SAMPLERS)
        )
    if name.endswith("always_on"):
        return 1.0
    if name.endswith("always_off"):
        return 0.0
    ratio = _float(env, "OTEL_TRACES_SAMPLER_ARG", 1.0)
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG={ratio} must be between 0 and 1")
    return ratio


# -- rows as OpenTelemetry spans ------------------------------------------------------


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


def sdk_resource(attributes: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.resources import Resource

    # this process's pid (a Ray worker's spans tell their process); Resource.create adds
    # telemetry.sdk.* and, from OTEL_RESOURCE_ATTRIBUTES, nothing that is not set here
    return Resource.create({"process.pid": os.getpid(), **attributes})


def sdk_scope() -> Any:
    from importlib.metadata import PackageNotFoundError, version

    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    try:
        return InstrumentationScope("fanout", version("fanout"))
    except PackageNotFoundError:
        return InstrumentationScope("fanout")


class _Flags:
    sampled = True


class _Context:
    trace_flags = _Flags()


class _Queued:
    """A row in the SDK's batch queue (which asks only ``context.trace_flags.sampled``):
    queued as it is, encoded by the exporter on the processor's thread."""

    __slots__ = ("row",)
    context = _Context()

    def __init__(self, row: Span) -> None:
        self.row = row


class OtelSink:
    """``emit(span)``: the row to the SDK's ``BatchSpanProcessor``, whose thread encodes
    and exports it (and its waits): the event loop only queues it.

    ``exporter``: any SDK ``SpanExporter`` taking ``ReadableSpan`` objects (default:
    OTLP per ``settings``: protobuf over HTTP, encoded by :mod:`fanout.trace._otlp_wire`,
    or the SDK's gRPC exporter). Thread-safe; :meth:`close` exports what is queued
    (also at interpreter exit).
    """

    def __init__(self, settings: OtelSettings, *, exporter: Any | None = None) -> None:
        from fanout._extras import require

        require("live trace export (OTLP)", "opentelemetry.sdk", extra="otel")
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.settings = settings
        resource = sdk_resource(settings.resource)
        if exporter is not None:
            self._exporter: Any = _Readable(exporter, resource, sdk_scope())
        elif settings.protocol == "grpc":
            self._exporter = _Readable(_grpc_exporter(settings), resource, sdk_scope())
        else:
            self._exporter = _WireExporter(settings, dict(resource.attributes))
        self._bound = round(settings.sample_ratio * (1 << 64))
        self._processor = BatchSpanProcessor(
            self._exporter,
            max_queue_size=settings.max_queue_size,
            schedule_delay_millis=settings.schedule_delay_ms,
            max_export_batch_size=settings.max_export_batch_size,
            export_timeout_millis=settings.timeout_s * 1000,
        )
        self._on_end: Callable[[Any], None] = self._processor.on_end
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)

    def sampled(self, trace_id: str) -> bool:
        """The trace-id-ratio choice (the SDK's rule: the id's low 64 bits under a bound)."""
        if self._bound >= 1 << 64:
            return True
        return (int(trace_id[-16:], 16) if trace_id else 0) < self._bound

    def emit(self, span: Span) -> None:
        if self._closed or not self.sampled(span.trace_id):
            return
        self._on_end(_Queued(span))

    def flush(self, timeout_s: float = 30.0) -> bool:
        return bool(self._processor.force_flush(int(timeout_s * 1000)))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        try:
            self._processor.shutdown()  # type: ignore[no-untyped-call]  # exports the queue
        except Exception as exc:  # an unreachable collector must not fail the job
            _log.warning("live trace export: shutting down failed: %s", exc)

    def __repr__(self) -> str:
        return f"OtelSink({self.settings!r})"


def _export_result(ok: bool) -> Any:
    from opentelemetry.sdk.trace.export import SpanExportResult

    return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE


class _Readable:
    """An SDK exporter fed ``ReadableSpan`` objects made from the queued rows."""

    def __init__(self, exporter: Any, resource: Any, scope: Any) -> None:
        self.exporter, self._resource, self._scope = exporter, resource, scope

    def export(self, batch: Iterable[_Queued]) -> Any:
        spans = [s for q in batch for s in to_readable_spans(q.row, self._resource, self._scope)]
        return self.exporter.export(spans)

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self.exporter.force_flush(timeout_millis))


_RETRY_STATUS = frozenset({429, 502, 503, 504})


class _WireExporter:
    """OTLP protobuf over HTTP: rows encoded by :mod:`fanout.trace._otlp_wire`, POSTed with
    httpx; a 429, a 502-504 or a lost connection is tried again (3 tries in all)."""

    def __init__(self, settings: OtelSettings, resource: Mapping[str, Any]) -> None:
        import httpx

        from fanout.trace._otlp_wire import encode_request, encode_spans

        self._encode_spans, self._encode_request = encode_spans, encode_request
        self._endpoint = settings.endpoint
        self._resource = dict(resource)
        self._scope = _scope_name()
        headers = {"Content-Type": "application/x-protobuf", **settings.headers}
        self._client = httpx.Client(timeout=settings.timeout_s, headers=headers)
        self.exported = self.failed = 0

    def export(self, batch: Iterable[_Queued]) -> Any:
        import httpx

        spans = [s for q in batch for s in self._encode_spans(q.row)]
        body = self._encode_request(spans, self._resource, self._scope)
        for attempt in range(3):
            try:
                reply = self._client.post(self._endpoint, content=body)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if reply.status_code < 300:
                    self.exported += len(spans)
                    return _export_result(True)
                error = f"HTTP {reply.status_code}"
                if reply.status_code not in _RETRY_STATUS:
                    break
            if attempt < 2:
                time.sleep(0.5 * 2**attempt)
        self.failed += len(spans)
        _log.warning("live trace export to %s failed: %s", self._endpoint, error)
        return _export_result(False)

    def shutdown(self) -> None:
        self._client.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _scope_name() -> tuple[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "fanout", version("fanout")
    except PackageNotFoundError:
        return "fanout", None


def _grpc_exporter(settings: OtelSettings) -> Any:
    from fanout._extras import require

    require("live trace export over gRPC", "grpc", extra="otel")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    insecure = settings.endpoint.startswith("http://")
    return OTLPSpanExporter(
        endpoint=settings.endpoint, insecure=insecure, headers=dict(settings.headers),
        timeout=settings.timeout_s,
    )  # fmt: skip


class TeeSink:
    """Every span to each sink (the Parquet writer and the live exporter)."""

    def __init__(self, sinks: Iterable[Any]) -> None:
        self.sinks = tuple(sinks)
        self._emits: tuple[Callable[[Span], None], ...] = tuple(s.emit for s in self.sinks)

    def emit(self, span: Span) -> None:
        for emit in self._emits:
            emit(span)
