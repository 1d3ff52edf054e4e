"""Names the OpenTelemetry GenAI conventions and OpenInference give to what a trace row holds.

``provider_identity``: a provider's well-known ``gen_ai.provider.name`` (from its kind and
base URL, never the config's alias for it) and its server's host.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "OPENINFERENCE_PROVIDER",
    "SIM_PROVIDER",
    "WaitSpan",
    "is_llm_call",
    "otel_attributes",
    "otel_kind",
    "provider_identity",
    "wait_spans",
]

SIM_PROVIDER = "fanout.sim"  # the in-process simulated provider (no well-known value)

# host suffix -> gen_ai.provider.name (semconv's well-known values); first match wins
_HOSTS: tuple[tuple[str, str], ...] = (
    ("openai.azure.com", "azure.ai.openai"),
    ("services.ai.azure.com", "azure.ai.inference"),
    ("models.inference.ai.azure.com", "azure.ai.inference"),
    ("api.openai.com", "openai"),
    ("api.anthropic.com", "anthropic"),
    ("amazonaws.com", "aws.bedrock"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.groq.com", "groq"),
    ("api.deepseek.com", "deepseek"),
    ("api.x.ai", "x_ai"),
    ("api.perplexity.ai", "perplexity"),
    ("api.cohere.com", "cohere"),
    ("api.cohere.ai", "cohere"),
)

OPENINFERENCE_PROVIDER = {  # gen_ai.provider.name -> OpenInference's llm.provider
    "openai": "openai",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "anthropic": "anthropic",
    "aws.bedrock": "aws",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "mistral_ai": "mistralai",
    "deepseek": "deepseek",
    "x_ai": "xai",
    "cohere": "cohere",
}


def provider_identity(kind: str, base_url: str | None = None) -> tuple[str, str | None]:
    """``(gen_ai.provider.name, server.address)`` of a provider of this config ``kind``.

    An ``openai``-kind provider speaks OpenAI's API; its host says whose service it is
    (Azure OpenAI, Bedrock's or Gemini's OpenAI-compatible endpoints, ...), and any
    other host (a gateway, vLLM, the emulator) is ``openai``: the API it speaks.
    """
    if kind == "sim" or base_url is None:
        return (SIM_PROVIDER if kind == "sim" else kind), None
    host = (urlsplit(base_url).hostname or "").lower() or None
    if host is not None:
        for suffix, name in _HOSTS:
            if host == suffix or host.endswith("." + suffix):
                return name, host
    return "openai", host


# -- a trace row as OpenTelemetry attributes ------------------------------------------

AttributeValue = str | bool | int | float | list[str]

SPAN_KIND_INTERNAL, SPAN_KIND_CLIENT = 1, 3  # OTLP's enum values
FAILED = frozenset({"error", "cancelled", "max_steps_exceeded"})

# columns that become span fields or named attributes, not ``fanout.<column>`` ones
_MAPPED = frozenset(
    {
        "trace_id", "span_id", "parent_span_id", "span_name", "start_time", "end_time",
        "provider_name", "server_address", "response_id", "request_max_tokens",
        "request_temperature", "request_tools", "request_model", "response_model",
        "finish_reason", "input_tokens", "output_tokens", "input_text", "output_text",
        "tool_call_id", "session_id", "input_cost_usd", "schema_version", "seq_no",
    }
)  # fmt: skip


def is_llm_call(span: Any) -> bool:
    """An attempt row of a model call (not a tool's, nor a guard's)."""
    return span.record_type == "attempt" and (
        span.tool_name is None or span.span_name.startswith("chat")
    )


def otel_kind(span: Any) -> int:
    return SPAN_KIND_CLIENT if is_llm_call(span) else SPAN_KIND_INTERNAL


def otel_attributes(span: Any) -> dict[str, AttributeValue]:
    """The row's attributes: OpenInference's and the GenAI conventions' names for what
    they name, ``fanout.<column>`` for every other column that is set.

    Content follows the row: text (``input.value``, ``llm.input_messages.*``) only where
    the content policy kept the text, digests (``fanout.input_hmac``) where it kept those.
    """
    out: dict[str, AttributeValue] = {}
    record = span.record_type
    llm = is_llm_call(span)
    if record != "attempt":
        out["openinference.span.kind"] = "CHAIN"
    elif llm:
        _llm_attributes(span, out)
    elif span.guard_outcome is not None:
        out["openinference.span.kind"] = "GUARDRAIL"
    else:
        _tool_attributes(span, out)
    if span.session_id is not None:
        out["session.id"] = span.session_id
    if span.input_text is not None:
        out["input.value"] = span.input_text
        json_in = record != "attempt" or llm or span.input_text.startswith(("{", "["))
        out["input.mime_type"] = "application/json" if json_in else "text/plain"
    if span.output_text is not None:
        out["output.value"] = span.output_text
        out["output.mime_type"] = "text/plain"
    if span.status in FAILED:
        out["error.type"] = span.error_type or "_OTHER"
    for name, value in span.__dict__.items():
        if value is None or name in _MAPPED or name.startswith("_"):
            continue
        if name == "tool_name" and not llm:
            continue  # a tool's name is gen_ai.tool.name
        out["fanout." + name] = value
    return out


def _llm_attributes(span: Any, out: dict[str, AttributeValue]) -> None:
    out["openinference.span.kind"] = "LLM"
    out["gen_ai.operation.name"] = "chat"
    name = span.provider_name
    if name is not None:
        out["gen_ai.provider.name"] = name
        out["llm.provider"] = OPENINFERENCE_PROVIDER.get(name, name)
    if span.server_address is not None:
        out["server.address"] = span.server_address
    if span.request_model is not None:
        out["gen_ai.request.model"] = span.request_model
    if span.response_model is not None:
        out["gen_ai.response.model"] = span.response_model
    model = span.response_model or span.request_model
    if model is not None:
        out["llm.model_name"] = model
    if span.response_id is not None:
        out["gen_ai.response.id"] = span.response_id
    if span.finish_reason is not None:
        out["gen_ai.response.finish_reasons"] = [span.finish_reason]
    params: dict[str, object] = {}
    if span.request_max_tokens is not None:
        out["gen_ai.request.max_tokens"] = params["max_tokens"] = span.request_max_tokens
    if span.request_temperature is not None:
        out["gen_ai.request.temperature"] = params["temperature"] = span.request_temperature
    if params:
        out["llm.invocation_parameters"] = json.dumps(params)
    if span.request_tools is not None:
        _tools(span.request_tools, out)
    tin, tout = span.input_tokens, span.output_tokens
    if tin is not None:
        out["gen_ai.usage.input_tokens"] = out["llm.token_count.prompt"] = tin
    if tout is not None:
        out["gen_ai.usage.output_tokens"] = out["llm.token_count.completion"] = tout
    if tin is not None or tout is not None:
        out["llm.token_count.total"] = (tin or 0) + (tout or 0)
    if span.cost_usd is not None:
        out["llm.cost.total"] = span.cost_usd
        if span.input_cost_usd is not None:
            out["llm.cost.prompt"] = span.input_cost_usd
            out["llm.cost.completion"] = max(0.0, span.cost_usd - span.input_cost_usd)
    if span.input_text is not None:
        _messages("llm.input_messages", span.input_text, out)
    if span.output_text is not None or span.tool_name is not None:
        _output_message(span, out)


def _tool_attributes(span: Any, out: dict[str, AttributeValue]) -> None:
    out["openinference.span.kind"] = "TOOL"
    out["gen_ai.operation.name"] = "execute_tool"
    if span.tool_name is not None:
        out["gen_ai.tool.name"] = out["tool.name"] = span.tool_name
    if span.tool_call_id is not None:
        out["gen_ai.tool.call.id"] = span.tool_call_id
    if span.input_text is not None:
        out["tool.parameters"] = span.input_text


def _tools(text: str, out: dict[str, AttributeValue]) -> None:
    try:
        tools = json.loads(text)
    except ValueError:
        return
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        out[f"llm.tools.{i}.tool.json_schema"] = json.dumps(tool)


def _messages(prefix: str, text: str, out: dict[str, AttributeValue]) -> None:
    """A prompt's messages (the row's input text: the request's messages as JSON)."""
    try:
        messages = json.loads(text)
    except ValueError:
        return
    if not isinstance(messages, list):
        return
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        key = f"{prefix}.{i}.message"
        if "role" in message:
            out[f"{key}.role"] = str(message["role"])
        content = message.get("content")
        if isinstance(content, str):
            out[f"{key}.content"] = content
        if message.get("tool_call_id"):
            out[f"{key}.tool_call_id"] = str(message["tool_call_id"])
        for j, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function", {}) if isinstance(call, dict) else {}
            out[f"{key}.tool_calls.{j}.tool_call.function.name"] = str(function.get("name"))
            out[f"{key}.tool_calls.{j}.tool_call.function.arguments"] = str(
                function.get("arguments")
            )


