"""fanout's own OTLP protobuf encoder, decoded by opentelemetry-proto: every attribute of
every value type arrives as ``otel_attributes`` gave it, and a field cached for one
parent (a span's attributes) is not reused under another's tag (the resource's)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from fanout.trace._otlp_wire import encode_request
from fanout.trace._semconv import AttributeValue


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    assert kind is not None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind)


def _decode(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


def _spans_with(attributes: list[dict[str, AttributeValue]]) -> list[bytes]:
    from fanout.trace import _otlp_wire as wire

    out = []
    for i, attrs in enumerate(attributes):
        out.append(
            wire._span(
                bytes(16), f"{i + 1:016x}", b"", f"span {i}", 1, 10**18, 10**18 + 5, attrs, wire._OK
            )
        )
    return out


def test_every_value_type_arrives_as_given() -> None:
    attributes: list[dict[str, AttributeValue]] = [
        {
            "a.str": "gpt-4o-mini",
            "a.long": "x" * 300,  # too long to cache
            "a.unicode": "grüße, 東京",
            "a.int": 1234567,
            "a.zero": 0,
            "a.negative": -3,
            "a.float": 0.000123,
            "a.true": True,
            "a.false": False,
            "a.list": ["stop", "length"],
        },
        # the same pairs again (served from the cache) and one changed value
        {"a.str": "gpt-4o-mini", "a.true": True, "a.int": 7, "a.float": 2.5},
    ]
    request = _decode(encode_request(_spans_with(attributes), {"a.str": "gpt-4o-mini"}, ("t", "1")))
    (resource_spans,) = request.resource_spans
    resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
    assert resource == {"a.str": "gpt-4o-mini"}
    spans = resource_spans.scope_spans[0].spans
    assert [s.name for s in spans] == ["span 0", "span 1"]
    for span, expected in zip(spans, attributes, strict=True):
        got = {kv.key: _value(kv.value) for kv in span.attributes}
        assert got == expected
        assert span.end_time_unix_nano - span.start_time_unix_nano == 5


def test_a_cached_field_is_not_reused_under_another_tag() -> None:
    # resource attributes (tag 1 of Resource) then span attributes (tag 9 of Span)
    pair = {"service.name": "cached-under-two-tags"}
    for _ in range(2):
        request = _decode(encode_request(_spans_with([dict(pair)]), dict(pair), ("t", None)))
        (resource_spans,) = request.resource_spans
        assert {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes} == pair
        span = resource_spans.scope_spans[0].spans[0]
        assert {kv.key: _value(kv.value) for kv in span.attributes} == pair


def test_a_row_encodes_with_its_attributes() -> None:
    from fanout.trace._otlp_wire import encode_spans
    from fanout.trace._semconv import otel_attributes

    row = SimpleNamespace(
        trace_id="0" * 31 + "1",
        span_id="0" * 15 + "2",
        parent_span_id=None,
        span_name="chat sim-small",
        start_time=1.0,
        end_time=1.25,
        status="ok",
        error_type=None,
        error_message=None,
    )
    spans = encode_spans(_FullRow(row))
    request = _decode(encode_request(spans, {}, ("t", None)))
    span = request.resource_spans[0].scope_spans[0].spans[0]
    got = {kv.key: _value(kv.value) for kv in span.attributes}
    assert got == otel_attributes(_FullRow(row))
    assert span.end_time_unix_nano - span.start_time_unix_nano == 250_000_000


class _FullRow:
    """A trace row with every column the semconv mapping reads (unset: None)."""

    def __init__(self, base: SimpleNamespace) -> None:
        from fanout.trace import Span

        defaults: dict[str, object] = {name: None for name in Span.__dataclass_fields__}
        defaults.update(
            record_type="attempt",
            job_id="job-1",
            dag_name="classify",
            provider_name="openai",
            request_model="sim-small",
            input_tokens=120,
            output_tokens=3,
            cost_usd=0.0000123,
            input_cost_usd=0.00001,
            finish_reason="stop",
        )
        defaults.update(vars(base))
        self.__dict__.update(defaults)
