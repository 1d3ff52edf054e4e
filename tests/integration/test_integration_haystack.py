"""Haystack pipelines on FanoutGenerator, in process, against the emulator over loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

from haystack import Document, Pipeline
from haystack.components.builders import PromptBuilder
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from integrations_support import RPM, call_rows, emulator_config
from support import start_emulator

from fanout import DAG
from fanout.integrations import EngineHost
from fanout.integrations.haystack import FanoutGenerator, component_tool
from fanout.sim.server import EmulatorConfig


def _pipeline(host: EngineHost) -> Pipeline:
    pipe = Pipeline()
    pipe.add_component("prompt", PromptBuilder("Sentiment of: {{text}}", required_variables="*"))
    pipe.add_component("llm", FanoutGenerator("fast", host))
    pipe.connect("prompt", "llm")
    return pipe


async def _run_async(pipe: Pipeline, count: int) -> list[dict[str, object]]:
    runs = (pipe.run_async({"prompt": {"text": f"great {i}"}}) for i in range(count))
    return list(await asyncio.gather(*runs))


def test_pipelines_and_component_tools_run_through_the_engine(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    store = InMemoryDocumentStore()
    store.write_documents([Document(content="tea is a drink"), Document(content="fanout")])
    with start_emulator(EmulatorConfig(requests_per_min=RPM)) as emu:
        with EngineHost(config=emulator_config(emu.base_url), traces=traces) as host:
            sync = _pipeline(host).run({"prompt": {"text": "great product"}})
            many = asyncio.run(_run_async(_pipeline(host), 30))  # FanoutGenerator.run_async
            search = component_tool(InMemoryBM25Retriever(store), name="search",
                                    description="Search the documents.")  # fmt: skip
            dag = DAG("hs-tools")
            dag.input("script")
            dag.output(answer=dag.llm("fast", "{script} tea?", tools=[search], name="agent"))
            result = host.run(dag, {"script": '[sim:tools=search({"query": "tea"})]'})
        stats = emu.stats()

    assert sync["llm"]["replies"] == ["positive"]
    assert sync["llm"]["meta"][0]["usage"]["total_tokens"] > 0
    assert [r["llm"]["replies"] for r in many] == [["positive"]] * 30  # type: ignore[index]
    assert result.ok, result.error_message
    assert str(result.outputs["answer"]).startswith("Based on search:")
    transcript = result.nodes["agent"].transcript or []
    tool_results = [str(m.get("content")) for m in transcript if m["role"] == "tool"]
    assert len(tool_results) == 1 and "tea is a drink" in tool_results[0]  # BM25's documents
    assert stats["accepted"] == 33 and stats["limited"] == 0  # 1 + 30 + the agent's 2 turns
    rows = call_rows(traces)
    assert len(rows) == 33 and {r["status"] for r in rows} == {"ok"}
    request_id = sync["llm"]["meta"][0]["fanout_request_id"]
    assert request_id in {r["trace_id"] for r in rows}
