"""Azure OpenAI's embeddings: ``POST {endpoint}/openai/deployments/{deployment}/embeddings
?api-version=...`` with OpenAI's body and reply (up to 2,048 inputs a request)."""

from __future__ import annotations

import urllib.parse

import orjson

from fanout.providers._embed_reply import Vector, embed_reply, floats
from fanout.providers._jsonapi import JsonApiProvider
from fanout.providers._jsonpost import post_json
from fanout.types import EmbedRequest, EmbedResponse

__all__ = ["AzureEmbeddings"]


class AzureEmbeddings(JsonApiProvider):
    """The embeddings half of :class:`~fanout.providers.AzureOpenAIProvider`."""

    max_inputs = 2048  # Azure's cap on the inputs of one embeddings request
    api_version: str

    async def embed(
        self, request: EmbedRequest, *, timeout_s: float | None = None
    ) -> EmbedResponse:
        """Every input of ``request`` in one call to its deployment; vectors in order."""
        deployment = urllib.parse.quote(request.model, safe="")
        path = self._path(
            f"/openai/deployments/{deployment}/embeddings", {"api-version": self.api_version}
        )
        body: dict[str, object] = {"input": list(request.inputs), "encoding_format": "float"}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        data, headers = await post_json(self, path, orjson.dumps(body), timeout_s=timeout_s)

        def read() -> tuple[list[Vector], int, str]:
            rows = sorted(data["data"], key=lambda row: int(row["index"]))
            usage = data.get("usage") or {}
            tokens = int(usage.get("prompt_tokens") or usage.get("total_tokens") or 0)
            return [floats(row["embedding"]) for row in rows], tokens, str(data.get("model") or "")

        return embed_reply(self.name, request, read, headers)
