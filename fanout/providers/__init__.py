"""Provider clients: the ``Provider`` protocol, one client per wire protocol (OpenAI-compatible,
Anthropic, Azure OpenAI, Bedrock Converse, Gemini) over one HTTP transport (aiohttp), and
the Batch API seam with its OpenAI backend."""

from fanout.providers._anthropic import AnthropicProvider
from fanout.providers._azure import AzureOpenAIProvider
from fanout.providers._base import Provider
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

__all__ = [
    "ENDED_STATES",
    "AnthropicProvider",
    "AzureOpenAIProvider",
    "BatchAPI",
    "BatchStatus",
    "BatchingProvider",
    "BedrockProvider",
    "GeminiProvider",
    "LineResult",
    "OpenAIBatchAPI",
    "OpenAIProvider",
    "Provider",
    "build_http_provider",
]
