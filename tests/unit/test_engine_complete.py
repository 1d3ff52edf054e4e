"""``Engine.complete``: one chat call by alias, down the engine's call path (fallbacks,
budget, limiter priority, trace rows), on scripted providers."""

from __future__ import annotations

import pytest
from support import ListSink

from fanout import Engine, parse_config
from fanout.budget import Budget
from fanout.errors import BudgetExceeded, ConfigError, ProviderHTTPError
from fanout.sim import FunctionProvider
from fanout.types import ChatRequest

CONFIG = {
    "providers": {"a": {"kind": "sim", "retry": {"max_attempts": 1}},
                  "b": {"kind": "sim", "retry": {"max_attempts": 1}}},
    "models": {
        "primary": {"provider": "a", "model": "m1", "fallbacks": ["backup"],
                    "input_usd_per_mtok": 1000.0, "output_usd_per_mtok": 1000.0},
        "backup": {"provider": "b", "model": "m2"},
    },
}  # fmt: skip


def request(text: str = "hi", **kwargs: object) -> ChatRequest:
    return ChatRequest(model="ignored", messages=[{"role": "user", "content": text}], **kwargs)  # type: ignore[arg-type]


def down(req: ChatRequest) -> str:
    raise ProviderHTTPError("a is down", provider="a", status_code=503)


async def test_the_alias_answers_with_its_model_and_cost() -> None:
    a = FunctionProvider("a", lambda r: f"from {r.model}")
    b = FunctionProvider("b", lambda r: "backup")
    sink = ListSink()
    async with Engine(parse_config(CONFIG), providers={"a": a, "b": b}, traces=sink) as engine:
        result = await engine.complete("primary", request(), record_key="key_1")
    assert result.response.content == "from m1" and result.alias == "primary"
    assert a.requests[0].model == "m1" and not b.requests  # the route's model, not the caller's
    assert result.cost_usd > 0 and result.calls == 1
    kinds = sorted(s.record_type for s in sink.spans)
    assert kinds == ["attempt", "node", "run"]
    assert {s.record_key for s in sink.spans} == {"key_1"}
    assert {s.dag_name for s in sink.spans} == {"gateway"}


async def test_a_failing_provider_falls_back() -> None:
    b = FunctionProvider("b", lambda r: "backup answers")
    async with Engine(
        parse_config(CONFIG), providers={"a": FunctionProvider("a", down), "b": b}
    ) as engine:
        result = await engine.complete("primary", request())
    assert result.response.content == "backup answers" and result.alias == "backup"
    assert result.fallbacks == 1


async def test_a_shared_budget_refuses_a_call_that_would_pass_it() -> None:
    a = FunctionProvider("a", lambda r: "x")
    budget = Budget(usd=0.01)  # 1,000 $/Mtok: a 256-token worst case is ~$0.26
    async with Engine(parse_config(CONFIG), providers={"a": a, "b": a}) as engine:
        with pytest.raises(BudgetExceeded):
            await engine.complete("primary", request(), budget=budget)
    assert not a.requests and budget.spent_usd == 0 and budget.held_usd == 0


async def test_options_reach_the_provider_and_bad_arguments_are_config_errors() -> None:
    a = FunctionProvider("a", lambda r: "x")
    async with Engine(parse_config(CONFIG), providers={"a": a, "b": a}) as engine:
        await engine.complete("primary", request(options={"seed": 7, "stop": ["\n"]}))
        with pytest.raises(ConfigError, match="no model alias 'nope'"):
            await engine.complete("nope", request())
        with pytest.raises(ConfigError, match="deadline_s"):
            await engine.complete("primary", request(), deadline_s=0)
    assert a.requests[0].options == {"seed": 7, "stop": ["\n"]}
