"""LlamaIndex pipelines on FanoutLLM, in process, against the emulator over loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

from integrations_support import RPM, call_rows, emulator_config
from llama_index.core import Document, SummaryIndex
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from support import start_emulator

from fanout import DAG
from fanout.integrations import EngineHost
from fanout.integrations.llamaindex import FanoutLLM, query_engine_tool, retriever_tool
from fanout.sim.server import EmulatorConfig

DOCS = ["fanout schedules many calls under rate limits.", "tea is a drink made from leaves."]


async def _many(llm: FanoutLLM, count: int) -> list[str]:
    done = await asyncio.gather(*(llm.acomplete(f"Sentiment of: great {i}") for i in range(count)))
    return [r.text for r in done]


async def _chat(llm: FanoutLLM) -> str:
    reply = await llm.achat([ChatMessage(role=MessageRole.USER, content="Summarize: a b c")])
    return str(reply.message.content)


def test_query_engine_completions_and_tools_run_through_the_engine(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    with start_emulator(EmulatorConfig(requests_per_min=RPM)) as emu:
        with EngineHost(config=emulator_config(emu.base_url), traces=traces) as host:
            llm = FanoutLLM(model="fast", host=host)
            index = SummaryIndex.from_documents([Document(text=t) for t in DOCS])
            engine = index.as_query_engine(llm=llm)
            # a LlamaIndex synthesizer, on fanout (its sync query() leaks an event loop of
            # its own making, llama_index/core/async_utils.py, in a thread without one)
            answer = asyncio.run(engine.aquery("what is tea?"))
            texts = asyncio.run(_many(llm, 30))
            chat = asyncio.run(_chat(llm))
            dag = DAG("li-tools")
            question = dag.input("q")
            agent = dag.llm(
                "fast", "Look up {q}", tools=[retriever_tool(index.as_retriever())],
                name="agent",
            )  # fmt: skip
            asked = dag.llm("fast", "Ask {q}", tools=[query_engine_tool(engine)], name="asked")
            dag.output(agent=agent, asked=asked, q=question)
            result = host.run(dag, {"q": "tea"})
        stats = emu.stats()

    # LlamaIndex's synthesizer prompt (its context) reached the model through fanout
    assert str(answer).startswith("sim reply: Context information is below.")
    assert len(answer.source_nodes) == 2
    assert texts == ["positive"] * 30
    assert chat.startswith("Summary:")
    assert result.ok, result.error_message
    assert "Based on retrieve: fanout schedules" in str(result.outputs["agent"])
    assert "Based on query:" in str(result.outputs["asked"])
    # 1 query + 30 completions + 1 chat + agent (2 turns) + asked (2 turns + 1 inside)
    # every call answered once; the limiter paced the burst (a 429 or two while it learns
    # the bucket from the first replies' headers is retried, never paid)
    assert stats["accepted"] == 37 and stats["limited"] <= 3
    rows = call_rows(traces)
    assert len(rows) == 37 and {r["status"] for r in rows} == {"ok"}
