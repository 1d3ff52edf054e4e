"""Live export: trace rows as OpenTelemetry spans, sent over OTLP while the job runs.

A sink beside the Parquet writer, fed the same :class:`Span` objects: each row becomes
one OpenTelemetry span with the row's own trace and span ids (so the backend's tree is
the Parquet tree), plus one span per wait before an attempt's call (the limiter's, a
hedge's delay, the retry back-off: :func:`fanout.trace._semconv.wait_spans`). ``emit``
only queues the row: an exporter process of the sink's own maps, encodes and sends it
(OTLP protobuf over HTTP, or gRPC; :mod:`fanout.trace._otel_process`).

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
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fanout.errors import ConfigError
from fanout.trace._otel_process import Batcher, ExporterProcess, ExportStats
from fanout.trace._span import Span

if TYPE_CHECKING:
    from fanout.config import TraceConfig
    from fanout.trace._otel_exporters import RowExporter

__all__ = ["ExportStats", "OtelSettings", "OtelSink", "TeeSink", "otel_settings"]

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


# -- the sink ----------------------------------------------------------------------


class OtelSink:
    """``emit(span)``: the row to the live export; the event loop only queues it.

    By default the export runs in a process of its own (:mod:`fanout.trace._otel_process`:
    OTLP protobuf over HTTP encoded by :mod:`fanout.trace._otlp_wire`, or the SDK's gRPC
    exporter). ``exporter``: any OpenTelemetry SDK ``SpanExporter`` instead, fed
    ``ReadableSpan`` objects on a thread of this process. Thread-safe; :meth:`close`
    exports what is queued (also at interpreter exit) and leaves the counts in
    :attr:`stats`.
    """

    def __init__(self, settings: OtelSettings, *, exporter: Any | None = None) -> None:
        from fanout._extras import require

        require("live trace export (OTLP)", "opentelemetry.sdk", extra="otel")
        self.settings = settings
        self._bound = round(settings.sample_ratio * (1 << 64))
        self._backend = _backend(settings, exporter)
        self._put: Callable[[Span], None] = self._backend.put
        self.stats = ExportStats()
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)

    @property
    def pid(self) -> int | None:
        """The exporter process's id (``None`` when the export runs on a thread)."""
        return self._backend.pid

    def sampled(self, trace_id: str) -> bool:
        """The trace-id-ratio choice (the SDK's rule: the id's low 64 bits under a bound)."""
        if self._bound >= 1 << 64:
            return True
        return (int(trace_id[-16:], 16) if trace_id else 0) < self._bound

    def emit(self, span: Span) -> None:
        if self._closed or not self.sampled(span.trace_id):
            return
        self._put(span)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Export what is queued now; ``False`` if it did not all go out in time."""
        return self._backend.flush(timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        try:
            self.stats = self._backend.close(timeout_s)
        except Exception as exc:  # an unreachable collector must not fail the job
            _log.warning("live trace export: shutting down failed: %s", exc)
        if self.stats.failed or self.stats.dropped:
            _log.warning(
                "live trace export to %s: %d spans exported, %d failed, %d rows dropped "
                "(the queue of %d was full, or the exporter ended)",
                self.settings.endpoint, self.stats.exported, self.stats.failed,
                self.stats.dropped, self.settings.max_queue_size,
            )  # fmt: skip

    def __repr__(self) -> str:
        return f"OtelSink({self.settings!r})"


def _backend(settings: OtelSettings, exporter: Any | None) -> ExporterProcess | _InThread:
    if exporter is None:
        try:
            return ExporterProcess(settings)
        except OSError as exc:  # no process to be had: export from a thread here
            _log.warning("live trace export: no exporter process (%s); using a thread", exc)
    return _InThread(settings, exporter)


class _InThread:
    """The export on a thread of this process: a :class:`Batcher` feeding an exporter
    (the caller's SDK exporter, or, with no process to be had, the configured one)."""

    pid: int | None = None  # no process of its own

    def __init__(self, settings: OtelSettings, exporter: Any | None) -> None:
        from fanout.trace._otel_exporters import SdkExporter, build_exporter, sdk_resource

        if exporter is not None:
            self.exporter: RowExporter = SdkExporter(exporter, sdk_resource(settings.resource))
        else:
            self.exporter = build_exporter(settings, os.getpid())
        self._batcher = Batcher(
            self.exporter.export,
            max_queue=settings.max_queue_size,
            batch=settings.max_export_batch_size,
            delay_s=settings.schedule_delay_ms / 1000,
            name="fanout-otel-export",
        )
        self.put = self._batcher.put

    def flush(self, timeout_s: float) -> bool:  # the drain runs here, to its end
        failed = self.exporter.failed
        self._batcher.drain()
        return self.exporter.failed == failed

    def close(self, timeout_s: float) -> ExportStats:
        self._batcher.stop(timeout_s)
        self._batcher.drain()
        self.exporter.shutdown()
        return ExportStats(self.exporter.exported, self.exporter.failed, self._batcher.dropped)


class TeeSink:
    """Every span to each sink (the Parquet writer and the live exporter)."""

    def __init__(self, sinks: Iterable[Any]) -> None:
        self.sinks = tuple(sinks)
        self._emits: tuple[Callable[[Span], None], ...] = tuple(s.emit for s in self.sinks)

    def emit(self, span: Span) -> None:
        for emit in self._emits:
            emit(span)
