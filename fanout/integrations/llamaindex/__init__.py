"""LlamaIndex on fanout, in process (``pip install 'fanout[llamaindex]'``).

- :class:`FanoutLLM`: a fanout model alias as a LlamaIndex ``LLM`` (chat and complete,
  sync and async), its calls through the engine's limiter, budget, retries and trace.
- :func:`retriever_tool` / :func:`query_engine_tool`: a retriever or query engine as a
  fanout tool (``dag.llm(tools=[...])``).
"""

from fanout._extras import require

require("fanout.integrations.llamaindex", "llama_index.core", extra="llamaindex")

from fanout.integrations.llamaindex._llm import FanoutLLM  # noqa: E402  # after the check
from fanout.integrations.llamaindex._tools import query_engine_tool, retriever_tool  # noqa: E402

__all__ = ["FanoutLLM", "query_engine_tool", "retriever_tool"]
