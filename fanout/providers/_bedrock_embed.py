"""Bedrock's embeddings, through InvokeModel (``POST /model/{modelId}/invoke``, signed as
Converse is): Amazon Titan Text Embeddings (``inputText``, one input a call,
``dimensions`` 256, 512 or 1024 on v2; ``embedding`` and ``inputTextTokenCount`` back)
and Cohere Embed (``texts``, up to 96 a call, ``input_type`` search_document;
``embeddings`` back, the input tokens in the ``X-Amzn-Bedrock-Input-Token-Count``
header). Any other model is refused when a run starts: no embeddings body is known."""

from __future__ import annotations

import asyncio
import urllib.parse

import orjson

from fanout.providers._embed_reply import Vector, embed_reply, floats
from fanout.providers._jsonapi import JsonApiProvider
from fanout.providers._jsonpost import post_json
from fanout.types import EmbedRequest, EmbedResponse, Usage, estimate_text_tokens

__all__ = ["TOKEN_COUNT_HEADER", "BedrockEmbeddings"]

TOKEN_COUNT_HEADER = "x-amzn-bedrock-input-token-count"
_TITAN = "amazon.titan-embed"
_COHERE = "cohere.embed"


def _family(model: str) -> str | None:
    """``"titan"`` or ``"cohere"`` for a model id (a cross-region ``us.`` prefix, an ARN's
    last part allowed), else ``None``."""
    name = model.rsplit("/", 1)[-1]
    for prefix, family in ((_TITAN, "titan"), (_COHERE, "cohere")):
        if name.startswith(prefix) or f".{prefix}" in name:
            return family
    return None


class BedrockEmbeddings(JsonApiProvider):
    """The embeddings half of :class:`~fanout.providers.BedrockProvider`."""

    max_inputs = 96  # the most any family takes (Cohere); Titan takes one

    def _signed(self, path: str, body: bytes) -> dict[str, str]:
        raise NotImplementedError  # BedrockProvider signs

    def max_inputs_for(self, model: str) -> int:
        return 96 if _family(model) == "cohere" else 1

    def embed_problem(self, model: str) -> str | None:
        if _family(model) is None:
            return (
                f"Bedrock embeds with Amazon Titan ({_TITAN}-*) or Cohere ({_COHERE}-*) "
                f"models, and {model!r} is neither"
            )
        return None

    async def embed(
        self, request: EmbedRequest, *, timeout_s: float | None = None
    ) -> EmbedResponse:
        """The inputs of ``request``: one Cohere call, or a Titan call per input."""
        if _family(request.model) == "cohere":
            return await self._cohere(request, timeout_s)
        replies = await asyncio.gather(
            *(self._titan(request, text, timeout_s) for text in request.inputs)
        )
        tokens = sum(r.usage.input_tokens for r in replies)
        vectors = tuple(v for r in replies for v in r.vectors)
        return EmbedResponse(vectors, Usage(tokens, 0), request.model, replies[-1].headers)

    async def _invoke(
        self, model: str, payload: dict[str, object], timeout_s: float | None
    ) -> tuple[object, dict[str, str]]:
        path = self._path(f"/model/{urllib.parse.quote(model, safe='')}/invoke")
        body = orjson.dumps(payload)
        return await post_json(
            self, path, body, headers=self._signed(path, body), timeout_s=timeout_s
        )

    async def _titan(
        self, request: EmbedRequest, text: str, timeout_s: float | None
    ) -> EmbedResponse:
        payload: dict[str, object] = {"inputText": text}
        if request.dimensions is not None:
            payload["dimensions"] = request.dimensions
        data, headers = await self._invoke(request.model, payload, timeout_s)
        one = EmbedRequest(request.model, (text,), request.dimensions)

        def read() -> tuple[list[Vector], int, str]:
            assert isinstance(data, dict)
            return [floats(data["embedding"])], int(data["inputTextTokenCount"]), request.model

        return embed_reply(self.name, one, read, headers)

    async def _cohere(self, request: EmbedRequest, timeout_s: float | None) -> EmbedResponse:
        payload: dict[str, object] = {"texts": list(request.inputs),
                                      "input_type": "search_document"}  # fmt: skip
        if request.dimensions is not None:  # Embed v4's; v3 has one size
            payload["output_dimension"] = request.dimensions
        data, headers = await self._invoke(request.model, payload, timeout_s)

        def read() -> tuple[list[Vector], int, str]:
            assert isinstance(data, dict)
            rows = data["embeddings"]
            if isinstance(rows, dict):  # asked by embedding_types: {"float": [...]}
                rows = rows["float"]
            tokens = int(headers.get(TOKEN_COUNT_HEADER) or 0) or sum(
                max(1, estimate_text_tokens(t)) for t in request.inputs
            )
            return [floats(row) for row in rows], tokens, request.model

        return embed_reply(self.name, request, read, headers)
