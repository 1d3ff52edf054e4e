"""Gemini's embeddings: ``POST /models/{model}:batchEmbedContents`` with one
``EmbedContentRequest`` (``content.parts[].text``, ``outputDimensionality``) per input,
up to 100 a call; ``embeddings[].values`` come back in order. The Gemini API's reply
carries no token count, so usage is read from ``usageMetadata.promptTokenCount`` (or
Vertex's ``statistics.tokenCount``) where present, else it is the estimate (chars/4)."""

from __future__ import annotations

import urllib.parse

import orjson

from fanout.providers._embed_reply import Vector, embed_reply, floats
from fanout.providers._jsonapi import JsonApiProvider
from fanout.providers._jsonpost import post_json
from fanout.types import EmbedRequest, EmbedResponse, estimate_text_tokens

__all__ = ["GeminiEmbeddings"]


class GeminiEmbeddings(JsonApiProvider):
    """The embeddings half of :class:`~fanout.providers.GeminiProvider`."""

    max_inputs = 100  # "at most 100 requests can be in one batch"

    async def embed(
        self, request: EmbedRequest, *, timeout_s: float | None = None
    ) -> EmbedResponse:
        """The inputs of ``request`` in one batchEmbedContents call; vectors in order."""
        model = request.model.removeprefix("models/")
        path = self._path(f"/models/{urllib.parse.quote(model, safe='')}:batchEmbedContents")
        extra = {"outputDimensionality": request.dimensions} if request.dimensions else {}
        body = {
            "requests": [
                {"model": f"models/{model}", "content": {"parts": [{"text": text}]}, **extra}
                for text in request.inputs
            ]
        }
        data, headers = await post_json(self, path, orjson.dumps(body), timeout_s=timeout_s)

        def read() -> tuple[list[Vector], int, str]:
            rows = data["embeddings"]
            usage = data.get("usageMetadata") or {}
            tokens = int(usage.get("promptTokenCount") or usage.get("totalTokenCount") or 0)
            if not tokens:
                tokens = sum(int((r.get("statistics") or {}).get("tokenCount") or 0) for r in rows)
            if not tokens:  # the Gemini API reports none: the estimate stands
                tokens = sum(max(1, estimate_text_tokens(t)) for t in request.inputs)
            return [floats(r["values"]) for r in rows], tokens, model

        return embed_reply(self.name, request, read, headers)
