"""``fanout traces export``: OTLP protobuf to a file or POSTed to an endpoint, with filters.

The endpoint is a real OTLP/HTTP receiver on loopback (decoding with opentelemetry-proto).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from support_otlp import otlp_receiver
from support_traces import TRACE_1, TRACE_2, TRACE_3, sample_traces, sid
from typer.testing import CliRunner

from fanout.cli import app

# 14 rows; waits before calls: a11 limiter 5, a12 limiter 15 + back-off 85, a21 limiter 20
ROWS, WAITS = 14, 4


@pytest.fixture
def traces(tmp_path: Path) -> Path:
    return sample_traces(tmp_path / "traces")


def read_delimited(data: bytes) -> list[ExportTraceServiceRequest]:
    """Protobuf's delimited stream: a varint length, then the message, repeated."""
    out, i = [], 0
    while i < len(data):
        length = shift = 0
        while True:
            byte = data[i]
            i += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        message = ExportTraceServiceRequest()
        message.ParseFromString(data[i : i + length])
        out.append(message)
        i += length
    return out


def test_export_posts_protobuf_to_an_endpoint_with_the_environments_headers(
    traces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "phx-" + "9" * 24
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer%20{secret}")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "openinference.project.name=replayed")
    with otlp_receiver() as receiver:
        result = CliRunner().invoke(
            app, ["traces", "export", str(traces), "--endpoint", f"{receiver.url}/v1/traces"]
        )
        assert result.exit_code == 0, result.output
        spans = receiver.spans
    assert f"sent {ROWS + WAITS} spans to {receiver.url}/v1/traces" in result.stderr
    assert secret not in result.output
    assert {h["authorization"] for h in receiver.requests} == {f"Bearer {secret}"}
    assert {h["content-type"] for h in receiver.requests} == {"application/x-protobuf"}
    assert len(spans) == ROWS + WAITS
    assert {s["resource"]["openinference.project.name"] for s in spans} == {"replayed"}
    by_id = {s["span_id"]: s for s in spans}
    call = by_id[sid("a12")]
    assert call["attributes"]["gen_ai.usage.input_tokens"] == 100
    assert call["attributes"]["llm.cost.total"] == pytest.approx(0.001)
    waits = sorted(
        (s["name"], (s["end_ns"] - s["start_ns"]) / 1e6)
        for s in spans
        if s["attributes"].get("fanout.attempt_span_id") == sid("a12")
    )
    assert [name for name, _ in waits] == ["fanout.limiter_wait", "fanout.retry_backoff"]
    assert [ms for _, ms in waits] == pytest.approx([15.0, 85.0], abs=0.001)
    backoff = next(s for s in spans if s["name"] == "fanout.retry_backoff")
    limiter = next(
        s for s in spans
        if s["name"] == "fanout.limiter_wait"
        and s["attributes"]["fanout.attempt_span_id"] == sid("a12")
    )  # fmt: skip
    # back-off, then the limiter's wait, then the call: end to end, beside it
    assert backoff["end_ns"] == limiter["start_ns"] and limiter["end_ns"] == call["start_ns"]
    assert backoff["start_ns"] < backoff["end_ns"] < call["end_ns"]
    assert backoff["parent_span_id"] == limiter["parent_span_id"] == call["parent_span_id"]
    tool = by_id[sid("a14")]
    assert tool["attributes"]["openinference.span.kind"] == "TOOL"
    assert not [k for k in tool["attributes"] if "token" in k]


@pytest.mark.parametrize(
    ("options", "traces_in"),
    [
        (["--job", "job-b"], {TRACE_3}),
        (["--trace", TRACE_2[:8]], {TRACE_2}),
        (["--since", "2025-03-04T05:06:09"], {TRACE_2, TRACE_3}),  # T0 + 2 s on
        (["--until", "2025-03-04T05:06:09"], {TRACE_1}),
        (["--job", "job-a", "--since", "2025-03-04T05:06:08"], {TRACE_2}),
    ],
)
def test_export_filters_by_job_trace_and_time(
    traces: Path, tmp_path: Path, options: list[str], traces_in: set[str]
) -> None:
    out = tmp_path / "spans.pb"
    result = CliRunner().invoke(
        app, ["traces", "export", str(traces), "-f", "otlp-proto", "-o", str(out), *options]
    )
    assert result.exit_code == 0, result.output
    requests = read_delimited(out.read_bytes())
    found = {
        span.trace_id.hex()
        for request in requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    }
    assert found == traces_in


def test_export_refuses_bad_options_with_usage_errors(traces: Path) -> None:
    runner = CliRunner()
    bad_time = runner.invoke(app, ["traces", "export", str(traces), "--since", "yesterday"])
    assert bad_time.exit_code == 2
    assert "--since 'yesterday' is not an ISO time" in bad_time.stderr
    both = runner.invoke(
        app, ["traces", "export", str(traces), "--endpoint", "http://127.0.0.1:1/v1/traces",
              "-f", "otlp-json"],
    )  # fmt: skip
    assert both.exit_code == 2 and "--endpoint sends OTLP protobuf itself" in both.stderr
    down = runner.invoke(
        app, ["traces", "export", str(traces), "--endpoint", "http://127.0.0.1:1/v1/traces"]
    )
    assert down.exit_code == 2
    assert "cannot send traces to http://127.0.0.1:1/v1/traces" in down.stderr
