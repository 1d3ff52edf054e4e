"""Guards: output guards retry, fall back and escalate; repairs; input guards mask and refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel
from support import sim_config

from fanout import DAG, ConfigError, Engine, NodeStatus
from fanout.batch import fingerprint
from fanout.guards import Accept, Reject, Repair, mask_pii, max_prompt_chars
from fanout.sim import FakeClock, FunctionProvider
from fanout.trace import SPAN_SCHEMA
from fanout.types import ChatRequest


def no_links(answer: object) -> Reject | None:
    assert isinstance(answer, str)
    return Reject("do not include links") if "http" in answer else None


def last_user(request: ChatRequest) -> str:
    return str([m for m in request.messages if m["role"] == "user"][-1]["content"])


def guarded_dag(**options: object) -> DAG:
    dag = DAG("guarded")
    dag.input("text")
    dag.output(reply=dag.llm("fast", "Reply to: {text}", name="reply", **options))  # type: ignore[arg-type]
    return dag


async def test_a_rejection_is_retried_with_its_reason_then_falls_back_then_escalates(
    clock: FakeClock, tmp_path: Path
) -> None:
    provider = FunctionProvider("sim", lambda request: "see http://example.com")
    queue = tmp_path / "escalated.jsonl"
    dag = guarded_dag(guards=[no_links], max_output_retries=1)
    async with Engine(
        sim_config(), providers={"sim": provider}, clock=clock, escalation=queue
    ) as engine:
        result = await engine.run(dag, {"text": "hi"}, request_id="req-9")

    node = result.nodes["reply"]
    assert node.status is NodeStatus.ERROR and node.error_type == "GuardRejected"
    assert "no_links" in str(node.error_message) and "do not include links" in str(
        node.error_message
    )
    # fast: the answer and one retry; then smart (the fallback): the same
    assert [r.model for r in provider.requests] == ["sim-small"] * 2 + ["sim-large"] * 2
    assert last_user(provider.requests[0]) == "Reply to: hi"
    retry = last_user(provider.requests[1])
    assert "rejected by the no_links check" in retry and "do not include links" in retry
    assert last_user(provider.requests[2]) == "Reply to: hi"  # the fallback starts afresh
    assert node.fallbacks == 1 and node.guard_rejections == 4 and node.calls == 4
    (line,) = queue.read_text().splitlines()
    record = json.loads(line)
    assert record["request_id"] == "req-9" and record["models_tried"] == ["fast", "smart"]
    assert record["error_type"] == "GuardRejected"
    assert "do not include links" in record["error_message"]


async def test_a_retry_that_passes_the_guard_is_the_answer(clock: FakeClock) -> None:
    def reply(request: ChatRequest) -> str:
        return "plain answer" if "rejected" in last_user(request) else "http://spam"

    provider = FunctionProvider("sim", reply)
    async with Engine(sim_config(), providers={"sim": provider}, clock=clock) as engine:
        result = await engine.run(guarded_dag(guards=[no_links]), {"text": "hi"})
    assert result.ok and result.outputs["reply"] == "plain answer"
    assert result.nodes["reply"].guard_rejections == 1 and result.nodes["reply"].fallbacks == 0
    assert provider.calls == 2


async def test_the_fallback_model_answers_when_the_primary_keeps_being_rejected(
    clock: FakeClock,
) -> None:
    def reply(request: ChatRequest) -> str:
        return "http://spam" if request.model == "sim-small" else "clean answer"

    provider = FunctionProvider("sim", reply)
    async with Engine(sim_config(), providers={"sim": provider}, clock=clock) as engine:
        result = await engine.run(guarded_dag(guards=[no_links]), {"text": "hi"})
    assert result.ok and result.outputs["reply"] == "clean answer"
    node = result.nodes["reply"]
    assert node.fallbacks == 1 and node.guard_rejections == 3  # 1 answer + 2 retries on fast


class Ticket(BaseModel):
    label: str
    score: int


async def test_repairs_change_the_output_and_guards_run_in_order(engine: Engine) -> None:
    seen: list[str] = []

    async def shout(answer: object) -> Repair:  # async guards are awaited
        assert isinstance(answer, str)
        return Repair(answer.upper())

    def record(answer: object) -> Accept:
        seen.append(str(answer))
        return Accept()

    result = await engine.run(guarded_dag(guards=[shout, record]), {"text": "hello there"})
    assert result.ok and result.outputs["reply"] == "SIM REPLY: REPLY TO: HELLO THERE"
    assert seen == ["SIM REPLY: REPLY TO: HELLO THERE"]  # the next guard sees the repair
    assert result.nodes["reply"].guard_repairs == 1

    def clamp(ticket: object) -> Repair:
        assert isinstance(ticket, Ticket)
        return Repair({"label": ticket.label, "score": 5})  # validated into a Ticket

    result = await engine.run(guarded_dag(output=Ticket, guards=[clamp]), {"text": "x"})
    assert result.ok
    ticket = result.outputs["reply"]
    assert isinstance(ticket, Ticket) and ticket.score == 5


async def test_a_guard_that_raises_or_answers_nonsense_fails_the_node_clearly(
    engine: Engine,
) -> None:
    def broken(answer: object) -> None:
        raise ValueError("boom")

    def sloppy(answer: object) -> bool:
        return True

    result = await engine.run(guarded_dag(guards=[broken]), {"text": "x"})
    node = result.nodes["reply"]
    assert node.error_type == "ToolError" and "'broken' raised ValueError: boom" in str(
        node.error_message
    )
    result = await engine.run(guarded_dag(guards=[sloppy]), {"text": "x"})
    assert "Reject(reason)" in str(result.nodes["reply"].error_message)

    def wrong_repair(answer: object) -> Repair:
        return Repair(42)

    result = await engine.run(guarded_dag(guards=[wrong_repair]), {"text": "x"})
    assert "return Repair(text)" in str(result.nodes["reply"].error_message)


async def test_an_input_guard_masks_pii_before_the_call(clock: FakeClock) -> None:
    provider = FunctionProvider("sim", lambda request: "noted")
    dag = guarded_dag(input_guards=[mask_pii])
    async with Engine(sim_config(), providers={"sim": provider}, clock=clock) as engine:
        result = await engine.run(
            dag, {"text": "mail ann.lee@example.com or call +44 20 7946 0958 re order 12"}
        )
    assert result.ok and result.nodes["reply"].guard_repairs == 1
    (request,) = provider.requests
    assert last_user(request) == "Reply to: mail [email] or call [phone] re order 12"


async def test_a_refused_input_makes_no_provider_call(clock: FakeClock, tmp_path: Path) -> None:
    provider = FunctionProvider("sim", lambda request: "ok")
    dag = DAG("refuse")
    dag.input("text")
    dag.output(
        big=dag.llm("fast", "Reply to: {text}", name="big", input_guards=[max_prompt_chars(20)]),
        small=dag.llm("fast", "Hi", name="small", input_guards=[max_prompt_chars(20)]),
    )
    queue = tmp_path / "escalated.jsonl"
    async with Engine(
        sim_config(), providers={"sim": provider}, clock=clock, escalation=queue
    ) as engine:
        result = await engine.run(dag, {"text": "a long message " * 5})
    big = result.nodes["big"]
    assert big.status is NodeStatus.ERROR and big.error_type == "InputRefused"
    assert "'max_prompt_chars' refused the prompt" in str(big.error_message)
    assert "over the limit of 20" in str(big.error_message)
    assert big.calls == 0 and big.guard_rejections == 1
    assert result.nodes["small"].status is NodeStatus.OK
    assert [last_user(r) for r in provider.requests] == ["Hi"]  # only the small prompt went out
    assert not queue.exists()  # a refusal is not escalated: nothing was asked of a model


async def test_guard_outcomes_are_rows_of_the_parquet_trace(
    clock: FakeClock, tmp_path: Path
) -> None:
    def reply(request: ChatRequest) -> str:
        return "plain" if "rejected" in last_user(request) else "http://spam"

    provider = FunctionProvider("sim", reply)
    dag = guarded_dag(guards=[no_links], input_guards=[mask_pii])
    async with Engine(
        sim_config(), providers={"sim": provider}, clock=clock, traces=tmp_path / "traces"
    ) as engine:
        result = await engine.run(dag, {"text": "mail a@b.io"})
    assert result.ok
    parts = sorted((tmp_path / "traces").rglob("*.parquet"))
    table = pa.concat_tables([pq.read_table(p, schema=SPAN_SCHEMA) for p in parts])
    rows = [r for r in table.to_pylist() if r["guard_outcome"] is not None]
    got = sorted((r["span_name"], r["guard_outcome"], r["status"]) for r in rows)
    assert got == [
        ("guard input mask_pii", "repair", "ok"),
        ("guard output no_links", "accept", "ok"),
        ("guard output no_links", "reject", "error"),
    ]
    assert all(r["record_type"] == "attempt" and r["node_id"] == "reply" for r in rows)
    rejected = next(r for r in rows if r["guard_outcome"] == "reject")
    assert rejected["error_type"] == "GuardRejected"
    assert rejected["error_message"] == "do not include links"
    assert {r["tool_name"] for r in rows} == {"mask_pii", "no_links"}
    chats = [r for r in table.to_pylist() if str(r["span_name"]).startswith("chat")]
    assert len(chats) == 2 and all(r["guard_outcome"] is None for r in chats)


def test_bad_guards_are_config_errors_naming_the_node() -> None:
    dag = DAG("bad")
    dag.input("text")
    with pytest.raises(ConfigError, match=r"node 'n'.*guards entry 'oops' is not callable"):
        dag.llm("fast", "{text}", name="n", guards=["oops"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"node 'm'.*input_guards must be a list"):
        dag.llm("fast", "{text}", name="m", input_guards=mask_pii)  # type: ignore[arg-type]

    class Pick(BaseModel):
        choice: str

    with pytest.raises(ConfigError, match="schemas returns tool calls"):
        dag.llm("fast", "{text}", name="t", tools=[Pick], guards=[no_links])
    with pytest.raises(ConfigError, match="positive whole number"):
        max_prompt_chars(0)


def test_guards_are_part_of_a_nodes_fingerprint() -> None:
    cfg = sim_config()

    def hashes(**options: object) -> object:
        plan = guarded_dag(**options).validate(models=cfg.models.keys())
        return fingerprint(plan, cfg, None)["nodes"]

    base = hashes()
    assert hashes() == base
    assert hashes(guards=[no_links]) != base
    assert hashes(input_guards=[max_prompt_chars(100)]) != hashes(
        input_guards=[max_prompt_chars(200)]
    )
    assert hashes(input_guards=[mask_pii]) == hashes(input_guards=[mask_pii])


async def test_an_escalated_step_carries_the_masked_messages(
    clock: FakeClock, tmp_path: Path
) -> None:
    provider = FunctionProvider("sim", lambda request: "http://spam")
    queue = tmp_path / "escalated.jsonl"
    dag = guarded_dag(guards=[no_links], input_guards=[mask_pii], max_output_retries=0)
    async with Engine(
        sim_config(), providers={"sim": provider}, clock=clock, escalation=queue
    ) as engine:
        result = await engine.run(dag, {"text": "from bo@corp.example"})
    assert result.nodes["reply"].error_type == "GuardRejected" and provider.calls == 2
    (line,) = queue.read_text().splitlines()
    assert json.loads(line)["messages"] == [{"role": "user", "content": "Reply to: from [email]"}]
    assert "bo@corp" not in queue.read_text()
