"""Deterministic JSON values that validate against a JSON Schema (as pydantic emits them)."""

from __future__ import annotations

import random

__all__ = ["generate"]

_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def generate(
    schema: dict[str, object],
    rng: random.Random,
    *,
    root: dict[str, object] | None = None,
    hint: str = "",
    pick_text: str = "",
) -> object:
    """A value valid against ``schema``.

    ``hint`` is the property's name; ``pick_text`` is where strings take their words.
    """
    root = root if root is not None else schema
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return generate(_resolve(root, ref), rng, root=root, hint=hint, pick_text=pick_text)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return _pick_enum(enum, rng, hint, pick_text)
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if isinstance(o, dict) and o.get("type") != "null"]
            choice = usable[0] if usable else options[0]
            return generate(choice, rng, root=root, hint=hint, pick_text=pick_text)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties")
        out: dict[str, object] = {}
        if isinstance(props, dict):
            for name, sub in props.items():
                if isinstance(sub, dict):
                    out[name] = generate(sub, rng, root=root, hint=name, pick_text=pick_text)
        return out
    if kind == "array":
        items = schema.get("items")
        low = int(schema.get("minItems", 1))  # type: ignore[call-overload]
        high = max(low, min(3, int(schema.get("maxItems", 3))))  # type: ignore[call-overload]
        count = rng.randint(low, high)
        sub = items if isinstance(items, dict) else {}
        return [generate(sub, rng, root=root, hint=hint, pick_text=pick_text) for _ in range(count)]
    if kind == "integer":
        low_i = int(schema.get("minimum", 0))  # type: ignore[call-overload]
        high_i = int(schema.get("maximum", low_i + 10))  # type: ignore[call-overload]
        return rng.randint(low_i, max(low_i, high_i))
    if kind == "number":
        low_f = float(schema.get("minimum", 0.0))  # type: ignore[arg-type]
        high_f = float(schema.get("maximum", low_f + 1.0))  # type: ignore[arg-type]
        return round(rng.uniform(low_f, max(low_f, high_f)), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if "default" in schema:
        return schema["default"]
    if kind == "string" or kind is None:
        return _string(rng, hint, pick_text)
    return None


def _resolve(root: dict[str, object], ref: str) -> dict[str, object]:
    node: object = root
    for part in ref.removeprefix("#/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node if isinstance(node, dict) else {}


def _pick_enum(enum: list[object], rng: random.Random, hint: str, text: str) -> object:
    from fanout.sim._text import sentiment  # the same keyword logic as plain replies

    if text and any(str(v).lower() in ("positive", "negative", "neutral") for v in enum):
        wanted = sentiment(text)
        for value in enum:
            if str(value).lower() == wanted:
                return value
    return enum[rng.randrange(len(enum))]


def _string(rng: random.Random, hint: str, text: str) -> str:
    words = [w for w in text.split() if w.isalnum()]
    if words:
        return words[rng.randrange(len(words))]
    return _WORDS[rng.randrange(len(_WORDS))]
