"""The rows a run leaves in the trace: kinds, parents, attempts, tokens, cost, content."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import Counter

import pytest
from support import ListSink, sim_config

from fanout import DAG, Engine
from fanout.errors import ProviderHTTPError
from fanout.sim import FakeClock, FunctionProvider
from fanout.trace import KIND_COLUMNS, span_columns
from fanout.types import ChatRequest, NodeStatus, RunStatus


def _scripted() -> FunctionProvider:
    """retry-me fails once; fallback-me always fails on the primary model (sim-small)."""
    seen: Counter[str] = Counter()

    def reply(request: ChatRequest) -> str:
        prompt = str(request.messages[-1]["content"])
        seen[prompt] += 1
        if "retry-me" in prompt and seen[prompt] == 1:
            raise ProviderHTTPError("overloaded", provider="sim", status_code=503)
        if "fallback-me" in prompt and request.model == "sim-small":
            raise ProviderHTTPError("down", provider="sim", status_code=503)
        return f"answer to {prompt}"

    return FunctionProvider("sim", reply)


def _audit_dag() -> DAG:
    dag = DAG("audit")
    text = dag.input("text")
    parts = dag.tool(lambda t: t.split(), text, name="split")
    dag.output(
        a=dag.llm("fast", "retry-me {text}", name="a", max_tokens=50),
        b=dag.llm("fast", "fallback-me {text}", name="b", max_tokens=50),
        c=dag.llm("smart", "too dear {text}", name="c", max_tokens=100_000),
        m=dag.map(dag.llm("fast", "item {item}", max_tokens=50), over=parts, name="m"),
    )
    return dag


async def test_a_run_with_retries_a_fallback_and_a_budget_overrun(clock: FakeClock) -> None:
    sink = ListSink()
    provider = _scripted()
    async with Engine(sim_config(), providers={"sim": provider}, clock=clock, traces=sink) as eng:
        result = await eng.run(_audit_dag(), {"text": "x y z"}, budget_usd=0.5, record_key="r1")
    assert result.status is RunStatus.BUDGET_EXCEEDED
    assert result.nodes["c"].error_type == "BudgetExceeded"

    spans = sink.spans
    assert Counter(s.record_type for s in spans) == {"run": 1, "node": 5, "attempt": 11}
    assert {s.trace_id for s in spans} == {result.trace_id}
    assert {s.record_key for s in spans} == {"r1"}
    (run,) = [s for s in spans if s.record_type == "run"]
    nodes = {s.node_id: s for s in spans if s.record_type == "node"}
    attempts = [s for s in spans if s.record_type == "attempt"]
    assert run.parent_span_id is None and run.status == "budget_exceeded"
    assert all(n.parent_span_id == run.span_id for n in nodes.values())
    assert all(a.parent_span_id == nodes[str(a.node_id)].span_id for a in attempts)
    assert len({s.span_id for s in spans}) == len(spans)
    for span in spans:  # rows are built field by field (new_span): no stray names
        assert set(vars(span)) <= set(span_columns()), span
        assert set(vars(span)) - KIND_COLUMNS[span.record_type] == set(), span

    def of(node: str) -> list[tuple[int | None, int | None, str, int | None]]:
        return [
            (a.fallback_index, a.attempt, a.status, a.http_status)
            for a in attempts
            if a.node_id == node
        ]

    assert of("a") == [(0, 1, "error", 503), (0, 2, "ok", None)]
    assert of("b") == [(0, n, "error", 503) for n in (1, 2, 3, 4)] + [(1, 1, "ok", None)]
    assert of("c") == []  # refused by the budget: no call was made
    assert nodes["c"].status == "error" and nodes["c"].error_type == "BudgetExceeded"
    assert sorted(a.map_index for a in attempts if a.node_id == "m") == [0, 1, 2]
    (tool,) = [a for a in attempts if a.node_id == "split"]
    assert tool.tool_name == "<lambda>" and tool.span_name.startswith("execute_tool ")

    retry = [a for a in attempts if a.node_id == "a"][1]
    assert retry.backoff_ms is not None and retry.backoff_ms > 0
    assert [a.retryable for a in attempts if a.status == "error"] == [True] * 5
    assert {a.model_alias for a in attempts if a.node_id == "b" and a.status == "ok"} == {"smart"}

    # tokens and cost live on attempt rows only, and add up to what the result says
    assert sum(a.input_tokens or 0 for a in attempts) == result.usage.input_tokens
    assert sum(a.output_tokens or 0 for a in attempts) == result.usage.output_tokens
    assert sum(a.cost_usd or 0 for a in attempts) == pytest.approx(result.cost_usd)
    assert all(s.input_tokens is None and s.cost_usd is None for s in spans if s is run)
    assert run.budget_limit_usd == 0.5
    assert run.budget_spent_usd == pytest.approx(result.cost_usd)
    assert provider.calls == 2 + 5 + 3  # every call made has its row (+ the tool's)


async def test_skipped_and_cancelled_nodes_have_rows(clock: FakeClock) -> None:
    sink = ListSink()
    async with Engine(sim_config(100.0), clock=clock, traces=sink) as eng:
        dag = DAG("branches")
        text = dag.input("text")
        yes = dag.llm("fast", "yes {text}", name="yes")
        no = dag.llm("fast", "no {text}", name="no")
        dag.output(
            pick=dag.route(lambda t: "yes", text, {"yes": yes, "no": no}, name="pick"),
            slow=dag.llm("fast", "[sim:latency=60000] {text}", name="slow"),
        )
        result = await eng.run(dag, {"text": "t"}, deadline_s=5)
    assert result.status is RunStatus.DEADLINE_EXCEEDED
    nodes = {s.node_id: s for s in sink.spans if s.record_type == "node"}
    assert nodes["no"].status == "skipped" and nodes["no"].start_time is None
    assert nodes["yes"].status == "ok" and nodes["yes"].queue_wait_ms is not None
    assert nodes["slow"].status == "cancelled" and nodes["slow"].error_type == "DeadlineExceeded"
    assert result.nodes["slow"].status is NodeStatus.CANCELLED
    # the cut call is an attempt row too, marked as such
    (slow,) = [s for s in sink.spans if s.record_type == "attempt" and s.node_id == "slow"]
    assert slow.status == "error" and slow.error_type == "DeadlineExceeded"


async def test_hmac_content_is_keyed_and_holds_no_plaintext(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FANOUT_TRACE_KEY", "a-secret-key")
    sink = ListSink()
    async with Engine(sim_config(), clock=clock, traces=sink) as eng:
        dag = DAG("private")
        dag.input("text")
        dag.output(a=dag.llm("fast", "Say {text}", name="a"))
        result = await eng.run(dag, {"text": "ZEBRA-7781"})
    (attempt,) = [s for s in sink.spans if s.record_type == "attempt"]
    # the prompt as compact JSON (no spaces), as the trace keeps it
    messages = json.dumps(
        [{"role": "user", "content": "Say ZEBRA-7781"}], ensure_ascii=False, separators=(",", ":")
    )
    expected = hmac.new(b"a-secret-key", messages.encode(), hashlib.sha256).hexdigest()
    assert attempt.input_hmac == expected
    assert attempt.input_chars == len(messages)
    assert attempt.output_hmac is not None and attempt.output_chars == len(str(result.outputs["a"]))
    assert attempt.input_text is None and attempt.output_text is None
    for span in sink.spans:
        assert "ZEBRA" not in repr(span)


@pytest.mark.parametrize("mode", ["full", "none"])
async def test_full_and_none_content(clock: FakeClock, mode: str) -> None:
    config = sim_config().model_copy(
        update={"traces": sim_config().traces.model_copy(update={"content": mode})}
    )
    sink = ListSink()

    def mask(text: str) -> str:
        return re.sub(r"\S+@\S+", "<email>", text)

    async with Engine(config, clock=clock, traces=sink, redact=mask) as eng:
        dag = DAG("content")
        dag.input("text")
        dag.output(a=dag.llm("fast", "Reply to {text}", name="a"))
        await eng.run(dag, {"text": "ann@example.com"})
    (attempt,) = [s for s in sink.spans if s.record_type == "attempt"]
    assert attempt.input_hmac is None and attempt.output_hmac is None
    assert attempt.input_chars is not None and attempt.output_chars is not None
    if mode == "full":
        assert attempt.input_text is not None and "<email>" in attempt.input_text
        assert "ann@example.com" not in attempt.input_text
    else:
        assert attempt.input_text is None and attempt.output_text is None


async def test_no_trace_sink_means_no_trace_id(engine: Engine) -> None:
    dag = DAG("plain")
    dag.input("text")
    dag.output(a=dag.llm("fast", "{text}"))
    result = await engine.run(dag, {"text": "x"})
    assert result.ok and result.trace_id is None
