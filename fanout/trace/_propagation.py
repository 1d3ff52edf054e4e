"""W3C Trace Context: the ``traceparent`` a run is parented under, and the one a call sends.

No OpenTelemetry import: the service reads the header with this, and
:func:`current_parent` asks OpenTelemetry only where the program already imported it
(a user's own spans around ``engine.run``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

__all__ = ["TraceParent", "current_parent", "format_traceparent", "parse_traceparent"]

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parent span: its trace id (32 hex digits) and span id (16)."""

    trace_id: str
    span_id: str
    sampled: bool = True


def _hex(value: str, length: int) -> bool:
    return len(value) == length and set(value) <= _HEX and value != "0" * length


def parse_traceparent(header: str | None) -> TraceParent | None:
    """``version-traceid-spanid-flags``; ``None`` for a missing or invalid header (the
    W3C rule: a receiver that cannot parse it starts a new trace)."""
    if not header:
        return None
    parts = header.strip().lower().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or not set(parts[0]) <= _HEX:
        return None
    if parts[0] == "00" and len(parts) != 4:
        return None
    version, trace_id, span_id, flags = parts[:4]
    if not (_hex(trace_id, 32) and _hex(span_id, 16)) or len(flags) != 2:
        return None
    if not set(flags) <= _HEX or not version:
        return None
    return TraceParent(trace_id, span_id, sampled=bool(int(flags, 16) & 1))


def format_traceparent(trace_id: str, span_id: str, sampled: bool = True) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def current_parent() -> TraceParent | None:
    """The OpenTelemetry span current in this context (a user's span around
    ``engine.run``), if the program uses OpenTelemetry at all."""
    if "opentelemetry.trace" not in sys.modules:
        return None  # nobody opened a span: no import (the core install has no SDK)
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return TraceParent(
        f"{context.trace_id:032x}", f"{context.span_id:016x}", bool(context.trace_flags.sampled)
    )
