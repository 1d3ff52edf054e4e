"""What every embeddings protocol checks of a reply: one vector per input, in order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fanout.errors import InvalidResponse
from fanout.types import EmbedRequest, EmbedResponse, Usage

__all__ = ["embed_reply", "floats"]

Vector = tuple[float, ...]


def embed_reply(
    name: str,
    request: EmbedRequest,
    read: Callable[[], tuple[list[Vector], int, str]],
    headers: dict[str, str],
) -> EmbedResponse:
    """The response ``read()`` makes of a body (vectors, input tokens, model), or
    :class:`InvalidResponse` for a body that is not what the API promises."""
    try:
        vectors, tokens, model = read()
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidResponse(
            f"{name}: malformed embeddings response: missing or bad field {exc}", provider=name
        ) from None
    if len(vectors) != len(request.inputs):
        raise InvalidResponse(
            f"{name}: {len(vectors)} vectors for {len(request.inputs)} inputs", provider=name
        )
    return EmbedResponse(tuple(vectors), Usage(tokens, 0), model or request.model, headers)


def floats(values: Any) -> Vector:
    """A vector from a JSON list of numbers."""
    return tuple(float(x) for x in values)
