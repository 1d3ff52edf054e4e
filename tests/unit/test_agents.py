"""Agents: the tool-calling loop of an llm node, on the simulated provider's scripted tool calls."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Mapping

import pytest
from support import sim_config

from fanout import DAG, ConfigError, Engine, NodeStatus, RunStatus, Tool
from fanout.dag import make_tool
from fanout.sim import FakeClock
from fanout.types import Message, estimate_prompt_tokens

NOTES = {"tea": "green tea steeps two minutes", "bread": "bread needs 500 g flour"}


async def search_notes(query: str) -> str:
    """Search the notes by topic."""
    await asyncio.sleep(0)
    return NOTES.get(query, "no note")


def lookup_unit(name: str) -> str:
    """A unit's definition."""
    return {"kcal": "1 kcal = 4.184 kJ"}.get(name, "unknown unit")


def broken_tool(x: int) -> str:
    """Always fails."""
    raise ValueError(f"cannot handle {x}")


def shout(text: str) -> str:
    return text.upper()


def agent_dag(script: str, *tools: object, max_steps: int = 5) -> DAG:
    """An agent over input ``q``; the sim's tool ``script`` is a bound value (JSON braces
    in the template itself would be read as template fields)."""
    dag = DAG("agent")
    dag.input("q")
    answer = dag.llm(
        "fast",
        "{script} {q}",
        script=script,
        tools=list(tools) or [search_notes, lookup_unit],  # type: ignore[arg-type]
        max_steps=max_steps,
        name="agent",
    )
    dag.output(answer=answer, echo=dag.tool(shout, answer, inline=True, name="after"))
    return dag


def roles(transcript: list[Message] | None) -> list[str]:
    assert transcript is not None
    return [m["role"] for m in transcript]


async def test_two_turn_loop_gives_the_transcript_and_final_answer(engine: Engine) -> None:
    dag = agent_dag('[sim:tools=search_notes({"query": "tea"})]')

    result = await engine.run(dag, {"q": "how long for tea?"})

    assert result.ok, result.error_message
    node = result.nodes["agent"]
    transcript = node.transcript
    assert roles(transcript) == ["user", "assistant", "tool", "assistant"]
    assert transcript is not None
    call = transcript[1]["tool_calls"][0]
    assert call["function"] == {"name": "search_notes", "arguments": '{"query": "tea"}'}
    assert transcript[2] == {
        "role": "tool",
        "tool_call_id": call["id"],
        "content": "green tea steeps two minutes",
    }
    answer = result.outputs["answer"]
    assert (
        answer == transcript[3]["content"] == "Based on search_notes: green tea steeps two minutes"
    )
    assert node.calls == 2 and node.status is NodeStatus.OK
    assert json.loads(json.dumps(result.to_dict()))["nodes"]["agent"]["transcript"] == transcript


