"""What the simulated model's embeddings are: unit vectors seeded by a hash of the text
(the same text, model and size always give the same vector), and their usage."""

from __future__ import annotations

import hashlib
import math
import random

from fanout.types import EmbedRequest, EmbedResponse, Usage, estimate_text_tokens

__all__ = ["DEFAULT_DIMENSIONS", "sim_embeddings", "sim_vector"]

DEFAULT_DIMENSIONS = 16  # small: tests and demos read the vectors back


def sim_vector(text: str, model: str, dimensions: int) -> tuple[float, ...]:
    """A deterministic unit vector of ``dimensions`` floats for ``text``."""
    seed = hashlib.blake2b(f"{model}\x00{text}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(seed, "big"))
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return tuple(v / norm for v in values)


def sim_embeddings(request: EmbedRequest) -> EmbedResponse:
    """Every input's vector, and usage as the simulated model counts it (chars/4 each)."""
    dimensions = request.dimensions or DEFAULT_DIMENSIONS
    vectors = tuple(sim_vector(text, request.model, dimensions) for text in request.inputs)
    tokens = sum(max(1, estimate_text_tokens(text)) for text in request.inputs)
    return EmbedResponse(vectors, Usage(tokens, 0), request.model)
