"""A Python client for ``fanout serve``'s pipeline API (``/v1/pipelines/NAME/runs``).

``Client`` (blocking) and ``AsyncClient``: typed results (:class:`PipelineRun`,
:class:`NodeReport`), node events streamed as they happen, deadlines, cancellation
that reaches the service, and retries of 429/503 after their ``Retry-After``. Needs
only httpx (a core dependency): no service extra. For the OpenAI-compatible routes
of the same server, use any OpenAI client (``openai.OpenAI(base_url=...)``).
"""

from fanout.client._client import AsyncClient, Client
from fanout.client._types import NodeReport, PipelineInfo, PipelineRun, ServiceError, UsageReport

__all__ = [
    "AsyncClient",
    "Client",
    "NodeReport",
    "PipelineInfo",
    "PipelineRun",
    "ServiceError",
    "UsageReport",
]
