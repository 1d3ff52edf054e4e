"""Live OpenTelemetry export, received by a real OTLP/HTTP receiver on loopback.

Only the standard ``OTEL_*`` environment is set. Each test compares what arrived
(protobuf, decoded with opentelemetry-proto) with the Parquet trace of the same run:
one span per row (a provider attempt, a node, a run) with the row's ids, plus a span
per wait before an attempt's call; complete trees; tokens and costs equal to the
rows'; the call's span covering the call on the wire and the limiter's wait beside it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from support import Emulator, start_emulator, write_records
from support_otlp import Receiver, otlp_receiver
from typer.testing import CliRunner

from fanout import DAG, Engine, parse_config
from fanout.cli import app
from fanout.config import Config
from fanout.service import ServiceServer, build_app
from fanout.sim.server import EmulatorConfig

ROOT = Path(__file__).resolve().parents[2]
CLASSIFY = f"{ROOT / 'examples' / 'pipelines' / 'classify.py'}:dag"
AGENT = f"{ROOT / 'examples' / 'pipelines' / 'agent.py'}:dag"
QUESTIONS = ROOT / "examples" / "data" / "questions.jsonl"
SECRET = "sk-live-otlp-header-secret-0123456789"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with start_emulator(EmulatorConfig(latency_ms=20)) as emu:
        yield emu


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """The receiver, named by the standard environment alone."""
    with otlp_receiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "fanout-tests")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "openinference.project.name=otel-tests")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"x-api-key={SECRET}")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        yield rx


def config_toml(path: Path, base_url: str, *, content: str = "hmac") -> Path:
    """``fast`` on the emulator, one call at a time (so calls wait for the limiter)."""
    path.write_text(
        f"""
[providers.emu]
kind = "openai"
base_url = "{base_url}"
max_concurrency = 1

[models.fast]
provider = "emu"
model = "sim-small"
input_usd_per_mtok = 3.0
output_usd_per_mtok = 15.0

[models.smart]
provider = "emu"
model = "sim-large"
input_usd_per_mtok = 3.0
output_usd_per_mtok = 15.0

