"""The emulator's embeddings on the other protocols, answering hash-seeded unit vectors
(:mod:`fanout.sim._embed`) under the same buckets, credentials and errors as their chat
routes:

- Azure OpenAI ``POST /openai/deployments/{d}/embeddings?api-version=``: OpenAI's body
  and reply, at most 2,048 inputs;
- Gemini ``POST /v1beta/models/{m}:batchEmbedContents``: at most 100 requests, each
  naming ``models/{m}``; ``embeddings[].values`` back, and no token count (as the
  Gemini API);
- Bedrock ``POST /model/{id}/invoke`` (SigV4): Amazon Titan Text Embeddings
  (``inputText``; ``dimensions`` 256, 512 or 1024; ``inputTextTokenCount`` back) and
  Cohere Embed (``texts``, at most 96, and ``input_type``; ``output_dimension`` on
  Embed v4 only; 1,024 floats a vector unless asked otherwise; the token count in the
  ``X-Amzn-Bedrock-Input-Token-Count`` header). Keys the model does not know are refused
  as Bedrock refuses them ("extraneous key").
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import Receive, Scope, Send

from fanout.sim._embed import sim_embeddings
from fanout.sim._wire import read_body, respond
from fanout.types import EmbedRequest, EmbedResponse

if TYPE_CHECKING:
    from fanout.sim._protocols import ProtocolRoutes
    from fanout.sim.server import _Emulator

__all__ = ["EmbedRoutes", "embed_route_of"]

_TITAN_KEYS = {"inputText", "dimensions", "normalize", "embeddingTypes"}
_COHERE_KEYS = {"texts", "images", "input_type", "truncate", "embedding_types",
                "output_dimension", "max_tokens"}  # fmt: skip
_INPUT_TYPES = {"search_document", "search_query", "classification", "clustering"}


def embed_route_of(path: str) -> tuple[str, str] | None:
    """``(protocol, model)`` of an embeddings path of Azure, Gemini or Bedrock, else ``None``."""
    if path.startswith("/openai/deployments/") and path.endswith("/embeddings"):
        return "azure", path[len("/openai/deployments/") : -len("/embeddings")]
    if path.startswith("/v1beta/models/") and path.endswith(":batchEmbedContents"):
        return "gemini", path[len("/v1beta/models/") : -len(":batchEmbedContents")]
    if path.startswith("/model/") and path.endswith("/invoke"):
        return "bedrock", urllib.parse.unquote(path[len("/model/") : -len("/invoke")])
    return None


def _extraneous(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise ValueError(f"Malformed input request: extraneous key [{extra[0]}] is not permitted")


def _texts(values: Any, limit: int, what: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not values:
        raise ValueError(f"{what} must be a non-empty list")
    if len(values) > limit:
        raise ValueError(f"{what}: at most {limit} can be in one request (got {len(values)})")
    if not all(isinstance(t, str) and t for t in values):
        raise ValueError(f"every one of {what} must be a non-empty string")
    return tuple(values)


def _gemini(body: dict[str, Any], model: str, dims: int) -> EmbedRequest:
    requests = body.get("requests")
    if isinstance(requests, list) and len(requests) > 100:
        raise ValueError("* BatchEmbedContentsRequest.requests: at most 100 requests can be in "
                         "one batch")  # fmt: skip
    texts: list[str] = []
    sizes = set()
    for one in requests if isinstance(requests, list) else ():
        if one.get("model") != f"models/{model}":
            raise ValueError(f"each request's model must be models/{model}")
        parts = (one.get("content") or {}).get("parts") or ()
        texts.append("".join(str(p.get("text") or "") for p in parts))
        sizes.add(one.get("outputDimensionality"))
    if len(sizes) > 1:
        raise ValueError("every request of a batch must ask one outputDimensionality")
    size = sizes.pop() if sizes else None
    return EmbedRequest(model, _texts(texts, 100, "requests"), int(size) if size else dims)


def _bedrock(body: dict[str, Any], model: str) -> EmbedRequest:
    """Titan's or Cohere's body; both models' vectors are 1,024 floats unless asked."""
    if "amazon.titan-embed" in model:
        _extraneous(body, _TITAN_KEYS)
        size = body.get("dimensions")
        if size is not None and size not in (256, 512, 1024):
            raise ValueError("dimensions must be one of 256, 512, 1024")
        return EmbedRequest(model, _texts([body.get("inputText")], 1, "inputText"), size or 1024)
    if "cohere.embed" in model:
        _extraneous(body, _COHERE_KEYS)
        if body.get("input_type") not in _INPUT_TYPES:
            raise ValueError(f"input_type must be one of {sorted(_INPUT_TYPES)}")
        size = body.get("output_dimension")
        if size is not None and "embed-v4" not in model:
            raise ValueError(f"output_dimension is not supported by {model} (Embed v4 only)")
        return EmbedRequest(model, _texts(body.get("texts"), 96, "texts"), size or 1024)
    raise ValueError(f"the model {model} does not support embeddings through InvokeModel")


