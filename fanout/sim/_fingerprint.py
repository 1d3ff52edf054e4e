"""Stable request fingerprints and the per-request attempt counts of the simulated provider."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

from fanout.types import ChatRequest

__all__ = ["Attempts", "Fingerprints", "uniforms"]

_MAX_SHAPES = 1024
_SEP = "\x1f"
_UNIT = 2.0**-53


def uniforms(key: int, salt: int, count: int) -> list[float]:
    """``count`` uniform draws in [0, 1), fixed by ``(key, salt)``.

    A few draws from a hash cost a tenth of seeding a ``random.Random`` (which
    fills a 624-word state), and these are taken on every faulty or jittered call.
    """
    seed = (key & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big") + (salt & 0xFFFFFFFF).to_bytes(4, "big")
    raw = hashlib.blake2b(seed, digest_size=8 * count).digest()
    return [(int.from_bytes(raw[i : i + 8], "big") >> 11) * _UNIT for i in range(0, 8 * count, 8)]


class Fingerprints:
    """A 64-bit blake2b fingerprint of everything that shapes a reply.

    Model, ``max_tokens``, every message, the tools and the response schema. The
    same request gives the same fingerprint in every process (unlike ``hash()``).
    Tool and schema digests are cached by object identity, since the engine
    passes the same objects call after call and serialising a schema per call
    would cost more than the rest of the call; a cached object is kept alive so
    its id is not reused. A schema mutated after its first use keeps its old digest.
    """

    __slots__ = ("_seed", "_shapes")

    def __init__(self, seed: int = 0) -> None:
        self._seed = str(seed)
        self._shapes: dict[int, tuple[object, bytes]] = {}

    def of(self, request: ChatRequest) -> int:
        parts = [self._seed, request.model, str(request.max_tokens)]
        for message in request.messages:
            parts.append(message["role"])
            content = message.get("content") or ""
            parts.append(content if isinstance(content, str) else json.dumps(content))
            calls = message.get("tool_calls")
            if calls:
                parts.append(json.dumps(calls, sort_keys=True, default=str))
            call_id = message.get("tool_call_id")
            if call_id:
                parts.append(call_id)
        digest = hashlib.blake2b(_SEP.join(parts).encode("utf-8", "surrogatepass"), digest_size=8)
        for tool in request.tools:
            digest.update(self._shape(tool, tool.name, tool.description, tool.parameters))
        if request.response_schema is not None:
            digest.update(self._shape(request.response_schema, request.response_schema))
        return int.from_bytes(digest.digest(), "big")

    def _shape(self, obj: object, *described: object) -> bytes:
        hit = self._shapes.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        text = json.dumps(described, sort_keys=True, default=str)
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        if len(self._shapes) >= _MAX_SHAPES:
            self._shapes.clear()
        self._shapes[id(obj)] = (obj, digest)
        return digest


class Attempts:
    """How many times each fingerprint was seen, for the most recent ``limit`` of them."""

    __slots__ = ("_counts", "_limit")

    def __init__(self, limit: int = 65_536) -> None:
        self._counts: OrderedDict[int, int] = OrderedDict()
        self._limit = limit

    def next(self, key: int) -> int:
        """The 0-based attempt number of this sighting of ``key``."""
        counts = self._counts
        attempt = counts.get(key, 0)
        counts[key] = attempt + 1
        counts.move_to_end(key)
        if len(counts) > self._limit:
            counts.popitem(last=False)
        return attempt