[traces]
content = "{content}"
""",
        encoding="utf-8",
    )
    return path


def by_id(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["span_id"]: s for s in spans}


def check_against_parquet(spans: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """Every row arrived as its own span, with its ids, tokens, cost and duration; every
    other span is a wait before an attempt's call, beside the attempt (same parent),
    ending where the call starts; every parent is present (a run's may be remote)."""
    spans_by_id = by_id(spans)
    assert len(spans_by_id) == len(spans)  # no span twice
    for row in rows:
        span = spans_by_id[row["span_id"]]
        assert span["trace_id"] == row["trace_id"]
        assert span["parent_span_id"] == row["parent_span_id"]
        assert span["name"] == row["span_name"]
        assert span["start_ns"] // 1000 == pytest.approx(row["start_time"].timestamp() * 1e6, abs=2)
        took_ms = (span["end_ns"] - span["start_ns"]) / 1e6
        assert took_ms == pytest.approx(row["duration_ms"], abs=0.01)
        attrs = span["attributes"]
        if row["record_type"] == "attempt" and row["span_name"].startswith("chat "):
            assert attrs["openinference.span.kind"] == "LLM"
            assert attrs["gen_ai.usage.input_tokens"] == row["input_tokens"]
            assert attrs["gen_ai.usage.output_tokens"] == row["output_tokens"]
            assert attrs["llm.token_count.total"] == row["input_tokens"] + row["output_tokens"]
            assert attrs["llm.cost.total"] == pytest.approx(row["cost_usd"])
            assert attrs["llm.cost.prompt"] + attrs["llm.cost.completion"] == pytest.approx(
                row["cost_usd"]
            )
    waits = [s for s in spans if s["span_id"] not in {r["span_id"] for r in rows}]
    attempts = {r["span_id"]: r for r in rows if r["record_type"] == "attempt"}
    for wait in waits:
        assert wait["name"] in ("fanout.limiter_wait", "fanout.retry_backoff", "fanout.hedge_delay")
        attempt = attempts[wait["attributes"]["fanout.attempt_span_id"]]
        call = spans_by_id[attempt["span_id"]]
        assert wait["parent_span_id"] == call["parent_span_id"]  # beside the call
        assert wait["end_ns"] <= call["start_ns"]  # before it: not inside the call's span
        node = spans_by_id[call["parent_span_id"]]
        assert node["start_ns"] <= wait["start_ns"] + 1000  # inside the node (µs rounding)
    for span in spans:
        if span["parent_span_id"] is not None and span["name"].startswith("run "):
            continue  # a run's parent may be the caller's (remote) span
        assert span["parent_span_id"] is None or span["parent_span_id"] in spans_by_id


def test_a_batch_job_exports_every_row_live_as_the_parquet_trace_has_it(
    receiver: Receiver, emulator: Emulator, tmp_path: Path
) -> None:
    records = write_records(tmp_path / "in.jsonl", 6)
    config = config_toml(tmp_path / "fanout.toml", emulator.base_url)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", CLASSIFY, "-i", str(records), "-o", str(out), "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "traces").to_pylist()
    attempts = [r for r in rows if r["record_type"] == "attempt"]
    waited = [r for r in attempts if (r["limiter_wait_ms"] or 0) > 0]
    assert waited  # one call at a time: calls waited for the limiter
    spans = receiver.wait_for(len(rows) + len(waited))
    assert len(spans) == len(rows) + len(waited)
    assert sorted({r["record_type"] for r in rows}) == ["attempt", "node", "run"]
    assert len([r for r in rows if r["record_type"] == "run"]) == 6
    check_against_parquet(spans, rows)

    llm = [s for s in spans if s["attributes"].get("openinference.span.kind") == "LLM"]
    assert len(llm) == len(attempts)  # one span per provider attempt
    first = llm[0]["attributes"]
    assert first["gen_ai.provider.name"] == "openai"  # the API's kind, not the alias "emu"
    assert first["llm.provider"] == "openai"
    assert first["fanout.provider"] == "emu"
    assert first["server.address"] == "127.0.0.1"
    assert str(first["gen_ai.response.id"]).startswith("chatcmpl-")
    assert first["gen_ai.request.model"] == "sim-small"
    assert isinstance(first["gen_ai.request.max_tokens"], int)
    assert json.loads(first["llm.invocation_parameters"])["max_tokens"] == (
        first["gen_ai.request.max_tokens"]
    )
    assert llm[0]["kind"] == 3  # CLIENT
    # the default content policy holds live too: digests, never the text
    assert "input.value" not in first and "llm.input_messages.0.message.content" not in first
    row = next(r for r in attempts if r["span_id"] == llm[0]["span_id"])
    assert first["fanout.input_hmac"] == row["input_hmac"]
    assert first["llm.cost.prompt"] == pytest.approx(row["input_tokens"] * 3.0 / 1e6)
    assert first["llm.cost.completion"] == pytest.approx(row["output_tokens"] * 15.0 / 1e6)
    # a wait is its own span, and the call's span is the call alone: it starts after
    # the wait ends, and is as long as the row's duration (the wire time)
    limiter = [s for s in spans if s["name"] == "fanout.limiter_wait"]
    assert len(limiter) == len(waited)
    for wait in limiter:
        owner = wait["attributes"]["fanout.attempt_span_id"]
        row = next(r for r in attempts if r["span_id"] == owner)
        waited_ms = (wait["end_ns"] - wait["start_ns"]) / 1e6
        assert waited_ms == pytest.approx(row["limiter_wait_ms"], abs=0.01)
    resource = spans[0]["resource"]
    assert resource["service.name"] == "fanout-tests"
    assert resource["openinference.project.name"] == "otel-tests"
    assert all(h.get("x-api-key") == SECRET for h in receiver.requests)
    assert all(t == "application/x-protobuf" for t in receiver.content_types)
    # the export's credentials are in no output and no trace file
    assert SECRET not in result.output
    for path in (out / "traces").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes()


def test_tool_spans_are_execute_tool_without_tokens_and_full_content_goes_live(
    receiver: Receiver, tmp_path: Path
) -> None:
    config = tmp_path / "fanout.toml"
    config.write_text(
        '[providers.sim]\nkind = "sim"\n\n[models.fast]\nprovider = "sim"\nmodel = "sim-small"\n'
        '\n[models.smart]\nprovider = "sim"\nmodel = "sim-large"\n\n[traces]\ncontent = "full"\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", AGENT, "-i", str(QUESTIONS), "-o", str(out), "--key", "id", "-c", str(config)]
    )
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "traces").to_pylist()
    spans = receiver.wait_for(len(rows))
    check_against_parquet(spans, rows)
    tools = [s for s in spans if s["attributes"].get("openinference.span.kind") == "TOOL"]
    assert len(tools) == 4 and all(s["name"].startswith("execute_tool ") for s in tools)
    for tool in tools:
        attrs = tool["attributes"]
        assert attrs["gen_ai.operation.name"] == "execute_tool"
        assert attrs["gen_ai.tool.name"] == tool["name"].removeprefix("execute_tool ")
        assert attrs["gen_ai.tool.call.id"]
        assert not [k for k in attrs if "token" in k or k.startswith("llm.cost")]
    calls = [s for s in spans if s["attributes"].get("openinference.span.kind") == "LLM"]
    asked = [s for s in calls if "llm.tools.0.tool.json_schema" in s["attributes"]]
    assert asked
    for span in calls:
        attrs = span["attributes"]
        row = next(r for r in rows if r["span_id"] == span["span_id"])
        messages = json.loads(row["input_text"])
        assert attrs["llm.input_messages.0.message.role"] == messages[0]["role"]
        assert attrs["llm.input_messages.0.message.content"] == messages[0]["content"]
        assert attrs["input.value"] == row["input_text"]
        assert attrs["input.mime_type"] == "application/json"
        assert attrs["llm.output_messages.0.message.role"] == "assistant"
        assert attrs["gen_ai.provider.name"] == "fanout.sim"
    # a tool call the model made: its id on the model's span and on the tool's
    called = {
        v for s in calls for k, v in s["attributes"].items() if k.endswith("tool_call.id")
    }
    assert {t["attributes"]["gen_ai.tool.call.id"] for t in tools} <= called


