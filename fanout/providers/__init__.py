"""Provider clients: the ``Provider`` protocol, the OpenAI-compatible HTTP client (aiohttp),
and the Batch API seam with its OpenAI backend."""

from fanout.providers._base import Provider
from fanout.providers._batch_api import (
    ENDED_STATES,
    BatchAPI,
    BatchingProvider,
    BatchStatus,
    LineResult,
)
from fanout.providers._openai import OpenAIProvider
from fanout.providers._openai_batch import OpenAIBatchAPI
from fanout.providers._propagate import CALL_HEADERS

__all__ = [
    "CALL_HEADERS",
    "ENDED_STATES",
    "BatchAPI",
    "BatchStatus",
    "BatchingProvider",
    "LineResult",
    "OpenAIBatchAPI",
    "OpenAIProvider",
    "Provider",
]
