"""LangChain pipelines on ChatFanout, in process, against the emulator over loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from integrations_support import RPM, call_rows, emulator_config
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from pydantic import BaseModel
from support import start_emulator

from fanout import DAG
from fanout.errors import ConfigError
from fanout.integrations import EngineHost
from fanout.integrations.langchain import ChatFanout, fanout_tool, runnable_step
from fanout.sim.server import EmulatorConfig


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class Verdict(BaseModel):
    label: str
    score: int


def test_chain_tools_and_structured_output_run_through_the_engine(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    with start_emulator(EmulatorConfig(requests_per_min=RPM)) as emu:
        host = EngineHost(config=emulator_config(emu.base_url), traces=traces)
        with host:
            llm = ChatFanout(model="fast", host=host)
            chain = ChatPromptTemplate.from_messages([("user", "Sentiment of: {text}")]) | llm
            texts = [f"great product {i}" for i in range(40)]
            replies = chain.batch([{"text": t} for t in texts], config={"max_concurrency": 40})
            # a tool round trip: the model asks, LangChain runs the tool, the model answers
            bound = llm.bind_tools([weather])
            asked = bound.invoke("[sim:tools=weather({\"city\": \"Paris\"})] weather?")
            call = asked.tool_calls[0]
            answer = bound.invoke(
                [
                    HumanMessage("[sim:tools=weather({\"city\": \"Paris\"})] weather?"),
                    asked,
                    ToolMessage(weather.invoke(call["args"]), tool_call_id=call["id"]),
                ]
            )
            verdict = asyncio.run(llm.with_structured_output(Verdict).ainvoke("judge this"))
            with pytest.raises(ConfigError, match="'nope' is not configured"):
                ChatFanout(model="nope", host=host).invoke("x")
        stats = emu.stats()

    assert [r.content for r in replies] == ["positive"] * 40
    assert all(r.usage_metadata and r.usage_metadata["total_tokens"] > 0 for r in replies)
    assert call["name"] == "weather" and call["args"] == {"city": "Paris"}
    assert "sunny in Paris" in str(answer.content)
    assert isinstance(verdict, Verdict)
    # 43 calls, each answered once; fanout's limiter kept the burst under the limit
    assert stats["accepted"] == 43 and stats["limited"] == 0
    rows = call_rows(traces)
    assert len(rows) == 43 and {r["status"] for r in rows} == {"ok"}
    request_ids = {r.response_metadata["fanout_request_id"] for r in replies}
    assert request_ids <= {r["trace_id"] for r in rows}


def test_langchain_tools_and_runnables_inside_a_fanout_dag(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    with start_emulator(EmulatorConfig(requests_per_min=RPM)) as emu:
        with EngineHost(config=emulator_config(emu.base_url), traces=traces) as host:
            llm = ChatFanout(model="fast", host=host)
            summarize = ChatPromptTemplate.from_template("Summarize: {text}") | llm
            dag = DAG("lc-tools")
            city = dag.input("city")
            agent = dag.llm(
                "fast", "Use weather for {city}", tools=[fanout_tool(weather)], name="agent"
            )
            dag.output(agent=agent, summary=dag.tool(runnable_step(summarize), {"text": city}))
            result = host.run(dag, {"city": "Oslo"})
        stats = emu.stats()

    assert result.ok, result.error_message
    assert "Based on weather: sunny in" in str(result.outputs["agent"])
    assert str(getattr(result.outputs["summary"], "content", "")).startswith("Summary:")
    assert result.nodes["agent"].tool_calls == 1
    # the agent's two turns and the runnable's call, all through one engine
    assert stats["accepted"] == 3 and stats["limited"] == 0
    assert len(call_rows(traces)) == 3