async def test_a_script_runs_turn_by_turn_then_answers(engine: Engine) -> None:
    dag = agent_dag(
        '[sim:tools=search_notes({"query": "tea"});lookup_unit({"name": "kcal"})'
        '|search_notes({"query": "bread"})]'
    )
    result = await engine.run(dag, {"q": "x"})
    assert result.ok, result.error_message
    transcript = result.nodes["agent"].transcript
    assert roles(transcript) == [
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert transcript is not None
    assert [c["function"]["name"] for c in transcript[1]["tool_calls"]] == [  # type: ignore[index]
        "search_notes",
        "lookup_unit",
    ]
    assert [m["content"] for m in transcript if m["role"] == "tool"] == [
        "green tea steeps two minutes",
        "1 kcal = 4.184 kJ",
        "bread needs 500 g flour",
    ]
    assert "Based on lookup_unit: 1 kcal = 4.184 kJ" in str(result.outputs["answer"])
    assert result.nodes["agent"].calls == 3


async def test_tool_calls_of_one_turn_run_concurrently(clock: FakeClock) -> None:
    both = asyncio.Barrier(2)  # each tool waits here for the other: serial calls never pass
    order: list[str] = []

    async def first(x: int) -> str:
        """One."""
        order.append("first started")
        await both.wait()
        order.append("first ended")
        return "one"

    async def second(x: int) -> str:
        """Two."""
        order.append("second started")
        await both.wait()
        order.append("second ended")
        return "two"

    dag = agent_dag('[sim:tools=first({"x": 1});second({"x": 2})]', first, second)
    async with Engine(sim_config(), clock=clock) as engine:
        result = await engine.run(dag, {"q": "x"}, deadline_s=60)  # a fake minute

    assert result.ok, result.error_message
    assert order[:2] == ["first started", "second started"]
    assert [
        m["content"] for m in result.nodes["agent"].transcript or [] if m["role"] == "tool"
    ] == [
        "one",
        "two",
    ]


async def test_sync_tools_run_in_threads_off_the_loop_and_together(engine: Engine) -> None:
    loop_thread = threading.get_ident()
    both = threading.Barrier(2, timeout=30)  # broken (an error) if they ran one after another
    threads: list[int] = []

    def left(x: int) -> str:
        """Left."""
        threads.append(threading.get_ident())
        both.wait()
        return "left done"

    def right(x: int) -> str:
        """Right."""
        threads.append(threading.get_ident())
        both.wait()
        return "right done"

    dag = agent_dag('[sim:tools=left({"x": 1});right({"x": 2})]', left, right)
    result = await engine.run(dag, {"q": "x"})

    assert result.ok, result.error_message
    tool_results = [
        m["content"] for m in result.nodes["agent"].transcript or [] if m["role"] == "tool"
    ]
    assert tool_results == ["left done", "right done"]
    assert len(set(threads)) == 2 and loop_thread not in threads


async def test_tool_errors_and_bad_arguments_go_back_to_the_model(engine: Engine) -> None:
    dag = agent_dag(
        '[sim:tools=lookup_unit({"name": 5});lookup_unit({"name": )|broken_tool({"x": 3})'
        '|lookup_unit({"name": "kcal"})]',
        lookup_unit,
        broken_tool,
    )
    result = await engine.run(dag, {"q": "x"})

    assert result.ok, result.error_message
    node = result.nodes["agent"]
    assert node.calls == 4  # the loop went on after each error
    assert (node.tool_calls, node.tool_errors) == (4, 3)
    tool_results = [str(m["content"]) for m in node.transcript or [] if m["role"] == "tool"]
    assert tool_results[0].startswith("error: invalid arguments for lookup_unit: name:")
    assert tool_results[1].startswith("error: invalid arguments for lookup_unit:")  # bad JSON
    assert tool_results[2] == "error: tool 'broken_tool' raised ValueError: cannot handle 3"
    assert tool_results[3] == "1 kcal = 4.184 kJ"
    assert "Based on lookup_unit: 1 kcal = 4.184 kJ" in str(result.outputs["answer"])


async def test_max_steps_ends_the_loop_with_its_status_and_keeps_the_transcript(
    engine: Engine,
) -> None:
    script = '[sim:tools=lookup_unit({"name": "a"})|lookup_unit({"name": "b"})|lookup_unit({})]'
    dag = agent_dag(script, lookup_unit, max_steps=2)

    result = await engine.run(dag, {"q": "x"})

    assert result.status is RunStatus.ERROR
    assert result.error_type == "MaxStepsExceeded"
    node = result.nodes["agent"]
    assert node.status is NodeStatus.MAX_STEPS_EXCEEDED
    assert node.error_type == "MaxStepsExceeded" and "max_steps=2" in (node.error_message or "")
    assert node.calls == 3  # two tool turns ran; the third asked for more
    assert roles(node.transcript) == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert result.outputs["answer"] is None
    assert result.nodes["after"].error_type == "UpstreamFailed"
    as_json = json.loads(json.dumps(result.to_dict()))
    assert as_json["nodes"]["agent"]["status"] == "max_steps_exceeded"
    assert len(as_json["nodes"]["agent"]["transcript"]) == 6


async def test_a_deadline_that_ends_the_loop_keeps_the_transcript(clock: FakeClock) -> None:
    async def slow_search(query: str) -> str:
        """Takes a fake hour."""
        await clock.sleep(3600)
        return "too late"

    dag = agent_dag('[sim:tools=slow_search({"query": "tea"})]', slow_search)
    async with Engine(sim_config(), clock=clock) as engine:
        result = await engine.run(dag, {"q": "x"}, deadline_s=5)

    assert result.status is RunStatus.DEADLINE_EXCEEDED
    node = result.nodes["agent"]
    assert node.status is NodeStatus.CANCELLED
    assert roles(node.transcript) == ["user", "assistant"]  # the call it was waiting on


def test_max_steps_must_be_a_positive_whole_number() -> None:
    dag = DAG("bad")
    dag.input("q")
    for index, bad in enumerate((0, -1, 1.5, True)):
        with pytest.raises(ConfigError, match=rf"node 'a{index}': max_steps must be a whole"):
            dag.llm("fast", "{q}", tools=[lookup_unit], max_steps=bad, name=f"a{index}")  # type: ignore[arg-type]


async def test_an_llm_node_without_python_tools_has_no_transcript(engine: Engine) -> None:
    dag = DAG("plain")
    dag.input("q")
    dag.output(a=dag.llm("fast", "hello {q}", name="a"))
    result = await engine.run(dag, {"q": "x"})
    assert result.ok and result.nodes["a"].transcript is None


def crunch(n: int) -> int:
    """Sum of squares below n (CPU-bound)."""
    return sum(i * i for i in range(n))


async def test_cpu_tools_go_to_the_cpu_runner_others_do_not() -> None:
    sent: list[tuple[str, float]] = []

    async def runner(
        fn: Callable[..., object],
        args: tuple[object, ...],
        kwargs: Mapping[str, object],
        cpus: float,
    ) -> object:
        sent.append((getattr(fn, "__name__", "?"), cpus))
        return await asyncio.to_thread(fn, *args, **kwargs)

    tools = (Tool.from_function(crunch, cpu=True, num_cpus=2), lookup_unit)
    dag = agent_dag('[sim:tools=crunch({"n": 4});lookup_unit({"name": "kcal"})]', *tools)
    async with Engine(sim_config(), cpu_runner=runner) as engine:
        result = await engine.run(dag, {"q": "x"})

    assert result.ok, result.error_message
    assert sent == [("crunch", 2.0)]
    tool_results = [
        m["content"] for m in result.nodes["agent"].transcript or [] if m["role"] == "tool"
    ]
    assert tool_results == ["14", "1 kcal = 4.184 kJ"]


async def test_a_tool_over_its_timeout_goes_back_to_the_model_as_an_error(engine: Engine) -> None:
    release = threading.Event()

    def stuck(x: int) -> str:
        """Never answers in time."""
        release.wait(30)
        return "late"

    dag = agent_dag('[sim:tools=stuck({"x": 1})]', Tool.from_function(stuck, timeout_s=0.05))
    try:
        result = await engine.run(dag, {"q": "x"})
    finally:
        release.set()
    assert result.ok, result.error_message
    transcript = result.nodes["agent"].transcript or []
    assert transcript[2]["content"] == "error: tool 'stuck' took longer than timeout_s=0.05"


def test_tool_options_are_checked() -> None:
    async def fetch(url: str) -> str:
        """Fetch."""
        return url

    with pytest.raises(ConfigError, match=r"cpu=True needs a plain function"):
        Tool.from_function(fetch, cpu=True)
    with pytest.raises(ConfigError, match=r"num_cpus must be positive"):
        Tool.from_function(crunch, cpu=True, num_cpus=0)
    with pytest.raises(ConfigError, match=r"timeout_s must be positive"):
        Tool.from_function(crunch, timeout_s=0)


async def test_a_budget_that_ends_the_loop_keeps_the_transcript(engine: Engine) -> None:
    script = '[sim:tools=lookup_unit({"name": "kcal"})]'
    dag = agent_dag(script, lookup_unit)
    # Room for the first turn's reservation (prompt estimate + max_tokens) and a little
    # more: the second turn's reservation is larger and comes on top of what the first used.
    prompt: list[Message] = [{"role": "user", "content": f"{script} x"}]
    first = estimate_prompt_tokens(prompt, (make_tool(lookup_unit, where="t").spec,)) + 256
    result = await engine.run(dag, {"q": "x"}, budget_tokens=first + 5)

    assert result.status is RunStatus.BUDGET_EXCEEDED
    node = result.nodes["agent"]
    assert node.error_type == "BudgetExceeded" and node.calls == 1
    assert roles(node.transcript) == ["user", "assistant", "tool"]
