"""Provider clients: the ``Provider`` protocol (and its optional seams: streaming,
embeddings, content kinds), the OpenAI-compatible HTTP client (aiohttp), and the Batch
API seam with its OpenAI backend."""

from fanout.providers._base import (
    EmbeddingProvider,
    Provider,
    StreamingProvider,
    accepted_modalities,
)
from fanout.providers._batch_api import (
    ENDED_STATES,
    BatchAPI,
    BatchingProvider,
    BatchStatus,
    LineResult,
)
from fanout.providers._openai import OpenAIProvider
from fanout.providers._openai_batch import OpenAIBatchAPI
from fanout.providers._parts import ImageSource, image_source, parts_of
from fanout.providers._propagate import CALL_HEADERS
from fanout.providers._sse import SSEParser

__all__ = [
    "CALL_HEADERS",
    "ENDED_STATES",
    "BatchAPI",
    "BatchStatus",
    "BatchingProvider",
    "EmbeddingProvider",
    "ImageSource",
    "LineResult",
    "OpenAIBatchAPI",
    "OpenAIProvider",
    "Provider",
    "SSEParser",
    "StreamingProvider",
    "accepted_modalities",
    "image_source",
    "parts_of",
]
