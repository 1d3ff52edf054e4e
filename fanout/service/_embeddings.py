"""``POST /v1/embeddings`` of the gateway: a model alias's embeddings, through the engine.

The request's inputs run as one ``dag.embed`` step (the engine packs them into requests
within the model's limits, its limiter and the caller's budget), and the answer is
OpenAI's: one ``embedding`` object per input, in order, floats or base64 of float32
(little-endian, as the OpenAI SDK asks by default), and the usage.
"""

from __future__ import annotations

import array
import base64
import sys
from typing import Any

import orjson

from fanout.dag import DAG
from fanout.service._openai_wire import OpenAIError

__all__ = ["embedding_body", "embedding_dag", "parse_embedding"]

_DAGS: dict[tuple[str, int | None], DAG] = {}


def parse_embedding(raw: bytes) -> tuple[str, list[str], int | None, str]:
    """(model, inputs, dimensions, encoding format) of a request body, or a 400."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise OpenAIError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise OpenAIError(400, "the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError(400, "'model' is required: a model alias", param="model")
    given = body.get("input")
    inputs = [given] if isinstance(given, str) else given
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
        raise OpenAIError(
            400, "'input' must be a string or a non-empty list of strings (token arrays are "
            "not taken: send the text)", param="input",
        )  # fmt: skip
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
        raise OpenAIError(400, "'dimensions' must be a whole number >= 1", param="dimensions")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise OpenAIError(
            400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
        )
    return model, inputs, dimensions, str(encoding)


def embedding_dag(alias: str, dimensions: int | None) -> DAG:
    """The one-step DAG that embeds a list of texts on ``alias`` (built once per alias)."""
    key = (alias, dimensions)
    dag = _DAGS.get(key)
    if dag is None:
        dag = DAG(f"gateway-embeddings-{alias}")
        texts = dag.input("texts", type=list[str])
        dag.output(vectors=dag.embed(alias, texts, dimensions=dimensions, name="embed"))
        _DAGS[key] = dag
    return dag


def _encoded(vector: list[float], encoding: str) -> Any:
    if encoding == "float":
        return vector
    packed = array.array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def embedding_body(
    model: str, vectors: list[list[float]], input_tokens: int, encoding: str
) -> dict[str, object]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encoded(v, encoding)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": input_tokens, "total_tokens": input_tokens},
    }
