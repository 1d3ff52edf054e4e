"""What a run with review steps carries: decisions in, pending reviews and outputs out.

A paused run's finished outputs go to its checkpoint as JSON. Only what comes back
as the same value is kept: plain JSON (text, numbers, lists, dicts) and an llm
step's pydantic output (dumped, validated again on resume); any other value (a
tool's custom object) is left out, and its step runs again on resume (a tool step;
an llm step's call is answered by the call journal if one is kept).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError

from fanout.dag import LLMNode, MapNode, Plan, ReviewNode
from fanout.store import Review

__all__ = ["ReviewState", "dump_outputs", "load_outputs", "needs_review"]


@dataclass(slots=True)
class ReviewState:
    """``restored``: outputs of nodes that finished before (not run again);
    ``decisions``: the decided reviews by node. Filled by the run: ``pending``
    (node, value, instructions) of each review step reached without a decision, and
    ``outputs``, every finished node's output. ``paused``: agent turns waiting for a
    tool call's approval, by node (JSON, see :mod:`fanout.run._approval`): in, those
    to resume; out, those that paused now."""

    restored: Mapping[str, object] = field(default_factory=dict)
    decisions: Mapping[str, Review] = field(default_factory=dict)
    pending: list[tuple[str, object, str]] = field(default_factory=list)
    outputs: dict[str, object] = field(default_factory=dict)
    paused: dict[str, object] = field(default_factory=dict)


def needs_review(plan: Plan) -> bool:
    """Whether a run of ``plan`` may pause for a person (a review step, an llm step
    with ``review_on_failure`` or with tools that need approval)."""
    return any(
        isinstance(node, ReviewNode)
        or (isinstance(node, LLMNode) and (node.review_on_failure or node.approvals))
        for node in plan.nodes.values()
    )


def _output_model(plan: Plan, node_id: str) -> tuple[type[BaseModel] | None, bool]:
    node = plan.nodes.get(node_id)
    mapped = isinstance(node, MapNode)
    body = node.body if isinstance(node, MapNode) else node
    return (body.output if isinstance(body, LLMNode) else None), mapped


def dump_outputs(plan: Plan, outputs: Mapping[str, object]) -> dict[str, object]:
    """The outputs that survive a trip through JSON, as JSON values."""
    kept: dict[str, object] = {}
    for node_id, value in outputs.items():
        model, mapped = _output_model(plan, node_id)
        if model is not None:
            items = value if mapped and isinstance(value, list) else [value]
            if all(v is None or isinstance(v, model) for v in items):
                dumped = [_dump_model(v) for v in items]
                kept[node_id] = dumped if mapped else dumped[0]
            continue
        try:
            if json.loads(json.dumps(value)) == value:
                kept[node_id] = value
        except (TypeError, ValueError):
            continue
    return kept


def load_outputs(plan: Plan, stored: Mapping[str, object]) -> dict[str, object]:
    """The checkpoint's outputs as the run had them (pydantic outputs validated again)."""
    restored: dict[str, object] = {}
    for node_id, value in stored.items():
        if node_id not in plan.nodes:
            continue  # the DAG changed: that node runs (or is gone)
        model, mapped = _output_model(plan, node_id)
        if model is None:
            restored[node_id] = value
            continue
        try:
            if mapped and isinstance(value, list):
                restored[node_id] = [
                    model.model_validate(v) if v is not None else None for v in value
                ]
            elif value is not None:
                restored[node_id] = model.model_validate(value)
        except ValidationError:
            continue  # the model changed: the node runs again
    return restored


def _dump_model(value: object) -> object:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value
