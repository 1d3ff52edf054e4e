"""Haystack on fanout, in process (``pip install 'fanout[haystack]'``).

- :class:`FanoutGenerator`: a ``@component`` generator (``prompt`` in, ``replies`` and
  ``meta`` out, like Haystack's own generators) running a fanout model alias through the
  engine's limiter, budget, retries and trace; ``run_async`` for async pipelines.
- :func:`component_tool`: a Haystack component as a fanout tool (``dag.llm(tools=[...])``).
"""

from fanout._extras import require

require("fanout.integrations.haystack", "haystack", extra="haystack")

from fanout.integrations.haystack._generator import (  # noqa: E402  # after the check
    FanoutGenerator,
    component_tool,
)

__all__ = ["FanoutGenerator", "component_tool"]
