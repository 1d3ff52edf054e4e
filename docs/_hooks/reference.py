"""MkDocs hook: the config and CLI reference pages, generated from the code at build time.

A page holds a marker comment where the generated text goes:

- ``<!-- generated: config-reference -->``: every section and key of the TOML config,
  walked from the pydantic models in :mod:`fanout.config` (key, type, default, what it is);
- ``<!-- generated: cli-reference -->``: every command and option of ``fanout``, from the
  typer app ``fanout.cli:app`` (typer's own Markdown generator, as ``typer ... utils docs``).

Nothing here is written by hand twice: change a field or an option and the page follows.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

CONFIG_MARKER = "<!-- generated: config-reference -->"
CLI_MARKER = "<!-- generated: cli-reference -->"


def on_page_markdown(markdown: str, **_: Any) -> str:
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_reference())
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return markdown


# -- config ---------------------------------------------------------------------------


@dataclass
class _Section:
    path: str  # "providers.NAME", "" for the top level
    model: type[BaseModel]
    kind: str | None = None  # the discriminator value of a provider kind


def config_reference() -> str:
    from fanout.config import Config

    out: list[str] = []
    for section in _sections(Config, ""):
        title = f"`[{section.path}]`" if section.path else "Top level"
        if section.kind is not None:
            title += f" with `kind = \"{section.kind}\"`"
        out.append(f"## {title}\n")
        doc = _flatten(section.model.__doc__ or "")
        if doc:
            out.append(doc + "\n")
        out.append("| key | type | default | description |")
        out.append("| --- | --- | --- | --- |")
        fields = section.model.model_fields
        for name in sorted(fields, key=lambda n: n != "kind"):  # the kind first
            field = fields[name]
            sub = f"{section.path}.{name}" if section.path else name
            out.append(
                f"| `{name}` | {_type_text(field.annotation)} | {_default_text(sub, field)} "
                f"| {_describe(field)} |"
            )
        out.append("")
    return "\n".join(out)


def _sections(model: type[BaseModel], path: str, kind: str | None = None) -> list[_Section]:
    found = [_Section(path, model, kind)]
    seen: set[type[BaseModel]] = {model}
    for name, field in model.model_fields.items():
        sub = f"{path}.{name}" if path else name
        for child_path, child, child_kind in _children(field.annotation, sub):
            for section in _sections(child, child_path, child_kind):
                if section.model not in seen or section.kind is not None:
                    seen.add(section.model)
                    found.append(section)
    if path:
        return found
    # Top level: each top-level key's sections together, shallow before deep.
    order = list(model.model_fields)
    return sorted(
        _dedupe(found),
        key=lambda s: (order.index(s.path.split(".")[0]) + 1 if s.path else 0, s.path.count(".")),
    )


def _dedupe(sections: list[_Section]) -> list[_Section]:
    # A sub-table shared by every provider kind (retry, circuit) is listed once.
    out: list[_Section] = []
    keys: set[tuple[str, type[BaseModel]]] = set()
    for section in sections:
        key = (section.path, section.model)
        if key not in keys:
            keys.add(key)
            out.append(section)
    return out


def _children(annotation: Any, path: str) -> list[tuple[str, type[BaseModel], str | None]]:
    """The sub-tables a field's type opens: a model, a table of models, a union of kinds."""
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(path, annotation, None)]
    if origin is dict:
        _, value = typing.get_args(annotation)
        return [(f"{path}.NAME", m, k) for _, m, k in _children(value, "")]
    if origin in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if _is_model(a)]
        if len(models) > 1:  # a discriminated union: one section per kind
            return [(path, m, _kind(m)) for m in models]
        return [(path, m, None) for m in models]
    return []


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _kind(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("kind")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return str(args[0]) if args else None


def _type_text(annotation: Any) -> str:
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in args if a is not type(None)]
        if all(_is_model(a) for a in parts) and len(parts) > 1:
            return "table (by `kind`)"
        text = " \\| ".join(_type_text(a) for a in parts)
        return f"{text} (optional)" if len(parts) < len(args) else text
    if origin is tuple:
        return f"list of {_type_text(args[0])}"
    if origin is dict:
        return "tables by name"
    if _is_model(annotation):
        return "table"
    if annotation in (int, float, str, bool):
        return {int: "integer", float: "number", str: "string", bool: "boolean"}[annotation]
    return f"`{annotation}`"


def _default_text(path: str, field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return f"see `[{path}]`"
        if value in ({}, [], ()):
            return "none"
        return _toml(value)
    default = field.default
    if default is PydanticUndefined or default is None:
        return "none"
    return _toml(default)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple | list):
        return "`[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]`"
    if isinstance(value, float) and value.is_integer():
        return f"`{value:g}`"
    return f"`{value}`"


def _describe(field: FieldInfo) -> str:
    text = field.description or ""
    bounds = []
    for item in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            bound = getattr(item, attr, None)
            if bound is not None:
                bounds.append(f"{sign} {bound}")
    if bounds:
        text = f"{text} ({', '.join(bounds)})" if text else ", ".join(bounds)
    return text.replace("|", "\\|")


def _flatten(doc: str) -> str:
    text = re.sub(r"\s*\n\s*", " ", doc.strip()).replace("``", "`")
    return re.sub(r"^`\[[^\]]+\]`: ", "", text)  # the section's own name, said by the title



# -- CLI ------------------------------------------------------------------------------


def cli_reference() -> str:
    import typer
    import typer.main
    from typer.cli import get_docs_for_click

    from fanout.cli import app

    command = typer.main.get_command(app)
    ctx = typer.Context(command, info_name="fanout")
    text = get_docs_for_click(obj=command, ctx=ctx, name="fanout")
    return _demote_headings(text)


def _demote_headings(text: str) -> str:
    """The generated text starts at ``#``; under the page's own title it starts at ``##``."""
    out = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        out.append("#" + line if line.startswith("#") and not fenced else line)
    return "\n".join(out) + "\n"
