"""The DAG builder and validation: every mistake is a ConfigError naming the node and the fix."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from fanout import DAG, ConfigError, TemplateError
from fanout.dag import LLMNode, MapNode, check_input_types, decide_event
from fanout.types import Usage


def split(text: str) -> list[str]:
    return text.split(".")


def pick(scores: list[str]) -> str:
    return "urgent" if "negative" in scores else "normal"


def triage() -> DAG:
    dag = DAG("triage")
    text = dag.input("text")
    parts = dag.tool(split, text, inline=True)
    scores = dag.map(dag.llm("fast", "Rate: {item}", max_tokens=5), over=parts)
    urgent = dag.llm("smart", "Apologise for: {text}")
    label = dag.route(pick, scores, {"urgent": urgent, "normal": "no action"})
    summary = dag.llm("smart", "Summarise: {scores}", scores=scores)
    dag.output(summary=summary, label=label, scores=scores)
    return dag


def test_plan_has_every_node_and_route_decision_in_dependency_order() -> None:
    plan = triage().validate(models={"fast", "smart"})
    order = plan.order
    assert set(plan.nodes) == {"text", "split", "llm", "llm_2", "route_pick", "llm_3"}
    assert order.index("split") < order.index("llm") < order.index(decide_event("route_pick"))
    assert order.index(decide_event("route_pick")) < order.index("llm_2")
    assert order.index("llm_2") < order.index("route_pick")
    assert isinstance(plan.nodes["llm"], MapNode)
    assert plan.models == {"fast", "smart"}


def test_only_the_branch_steps_are_gated_by_the_route() -> None:
    plan = triage().validate()
    assert plan.gates == {"llm_2": (("route_pick", frozenset({"urgent"})),)}


def test_template_fields_bind_inputs_and_items_by_name() -> None:
    plan = triage().validate()
    mapped = plan.nodes["llm"]
    assert isinstance(mapped, MapNode) and isinstance(mapped.body, LLMNode)
    assert set(mapped.body.bindings) == {"item"}
    urgent = plan.nodes["llm_2"]
    assert isinstance(urgent, LLMNode)
    assert set(urgent.bindings) == {"text"}


def test_unbound_template_field_names_node_and_fix() -> None:
    dag = DAG("d")
    dag.input("text")
    dag.output(x=dag.llm("fast", "Hello {name}", name_="unused", name="greet"))
    with pytest.raises(ConfigError, match=r"node 'greet'.*\{name\}.*name=<ref>"):
        dag.validate()


def test_item_outside_map_is_rejected() -> None:
    dag = DAG("d")
    dag.input("text")
    dag.output(x=dag.llm("fast", "Rate {item}"))
    with pytest.raises(ConfigError, match=r"exists only inside dag.map"):
        dag.validate()


def test_unknown_model_alias_is_rejected_with_known_aliases() -> None:
    dag = DAG("d")
    dag.input("text")
    dag.output(x=dag.llm("gpt-9", "Rate {text}", name="rate"))
    with pytest.raises(ConfigError, match=r"node 'rate'.*'gpt-9'.*known: fast, smart"):
        dag.validate(models={"fast", "smart"})


def test_refs_from_another_dag_are_rejected() -> None:
    other = DAG("other")
    foreign = other.input("text")
    dag = DAG("d")
    with pytest.raises(ConfigError, match="another DAG"):
        dag.llm("fast", "x {v}", v=foreign)


def test_missing_outputs_and_duplicate_names() -> None:
    dag = DAG("d")
    dag.input("text")
    with pytest.raises(ConfigError, match="no outputs"):
        dag.validate()
    with pytest.raises(ConfigError, match="exists"):
        dag.input("text")
    with pytest.raises(ConfigError, match="not valid"):
        dag.input("has space")


def test_route_whose_branch_feeds_its_own_decision_is_a_cycle() -> None:
    dag = DAG("d")
    text = dag.input("text")
    step = dag.llm("fast", "x {text}", name="step")
    route = dag.route(lambda s: "a", step, {"a": step}, name="r")
    dag.output(r=route, t=text)
    # the branch is also the decision's input: it is not gated, so no deadlock
    plan = dag.validate()
    assert "step" not in plan.gates


def test_malformed_template_and_positional_field() -> None:
    dag = DAG("d")
    with pytest.raises(TemplateError, match="malformed"):
        dag.llm("fast", "broken {text")
    with pytest.raises(TemplateError, match="positional"):
        dag.llm("fast", "broken {}")


def test_map_body_must_be_fresh_and_a_step() -> None:
    dag = DAG("d")
    text = dag.input("text")
    parts = dag.tool(split, text)
    used = dag.llm("fast", "x {item}")
    dag.tool(len, used)
    with pytest.raises(ConfigError, match="already used"):
        dag.map(used, over=parts)
    with pytest.raises(ConfigError, match="is a input node"):
        dag.map(text, over=parts)


class Weather(BaseModel):
    """Weather for a city."""

    city: str
    days: int = 1


def get_weather(city: str, days: int = 1) -> str:
    """Look up the weather.

    Longer text is not part of the description.
    """
    return f"{city}: sunny for {days} days"


def test_tools_get_openai_schemas_from_functions_and_models() -> None:
    dag = DAG("d")
    dag.input("text")
    ref = dag.llm("fast", "{text}", tools=[get_weather, Weather])
    node = dag.validate.__self__._nodes[ref.node_id]  # type: ignore[attr-defined]
    assert isinstance(node, LLMNode)
    fn_tool, model_tool = node.tools
    assert fn_tool.spec.to_wire() == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Look up the weather.",
            "parameters": {
                "additionalProperties": False,
                "properties": {
                    "city": {"title": "City", "type": "string"},
                    "days": {"default": 1, "title": "Days", "type": "integer"},
                },
                "required": ["city"],
                "type": "object",
            },
        },
    }
    assert fn_tool.fn is get_weather
    assert model_tool.name == "Weather" and model_tool.fn is None
    assert model_tool.spec.parameters["required"] == ["city"]


def test_tool_without_type_hints_is_rejected() -> None:
    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    dag = DAG("d")
    with pytest.raises(ConfigError, match="no type hint"):
        dag.llm("fast", "hi", tools=[untyped])


class Point(BaseModel):
    x: int
    y: int


def test_typed_inputs_are_checked_and_exact_values_pass_through_unchanged() -> None:
    dag = DAG("typed")
    text, count = dag.input("text", str), dag.input("count", int)
    where, loose = dag.input("where", Point), dag.input("loose")
    dag.output(a=text, b=count, c=where, d=loose)
    plan = dag.validate()
    assert plan.typed_inputs == (("text", str), ("count", int), ("where", Point))
    given = {"text": "hi", "count": 3, "where": Point(x=1, y=2), "loose": object()}
    scalars = {"text": "hi", "count": 3, "loose": given["loose"]}
    assert check_input_types(plan, scalars) is scalars  # nothing to convert: no copy
    assert check_input_types(plan, given)["where"] == Point(x=1, y=2)
    converted = check_input_types(plan, {**given, "count": "4", "where": {"x": 5, "y": 6}})
    assert converted["count"] == 4 and type(converted["count"]) is int
    assert converted["where"] == Point(x=5, y=6)
    assert converted["text"] == "hi"
    with pytest.raises(ConfigError, match=r"input 'count' must be int .*got 'four'"):
        check_input_types(plan, {**given, "count": "four"})
    with pytest.raises(ConfigError, match="input 'text' must be str"):
        check_input_types(plan, {**given, "text": 7})


def test_a_usage_sum_with_a_zero_side_is_the_other_side() -> None:
    some = Usage(3, 4, cached_input_tokens=1)
    assert some + Usage() is some and Usage() + some is some
    assert some + some == Usage(6, 8, cached_input_tokens=2)
    assert Usage(0, 0, cache_write_tokens=2) + some == Usage(3, 4, 1, 2)
