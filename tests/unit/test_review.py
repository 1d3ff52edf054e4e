"""Human review: a review step pauses its branch, a decision resumes the run from its
checkpoint (a real SQLite file) without running finished nodes again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from support import sim_config

from fanout import DAG, ConfigError, Engine, NodeStatus, RunStatus
from fanout.errors import ReviewBusy, ReviewNotFound
from fanout.guards import Reject
from fanout.store import ReviewStore


def shout(text: str) -> str:
    return text.upper()


def review_dag(finish: Callable[..., object] = shout) -> DAG:
    """draft -> review -> final (needs the person); ``other`` does not need them."""
    dag = DAG("reviewed")
    topic = dag.input("topic")
    draft = dag.llm("fast", "Write a line about {topic}.", name="draft")
    checked = dag.review(draft, instructions="Is it polite?", name="check")
    final = dag.tool(finish, checked, name="final", inline=finish is shout)
    other = dag.llm("fast", "Summarise {topic}.", name="other")
    dag.output(final=final, other=other, topic=topic)
    return dag


async def pause(tmp_path: Path) -> tuple[str, str]:
    """Run until the review; return (review id, the draft under review)."""
    async with Engine(sim_config(), store=tmp_path) as engine:
        result = await engine.run(review_dag(), {"topic": "tea"})
    assert result.status is RunStatus.WAITING_FOR_REVIEW
    assert result.nodes["check"].status is NodeStatus.WAITING_FOR_REVIEW
    assert result.nodes["final"].status is NodeStatus.WAITING_FOR_REVIEW
    assert result.nodes["other"].status is NodeStatus.OK  # the branch that needs no one ran
    assert result.outputs["other"] and result.outputs["final"] is None
    assert result.calls == 2 and result.error_type is None
    (review_id,) = result.reviews
    review = ReviewStore(tmp_path).get(review_id)
    assert (review.status, review.node_id) == ("pending", "check")
    assert review.instructions == "Is it polite?"
    assert isinstance(review.value, str) and review.value
    return review_id, review.value


async def test_a_review_pauses_its_branch_and_the_rest_finishes(tmp_path: Path) -> None:
    review_id, _ = await pause(tmp_path)
    pending = ReviewStore(tmp_path).list(status="pending")
    assert [r.review_id for r in pending] == [review_id]
    checkpoint = ReviewStore(tmp_path).load_checkpoint(pending[0].run_id)
    assert checkpoint.inputs == {"topic": "tea"}
    assert set(checkpoint.outputs) == {"draft", "other"}
    assert checkpoint.status == "waiting_for_review"


async def test_approving_resumes_from_the_checkpoint_without_repeating_a_call(
    tmp_path: Path,
) -> None:
    review_id, draft = await pause(tmp_path)
    ReviewStore(tmp_path).decide(review_id, "approved", by="ann")
    async with Engine(sim_config(), store=tmp_path) as engine:  # a fresh engine
        result = await engine.resume(review_dag(), review_id)
    assert result.status is RunStatus.OK, result.error_message
    assert result.calls == 0  # draft and other come from the checkpoint
    assert result.outputs["final"] == draft.upper()
    assert result.nodes["check"].status is NodeStatus.OK
    assert ReviewStore(tmp_path).load_checkpoint(result.request_id).status == "ok"
    with pytest.raises(ConfigError, match="already resumed"):
        async with Engine(sim_config(), store=tmp_path) as engine:
            await engine.resume(review_dag(), review_id)


async def test_one_paused_run_is_resumed_once_when_two_resumes_race(tmp_path: Path) -> None:
    review_id, draft = await pause(tmp_path)
    ReviewStore(tmp_path).decide(review_id, "approved", by="ann")
    started, gate, finished = asyncio.Event(), asyncio.Event(), []

    async def slow_shout(text: str) -> str:
        started.set()
        await gate.wait()
        finished.append(text)
        return text.upper()

    async with (
        Engine(sim_config(), store=tmp_path) as first,
        Engine(sim_config(), store=tmp_path) as second,
    ):
        running = asyncio.ensure_future(first.resume(review_dag(slow_shout), review_id))
        await started.wait()  # the first resume holds the run, inside its last step
        with pytest.raises(ReviewBusy, match="being resumed by another process"):
            await second.resume(review_dag(slow_shout), review_id)
        gate.set()
        result = await running
        with pytest.raises(ConfigError, match="already resumed"):  # and not run again
            await second.resume(review_dag(slow_shout), review_id)
    assert result.status is RunStatus.OK and result.outputs["final"] == draft.upper()
    assert finished == [draft]  # the step after the review ran once


async def test_a_crashed_resumers_claim_lapses(tmp_path: Path) -> None:
    review_id, draft = await pause(tmp_path)
    store = ReviewStore(tmp_path)
    store.decide(review_id, "approved")
    run_id = store.get(review_id).run_id
    store.claim_resume(run_id, "a-process-that-died", lease_s=3600)
    async with Engine(sim_config(), store=tmp_path) as engine:
        with pytest.raises(ReviewBusy):
            await engine.resume(review_dag(), review_id)
        store.claim_resume(run_id, "a-process-that-died", lease_s=0.0)  # its lease ran out
        result = await engine.resume(review_dag(), review_id)
    assert result.status is RunStatus.OK and result.outputs["final"] == draft.upper()


async def test_an_edit_replaces_the_value_under_review(tmp_path: Path) -> None:
    review_id, _ = await pause(tmp_path)
    review = ReviewStore(tmp_path).decide(review_id, "edited", value="a kinder line")
    assert review.edited_value == "a kinder line" and review.decided_at is not None
    async with Engine(sim_config(), store=tmp_path) as engine:
        result = await engine.resume(review_dag(), review_id)
    assert result.status is RunStatus.OK
    assert result.outputs["final"] == "A KINDER LINE"


async def test_a_rejection_fails_the_step_and_what_depends_on_it(tmp_path: Path) -> None:
    review_id, _ = await pause(tmp_path)
    ReviewStore(tmp_path).decide(review_id, "rejected", reason="rude", by="bob")
    async with Engine(sim_config(), store=tmp_path) as engine:
        result = await engine.resume(review_dag(), review_id)
    assert result.status is RunStatus.ERROR
    check = result.nodes["check"]
    assert (check.status, check.error_type) == (NodeStatus.ERROR, "ReviewRejected")
    assert "rejected by bob: rude" in (check.error_message or "")
    assert result.nodes["final"].error_type == "UpstreamFailed"
    assert result.outputs["other"]  # restored, not lost
    assert result.calls == 0


async def test_a_decision_is_final_and_a_pending_review_does_not_resume(tmp_path: Path) -> None:
    review_id, _ = await pause(tmp_path)
    async with Engine(sim_config(), store=tmp_path) as engine:
        with pytest.raises(ConfigError, match="still pending"):
            await engine.resume(review_dag(), review_id)
        with pytest.raises(ReviewNotFound, match="no review 'nope'"):
            await engine.resume(review_dag(), "nope")
        wrong = DAG("another")
        wrong.output(x=wrong.review(wrong.llm("fast", "{a}", name="a_step")))
        ReviewStore(tmp_path).decide(review_id, "approved")
        with pytest.raises(ConfigError, match="not 'another'"):
            await engine.resume(wrong, review_id)
    with pytest.raises(ConfigError, match="already approved"):
        ReviewStore(tmp_path).decide(review_id, "rejected")


async def test_a_dag_with_a_review_needs_a_store(tmp_path: Path) -> None:
    async with Engine(sim_config()) as engine:
        with pytest.raises(ConfigError, match="set data_dir"):
            await engine.run(review_dag(), {"topic": "tea"})
    with pytest.raises(ConfigError, match="needs a ref"):
        DAG("d").review("a literal")  # type: ignore[arg-type]


async def test_a_run_that_reaches_no_review_keeps_no_checkpoint(tmp_path: Path) -> None:
    dag = DAG("routed")
    topic = dag.input("topic")
    draft = dag.llm("fast", "{topic}", name="draft")
    checked = dag.review(draft, name="check")
    chosen = dag.route(
        lambda t: "auto" if t == "easy" else "person", topic, {"auto": draft, "person": checked}
    )
    dag.output(answer=chosen)
    async with Engine(sim_config(), store=tmp_path) as engine:
        result = await engine.run(dag, {"topic": "easy"})
    assert result.status is RunStatus.OK and result.reviews == ()
    assert ReviewStore(tmp_path).list() == []


def never(answer: object) -> Reject:
    return Reject("not good enough")


def failing_dag() -> DAG:
    """``draft`` always escalates (its guard rejects every answer, on every model)."""
    dag = DAG("escalating")
    dag.input("topic")
    draft = dag.llm("fast", "{topic}", guards=[never], review_on_failure=True, name="draft")
    dag.output(final=dag.tool(shout, draft, name="final", inline=True))
    return dag


async def test_an_escalation_pauses_as_a_review_and_an_edit_supplies_the_output(
    tmp_path: Path,
) -> None:
    async with Engine(sim_config(), store=tmp_path) as engine:
        paused = await engine.run(failing_dag(), {"topic": "tea"})
        assert paused.status is RunStatus.WAITING_FOR_REVIEW
        assert paused.nodes["draft"].status is NodeStatus.WAITING_FOR_REVIEW
        assert paused.nodes["draft"].fallbacks == 1  # every option was tried first
        (review_id,) = paused.reviews
        review = ReviewStore(tmp_path).get(review_id)
        assert isinstance(review.value, dict) and review.value["error_type"] == "GuardRejected"
        ReviewStore(tmp_path).decide(review_id, "edited", value="written by hand")
        done = await engine.resume(failing_dag(), review_id)
    assert done.status is RunStatus.OK
    assert done.outputs["final"] == "WRITTEN BY HAND" and done.calls == 0


async def test_an_approved_escalation_runs_the_step_once_more_then_fails(tmp_path: Path) -> None:
    async with Engine(sim_config(), store=tmp_path) as engine:
        (review_id,) = (await engine.run(failing_dag(), {"topic": "tea"})).reviews
        ReviewStore(tmp_path).decide(review_id, "approved")
        done = await engine.resume(failing_dag(), review_id)
    assert done.status is RunStatus.ERROR and done.reviews == ()
    assert done.nodes["draft"].error_type == "GuardRejected" and done.calls > 0


def test_a_map_body_cannot_pause_for_review() -> None:
    dag = DAG("mapped")
    items = dag.input("items")
    body = dag.llm("fast", "{item}", review_on_failure=True)
    with pytest.raises(ConfigError, match="review the map's output"):
        dag.map(body, over=items)
