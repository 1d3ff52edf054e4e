"""The results table: its columns, and Arrow types for the DAG's outputs where they are typed.

An output gets a typed column when the DAG says what it is: a plain llm node gives
text; an llm node with ``output=Model`` gives a struct of the model's fields; a
tool gives its return annotation; a map gives a list of its body's type. Anything
else (an input passed through, a route, a union, ``dict[str, Any]``) is JSON text.
"""

from __future__ import annotations

import enum
import json
import logging
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, get_args, get_origin, get_type_hints

import pyarrow as pa
from pydantic import BaseModel

from fanout.config import Config
from fanout.dag import EmbedNode, LLMNode, MapNode, Plan, Ref, ToolNode

__all__ = ["output_types", "result_schema", "to_column"]

_log = logging.getLogger(__name__)

_SCALARS: dict[object, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
}


def arrow_type(annotation: object, _depth: int = 0) -> pa.DataType | None:
    """The Arrow type of values of ``annotation`` as JSON-mode dumps, or ``None`` (JSON text)."""
    if _depth > 8:
        return None
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is typing.Literal:
        kinds = {type(a) for a in args}
        return _SCALARS.get(kinds.pop()) if len(kinds) == 1 else None
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return arrow_type(rest[0], _depth + 1) if len(rest) == 1 else None
    if origin in (list, Sequence, tuple) and args:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return None
        inner = arrow_type(args[0], _depth + 1)
        return pa.list_(inner) if inner is not None else None
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            kinds = {type(m.value) for m in annotation}
            return _SCALARS.get(kinds.pop()) if len(kinds) == 1 else None
        if issubclass(annotation, BaseModel):
            fields = []
            for name, info in annotation.model_fields.items():
                inner = arrow_type(info.annotation, _depth + 1)
                if inner is None:
                    return None
                fields.append(pa.field(name, inner))  # model_dump(mode="json") names
            return pa.struct(fields) if fields else None
    return None


def _vector_type(node: EmbedNode, config: Config | None) -> pa.DataType | None:
    """An embed step's output: ``fixed_size_list<float32>`` when the size is known (the
    step's or its model's ``dimensions``), else a list of float32; a list of them for a
    list of texts; ``None`` (JSON text) when which of the two is known only at run time."""
    size = node.dimensions
    if size is None and config is not None and node.model in config.models:
        size = config.models[node.model].dimensions
    vector = pa.list_(pa.float32(), size) if size else pa.list_(pa.float32())
    if node.many is None:
        return None
    return pa.list_(vector) if node.many else vector


def _node_type(plan: Plan, ref: Ref, config: Config | None = None) -> pa.DataType | None:
    node = plan.nodes.get(ref.node_id)
    body = node.body if isinstance(node, MapNode) else node
    item: pa.DataType | None = None
    if isinstance(body, EmbedNode):
        item = _vector_type(body, config)
    elif isinstance(body, LLMNode):
        if body.output is not None:
            item = arrow_type(body.output)
        elif not body.tools or any(t.fn is not None for t in body.tools):
            item = pa.string()  # an agent's answer is text; schema-only tools give calls
    elif isinstance(body, ToolNode):
        try:
            hints = get_type_hints(body.fn)
        except Exception:  # unresolvable annotations: JSON text
            hints = {}
        item = arrow_type(hints["return"]) if "return" in hints else None
    if item is None:
        return None
    return pa.list_(item) if isinstance(node, MapNode) else item


def output_types(plan: Plan, config: Config | None = None) -> dict[str, pa.DataType | None]:
    """Each output's Arrow type, or ``None`` where its column holds JSON text (``config``:
    the models' ``dimensions``, for the size of embeddings)."""
    return {
        name: _node_type(plan, value, config) if isinstance(value, Ref) else None
        for name, value in plan.outputs.items()
    }


def result_schema(
    outputs: Mapping[str, pa.DataType | None], metadata: Mapping[str, str] | None = None
) -> pa.Schema:
    """key, status, ``output_<name>`` per output, errors, usage, attempts, time, trace id."""
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("status", pa.string(), nullable=False),
            *(pa.field(f"output_{name}", t or pa.string()) for name, t in outputs.items()),
            pa.field("error_type", pa.string()),
            pa.field("error_message", pa.string()),
            pa.field("input_tokens", pa.int64(), nullable=False),
            pa.field("output_tokens", pa.int64(), nullable=False),
            pa.field("cost_usd", pa.float64(), nullable=False),
            pa.field("attempts", pa.int64(), nullable=False),  # provider calls, every retry
            pa.field("wall_time_s", pa.float64(), nullable=False),
            pa.field("trace_id", pa.string()),  # joins the record to its trace rows
        ],
        metadata=dict(metadata or {}),
    )


def json_text(value: object) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def to_column(values: list[Any], kind: pa.DataType, name: str) -> pa.Array:
    """``values`` as an Arrow array of ``kind``; a value that does not fit becomes null
    (logged): one odd value never loses a part of the results."""
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    fitted: list[Any] = []
    bad = 0
    for value in values:
        try:
            pa.array([value], type=kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            bad += 1
            value = None
        fitted.append(value)
    _log.warning("results: %d value(s) of %s do not fit %s; written as null", bad, name, kind)
    return pa.array(fitted, type=kind)
