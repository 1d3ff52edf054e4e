"""``Plan``: a validated DAG in the form the executor runs — events, dependencies, route gates."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter

from fanout.dag._nodes import (
    INDEX,
    ITEM,
    EmbedNode,
    InputNode,
    LLMNode,
    MapNode,
    Node,
    Ref,
    RouteNode,
    ToolNode,
)
from fanout.dag._template import Template
from fanout.errors import ConfigError

__all__ = ["Plan", "build_plan", "decide_event"]


def decide_event(route_id: str) -> str:
    """The event id of a route's decision (node ids cannot contain '.')."""
    return f"{route_id}.decide"


@dataclass(frozen=True, slots=True)
class Plan:
    """What the executor needs, computed once per DAG.

    Events are node ids plus one ``<route>.decide`` per route. ``deps[e]`` are the
    events ``e`` waits for; ``gates[node]`` are ``(route, keys)`` pairs: the node
    runs only if each such route picked one of its keys.
    """

    dag_name: str
    nodes: Mapping[str, Node]
    inputs: tuple[str, ...]
    outputs: Mapping[str, Ref | object]
    order: tuple[str, ...]
    deps: Mapping[str, tuple[str, ...]]
    dependents: Mapping[str, tuple[str, ...]]
    gates: Mapping[str, tuple[tuple[str, frozenset[str]], ...]]
    models: frozenset[str]
    # the inputs with a declared type, in order: what each run's values are checked against
    typed_inputs: tuple[tuple[str, object], ...] = ()

    def check_models(self, known: Collection[str]) -> None:
        for node in self.nodes.values():
            body = node.body if isinstance(node, MapNode) else node
            if isinstance(body, LLMNode | EmbedNode) and body.model not in known:
                names = ", ".join(sorted(known)) or "none"
                raise ConfigError(
                    f"DAG {self.dag_name!r}, node {node.id!r}: model alias {body.model!r} is "
                    f"not configured (known: {names}); add [models.{body.model}] to the "
                    "config or use a known alias"
                )


def build_plan(name: str, nodes: Mapping[str, Node], outputs: Mapping[str, Ref | object]) -> Plan:
    if not outputs:
        raise ConfigError(
            f"DAG {name!r} has no outputs; call dag.output(name=ref) with the values to return"
        )
    bindable = tuple(n.id for n in nodes.values() if isinstance(n, InputNode))
    # session inputs bind by name too, but the caller does not pass them
    inputs = tuple(n.id for n in nodes.values() if isinstance(n, InputNode) and not n.session)
    normal: dict[str, Node] = {}
    for node in nodes.values():
        normal[node.id] = _normalise(name, node, bindable)
    for out_name, ref in outputs.items():
        if isinstance(ref, Ref) and ref.node_id not in normal:
            raise ConfigError(f"DAG {name!r}: output {out_name!r} names an unknown node")

    deps: dict[str, set[str]] = {}
    for node in normal.values():
        deps[node.id] = {r.node_id for r in node.refs()}
        if isinstance(node, RouteNode):
            decide = decide_event(node.id)
            deps[decide] = {r.node_id for r in node.decision_refs()}
            deps[node.id] = {decide} | {
                r.node_id for r in node.branches.values() if isinstance(r, Ref)
            }
    gates = _gates(normal, deps)
    for node_id, node_gates in gates.items():
        deps[node_id] |= {decide_event(route) for route, _ in node_gates}
    try:
        order = tuple(TopologicalSorter(deps).static_order())
    except CycleError as exc:
        cycle = " -> ".join(str(e) for e in exc.args[1])
        raise ConfigError(
            f"DAG {name!r} has a cycle: {cycle}; a route's branches must not feed its own decision"
        ) from None
    dependents: dict[str, list[str]] = {e: [] for e in order}
    for event, before in deps.items():
        for b in before:
            dependents[b].append(event)
    models = frozenset(
        b.model
        for n in normal.values()
        for b in ((n.body,) if isinstance(n, MapNode) else (n,))
        if isinstance(b, LLMNode | EmbedNode)
    )
    return Plan(
        dag_name=name,
        nodes=normal,
        inputs=inputs,
        outputs=dict(outputs),
        order=order,
        deps={e: tuple(sorted(d)) for e, d in deps.items()},
        dependents={e: tuple(d) for e, d in dependents.items()},
        gates=gates,
        models=models,
        typed_inputs=tuple(
            (name, node.annotation)
            for name in inputs
            if isinstance(node := normal[name], InputNode) and node.annotation is not None
        ),
    )


