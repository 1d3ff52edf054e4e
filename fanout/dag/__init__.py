"""The DAG model: nodes, the builder, templates, tool schemas and validation (pure, no I/O)."""

from fanout.dag._builder import DAG
from fanout.dag._guards import (
    Accept,
    Guard,
    GuardFn,
    Reject,
    Repair,
    Verdict,
    make_guards,
    mask_pii,
    max_prompt_chars,
)
from fanout.dag._inputs import check_input_types, input_types
from fanout.dag._mcp import McpTools, mcp
from fanout.dag._nodes import (
    INDEX,
    ITEM,
    EmbedNode,
    InputNode,
    LLMNode,
    MapNode,
    Node,
    NodeKind,
    PromptFn,
    Ref,
    ReviewNode,
    RouteNode,
    ToolNode,
)
from fanout.dag._plan import Plan, decide_event
from fanout.dag._session import HISTORY, STATE, Session, SessionSpec
from fanout.dag._template import Template, render_value
from fanout.dag._tools import Tool, make_tool

__all__ = [
    "DAG",
    "HISTORY",
    "INDEX",
    "ITEM",
    "STATE",
    "Accept",
    "EmbedNode",
    "Guard",
    "GuardFn",
    "InputNode",
    "LLMNode",
    "MapNode",
    "McpTools",
    "Node",
    "NodeKind",
    "Plan",
    "PromptFn",
    "Ref",
    "Reject",
    "Repair",
    "ReviewNode",
    "RouteNode",
    "Session",
    "SessionSpec",
    "Template",
    "Tool",
    "ToolNode",
    "Verdict",
    "check_input_types",
    "decide_event",
    "input_types",
    "make_guards",
    "make_tool",
    "mask_pii",
    "max_prompt_chars",
    "mcp",
    "render_value",
]
