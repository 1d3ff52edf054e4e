"""Tool calls that need approval (Python tools here; MCP tools in tests/integration): the
run pauses at the turn, a decision resumes it there, and no model call is repeated."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import sim_config

from fanout import DAG, ConfigError, Engine, RunStatus, Tool, mcp
from fanout.store import ReviewStore

SENT: list[str] = []


def send_email(to: str, body: str) -> str:
    """Send an e-mail."""
    SENT.append(f"{to}: {body}")
    return f"sent to {to}"


def word_count(text: str) -> int:
    """Count the words of a text."""
    return len(text.split())


SCRIPT = (
    '[sim:tools=word_count({"text": "a b c"});send_email({"to": "ann", "body": "hi"})'
    '|send_email({"to": "bob", "body": "2nd"})]'
)


def mailer() -> DAG:
    dag = DAG("mailer")
    dag.input("task")
    tools = [word_count, Tool.from_function(send_email, approval=True)]
    dag.output(answer=dag.llm("fast", "{task}", tools=tools, name="agent"))
    return dag


async def test_a_call_waits_for_approval_and_resumes_at_its_turn(tmp_path: Path) -> None:
    SENT.clear()
    async with Engine(sim_config(), store=tmp_path) as engine:
        first = await engine.run(mailer(), {"task": SCRIPT})
        assert first.status is RunStatus.WAITING_FOR_REVIEW
        assert first.nodes["agent"].calls == 1 and first.nodes["agent"].tool_calls == 1
        assert SENT == []  # word_count ran; the e-mail waits
        store = ReviewStore(tmp_path)
        (review,) = store.list(status="pending")
        assert review.value == {"tool": "send_email", "server": None,
                                "arguments": {"to": "ann", "body": "hi"}}  # fmt: skip
        store.decide(review.review_id, "approved", by="ann")

        second = await engine.resume(mailer(), review.review_id)
        # turn 2 calls send_email again: a new review for that call
        assert second.status is RunStatus.WAITING_FOR_REVIEW
        assert second.nodes["agent"].calls == 1  # the turn-2 request only
        assert SENT == ["ann: hi"]
        (again,) = store.list(status="pending")
        assert again.node_id == "agent:send_email@2.0"
        store.decide(again.review_id, "edited", value={"to": "bob", "body": "edited"})

        third = await engine.resume(mailer(), again.review_id)
    assert third.status is RunStatus.OK, third.error_message
    assert third.nodes["agent"].calls == 1  # the answer: nothing asked twice
    assert SENT == ["ann: hi", "bob: edited"]
    transcript = third.nodes["agent"].transcript
    assert transcript is not None
    tools = [m["content"] for m in transcript if m["role"] == "tool"]
    assert tools == ["3", "sent to ann", "sent to bob"]


async def test_a_rejected_call_tells_the_model_why(tmp_path: Path) -> None:
    SENT.clear()
    script = '[sim:tools=send_email({"to": "ann", "body": "hi"})]'
    async with Engine(sim_config(), store=tmp_path) as engine:
        first = await engine.run(mailer(), {"task": script})
        (review,) = ReviewStore(tmp_path).list(status="pending")
        ReviewStore(tmp_path).decide(review.review_id, "rejected", reason="not now", by="ann")
        done = await engine.resume(mailer(), review.review_id)
    assert first.status is RunStatus.WAITING_FOR_REVIEW
    assert done.status is RunStatus.OK and SENT == []
    assert done.nodes["agent"].tool_errors == 0  # the rejection is not a tool failure
    transcript = done.nodes["agent"].transcript or []
    assert [m["content"] for m in transcript if m["role"] == "tool"] == [
        "error: a person rejected this call of send_email by ann: not now"
    ]


def test_approval_in_a_map_body_and_bad_markers_are_config_errors() -> None:
    dag = DAG("mapped")
    items = dag.input("items")
    body = dag.llm("fast", "{item}", tools=[Tool.from_function(send_email, approval=True)])
    with pytest.raises(ConfigError, match="need approval; a map's items cannot pause"):
        dag.map(body, over=items)
    with pytest.raises(ConfigError, match="both included and excluded"):
        mcp("kv", include=["a"], exclude=["a"])
    with pytest.raises(ConfigError, match="approval names \\['b'\\], which the filter hides"):
        mcp("kv", include=["a"], approval=["b"])
    with pytest.raises(ConfigError, match="a list of tool names, not one string"):
        mcp("kv", include="lookup")
    with pytest.raises(ConfigError, match="letters, digits"):
        mcp("k v")
    with pytest.raises(ConfigError, match="listed twice"):
        DAG("twice").llm("fast", "x", tools=[mcp("kv"), mcp("kv")])
