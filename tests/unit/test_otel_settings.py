"""Live-export settings from the OTEL_* environment and [traces]; the SDK-span path (gRPC,
a custom exporter) against the SDK's in-memory exporter; traceparent parsing."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fanout import DAG, Engine
from fanout.config import TraceConfig
from fanout.errors import ConfigError
from fanout.trace import OtelSink, otel_settings, parse_traceparent, provider_identity


def test_no_endpoint_means_no_live_export_and_the_environment_turns_it_on() -> None:
    assert otel_settings(TraceConfig(), {}) is None
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=k%3D1,other=2",
        "OTEL_SERVICE_NAME": "svc",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    settings = otel_settings(TraceConfig(), env)
    assert settings is not None
    assert settings.endpoint == "http://collector:4318/v1/traces"
    assert settings.headers == {"x-api-key": "k=1", "other": "2"}
    assert settings.resource == {"service.name": "svc", "deployment.environment": "prod"}
    assert settings.sample_ratio == 0.25
    assert "k=1" not in repr(settings)  # header values (credentials) never in a repr
    assert otel_settings(TraceConfig(otlp=False), env) is None
    assert otel_settings(TraceConfig(), {**env, "OTEL_SDK_DISABLED": "true"}) is None


def test_the_config_wins_over_the_environment_and_reads_secrets_from_it() -> None:
    config = TraceConfig(
        otlp_endpoint="http://phoenix:6006", otlp_headers={"authorization": "Bearer ${PHX}"},
        service_name="mine", project="reviews",
    )  # fmt: skip
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318", "PHX": "s3cret"}
    settings = otel_settings(config, env)
    assert settings is not None
    assert settings.endpoint == "http://phoenix:6006/v1/traces"
    assert settings.headers == {"authorization": "Bearer s3cret"}
    assert settings.resource["openinference.project.name"] == "reviews"
    with pytest.raises(ConfigError, match="PHX, which is not set"):
        otel_settings(config, {})
    grpc = otel_settings(TraceConfig(otlp=True), {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert grpc is not None and (grpc.protocol, grpc.endpoint) == ("grpc", "http://localhost:4317")
    with pytest.raises(ConfigError, match="http/json"):
        otel_settings(TraceConfig(otlp=True), {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_well_known_provider_names_come_from_the_kind_and_host() -> None:
    assert provider_identity("openai", "https://api.openai.com/v1") == ("openai", "api.openai.com")
    assert provider_identity("openai", "https://x.openai.azure.com/openai")[0] == "azure.ai.openai"
    assert provider_identity("openai", "https://api.anthropic.com/v1/")[0] == "anthropic"
    bedrock = "https://bedrock-runtime.us-east-1.amazonaws.com/openai/v1"
    assert provider_identity("openai", bedrock)[0] == "aws.bedrock"
    gemini = "https://generativelanguage.googleapis.com/v1beta/openai"
    assert provider_identity("openai", gemini)[0] == "gcp.gemini"
    assert provider_identity("openai", "http://127.0.0.1:8000/v1") == ("openai", "127.0.0.1")
    assert provider_identity("sim") == ("fanout.sim", None)


def test_traceparent_parsing_follows_w3c() -> None:
    parent = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert parent is not None and parent.span_id == "00f067aa0ba902b7" and parent.sampled
    for bad in ("", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"):  # fmt: skip
        assert parse_traceparent(bad) is None


async def test_an_sdk_exporter_gets_readable_spans_with_the_rows_ids_and_waits() -> None:
    memory = InMemorySpanExporter()
    settings = otel_settings(TraceConfig(otlp=True), {})
    assert settings is not None
    sink = OtelSink(settings, exporter=memory)
    dag = DAG("mem")
    dag.input("text")
    dag.output(label=dag.llm("fast", "Classify: {text}", name="classify"))
    async with Engine(traces=sink, otel=False) as engine:
        result = await engine.run(dag, {"text": "x"})
    sink.close()
    spans = memory.get_finished_spans()
    assert sorted(s.name for s in spans) == ["chat sim-small", "llm classify", "run mem"]
    assert {f"{s.context.trace_id:032x}" for s in spans} == {result.trace_id}
    call = next(s for s in spans if s.name == "chat sim-small")
    assert call.attributes is not None and call.attributes["gen_ai.operation.name"] == "chat"
    assert call.parent is not None
    node = next(s for s in spans if s.name == "llm classify")
    assert call.parent.span_id == node.context.span_id
