"""Provider clients: the ``Provider`` protocol and the OpenAI-compatible HTTP client (aiohttp)."""

from fanout.providers._base import Provider
from fanout.providers._openai import OpenAIProvider

__all__ = ["OpenAIProvider", "Provider"]
