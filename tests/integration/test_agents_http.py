"""Agents against the provider emulator on loopback: tool calls over HTTP, read back from the trace.

The emulator answers a request that carries tools with a tool call and answers
normally after a tool result, like a real provider; the transcript an agent run
returns can be rebuilt from its Parquet trace rows alone (``content = "full"``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import Emulator, start_emulator

from fanout import DAG, Engine, parse_config
from fanout.sim.server import EmulatorConfig
from fanout.trace import trace_files

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up.",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with start_emulator(EmulatorConfig()) as running:
        yield running


def chat(emulator: Emulator, messages: list[dict[str, object]]) -> dict[str, object]:
    body = {"model": "sim-small", "messages": messages, "tools": [TOOL]}
    response = httpx.post(f"{emulator.base_url}/chat/completions", json=body, timeout=10)
    response.raise_for_status()
    message: dict[str, object] = response.json()["choices"][0]["message"]
    message["finish_reason"] = response.json()["choices"][0]["finish_reason"]
    return message


@pytest.mark.parametrize(
    ("prompt", "arguments"),
    [
        ("What does lookup say about tea?", None),  # unscripted: one call to the named tool
        ('[sim:tools=lookup({"word": "tea"})] What is tea?', '{"word": "tea"}'),
    ],
)
def test_the_emulator_calls_a_tool_then_answers_after_its_result(
    emulator: Emulator, prompt: str, arguments: str | None
) -> None:
    messages: list[dict[str, object]] = [{"role": "user", "content": prompt}]
    first = chat(emulator, messages)
    assert first["finish_reason"] == "tool_calls" and first["content"] is None
    (call,) = first["tool_calls"]  # type: ignore[misc]
    assert call["type"] == "function" and call["function"]["name"] == "lookup"
    if arguments is not None:
        assert call["function"]["arguments"] == arguments
    messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    messages.append({"role": "tool", "tool_call_id": call["id"], "content": "a hot drink"})
    second = chat(emulator, messages)
    assert second["finish_reason"] == "stop" and "tool_calls" not in second
    assert second["content"] == "Based on lookup: a hot drink"


async def search(query: str) -> str:
    """Search."""
    return f"found {query}"


def define(word: str) -> str:
    """Define a word."""
    if word == "bad":
        raise ValueError("no such word")
    return f"{word}: a word"


async def test_an_agent_over_http_is_traced_so_its_transcript_reads_back(
    emulator: Emulator, tmp_path: Path
) -> None:
    cfg = parse_config(
        {
            "providers": {"emu": {"kind": "openai", "base_url": emulator.base_url}},
            "models": {"fast": {"provider": "emu", "model": "sim-small"}},
            "traces": {"content": "full"},
        }
    )
    script = (
        '[sim:tools=search({"query": "tea"});define({"word": "bad"})'
        '|define({"word": "tea"});define({"word": 7})]'
    )
    dag = DAG("agent")
    dag.input("q")
    dag.output(
        answer=dag.llm("fast", "{script} {q}", script=script, tools=[search, define], name="agent")
    )
    emulator.reset()
    traces = tmp_path / "traces"
    async with Engine(cfg, traces=traces) as engine:
        result = await engine.run(dag, {"q": "what is tea?"})

    assert result.ok, result.error_message
    node = result.nodes["agent"]
    transcript = node.transcript
    assert transcript is not None
    assert [m["role"] for m in transcript] == [
        *("user", "assistant", "tool", "tool", "assistant", "tool", "tool", "assistant"),
    ]
    tool_results = [m["content"] for m in transcript if m["role"] == "tool"]
    assert tool_results[0] == "found tea"
    assert tool_results[1] == "error: tool 'define' raised ValueError: no such word"
    assert tool_results[2] == "tea: a word"
    assert str(tool_results[3]).startswith("error: invalid arguments for define: word:")
    assert result.outputs["answer"] == transcript[-1]["content"]
    assert node.calls == emulator.stats()["accepted"] == 3  # model turns, over HTTP
    assert (node.tool_calls, node.tool_errors) == (4, 2)

    files = trace_files(traces)
    table = pa.concat_tables([pq.read_table(p) for p in files.parts])
    rows = [
        r
        for r in table.to_pylist()
        if r["record_type"] == "attempt" and r["trace_id"] == result.trace_id
    ]
    turns = sorted((r for r in rows if r["span_name"].startswith("chat ")), key=_start)
    tools = [r for r in rows if r["span_name"].startswith("execute_tool ")]
    assert len(turns) == 3 and len(tools) == 4  # every model turn and every tool call
    assert all(r["node_id"] == "agent" for r in rows)
    # The last turn's request is the conversation so far; its reply is the answer.
    rebuilt = json.loads(turns[-1]["input_text"])
    rebuilt.append({"role": "assistant", "content": turns[-1]["output_text"]})
    assert rebuilt == transcript
    # Tool rows: arguments in, result out; errors counted as error rows.
    assert sorted((r["tool_name"], r["input_text"], r["output_text"]) for r in tools) == sorted(
        (call["function"]["name"], call["function"]["arguments"], message["content"])
        for call, message in _calls_and_results(transcript)
    )
    assert sorted(r["status"] for r in tools) == ["error", "error", "ok", "ok"]


def _start(row: dict[str, object]) -> object:
    return row["start_time"]


def _calls_and_results(
    transcript: list[dict[str, object]],
) -> list[tuple[dict[str, dict[str, str]], dict[str, object]]]:
    calls = {
        call["id"]: call
        for message in transcript
        for call in message.get("tool_calls") or ()  # type: ignore[attr-defined]
    }
    return [(calls[m["tool_call_id"]], m) for m in transcript if m["role"] == "tool"]
