"""Deterministic JSON values valid against a JSON Schema, as pydantic and tool specs write them.

Covers what pydantic emits: ``object`` (every property filled), ``string``
(``enum``, ``format``, ``minLength``/``maxLength``), ``integer``/``number``
(inclusive and exclusive bounds, integer ``multipleOf``), ``boolean``, ``null``,
``array`` (``items`` with 1-3 elements within ``minItems``/``maxItems``,
``uniqueItems``, ``prefixItems``), ``anyOf``/``oneOf`` (first non-null option),
``allOf`` (merged), ``$ref`` into ``$defs``/``definitions``, ``const`` and
``default`` (used when a schema names no type). ``pattern`` is not honoured.
Enums of sentiment labels, and string properties named like ``sentiment`` or
``label``, get the same keyword sentiment as plain replies.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Callable

from fanout.sim._text import sentiment, subject
from fanout.types import JSONSchema

__all__ = ["generate", "invalid_document"]

_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
_SENTIMENTS = frozenset({"positive", "negative", "neutral"})
_SENTIMENT_HINTS = ("sentiment", "label", "polarity", "tone", "mood")
# Past this depth a recursive schema (a tree of itself) stops growing: optional
# properties are left out, arrays take their minimum and unions take null.
_GROW_DEPTH = 6
_MAX_DEPTH = 64
_FORMATS: dict[str, Callable[[random.Random], str]] = {
    "date-time": lambda rng: f"2026-01-{rng.randint(1, 28):02d}T12:00:00Z",
    "date": lambda rng: f"2026-01-{rng.randint(1, 28):02d}",
    "time": lambda rng: f"{rng.randint(0, 23):02d}:00:00",
    "duration": lambda rng: f"PT{rng.randint(1, 59)}S",
    "email": lambda rng: f"{_WORDS[rng.randrange(len(_WORDS))]}@example.com",
    "uri": lambda rng: f"https://example.com/{_WORDS[rng.randrange(len(_WORDS))]}",
    "hostname": lambda rng: f"{_WORDS[rng.randrange(len(_WORDS))]}.example.com",
    "ipv4": lambda rng: f"192.0.2.{rng.randint(1, 254)}",
    "ipv6": lambda rng: f"2001:db8::{rng.randint(1, 0xFFFF):x}",
    "uuid": lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
}


def generate(schema: JSONSchema, rng: random.Random, *, text: str = "") -> object:
    """A value valid against ``schema``; strings take their words from ``text`` (the prompt)."""
    return _Generator(schema, rng, text).value(schema, "", 0)


def invalid_document(schema: JSONSchema, value: object) -> str:
    """JSON text that fails validation against ``schema``: ``value`` without a required field.

    A schema with no required field gets prose instead, which is not JSON at all.
    """
    root = schema
    ref = root.get("$ref")
    if isinstance(ref, str):
        root = _resolve(schema, ref)
    required = root.get("required")
    if isinstance(value, dict) and isinstance(required, list) and required:
        broken = {k: v for k, v in value.items() if k != required[0]}
        return json.dumps(broken)
    return "Sorry, I cannot answer that in JSON."


class _Generator:
    __slots__ = ("_rng", "_root", "_sentiment", "_text", "_words")

    def __init__(self, root: JSONSchema, rng: random.Random, text: str) -> None:
        self._root = root
        self._rng = rng
        self._text = subject(text)
        self._words: list[str] | None = None
        self._sentiment: str | None = None

    def value(self, schema: JSONSchema, hint: str, depth: int) -> object:
        if depth > _MAX_DEPTH:
            return None
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return self.value(_resolve(self._root, ref), hint, depth + 1)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return self._enum(enum)
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            return self.value(self._merge(all_of), hint, depth + 1)
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return self.value(self._choose(options, depth), hint, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            if "default" in schema:
                return schema["default"]
            if "properties" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, hint, depth)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return self._rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema, hint)

    def _object(self, schema: JSONSchema, depth: int) -> dict[str, object]:
        props = schema.get("properties")
        required = schema.get("required")
        needed = required if isinstance(required, list) else ()
        out: dict[str, object] = {}
        if isinstance(props, dict):
            for name, sub in props.items():
                if not isinstance(sub, dict):
                    continue
                if depth >= _GROW_DEPTH and name not in needed:
                    continue
                out[name] = self.value(sub, name, depth + 1)
        return out

    def _array(self, schema: JSONSchema, hint: str, depth: int) -> list[object]:
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):  # a tuple: its length is fixed by the prefix
            return [self.value(p, hint, depth + 1) for p in prefix if isinstance(p, dict)]
        low = _int(schema.get("minItems")) or 0
        high = _int(schema.get("maxItems"))
        if depth >= _GROW_DEPTH:
            count = low
        else:
            most = 3 if high is None else min(high, 3)
            least = max(low, min(1, most))
            count = self._rng.randint(least, max(least, most))
        items = schema.get("items")
        sub: JSONSchema = items if isinstance(items, dict) else {}
        if not schema.get("uniqueItems"):
            return [self.value(sub, hint, depth + 1) for _ in range(count)]
        out: list[object] = []
        seen: set[str] = set()
        for _ in range(count * 4):
            if len(out) >= count:
                break
            item = self.value(sub, hint, depth + 1)
            key = json.dumps(item, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(item)
        return out

    def _integer(self, schema: JSONSchema) -> int:
        low: int | None = None
        high: int | None = None
        minimum, maximum = _num(schema.get("minimum")), _num(schema.get("maximum"))
        ex_min, ex_max = _num(schema.get("exclusiveMinimum")), _num(schema.get("exclusiveMaximum"))
        if minimum is not None:
            low = math.ceil(minimum)
        if ex_min is not None:
            low = max(low if low is not None else -(2**63), math.floor(ex_min) + 1)
        if maximum is not None:
            high = math.floor(maximum)
        if ex_max is not None:
            high = min(high if high is not None else 2**63, math.ceil(ex_max) - 1)
        if low is None:
            low = 0 if high is None else min(0, high)
        if high is None:
            high = low + 10
        if high < low:
            return low
        value = self._rng.randint(low, high)
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            up = -(-value // step) * step
            value = up if up <= high else (value // step) * step
        return value

    def _number(self, schema: JSONSchema) -> float:
        low, high = _num(schema.get("minimum")), _num(schema.get("maximum"))
        ex_low = ex_high = False
        ex_min, ex_max = _num(schema.get("exclusiveMinimum")), _num(schema.get("exclusiveMaximum"))
        if ex_min is not None and (low is None or ex_min >= low):
            low, ex_low = ex_min, True
        if ex_max is not None and (high is None or ex_max <= high):
            high, ex_high = ex_max, True
        if low is None:
            low = 0.0 if high is None else min(0.0, high - 1.0)
        if high is None:
            high = low + 1.0
        if high <= low:
            return float(low)
        # Strictly inside the bounds, so exclusive ones hold as well.
        value = low + (high - low) * (0.1 + 0.8 * self._rng.random())
        short = round(value, 3)
        if (low < short or (short == low and not ex_low)) and (
            short < high or (short == high and not ex_high)
        ):
            value = short
        return value

    def _string(self, schema: JSONSchema, hint: str) -> str:
        fmt = schema.get("format")
        maker = _FORMATS.get(fmt) if isinstance(fmt, str) else None
        if maker is not None:
            return maker(self._rng)
        lowered = hint.lower()
        if any(h in lowered for h in _SENTIMENT_HINTS):
            value = self._mood()
        else:
            words = self._word_list()
            value = words[self._rng.randrange(len(words))]
        least = _int(schema.get("minLength")) or 0
        most = _int(schema.get("maxLength"))
        if len(value) < least:
            value += "x" * (least - len(value))
        if most is not None and len(value) > most:
            value = value[:most]
        return value

    def _enum(self, enum: list[object]) -> object:
        if any(isinstance(v, str) and v.lower() in _SENTIMENTS for v in enum):
            mood = self._mood()
            for value in enum:
                if isinstance(value, str) and value.lower() == mood:
                    return value
        return enum[self._rng.randrange(len(enum))]

    def _choose(self, options: list[object], depth: int) -> JSONSchema:
        usable = [o for o in options if isinstance(o, dict) and o.get("type") != "null"]
        nulls = [o for o in options if isinstance(o, dict) and o.get("type") == "null"]
        if nulls and (depth >= _GROW_DEPTH or not usable):
            return nulls[0]
        return usable[0] if usable else {}

    def _merge(self, parts: list[object]) -> JSONSchema:
        merged: JSONSchema = {}
        props: dict[str, object] = {}
        required: list[object] = []
        for part in parts:
            if not isinstance(part, dict):
                continue
            ref = part.get("$ref")
            resolved: JSONSchema = _resolve(self._root, ref) if isinstance(ref, str) else part
            merged.update({k: v for k, v in resolved.items() if k not in ("$ref", "allOf")})
            more_props = resolved.get("properties")
            if isinstance(more_props, dict):
                props.update(more_props)
            more_required = resolved.get("required")
            if isinstance(more_required, list):
                required.extend(more_required)
        if props:
            merged["properties"] = props
        if required:
            merged["required"] = required
        return merged

    def _mood(self) -> str:
        if self._sentiment is None:
            self._sentiment = sentiment(self._text)
        return self._sentiment

    def _word_list(self) -> list[str]:
        if self._words is None:
            stripped = (w.strip(".,;:!?\"'()[]{}") for w in self._text.split())
            self._words = [w for w in stripped if w.isalnum()] or list(_WORDS)
        return self._words


def _resolve(root: JSONSchema, ref: str) -> JSONSchema:
    """The schema a local ``$ref`` (``#/$defs/Name``) points at; ``{}`` (anything) if none."""
    if not ref.startswith("#"):
        return {}
    node: object = root
    for raw in ref[1:].split("/"):
        if not raw:
            continue
        part = raw.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node if isinstance(node, dict) else {}


def _num(value: object) -> float | None:
    # bool is an int; draft-4 style boolean exclusive bounds are not numbers here.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _int(value: object) -> int | None:
    number = _num(value)
    return None if number is None else int(number)
