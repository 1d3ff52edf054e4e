"""LangChain on fanout, in process (``pip install 'fanout[langchain]'``).

- :class:`ChatFanout`: a fanout model alias as a LangChain chat model: every call goes
  through the engine's limiter, budget, retries, fallbacks and trace (no gateway);
  ``bind_tools`` and ``with_structured_output`` work, sync and async.
- :func:`fanout_tool`: a LangChain ``BaseTool`` as a fanout tool (``dag.llm(tools=[...])``).
- :func:`runnable_step`: a LangChain ``Runnable`` as a fanout tool step (``dag.tool(...)``).
"""

from fanout._extras import require

require("fanout.integrations.langchain", "langchain_core", extra="langchain")

from fanout.integrations.langchain._chat import ChatFanout  # noqa: E402  # after the check
from fanout.integrations.langchain._tools import fanout_tool, runnable_step  # noqa: E402

__all__ = ["ChatFanout", "fanout_tool", "runnable_step"]
