"""The optional per-protocol answers the engine asks a provider before a call: its own
estimate of a media part, what is wrong with a part it would otherwise take, how many
inputs one embeddings request of a model may carry, and why a model cannot embed."""

from __future__ import annotations

from fanout.providers._base import EmbeddingProvider
from fanout.providers._media_tokens import media_estimator
from fanout.types import ChatRequest

__all__ = ["embed_max_inputs", "embed_refusal", "media_estimator", "part_problem"]


def part_problem(provider: object, request: ChatRequest) -> str | None:
    """Why ``provider`` cannot send one of the request's content parts as it is (an image
    by URL to a protocol that reads bytes, a format it does not take), else ``None``."""
    check = getattr(provider, "part_problem", None)
    if not callable(check):
        return None
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                problem = check(part)
                if problem:
                    return str(problem)
    return None


def embed_max_inputs(provider: EmbeddingProvider, model: str) -> int:
    """The inputs one embeddings request of ``model`` may carry on ``provider``
    (``max_inputs_for(model)`` where a protocol's models differ, else ``max_inputs``)."""
    per_model = getattr(provider, "max_inputs_for", None)
    if callable(per_model):
        return int(per_model(model))
    return int(provider.max_inputs)


def embed_refusal(provider: object, model: str) -> str | None:
    """Why ``model`` cannot embed on ``provider`` (no embeddings API, or a model family
    the protocol has no embeddings body for), else ``None``."""
    if not isinstance(provider, EmbeddingProvider):
        return "its provider has no embeddings API"
    check = getattr(provider, "embed_problem", None)
    problem = check(model) if callable(check) else None
    return str(problem) if problem else None



