"""Prompt templates: ``str.format`` fields over named values, checked when the DAG is built."""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel

from fanout.errors import TemplateError

__all__ = ["Template", "render_value"]

_FORMATTER = string.Formatter()


def render_value(value: object) -> str:
    """How a value appears inside a prompt: text as is, structures as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if value is None:
        return ""
    if isinstance(value, int | float | bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _json_default(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)


@dataclass(frozen=True, slots=True)
class Template:
    """A prompt template such as ``"Summarise: {text}"``.

    Fields name values bound to the node (``scores=...``), the DAG's inputs, or
    ``item``/``index`` inside a ``map``. ``{item.title}`` and ``{row[0]}`` reach
    into a value; ``{{`` and ``}}`` are literal braces.
    """

    source: str
    fields: frozenset[str]
    _deep: bool  # some field uses attribute or index access

    @classmethod
    def parse(cls, source: str, *, where: str) -> Template:
        fields: set[str] = set()
        deep = False
        try:
            parsed = list(_FORMATTER.parse(source))
        except ValueError as exc:
            raise TemplateError(
                f"{where}: prompt template {source[:60]!r} is malformed ({exc}); "
                "write literal braces as '{{' and '}}'"
            ) from None
        for _, field, _, _ in parsed:
            if field is None:
                continue
            root = field.split(".", 1)[0].split("[", 1)[0]
            if not root or root.isdigit():
                raise TemplateError(
                    f"{where}: prompt template uses a positional field '{{{field}}}'; "
                    "name the value, e.g. '{text}', and bind it with text=..."
                )
            deep = deep or root != field
            fields.add(root)
        return cls(source, frozenset(fields), deep)

    def render(self, values: Mapping[str, object], *, where: str) -> str:
        try:
            if not self._deep:
                return self.source.format_map({k: render_value(values[k]) for k in self.fields})
            return _FORMATTER.vformat(self.source, (), _DeepValues(values))
        except (KeyError, AttributeError, IndexError, TypeError, ValueError) as exc:
            raise TemplateError(
                f"{where}: prompt template cannot render: {type(exc).__name__}: {exc}; "
                "check the field names against the values bound to the node"
            ) from None


class _DeepValues(dict[str, object]):
    """Raw values for templates that reach into them; leaves are rendered by ``__format__``."""

    def __init__(self, values: Mapping[str, object]) -> None:
        super().__init__({k: _Leaf(v) for k, v in values.items()})


class _Leaf:
    """Wraps a value so ``{x.a}`` reaches into it and ``{x}`` renders it like ``render_value``."""

    __slots__ = ("_value",)

    def __init__(self, value: object) -> None:
        self._value = value

    def __getattr__(self, name: str) -> _Leaf:
        value = self._value
        if isinstance(value, Mapping) and name in value:
            return _Leaf(value[name])
        return _Leaf(getattr(value, name))

    def __getitem__(self, key: object) -> _Leaf:
        value = self._value
        if isinstance(key, str) and key.isdigit() and isinstance(value, list | tuple):
            return _Leaf(value[int(key)])
        return _Leaf(value[key])  # type: ignore[index]  # whatever the value supports

    def __format__(self, spec: str) -> str:
        text = render_value(self._value)
        return format(text, spec) if spec else text
