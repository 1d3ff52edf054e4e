"""A DAG's declared input types: each run's values checked (and parsed) before any call."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from pydantic import TypeAdapter, ValidationError

from fanout.dag._nodes import InputNode
from fanout.dag._plan import Plan
from fanout.errors import ConfigError

__all__ = ["check_input_types", "input_types"]


def input_types(plan: Plan) -> dict[str, object]:
    """Each input the caller passes, with its declared type (``None``: any value)."""
    types: dict[str, object] = {}
    for name in plan.inputs:
        node = plan.nodes[name]
        types[name] = node.annotation if isinstance(node, InputNode) else None
    return types


@functools.lru_cache(maxsize=256)
def _adapter(annotation: object) -> TypeAdapter[object]:
    return TypeAdapter(annotation)  # type: ignore[arg-type]  # any annotation, by design


# Annotations whose validation returns a value of exactly that type unchanged.
_EXACT = frozenset({str, int, float, bool, bytes})


def check_input_types(plan: Plan, inputs: Mapping[str, object]) -> Mapping[str, object]:
    """``inputs`` with each typed input validated (a pydantic model's dict becomes the
    model); raises :class:`ConfigError` naming the input, what it got and the type."""
    checked: dict[str, object] | None = None
    for name, annotation in plan.typed_inputs:
        if name not in inputs:
            continue
        value = inputs[name]
        if type(value) is annotation and annotation in _EXACT:
            continue  # what pydantic would return: the value itself
        if checked is None:
            checked = dict(inputs)
        try:
            checked[name] = _adapter(annotation).validate_python(inputs[name])
        except ValidationError as exc:
            reason = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or name}: {e['msg']}" for e in exc.errors()
            )
            got = repr(inputs[name])
            got = got if len(got) <= 60 else got[:57] + "..."
            raise ConfigError(
                f"DAG {plan.dag_name!r}: input {name!r} must be {_name(annotation)} "
                f"({reason}; got {got})"
            ) from None
    return inputs if checked is None else checked


def _name(annotation: object) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
