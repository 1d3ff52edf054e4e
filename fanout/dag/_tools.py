"""Tools for llm nodes: OpenAI tool schemas generated from Python functions or pydantic models."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import get_type_hints

from pydantic import BaseModel, ConfigDict, create_model

from fanout.errors import ConfigError
from fanout.types import ToolSpec

__all__ = ["Tool", "make_tool"]


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool offered to a model: its schema, and the callable that runs it (if any).

    A tool built from a pydantic model has no callable: the model's call *is* the
    result (structured extraction); the node's output is then the list of calls.
    ``cpu``: CPU-bound; the Ray backend runs it as a Ray task of ``num_cpus`` (locally,
    in a thread like any sync tool). ``timeout_s``: a call that takes longer goes back
    to the model as a tool error. ``approval``: each call waits for a person's approval
    (the run pauses as a review; see ``fanout review``).
    """

    spec: ToolSpec
    args_model: type[BaseModel]
    fn: Callable[..., object] | None
    cpu: bool = False
    num_cpus: float = 1.0
    timeout_s: float | None = None
    approval: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., object],
        *,
        cpu: bool = False,
        num_cpus: float = 1.0,
        timeout_s: float | None = None,
        approval: bool = False,
    ) -> Tool:
        """A tool for ``dag.llm(tools=[...])`` with options: ``Tool.from_function(f, cpu=True)``,
        ``Tool.from_function(f, approval=True)``."""
        where = f"Tool.from_function({getattr(fn, '__name__', fn)!r})"
        if num_cpus <= 0:
            raise ConfigError(f"{where}: num_cpus must be positive (got {num_cpus})")
        if timeout_s is not None and timeout_s <= 0:
            raise ConfigError(f"{where}: timeout_s must be positive or None (got {timeout_s})")
        if cpu and inspect.iscoroutinefunction(fn):
            raise ConfigError(
                f"{where}: cpu=True needs a plain function (async tools run on the event "
                "loop); drop cpu=True or make it a sync function"
            )
        made = make_tool(fn, where=where)
        return cls(made.spec, made.args_model, made.fn, cpu, num_cpus, timeout_s, approval)


def make_tool(obj: Callable[..., object] | type[BaseModel] | Tool, *, where: str) -> Tool:
    """A :class:`Tool` from a function (its signature and docstring) or a pydantic model."""
    if isinstance(obj, Tool):
        return obj
    if isinstance(obj, type) and issubclass(obj, BaseModel):
        return Tool(_spec(obj.__name__, obj.__doc__, obj), obj, None)
    if not callable(obj):
        raise ConfigError(f"{where}: tool {obj!r} is neither a function nor a pydantic model")
    name = getattr(obj, "__name__", "")
    if not name or name == "<lambda>":
        raise ConfigError(f"{where}: a tool needs a named function (lambdas have no name)")
    args_model = _args_model(obj, name, where)
    return Tool(_spec(name, obj.__doc__, args_model), args_model, obj)


def _spec(name: str, doc: str | None, model: type[BaseModel]) -> ToolSpec:
    schema = model.model_json_schema()
    schema.pop("title", None)
    description = inspect.cleandoc(doc).split("\n\n", 1)[0] if doc else ""
    return ToolSpec(name=name, description=description, parameters=schema)


def _args_model(fn: Callable[..., object], name: str, where: str) -> type[BaseModel]:
    try:
        hints = get_type_hints(fn)
    except Exception as exc:
        raise ConfigError(f"{where}: tool {name!r}: cannot read its type hints: {exc}") from None
    fields: dict[str, tuple[object, object]] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(
                f"{where}: tool {name!r} takes *args/**kwargs; a tool needs named parameters"
            )
        annotation = hints.get(param.name)
        if annotation is None:
            raise ConfigError(
                f"{where}: tool {name!r}: parameter {param.name!r} has no type hint; "
                "annotate it so the model knows what to send"
            )
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]  # dynamic fields
        name, __config__=ConfigDict(extra="forbid"), **fields
    )
    return model
