"""LlamaIndex retrievers and query engines as fanout tools."""

from __future__ import annotations

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever

from fanout.dag import Tool
from fanout.integrations._host import schema_tool

__all__ = ["query_engine_tool", "retriever_tool"]

_QUERY = {
    "type": "object",
    "properties": {"query": {"type": "string", "description": "what to look up"}},
    "required": ["query"],
}


def retriever_tool(
    retriever: BaseRetriever, *, name: str = "retrieve", description: str = ""
) -> Tool:
    """A tool the model calls with ``query``; its result is the retrieved nodes' text."""

    async def run(query: str) -> str:
        nodes = await retriever.aretrieve(query)
        return "\n\n".join(n.node.get_content() for n in nodes)

    return schema_tool(name, description or "Retrieve passages for a query.", _QUERY, run)


def query_engine_tool(
    engine: BaseQueryEngine, *, name: str = "query", description: str = ""
) -> Tool:
    """A tool the model calls with ``query``; its result is the query engine's answer."""

    async def run(query: str) -> str:
        return str(await engine.aquery(query))

    return schema_tool(name, description or "Answer a question from the index.", _QUERY, run)