def _normalise(dag: str, node: Node, inputs: tuple[str, ...]) -> Node:
    """Bind template fields to inputs/item by name; reject item/index outside a map."""
    if isinstance(node, MapNode):
        if isinstance(node.body, EmbedNode):
            return node
        body = _normalise_step(dag, node.body, inputs, mapped=True, label=node.id)
        return dataclasses.replace(node, body=body)
    if isinstance(node, LLMNode | ToolNode):
        return _normalise_step(dag, node, inputs, mapped=False, label=node.id)
    if isinstance(node, RouteNode | EmbedNode) and any(r in (ITEM, INDEX) for r in node.refs()):
        raise ConfigError(
            f"DAG {dag!r}, {node.kind} {node.id!r}: item/index exist only in a map body"
        )
    return node


def _normalise_step(
    dag: str, node: LLMNode | ToolNode, inputs: tuple[str, ...], *, mapped: bool, label: str
) -> LLMNode | ToolNode:
    where = f"DAG {dag!r}, node {label!r}"
    if isinstance(node, LLMNode):
        bindings = dict(node.bindings)
        templates = [t for t in (node.prompt, node.system) if isinstance(t, Template)]
        for field in sorted({f for t in templates for f in t.fields}):
            if field in bindings:
                continue
            if field in inputs:
                bindings[field] = Ref("", field)
            elif field in ("item", "index") and mapped:
                bindings[field] = ITEM if field == "item" else INDEX
            else:
                hint = (
                    " ({item} exists only inside dag.map(...))"
                    if field in ("item", "index")
                    else ""
                )
                raise ConfigError(
                    f"{where}: prompt template names {{{field}}}, which is not bound{hint}; "
                    f"pass {field}=<ref> to dag.llm(...) or declare dag.input({field!r})"
                )
        # Input refs are keyed by node id only; the executor resolves them by id.
        node = dataclasses.replace(node, bindings=bindings)
    if not mapped and any(r in (ITEM, INDEX) for r in node.refs()):
        raise ConfigError(
            f"{where}: uses item/index but is not a map body; wrap it: dag.map(step, over=list)"
        )
    return node


def _gates(
    nodes: Mapping[str, Node], deps: Mapping[str, set[str]]
) -> dict[str, tuple[tuple[str, frozenset[str]], ...]]:
    """For each route: the steps only its branch ``k`` needs wait for its decision."""
    result: dict[str, list[tuple[str, frozenset[str]]]] = {}
    for route in nodes.values():
        if not isinstance(route, RouteNode):
            continue
        decision_side = _ancestors(nodes, [r.node_id for r in route.decision_refs()])
        keys_by_node: dict[str, set[str]] = {}
        for key, branch in route.branches.items():
            if not isinstance(branch, Ref):
                continue
            for node_id in _ancestors(nodes, [branch.node_id]) - decision_side:
                if not isinstance(nodes[node_id], InputNode):
                    keys_by_node.setdefault(node_id, set()).add(key)
        for node_id, keys in keys_by_node.items():
            result.setdefault(node_id, []).append((route.id, frozenset(keys)))
    return {k: tuple(v) for k, v in result.items()}


def _ancestors(nodes: Mapping[str, Node], start: list[str]) -> set[str]:
    seen: set[str] = set()
    stack = [s for s in start if s in nodes]
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        stack.extend(r.node_id for r in nodes[node_id].refs() if r.node_id in nodes)
    return seen