def _reply(
    protocol: str, request: EmbedRequest, reply: EmbedResponse
) -> tuple[bytes, dict[str, str]]:
    tokens = reply.usage.input_tokens
    vectors = [list(v) for v in reply.vectors]
    if protocol == "azure":
        body: dict[str, object] = {
            "object": "list", "model": request.model,
            "data": [{"object": "embedding", "index": i, "embedding": v}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }  # fmt: skip
        return orjson.dumps(body), {}
    if protocol == "gemini":
        return orjson.dumps({"embeddings": [{"values": v} for v in vectors]}), {}
    count = {"x-amzn-bedrock-input-token-count": str(tokens)}
    if "amazon.titan-embed" in request.model:
        body = {"embedding": vectors[0], "inputTextTokenCount": tokens,
                "embeddingsByType": {"float": vectors[0]}}  # fmt: skip
        return orjson.dumps(body), count
    body = {"id": f"emb-{abs(hash(request.inputs)) % 10**8}", "response_type":
            "embeddings_floats", "texts": list(request.inputs), "embeddings": vectors}  # fmt: skip
    return orjson.dumps(body), count


class EmbedRoutes:
    """Answers Azure's, Gemini's and Bedrock's embeddings calls."""

    def __init__(self, emulator: _Emulator, protocols: ProtocolRoutes) -> None:
        self.emulator = emulator
        self.protocols = protocols

    def _request(self, protocol: str, model: str, body: Any) -> EmbedRequest:
        dims = self.emulator.config.embedding_dimensions
        if protocol == "gemini":
            return _gemini(body, model, dims)
        if protocol == "bedrock":
            return _bedrock(body, model)
        from fanout.sim.server import _embed_request  # the OpenAI body (no import cycle)

        return _embed_request({**body, "model": model}, self.emulator.config)

    async def handle(
        self, protocol: str, model: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        from fanout.sim._protocols import DIALECTS

        em, dialect = self.emulator, DIALECTS[protocol]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        key, refusal = self.protocols.credential(protocol, headers, query)
        if refusal is not None:
            await respond(send, *dialect.error(*refusal))
            return
        try:
            request = self._request(protocol, model, orjson.loads(await read_body(receive)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            await respond(send, *dialect.error("bad_request", f"bad request body: {exc}"))
            return
        reply = sim_embeddings(request)
        tokens = reply.usage.input_tokens
        req, tok = em._buckets(key or "anonymous", request.model)
        now = time.monotonic()
        wait = max(req.wait_s(1, now) if req is not None else 0.0,
                   tok.wait_s(tokens, now) if tok is not None else 0.0)  # fmt: skip
        if wait > 0:
            em.stats.limited += 1
            await respond(send, *dialect.error("rate_limited", "Rate limit exceeded.", wait))
            return
        if req is not None:
            req.take(1, now)
        if tok is not None:
            tok.take(tokens, now)
        em.stats.accepted += 1
        em.stats.embedding_requests += 1
        em.stats.embedding_inputs += len(request.inputs)
        em.stats.tokens += tokens
        if em.config.latency_ms > 0:
            await asyncio.sleep(em.config.latency_ms / 1000)
        await respond(send, 200, *_reply(protocol, request, reply))
