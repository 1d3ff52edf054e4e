"""Provider clients: the ``Provider`` protocol (and its optional seams: streaming,
embeddings, content kinds), one client per wire protocol (OpenAI-compatible, Anthropic,
Azure OpenAI, Bedrock Converse, Gemini) over one HTTP transport (aiohttp), and the
Batch API seam with its OpenAI and Anthropic backends."""

from fanout.providers._anthropic import AnthropicProvider
from fanout.providers._anthropic_batch import AnthropicBatchAPI
from fanout.providers._azure import AzureOpenAIProvider
from fanout.providers._base import (
    EmbeddingProvider,
    Provider,
    StreamingProvider,
    ToolCallListener,
    accepted_modalities,
)
from fanout.providers._batch_api import (
    ENDED_STATES,
    BatchAPI,
    BatchingProvider,
    BatchStatus,
    LineResult,
)
from fanout.providers._bedrock import BedrockProvider
from fanout.providers._build import build_http_provider
from fanout.providers._gemini import GeminiProvider
from fanout.providers._openai import OpenAIProvider
from fanout.providers._openai_batch import OpenAIBatchAPI
from fanout.providers._parts import ImageSource, image_source, parts_of
from fanout.providers._propagate import CALL_HEADERS
from fanout.providers._seams import embed_max_inputs, embed_refusal, media_estimator, part_problem
from fanout.providers._sse import SSEParser

__all__ = [
    "CALL_HEADERS",
    "ENDED_STATES",
    "AnthropicBatchAPI",
    "AnthropicProvider",
    "AzureOpenAIProvider",
    "BatchAPI",
    "BatchStatus",
    "BatchingProvider",
    "BedrockProvider",
    "EmbeddingProvider",
    "GeminiProvider",
    "ImageSource",
    "LineResult",
    "OpenAIBatchAPI",
    "OpenAIProvider",
    "Provider",
    "SSEParser",
    "StreamingProvider",
    "ToolCallListener",
    "accepted_modalities",
    "build_http_provider",
    "embed_max_inputs",
    "embed_refusal",
    "image_source",
    "media_estimator",
    "part_problem",
    "parts_of",
]
