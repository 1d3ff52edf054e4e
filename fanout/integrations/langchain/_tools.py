"""LangChain tools and runnables as fanout tools and tool steps."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from fanout.dag import Tool
from fanout.integrations._host import schema_tool

__all__ = ["fanout_tool", "runnable_step"]


def fanout_tool(tool: BaseTool) -> Tool:
    """``tool`` for ``dag.llm(..., tools=[fanout_tool(tool)])``: its schema as LangChain
    states it; fanout runs it (``ainvoke``) when the model calls it."""
    function = convert_to_openai_tool(tool)["function"]

    async def run(**kwargs: object) -> object:
        result = await tool.ainvoke(kwargs)
        content = getattr(result, "content", result)  # a ToolMessage: its content
        return content if isinstance(content, str) else json.dumps(content, default=str)

    return schema_tool(
        tool.name, function.get("description", ""), function.get("parameters", {}), run
    )


def runnable_step(runnable: Runnable[object, object]) -> Callable[[object], Awaitable[object]]:
    """An async function running ``runnable`` on its input, for ``dag.tool(step, ref)``
    (or ``dag.map(dag.tool(step, DAG.item), over=...)``)."""

    async def step(value: object) -> object:
        return await runnable.ainvoke(value)

    step.__name__ = runnable.get_name()
    return step
