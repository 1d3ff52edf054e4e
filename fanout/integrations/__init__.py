"""Adapters that put fanout under LangChain, LlamaIndex, Haystack and Prefect, in process.

Each framework is an extra (``pip install 'fanout[langchain]'``, ...) and its module is
imported only when used: ``import fanout`` never needs one. :class:`EngineHost` owns an
:class:`fanout.Engine` on an event loop of its own, so sync and async framework code
share one set of limiters, budgets and traces.
"""

from fanout.integrations._host import ChatReply, EngineHost, schema_tool

__all__ = ["ChatReply", "EngineHost", "schema_tool"]