def _dag() -> DAG:
    dag = DAG("joined")
    dag.input("text")
    dag.output(label=dag.llm("fast", "Classify: {text}", name="classify"))
    return dag


def _emu(url: str) -> Config:
    return parse_config(
        {
            "providers": {"emu": {"kind": "openai", "base_url": url}},
            "models": {
                "fast": {"provider": "emu", "model": "sim-small"},
                "smart": {"provider": "emu", "model": "sim-large"},
            },
        }
    )


def test_a_service_request_joins_the_callers_trace_from_its_traceparent(
    receiver: Receiver, emulator: Emulator, tmp_path: Path
) -> None:
    engine = Engine(_emu(emulator.base_url), traces=tmp_path / "traces")
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    def make() -> object:
        return build_app({"joined": _dag()}, engine, tokens=None)

    with ServiceServer(make, close=engine.aclose) as server:  # type: ignore[arg-type]
        reply = httpx.post(
            f"{server.url}/v1/pipelines/joined/runs",
            json={"inputs": {"text": "great"}},
            headers={
                "traceparent": f"00-{caller_trace}-{caller_span}-01",
                "tracestate": "vendor=x",
            },
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        plain = httpx.post(
            f"{server.url}/v1/pipelines/joined/runs",
            json={"inputs": {"text": "fine"}},
            headers={"traceparent": "not-a-traceparent"},  # ignored: a trace of its own
            timeout=30,
        )
        assert plain.status_code == 200, plain.text
    rows = pq.read_table(tmp_path / "traces").to_pylist()
    spans = receiver.wait_for(len(rows))
    check_against_parquet(spans, rows)
    joined = [s for s in spans if s["trace_id"] == caller_trace]
    assert len(joined) == 3  # run, node, attempt
    (run,) = [s for s in joined if s["name"] == "run joined"]
    assert run["parent_span_id"] == caller_span  # under the caller's span
    others = [s for s in spans if s["trace_id"] != caller_trace]
    assert len(others) == 3 and all(
        s["parent_span_id"] is None for s in others if s["name"] == "run joined"
    )


def test_a_users_own_span_around_engine_run_is_the_runs_parent(
    receiver: Receiver, emulator: Emulator
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("user-code")

    async def main() -> tuple[str, str]:
        async with Engine(_emu(emulator.base_url)) as engine:  # live export only
            with tracer.start_as_current_span("my request") as mine:
                result = await engine.run(_dag(), {"text": "ok"})
            context = mine.get_span_context()
            assert result.trace_id == f"{context.trace_id:032x}"
            return f"{context.trace_id:032x}", f"{context.span_id:016x}"

    trace_id, span_id = asyncio.run(main())
    spans = receiver.wait_for(3)
    assert len(spans) == 3 and {s["trace_id"] for s in spans} == {trace_id}
    (run,) = [s for s in spans if s["name"] == "run joined"]
    assert run["parent_span_id"] == span_id


@contextmanager
def recording_provider() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """An OpenAI-compatible endpoint on loopback that answers every chat call the same
    way and keeps each request's headers (the emulator does not keep them)."""
    seen: list[dict[str, str]] = []
    reply = json.dumps(
        {
            "id": "chatcmpl-rec",
            "model": "sim-small",
            "choices": [{"message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1},
        }
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("propagate", [True, False])
def test_provider_calls_carry_a_traceparent_only_when_the_config_says_so(
    propagate: bool, tmp_path: Path
) -> None:
    with recording_provider() as (url, seen):
        config = parse_config(
            {
                "providers": {"emu": {"kind": "openai", "base_url": url}},
                "models": {
                    "fast": {"provider": "emu", "model": "sim-small"},
                    "smart": {"provider": "emu", "model": "sim-large"},
                },
                "traces": {"propagate": propagate},
            }
        )

        async def main() -> None:
            async with Engine(config, traces=tmp_path / "traces", otel=False) as engine:
                await asyncio.gather(*(engine.run(_dag(), {"text": f"t{i}"}) for i in range(3)))

        asyncio.run(main())
    rows = pq.read_table(tmp_path / "traces").to_pylist()
    attempts = {(r["trace_id"], r["span_id"]) for r in rows if r["record_type"] == "attempt"}
    assert len(seen) == len(attempts) == 3
    if not propagate:
        assert not [h for h in seen if "traceparent" in h]
        return
    sent = set()
    for headers in seen:
        version, trace_id, span_id, flags = headers["traceparent"].split("-")
        assert (version, flags) == ("00", "01")
        sent.add((trace_id, span_id))
    assert sent == attempts  # each call names its own attempt row as the parent
