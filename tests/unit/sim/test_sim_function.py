"""FunctionProvider scripts exact replies; the public names of fanout.sim."""

from __future__ import annotations

import asyncio

import pytest

import fanout.sim
from fanout.errors import ProviderHTTPError
from fanout.providers import Provider
from fanout.sim import FunctionProvider, SimProvider
from fanout.types import ChatRequest, ChatResponse, Usage


def ask(text: str, model: str = "m") -> ChatRequest:
    return ChatRequest(model=model, messages=[{"role": "user", "content": text}])


def test_public_names() -> None:
    assert sorted(fanout.sim.__all__) == ["FakeClock", "FunctionProvider", "SimProvider"]
    for name in fanout.sim.__all__:
        assert getattr(fanout.sim, name).__module__.startswith("fanout.sim._")


async def test_a_string_reply_gets_the_simulated_usage() -> None:
    scripted = FunctionProvider("scripted", lambda request: "sim reply: hello there")
    assert isinstance(scripted, Provider)
    reply = await scripted.complete(ask("hello there", model="sim-small"))
    simulated = await SimProvider(latency_ms=0.0).complete(ask("hello there", model="sim-small"))
    assert reply.content == "sim reply: hello there"
    assert reply.model == "sim-small"
    assert reply.usage == simulated.usage  # same text, same counting
    assert scripted.requests == [ask("hello there", model="sim-small")]


async def test_async_functions_and_full_responses() -> None:
    async def reply(request: ChatRequest) -> ChatResponse:
        await asyncio.sleep(0)
        return ChatResponse(content="{}", usage=Usage(1, 2), finish_reason="length")

    scripted = FunctionProvider("scripted", reply)
    response = await scripted.complete(ask("x", model="big"))
    assert response == ChatResponse(
        content="{}", usage=Usage(1, 2), finish_reason="length", model="big"
    )


async def test_counters_and_scripted_failures() -> None:
    release = asyncio.Event()

    async def reply(request: ChatRequest) -> str:
        await release.wait()
        if "fail" in str(request.messages[-1].get("content")):
            raise ProviderHTTPError("scripted", status_code=503)
        return "ok"

    scripted = FunctionProvider("scripted", reply)
    calls = [asyncio.ensure_future(scripted.complete(ask(t))) for t in ("a", "fail", "b")]
    await asyncio.sleep(0)
    assert (scripted.in_flight, scripted.max_in_flight) == (3, 3)
    release.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[1], ProviderHTTPError)
    assert scripted.in_flight == 0
    assert scripted.calls == 3
    assert scripted.calls_by_model == {"m": 3}
    scripted.reset_counters()
    assert (scripted.calls, scripted.calls_by_model, scripted.max_in_flight) == (0, {}, 0)


async def test_a_sync_function_that_raises_leaves_nothing_in_flight() -> None:
    def broken(request: ChatRequest) -> str:
        raise ProviderHTTPError("down", status_code=500)

    scripted = FunctionProvider("scripted", broken)
    with pytest.raises(ProviderHTTPError, match="down"):
        await scripted.complete(ask("x"))
    assert (scripted.calls, scripted.in_flight, scripted.max_in_flight) == (1, 0, 1)