def _output_message(span: Any, out: dict[str, AttributeValue]) -> None:
    key = "llm.output_messages.0.message"
    out[f"{key}.role"] = "assistant"
    text = span.output_text
    if span.tool_name is None or text is None:
        if text is not None:
            out[f"{key}.content"] = text
        return
    try:  # tool calls: the row's output is the calls as JSON (OpenAI's wire form)
        calls = json.loads(text)
    except ValueError:
        calls = None
    if not isinstance(calls, list):
        out[f"{key}.content"] = text
        return
    for j, call in enumerate(calls):
        function = call.get("function", {}) if isinstance(call, dict) else {}
        out[f"{key}.tool_calls.{j}.tool_call.id"] = str(call.get("id"))
        out[f"{key}.tool_calls.{j}.tool_call.function.name"] = str(function.get("name"))
        out[f"{key}.tool_calls.{j}.tool_call.function.arguments"] = str(
            function.get("arguments")
        )


@dataclass(frozen=True, slots=True)
class WaitSpan:
    """A wait before an attempt's call, as a span of its own: a sibling of the attempt
    (a child of its node), ending where the next wait (or the call) starts."""

    name: str
    span_id: str
    start: float  # seconds since the epoch
    end: float
    attributes: dict[str, AttributeValue]


# per wait, bits flipped in the attempt's span id (its random 32-bit prefix) to make the
# wait span's: unique among the tracer's ids, and the same in every export of the row
_WAITS = (
    ("fanout.limiter_wait", "limiter_wait_ms", 0x8000_0000 << 32),
    ("fanout.hedge_delay", "hedge_delay_ms", 0x4000_0000 << 32),
    ("fanout.retry_backoff", "backoff_ms", 0x2000_0000 << 32),
)


def wait_spans(span: Any) -> list[WaitSpan]:
    """The waits before an attempt's call, latest first: the limiter's, a hedge's delay,
    the retry back-off (each ends where the one after it starts)."""
    if span.record_type != "attempt" or span.start_time is None:
        return []
    waits: list[WaitSpan] = []
    end = float(span.start_time)
    for name, column, bits in _WAITS:
        ms = getattr(span, column)
        if not ms or ms <= 0:
            continue
        start = end - ms / 1000
        span_id = f"{int(span.span_id, 16) ^ bits:016x}"
        attributes: dict[str, AttributeValue] = {
            "openinference.span.kind": "CHAIN",
            "fanout.wait": name.removeprefix("fanout."),
            "fanout.wait_ms": float(ms),
            "fanout.attempt_span_id": span.span_id,
        }
        if span.model_alias is not None:
            attributes["fanout.model_alias"] = span.model_alias
        waits.append(WaitSpan(name, span_id, start, end, attributes))
        end = start
    return waits
