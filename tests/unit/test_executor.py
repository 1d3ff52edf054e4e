"""The executor: ordering without barriers, map/route/fan-in, deadlines, budgets, failures."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from pydantic import BaseModel
from support import sim_config

from fanout import (
    DAG,
    Budget,
    ConfigError,
    Engine,
    NodeStatus,
    ProviderHTTPError,
    RunStatus,
)
from fanout.sim import FakeClock, FunctionProvider, SimProvider
from fanout.types import ChatRequest


def sim(engine: Engine) -> SimProvider:
    provider = engine.providers["sim"]
    assert isinstance(provider, SimProvider)
    return provider


async def test_a_node_starts_when_its_own_inputs_are_ready_not_its_level(
    engine: Engine,
) -> None:
    dag = DAG("levels")
    dag.input("text")
    slow = dag.llm("fast", "[sim:latency=5000] slow {text}", name="slow")
    quick = dag.llm("fast", "[sim:latency=10] quick {text}", name="quick")
    after_quick = dag.llm("fast", "[sim:latency=10] then {q}", q=quick, name="after_quick")
    dag.output(slow=slow, after=after_quick)

    result = await engine.run(dag, {"text": "hi"})

    assert result.ok
    nodes = result.nodes
    assert nodes["after_quick"].end_s is not None and nodes["slow"].end_s is not None
    # With a level barrier, after_quick could not start before slow ended.
    assert nodes["after_quick"].end_s < nodes["slow"].start_s + 1.0 < nodes["slow"].end_s


async def test_mapped_items_finish_independently(clock: FakeClock) -> None:
    finished: list[int] = []

    async def work(item: int) -> int:
        await clock.sleep(item)
        finished.append(item)
        return item * 10

    dag = DAG("m")
    items = dag.input("items")
    out = dag.map(dag.tool(work, DAG.item), over=items)
    dag.output(out=out)
    async with Engine(sim_config(), clock=clock) as engine:
        result = await engine.run(dag, {"items": [5, 1, 3, 2, 4]})
    assert result.outputs["out"] == [50, 10, 30, 20, 40]  # in input order
    assert finished == [1, 2, 3, 4, 5]  # in completion order: no item waited for another
    assert result.wall_time_s == pytest.approx(5.0)


def split(text: str) -> list[str]:
    return [s.strip() for s in text.split(".") if s.strip()]


def pick(scores: list[str]) -> str:
    return "urgent" if "negative" in scores else "normal"


def triage_dag() -> DAG:
    dag = DAG("triage")
    text = dag.input("text")
    parts = dag.tool(split, text, inline=True)
    scores = dag.map(dag.llm("fast", "Rate the sentiment of: {item}", max_tokens=5), over=parts)
    urgent = dag.llm("smart", "Apologise for: {text}", name="apology")
    label = dag.route(pick, scores, {"urgent": urgent, "normal": "no action"}, name="label")
    summary = dag.llm("smart", "Summarise: {scores}", scores=scores, name="summary")
    dag.output(summary=summary, label=label, scores=scores)
    return dag


async def test_map_route_and_fan_in(engine: Engine) -> None:
    dag = triage_dag()
    happy = await engine.run(dag, {"text": "I love it. Great service. Thanks"})
    assert happy.ok, happy.error_message
    assert happy.outputs["scores"] == ["positive", "positive", "positive"]
    assert happy.outputs["label"] == "no action"
    assert happy.nodes["apology"].status is NodeStatus.SKIPPED
    assert happy.nodes["apology"].calls == 0
    assert happy.nodes["llm"].items_total == 3
    assert isinstance(happy.outputs["summary"], str) and happy.outputs["summary"]

    angry = await engine.run(dag, {"text": "It arrived broken. Terrible. I want a refund"})
    assert angry.ok
    assert "negative" in angry.outputs["scores"]  # type: ignore[operator]
    assert angry.nodes["apology"].status is NodeStatus.OK
    assert angry.outputs["label"] == angry.outputs["label"] != "no action"
    # usage and cost add up over nodes
    assert angry.usage.input_tokens == sum(n.usage.input_tokens for n in angry.nodes.values())
    assert angry.cost_usd == pytest.approx(sum(n.cost_usd for n in angry.nodes.values()))
    assert angry.cost_usd > 0


# The definition order decides which ready node the caller's own task runs and which
# gets a task of its own: both orders must stop the same way.
@pytest.mark.parametrize("slow_first", [False, True])
async def test_deadline_cancels_the_rest_and_keeps_what_finished(
    engine: Engine, slow_first: bool
) -> None:
    dag = DAG("d")
    dag.input("text")
    if slow_first:
        slow = dag.llm("fast", "[sim:latency=9000] {text}", name="slow")
    quick = dag.llm("fast", "[sim:latency=100] {text}", name="quick")
    if not slow_first:
        slow = dag.llm("fast", "[sim:latency=9000] {text}", name="slow")
    after = dag.llm("fast", "{s}", s=slow, name="after")
    dag.output(quick=quick, after=after)

    result = await engine.run(dag, {"text": "x"}, deadline_s=2.0)

    assert result.status is RunStatus.DEADLINE_EXCEEDED
    assert result.error_type == "DeadlineExceeded"
    assert result.nodes["quick"].status is NodeStatus.OK
    assert result.outputs["quick"] and result.outputs["after"] is None
    assert result.nodes["slow"].status is NodeStatus.CANCELLED
    assert result.nodes["after"].status is NodeStatus.CANCELLED
    assert result.wall_time_s == pytest.approx(2.0)
    assert sim(engine).in_flight == 0


async def test_budget_refuses_the_call_that_would_overrun(engine: Engine) -> None:
    dag = DAG("b")
    dag.input("text")
    first = dag.llm("fast", "{text}", max_tokens=50, name="first")
    second = dag.llm("fast", "{f} {text}", f=first, max_tokens=500, name="second")
    dag.output(first=first, second=second)
    budget = Budget(tokens=300)

    result = await engine.run(dag, {"text": "hello there"}, budget=budget)

    assert result.status is RunStatus.BUDGET_EXCEEDED
    assert result.nodes["first"].status is NodeStatus.OK
    assert result.outputs["first"]
    assert result.nodes["second"].error_type == "BudgetExceeded"
    assert result.nodes["second"].calls == 0
    assert sim(engine).calls == 1  # the second call was never made
    # the first call's hold was settled with the reported usage
    assert budget.held_tokens == 0
    assert budget.spent_tokens == result.usage.total_tokens


async def test_usd_budget_on_a_map_stops_within_the_cap(engine: Engine) -> None:
    dag = DAG("b")
    items = dag.input("items")
    out = dag.map(dag.llm("smart", "Say {item}", max_tokens=100), over=items, on_item_error="none")
    dag.output(out=out)
    result = await engine.run(dag, {"items": [f"n{i}" for i in range(50)]}, budget_usd=0.01)
    assert result.status is RunStatus.BUDGET_EXCEEDED
    assert 0 < result.cost_usd <= 0.01
    done = [o for o in result.outputs["out"] if o is not None]  # type: ignore[attr-defined]
    assert 0 < len(done) < 50
    assert result.nodes["llm"].items_failed == 50 - len(done)


class Verdict(BaseModel):
    sentiment: str
    confidence: float


async def test_structured_output_is_retried_with_the_validation_error(engine: Engine) -> None:
    dag = DAG("s")
    dag.input("text")
    dag.output(v=dag.llm("fast", "[sim:invalid-once] {text}", output=Verdict, name="judge"))

    result = await engine.run(dag, {"text": "great"})

    assert result.ok, result.error_message
    assert isinstance(result.outputs["v"], Verdict)
    assert result.nodes["judge"].calls == 2


async def test_validation_error_is_fed_back_to_the_model(clock: FakeClock) -> None:
    seen: list[ChatRequest] = []

    def reply(request: ChatRequest) -> str:
        seen.append(request)
        if len(seen) == 1:
            return '{"sentiment": "positive"}'
        return '```json\n{"sentiment": "positive", "confidence": 0.9}\n```'

    async with Engine(sim_config(), providers={"sim": FunctionProvider("sim", reply)}) as engine:
        dag = DAG("s")
        dag.input("text")
        dag.output(v=dag.llm("fast", "{text}", output=Verdict, name="judge"))
        result = await engine.run(dag, {"text": "great"})
    assert result.outputs["v"] == Verdict(sentiment="positive", confidence=0.9)
    assert seen[0].response_schema == Verdict.model_json_schema()
    feedback = seen[1].messages
    assert [m["role"] for m in feedback] == ["user", "assistant", "user"]
    assert "confidence" in str(feedback[-1].get("content"))
    assert "Field required" in str(feedback[-1].get("content"))


async def test_structured_output_gives_up_after_the_limit() -> None:
    provider = FunctionProvider("bad", lambda request: "not json at all")
    config = sim_config()
    engine = Engine(config, providers={"sim": provider})
    dag = DAG("s")
    dag.input("text")
    dag.output(v=dag.llm("fast", "{text}", output=Verdict, max_output_retries=2, name="judge"))
    result = await engine.run(dag, {"text": "x"})
    assert result.status is RunStatus.ERROR
    assert result.nodes["judge"].error_type == "OutputValidationError"
    assert provider.calls == 3


async def test_a_failed_node_fails_its_dependents_only(engine: Engine) -> None:
    dag = DAG("f")
    dag.input("text")
    bad = dag.llm("smart", "[sim:fail] {text}", name="bad")
    after = dag.llm("smart", "{b}", b=bad, name="after")
    fine = dag.llm("smart", "{text}", name="fine")
    dag.output(after=after, fine=fine)

    result = await engine.run(dag, {"text": "x"})

    assert result.status is RunStatus.ERROR
    assert result.error_type == "ProviderHTTPError"
    assert result.nodes["bad"].status is NodeStatus.ERROR
    assert result.nodes["after"].error_type == "UpstreamFailed"
    assert "bad" in (result.nodes["after"].error_message or "")
    assert result.nodes["fine"].status is NodeStatus.OK
    assert result.outputs["fine"] and result.outputs["after"] is None


@pytest.mark.parametrize("slow_first", [False, True])
async def test_a_required_node_failure_stops_the_request(engine: Engine, slow_first: bool) -> None:
    dag = DAG("f")
    dag.input("text")
    if slow_first:
        slow = dag.llm("smart", "[sim:latency=5000] {text}", name="slow")
    bad = dag.llm("smart", "[sim:latency=10][sim:fail] {text}", name="bad", required=True)
    if not slow_first:
        slow = dag.llm("smart", "[sim:latency=5000] {text}", name="slow")
    dag.output(bad=bad, slow=slow)
    result = await engine.run(dag, {"text": "x"})
    assert result.status is RunStatus.ERROR
    assert result.nodes["slow"].status is NodeStatus.CANCELLED
    assert result.wall_time_s < 5.0  # stopped long before the slow node would end
    assert result.nodes["bad"].calls == 4  # retried (500 is retryable), then failed
    assert sim(engine).in_flight == 0


async def test_fallback_model_is_used_when_the_primary_fails(clock: FakeClock) -> None:
    def broken(request: ChatRequest) -> str:
        if request.model == "sim-small":
            raise ProviderHTTPError("down", provider="sim", status_code=503)
        return "from the fallback"

    provider = FunctionProvider("sim", broken)
    async with Engine(sim_config(), providers={"sim": provider}, clock=clock) as engine:
        dag = DAG("fb")
        dag.input("text")
        dag.output(a=dag.llm("fast", "{text}", name="a"))
        result = await engine.run(dag, {"text": "x"})
    assert result.ok
    assert result.outputs["a"] == "from the fallback"
    # 503 is retryable: four attempts on the primary, with back-off, then the fallback
    assert result.nodes["a"].fallbacks == 1 and result.nodes["a"].calls == 5
    assert provider.calls_by_model == {"sim-small": 4, "sim-large": 1}
    assert result.wall_time_s > 0  # the back-off slept on the (fake) clock


async def test_invalid_request_does_not_fall_back(clock: FakeClock) -> None:
    def reject(request: ChatRequest) -> str:
        raise ProviderHTTPError("bad request", provider="sim", status_code=400)

    provider = FunctionProvider("sim", reject)
    async with Engine(sim_config(), providers={"sim": provider}, clock=clock) as engine:
        dag = DAG("fb")
        dag.input("text")
        dag.output(a=dag.llm("fast", "{text}", name="a"))
        result = await engine.run(dag, {"text": "x"})
    assert result.nodes["a"].error_type == "ProviderHTTPError"
    assert provider.calls == 1


async def test_cancelling_a_request_releases_its_reservations(engine: Engine) -> None:
    dag = DAG("c")
    items = dag.input("items")
    dag.output(out=dag.map(dag.llm("fast", "[sim:latency=5000] {item}"), over=items))
    budget = Budget(usd=10.0)
    task = asyncio.create_task(engine.run(dag, {"items": list(range(20))}, budget=budget))
    for _ in range(100):  # let items reach the provider (the fake clock holds them there)
        await asyncio.sleep(0)
    assert sim(engine).in_flight > 0  # (the limiter's slow start admits 8 before an answer)
    assert budget.held_usd > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.held_usd == pytest.approx(0.0) and budget.held_tokens == 0
    assert sim(engine).in_flight == 0


async def test_map_concurrency_cap_and_item_error_modes(engine: Engine) -> None:
    dag = DAG("cap")
    items = dag.input("items")
    body = dag.llm("fast", "{item}")
    dag.output(out=dag.map(body, over=items, concurrency=3))
    result = await engine.run(dag, {"items": [f"[sim:latency={i * 10}] x" for i in range(12)]})
    assert result.ok and len(result.outputs["out"]) == 12  # type: ignore[arg-type]
    assert sim(engine).max_in_flight == 3

    items_with_failure = ["a", "[sim:fail] b", "c"]
    for mode, expected in (("drop", 2), ("none", 3)):
        dag = DAG(mode)
        items = dag.input("items")
        dag.output(out=dag.map(dag.llm("smart", "{item}"), over=items, on_item_error=mode))  # type: ignore[arg-type]
        result = await engine.run(dag, {"items": items_with_failure})
        assert result.ok
        out = result.outputs["out"]
        assert isinstance(out, list) and len(out) == expected
        assert result.nodes["llm"].items_failed == 1

    dag = DAG("fail")
    items = dag.input("items")
    dag.output(out=dag.map(dag.llm("smart", "{item}"), over=items))
    result = await engine.run(dag, {"items": items_with_failure})
    assert result.status is RunStatus.ERROR
    assert result.nodes["llm"].error_type == "ProviderHTTPError"


async def test_map_over_a_non_list_is_a_clear_error(engine: Engine) -> None:
    dag = DAG("m")
    text = dag.input("text")
    dag.output(out=dag.map(dag.llm("fast", "{item}"), over=text))
    result = await engine.run(dag, {"text": "not a list"})
    assert result.status is RunStatus.ERROR
    assert "expected a list" in (result.error_message or "")


async def test_tools_sync_in_threads_async_on_loop_errors_reported(engine: Engine) -> None:
    seen: dict[str, bool] = {}

    def sync_tool(x: str) -> str:
        seen["sync_off_loop"] = threading.current_thread() is not threading.main_thread()
        return x.upper()

    async def async_tool(x: str) -> str:
        return x + "!"

    def broken(x: str) -> str:
        raise ValueError("nope")

    dag = DAG("t")
    text = dag.input("text")
    a = dag.tool(sync_tool, text)
    b = dag.tool(async_tool, a)
    c = dag.tool(broken, text)
    dag.output(b=b, c=c)
    result = await engine.run(dag, {"text": "hi"})
    assert result.outputs["b"] == "HI!"
    assert seen["sync_off_loop"] is True
    assert result.nodes["broken"].error_type == "ToolError"
    assert "ValueError: nope" in (result.nodes["broken"].error_message or "")


def get_order_status(order_id: str) -> str:
    """Look up an order."""
    return f"order {order_id} shipped yesterday"


async def test_llm_tool_loop_runs_python_tools(engine: Engine) -> None:
    dag = DAG("agent")
    dag.input("text")
    dag.output(a=dag.llm("fast", "{text}", tools=[get_order_status], name="agent"))
    result = await engine.run(dag, {"text": "where is get_order_status 42"})
    assert result.ok, result.error_message
    assert result.nodes["agent"].calls == 2
    assert "shipped yesterday" in str(result.outputs["a"])


async def test_missing_input_is_a_config_error_before_any_call(engine: Engine) -> None:
    with pytest.raises(ConfigError, match=r"missing input\(s\) \['text'\]"):
        await engine.run(triage_dag(), {"body": "x"})
    assert sim(engine).calls == 0


async def test_template_that_cannot_render_fails_the_node_clearly(engine: Engine) -> None:
    dag = DAG("t")
    data = dag.input("data")
    dag.output(a=dag.llm("fast", "{data.missing}", data=data, name="a"))
    result = await engine.run(dag, {"data": {"present": 1}})
    assert result.nodes["a"].error_type == "TemplateError"
    assert "cannot render" in (result.nodes["a"].error_message or "")


async def test_many_requests_share_one_engine(engine: Engine) -> None:
    dag = triage_dag()
    texts = [f"Order {i} was great. Thanks" for i in range(40)]
    results = await asyncio.gather(*(engine.run(dag, {"text": t}) for t in texts))
    assert all(r.ok for r in results)
    assert len({r.request_id for r in results}) == 40
    # 40 requests x (2 items + summary) calls, concurrently: much less than serial time
    assert sim(engine).calls == 40 * 3
    assert max(r.wall_time_s for r in results) < 40 * 0.3


async def test_a_step_whose_every_option_failed_is_escalated(
    clock: FakeClock, tmp_path: Path
) -> None:
    queue = tmp_path / "review" / "escalated.jsonl"
    dag = DAG("esc")
    dag.input("text")
    dag.output(a=dag.llm("fast", "[sim:fail] {text}", name="a"), b=dag.llm("fast", "{text}"))
    async with Engine(sim_config(), clock=clock, escalation=queue) as engine:
        result = await engine.run(dag, {"text": "help me"}, request_id="req-1")
    assert result.nodes["a"].fallbacks == 1  # fast failed, then smart failed too
    (line,) = queue.read_text().splitlines()
    record = json.loads(line)
    assert record["request_id"] == "req-1" and record["dag"] == "esc"
    assert record["models_tried"] == ["fast", "smart"]
    assert record["error_type"] == "ProviderHTTPError"
    assert record["messages"] == [{"role": "user", "content": "[sim:fail] help me"}]


def _steps(*, fail_first: bool) -> DAG:
    """Two llm steps and a tool, the first failing (retried, then an error) if asked."""
    dag = DAG("steps")
    text = dag.input("text")
    first = dag.llm("fast", "[sim:fail] {text}" if fail_first else "{text}", name="first")
    second = dag.llm("smart", "more on {a} and {text}", a=first, name="second")
    shouted = dag.tool(str.upper, second, name="shout")
    dag.output(first=first, shout=shouted, text=text)
    return dag


async def test_results_cross_processes_whole(engine: Engine) -> None:
    """Results are pickled by position (Ray sends one per record to the driver): every
    field comes back, for a run that ended well as for one that failed part-way."""
    import pickle

    ok = await engine.run(_steps(fail_first=False), {"text": "great"})
    failed = await engine.run(_steps(fail_first=True), {"text": "great"})
    assert ok.status is RunStatus.OK and ok.usage.total_tokens > 0
    assert failed.status is RunStatus.ERROR and failed.nodes["second"].error_message
    for result in (ok, failed):
        again = pickle.loads(pickle.dumps(result, protocol=5))
        assert again == result and again is not result
        assert type(again.status) is RunStatus and type(again.nodes["first"].status) is NodeStatus
