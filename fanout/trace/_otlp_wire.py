"""Trace rows straight to OTLP protobuf bytes (``ExportTraceServiceRequest``), no SDK objects.

The OpenTelemetry SDK's encoder builds a ``ReadableSpan`` and then protobuf objects per
attribute: ~85 µs a span of fanout's (~40 attributes on an LLM call) on the machine of
docs/performance.md, which at a few thousand spans a second is most of a core. This
writes the protobuf wire format directly: key prefixes are encoded once, and a
(key, value) pair that repeats (span kinds, model names, job ids) is encoded once.

Field numbers are opentelemetry-proto's (trace/v1/trace.proto, common/v1/common.proto);
the tests decode every request with opentelemetry-proto itself.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from fanout.trace._semconv import FAILED, AttributeValue, otel_attributes, otel_kind, wait_spans

__all__ = ["encode_request"]

_PACK_D = struct.Struct("<d").pack
_PACK_Q = struct.Struct("<Q").pack
_SMALL = [bytes([n]) for n in range(128)]
_KEYS: dict[str, bytes] = {}  # key -> its KeyValue.key field
_FIELDS: dict[tuple[bytes, str, object], bytes] = {}  # repeated (tag, key, value) -> field
_MAX_PAIRS = 8192


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string(tag: bytes, text: str) -> bytes:
    data = text.encode()
    return tag + _varint(len(data)) + data


def _any_value(value: AttributeValue) -> bytes:
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)
    if isinstance(value, float):
        return b"\x21" + _PACK_D(value)
    if isinstance(value, str):
        return _string(b"\x0a", value)
    items = b"".join(_message(b"\x0a", _any_value(str(v))) for v in value)
    return _message(b"\x2a", items)  # array_value


def _message(tag: bytes, body: bytes) -> bytes:
    return tag + _varint(len(body)) + body


def _field(tag: bytes, key: str, value: AttributeValue) -> bytes:
    """One ``KeyValue`` as a whole field of its parent (``tag``, length, key, value).

    A short string or a bool repeats (span kinds, model names, job ids): its field is
    encoded once per tag. A key's encoding is kept; numbers are encoded inline.
    """
    cacheable = (type(value) is str and len(value) <= 64) or type(value) is bool
    if cacheable:
        found = _FIELDS.get((tag, key, value))
        if found is not None:
            return found
    head = _KEYS.get(key)
    if head is None:
        head = _KEYS[key] = _string(b"\x0a", key)
    if type(value) is int:
        any_value = b"\x18" + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)
    elif type(value) is float:
        any_value = b"\x21" + _PACK_D(value)
    else:
        any_value = _any_value(value)
    body = head + b"\x12" + _varint(len(any_value)) + any_value
    field = tag + _varint(len(body)) + body
    if cacheable:
        if len(_FIELDS) >= _MAX_PAIRS:
            _FIELDS.clear()
        _FIELDS[(tag, key, value)] = field
    return field


def _attributes(tag: bytes, attributes: Mapping[str, AttributeValue]) -> bytes:
    return b"".join([_field(tag, k, v) for k, v in attributes.items()])


def _ns(value: float | datetime | None) -> int:
    if value is None:
        return 0
    seconds = value.timestamp() if isinstance(value, datetime) else value
    return round(seconds * 1e9)


def _span(
    trace_id: bytes,
    span_id: str,
    parent: bytes,
    name: str,
    kind: int,
    start: int,
    end: int,
    attributes: Mapping[str, AttributeValue],
    status: bytes,
) -> bytes:
    return b"".join(
        (
            b"\x0a\x10", trace_id,  # 1 trace_id
            b"\x12\x08", bytes.fromhex(span_id),  # 2 span_id
            parent,  # 4 parent_span_id
            _string(b"\x2a", name),  # 5 name
            b"\x30", _SMALL[kind],  # 6 kind
            b"\x39", _PACK_Q(start),  # 7 start_time_unix_nano
            b"\x41", _PACK_Q(end or start),  # 8 end_time_unix_nano
            _attributes(b"\x4a", attributes),  # 9 attributes
            status,  # 15 status
        )
    )  # fmt: skip


_OK = _message(b"\x7a", b"\x18\x01")
_UNSET = b""


def _status(span: Any) -> bytes:
    if span.status == "ok":
        return _OK
    if span.status in FAILED:
        message = span.error_message or span.error_type or span.status
        return _message(b"\x7a", _string(b"\x12", message) + b"\x18\x02")
    return _UNSET


def encode_spans(span: Any) -> list[bytes]:
    """One row as OTLP ``Span`` messages: itself, then its waits (an attempt's)."""
    trace_id = bytes.fromhex(span.trace_id)
    parent = b"\x22\x08" + bytes.fromhex(span.parent_span_id) if span.parent_span_id else b""
    start = _ns(span.start_time)
    out = [
        _span(
            trace_id, span.span_id, parent, span.span_name, otel_kind(span), start,
            _ns(span.end_time), otel_attributes(span), _status(span),
        )
    ]  # fmt: skip
    for wait in wait_spans(span):
        out.append(
            _span(
                trace_id, wait.span_id, parent, wait.name, 1, _ns(wait.start), _ns(wait.end),
                wait.attributes, _OK,
            )
        )  # fmt: skip
    return out


def encode_request(
    spans: Iterable[bytes], resource: Mapping[str, AttributeValue], scope: tuple[str, str | None]
) -> bytes:
    """An ``ExportTraceServiceRequest`` of encoded spans under one resource and scope."""
    name, version = scope
    scope_body = _string(b"\x0a", name) + (_string(b"\x12", version) if version else b"")
    scope_spans = _message(b"\x0a", scope_body) + b"".join(_message(b"\x12", s) for s in spans)
    resource_body = _attributes(b"\x0a", resource)
    resource_spans = _message(b"\x0a", resource_body) + _message(b"\x12", scope_spans)
    return _message(b"\x0a", resource_spans)
