"""Node specs: frozen descriptions of each kind of step; ``Ref``, a handle to a node's output."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel

from fanout.dag._guards import Guard
from fanout.dag._mcp import McpTools
from fanout.dag._template import Template
from fanout.dag._tools import Tool
from fanout.types import Message

__all__ = [
    "INDEX",
    "ITEM",
    "EmbedNode",
    "InputNode",
    "LLMNode",
    "MapNode",
    "Node",
    "NodeKind",
    "OnItemError",
    "PromptFn",
    "Ref",
    "ReviewNode",
    "RouteNode",
    "ToolNode",
]


@dataclass(frozen=True, slots=True)
class Ref:
    """A handle to the output of a node (or a DAG input) while the DAG is being built."""

    dag: str
    node_id: str

    def __repr__(self) -> str:
        return f"Ref({self.node_id!r})"


ITEM = Ref("", "item")
"""Inside a ``map`` body: the current element of the mapped list."""
INDEX = Ref("", "index")
"""Inside a ``map`` body: the current element's position in the list."""

PromptFn = Callable[[Mapping[str, object]], list[Message]]
"""A prompt built by a function of the node's bound values, returning chat messages."""

OnItemError = Literal["fail", "drop", "none"]


class NodeKind(StrEnum):
    INPUT = "input"
    LLM = "llm"
    TOOL = "tool"
    MAP = "map"
    ROUTE = "route"
    REVIEW = "review"
    EMBED = "embed"


Arg = Ref | object
"""A node argument: a ``Ref`` to an upstream output, or a literal value."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _NodeBase:
    id: str
    required: bool = False

    def refs(self) -> tuple[Ref, ...]:
        """Every ``Ref`` this node reads (its dependencies)."""
        return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class InputNode(_NodeBase):
    kind: Literal[NodeKind.INPUT] = NodeKind.INPUT
    session: bool = False  # filled from the run's session, not by the caller
    # the declared type (str, int, list[str], a pydantic model, ...); None: any value
    annotation: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMNode(_NodeBase):
    """One chat-completion step (plus its tool rounds and validation retries)."""

    kind: Literal[NodeKind.LLM] = NodeKind.LLM
    model: str
    prompt: Template | PromptFn
    system: Template | None = None
    bindings: Mapping[str, Arg]
    max_tokens: int = 256
    temperature: float = 0.0
    tools: tuple[Tool, ...] = ()
    mcp: tuple[McpTools, ...] = ()  # MCP servers whose tools the model may call too
    max_steps: int = 5
    output: type[BaseModel] | None = None
    max_output_retries: int = 2
    guards: tuple[Guard, ...] = ()  # output guards, after validation
    input_guards: tuple[Guard, ...] = ()  # before any provider call
    conversation: bool = False  # the session's history goes before the prompt's messages
    review_on_failure: bool = False  # an escalation pauses as a review instead of failing
    stream: bool = False  # the reply comes as server-sent events (tokens to a listener)
    media: tuple[str, ...] = ()  # kinds of content parts its prompt sends beyond text

    def refs(self) -> tuple[Ref, ...]:
        return tuple(v for v in self.bindings.values() if isinstance(v, Ref))

    @property
    def approvals(self) -> bool:
        """Whether some tool call of this node may wait for a person's approval."""
        return any(t.approval for t in self.tools) or any(s.approval for s in self.mcp)


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbedNode(_NodeBase):
    """Embeddings of a text (its output: one vector) or a list of texts (a vector each).

    ``many``: whether ``text`` is a list (``None``: known only when it runs);
    ``dimensions``: the vectors' size, sent with the call when set."""

    kind: Literal[NodeKind.EMBED] = NodeKind.EMBED
    model: str
    text: Arg
    dimensions: int | None = None
    many: bool | None = None

    def refs(self) -> tuple[Ref, ...]:
        return (self.text,) if isinstance(self.text, Ref) else ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolNode(_NodeBase):
    """A Python callable over upstream outputs; sync callables run in a thread pool."""

    kind: Literal[NodeKind.TOOL] = NodeKind.TOOL
    fn: Callable[..., object]
    args: tuple[Arg, ...] = ()
    kwargs: Mapping[str, Arg]
    is_async: bool = False
    cpu: bool = False  # CPU-bound: the Ray backend sends it to a Ray task
    num_cpus: float = 1.0
    inline: bool = False  # a microsecond-cheap sync function: call it on the loop
    timeout_s: float | None = None

    def refs(self) -> tuple[Ref, ...]:
        return tuple(v for v in (*self.args, *self.kwargs.values()) if isinstance(v, Ref))


@dataclass(frozen=True, slots=True, kw_only=True)
class MapNode(_NodeBase):
    """Runs ``body`` once per element of the list ``over``; its output is the list of results."""

    kind: Literal[NodeKind.MAP] = NodeKind.MAP
    body: LLMNode | ToolNode | EmbedNode
    over: Ref
    concurrency: int | None = None
    on_item_error: OnItemError = "fail"

    def refs(self) -> tuple[Ref, ...]:
        inner = tuple(r for r in self.body.refs() if r not in (ITEM, INDEX))
        return (self.over, *inner)


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteNode(_NodeBase):
    """``fn(*args)`` picks a branch key; only that branch runs, the others are skipped.

    The route's output is the chosen branch's output (or the literal given for it).
    """

    kind: Literal[NodeKind.ROUTE] = NodeKind.ROUTE
    fn: Callable[..., object]
    args: tuple[Arg, ...] = ()
    branches: Mapping[str, Arg]

    def decision_refs(self) -> tuple[Ref, ...]:
        return tuple(v for v in self.args if isinstance(v, Ref))

    def refs(self) -> tuple[Ref, ...]:
        branch_refs = tuple(v for v in self.branches.values() if isinstance(v, Ref))
        return (*self.decision_refs(), *branch_refs)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewNode(_NodeBase):
    """A person decides: the run pauses here (``waiting_for_review``) until a reviewer
    approves ``value`` (the node's output is then that value), edits it (the output is
    the edited value) or rejects it (the node fails)."""

    kind: Literal[NodeKind.REVIEW] = NodeKind.REVIEW
    value: Arg
    instructions: str = ""

    def refs(self) -> tuple[Ref, ...]:
        return (self.value,) if isinstance(self.value, Ref) else ()


Node = InputNode | LLMNode | ToolNode | MapNode | RouteNode | ReviewNode | EmbedNode
