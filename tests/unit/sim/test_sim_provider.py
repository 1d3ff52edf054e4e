"""SimProvider: deterministic replies, structured output, tool calls, latency, faults, counters."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import datetime
from enum import StrEnum
from typing import Literal

import pytest
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from fanout.config import SimProviderConfig
from fanout.errors import ProviderHTTPError, ProviderTimeout
from fanout.providers import Provider
from fanout.sim import FakeClock, SimProvider
from fanout.types import (
    ChatRequest,
    ChatResponse,
    JSONSchema,
    Message,
    ToolSpec,
    estimate_prompt_tokens,
)


@pytest.fixture
async def clock() -> AsyncIterator[FakeClock]:
    fake = FakeClock(autojump=True)
    yield fake
    await fake.aclose()


class _NoSleepClock(FakeClock):
    """A clock that fails the test if anyone sleeps on it."""

    async def sleep(self, seconds: float) -> None:
        raise AssertionError(f"slept {seconds}s on a zero-latency call")


def instant(
    *, error_rate: float = 0.0, invalid_json_rate: float = 0.0, jitter_sigma: float = 0.0
) -> SimProvider:
    """A zero-latency provider on a clock that forbids sleeping."""
    return SimProvider(
        latency_ms=0.0,
        jitter_sigma=jitter_sigma,
        error_rate=error_rate,
        invalid_json_rate=invalid_json_rate,
        clock=_NoSleepClock(),
    )


def ask(
    text: str,
    *,
    model: str = "sim-small",
    max_tokens: int = 256,
    response_schema: JSONSchema | None = None,
) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=[{"role": "user", "content": text}],
        max_tokens=max_tokens,
        response_schema=response_schema,
    )


def test_implements_the_provider_protocol() -> None:
    assert isinstance(SimProvider(), Provider)


def test_from_config_takes_every_knob() -> None:
    cfg = SimProviderConfig(
        kind="sim",
        latency_ms=12.0,
        latency_per_token_ms=3.0,
        jitter_sigma=0.5,
        error_rate=0.1,
        timeout_rate=0.2,
        seed=7,
    )
    clock = FakeClock()
    provider = SimProvider.from_config("mine", cfg, clock=clock)
    assert provider.name == "mine"
    assert (provider.latency_ms, provider.latency_per_token_ms, provider.jitter_sigma) == (
        12.0,
        3.0,
        0.5,
    )
    assert (provider.error_rate, provider.timeout_rate, provider.seed) == (0.1, 0.2, 7)
    assert provider.clock is clock


@pytest.mark.parametrize("knob", ["error_rate", "timeout_rate", "invalid_json_rate"])
def test_rates_outside_zero_to_one_are_refused(knob: str) -> None:
    rates = {"error_rate": 0.0, "timeout_rate": 0.0, "invalid_json_rate": 0.0, knob: 1.5}
    with pytest.raises(ValueError, match=knob):
        SimProvider(
            error_rate=rates["error_rate"],
            timeout_rate=rates["timeout_rate"],
            invalid_json_rate=rates["invalid_json_rate"],
        )


# --- plain replies -------------------------------------------------------------------


async def test_same_request_gives_the_same_reply() -> None:
    first, second = instant(), instant()
    request = ask("Tell me about the blue whale and its song")
    replies = [await first.complete(request), await first.complete(request)]
    replies.append(await second.complete(ask("Tell me about the blue whale and its song")))
    assert replies[0] == replies[1] == replies[2]
    other = await first.complete(ask("Tell me about the red fox"))
    assert other.content != replies[0].content


@pytest.mark.parametrize(
    ("review", "label"),
    [
        ("the parcel was late and the box broken, I want a refund", "negative"),
        ("great product, I love it, thanks", "positive"),
        ("it is a chair with four legs", "neutral"),
    ],
)
async def test_sentiment_prompts_get_a_label(review: str, label: str) -> None:
    reply = await instant().complete(ask(f"Rate the sentiment of: {review}"))
    assert reply.content == label
    assert reply.finish_reason == "stop"


@pytest.mark.parametrize(
    ("request_text", "level"),
    [
        ("How do I reset my password?", "easy"),
        ("Why is it slow? Which plan fixes it?", "hard"),  # several questions
        (" ".join(["word"] * 25), "easy"),
        (" ".join(["word"] * 26), "hard"),  # over 25 words
    ],
)
async def test_triage_prompts_get_easy_or_hard(request_text: str, level: str) -> None:
    prompt = f"Is this request easy or hard? Reply easy or hard. Request: {request_text}"
    reply = await instant().complete(ask(prompt))
    assert reply.content == level


async def test_summaries_and_echoes() -> None:
    provider = instant()
    summary = await provider.complete(ask("Summarize: the quick brown fox jumps over the dog"))
    assert summary.content == "Summary: the quick brown fox jumps over the dog"
    echo = await provider.complete(ask("[sim:latency=0] what is the capital of France"))
    assert echo.content == "sim reply: what is the capital of France"


async def test_usage_is_near_but_not_equal_to_the_engine_estimate() -> None:
    messages: list[Message] = [
        {"role": "system", "content": "You are a careful assistant. " * 5},
        {"role": "user", "content": "Tell me about the blue whale " * 10},
    ]
    reply = await instant().complete(ChatRequest(model="m", messages=messages))
    estimate = estimate_prompt_tokens(messages)
    assert reply.usage.input_tokens != estimate
    assert abs(reply.usage.input_tokens - estimate) <= 0.1 * estimate
    assert 3 <= reply.usage.output_tokens <= 40


async def test_a_reply_longer_than_max_tokens_is_cut() -> None:
    reply = await instant().complete(ask("Tell me about the blue whale and its song", max_tokens=2))
    assert reply.finish_reason == "length"
    assert reply.usage.output_tokens == 2
    assert reply.content == "sim repl"  # the first 2 * 4 characters


async def test_the_reply_names_the_requested_model() -> None:
    reply = await instant().complete(ask("hello", model="sim-large"))
    assert reply.model == "sim-large"


# --- structured output ------------------------------------------------------------------


class Mood(StrEnum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    NEUTRAL = "neutral"


class Reason(BaseModel):
    quote: str = Field(min_length=3, max_length=12)
    weight: float = Field(gt=0, le=1)


class Review(BaseModel):
    mood: Mood
    stars: int = Field(ge=1, le=5)
    reasons: list[Reason] = Field(min_length=1)
    tags: set[str]
    refund: bool
    kind: Literal["review"]
    reply_to: Reason | None = None
    when: datetime
    pair: tuple[int, str]
    note: str | None


REVIEW = TypeAdapter(Review)


async def test_structured_output_validates_against_a_nested_pydantic_schema() -> None:
    schema = Review.model_json_schema()
    assert "$defs" in schema  # the generator must follow $ref into $defs
    provider = instant()
    for text in ("broken and late, worst ever", "great, I love it", "a plain chair", "x"):
        reply = await provider.complete(ask(f"Review sentiment: {text}", response_schema=schema))
        assert reply.content is not None
        review = REVIEW.validate_json(reply.content)
        assert review.kind == "review"
        assert review.reply_to is not None  # every property is filled, optional ones too
    negative = await provider.complete(ask("sentiment: broken, late", response_schema=schema))
    assert Review.model_validate_json(negative.content or "").mood is Mood.NEGATIVE


async def test_structured_output_is_deterministic() -> None:
    schema = Review.model_json_schema()
    first = await instant().complete(ask("rate: fine", response_schema=schema))
    again = await instant().complete(ask("rate: fine", response_schema=dict(schema)))
    assert first.content == again.content


class Tree(BaseModel):
    name: str
    children: list[Tree] = []
    parent: Tree | None = None


async def test_recursive_schemas_end() -> None:
    reply = await instant().complete(ask("a tree", response_schema=Tree.model_json_schema()))
    Tree.model_validate_json(reply.content or "")


async def test_raw_schema_keywords_are_honoured() -> None:
    schema: JSONSchema = {
        "type": "object",
        "properties": {
            "even": {"type": "integer", "exclusiveMinimum": 10, "maximum": 20, "multipleOf": 2},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.01},
            "fixed": {"const": 42},
            "either": {"oneOf": [{"type": "null"}, {"type": "string", "minLength": 30}]},
            "many": {"type": "array", "items": {"type": "boolean"}, "minItems": 5},
            "anything": {"default": "dflt"},
            "flags": {"type": ["boolean", "null"]},
            "fives": {
                "type": "array",
                "items": {"type": "integer", "exclusiveMinimum": 4, "exclusiveMaximum": 6},
                "minItems": 8,
            },
        },
    }
    reply = await instant().complete(ask("x", response_schema=schema))
    value = json.loads(reply.content or "")
    assert value["even"] % 2 == 0 and 10 < value["even"] <= 20
    assert 0 < value["ratio"] < 0.01
    assert value["fixed"] == 42
    assert isinstance(value["either"], str) and len(value["either"]) >= 30
    assert len(value["many"]) >= 5 and all(isinstance(b, bool) for b in value["many"])
    assert value["anything"] == "dflt"
    assert isinstance(value["flags"], bool)
    assert value["fives"] == [5] * len(value["fives"])


async def test_a_schema_that_contains_itself_ends_in_an_empty_object() -> None:
    schema: JSONSchema = {"type": "object", "properties": {"next": {"$ref": "#"}}}
    reply = await instant().complete(ask("x", response_schema=schema))
    node = json.loads(reply.content or "")
    depth = 0
    while node:
        assert isinstance(node, dict)
        node = node["next"]
        depth += 1
    assert node == {}
    assert 1 < depth < 20


async def test_invalid_once_marker_fails_validation_on_the_first_attempt_only() -> None:
    provider = instant()
    request = ask("[sim:invalid-once] rate: great", response_schema=Review.model_json_schema())
    first = await provider.complete(request)
    with pytest.raises(ValidationError, match="Field required"):
        Review.model_validate_json(first.content or "")
    second = await provider.complete(request)
    Review.model_validate_json(second.content or "")


async def test_invalid_json_rate_spoils_that_share_of_replies() -> None:
    schema = Review.model_json_schema()

    async def invalid_count(rate: float) -> int:
        provider = instant(invalid_json_rate=rate)
        bad = 0
        for i in range(200):
            reply = await provider.complete(ask(f"item {i}", response_schema=schema))
            try:
                Review.model_validate_json(reply.content or "")
            except ValidationError:
                bad += 1
        return bad

    assert await invalid_count(0.0) == 0
    assert 60 <= await invalid_count(0.5) <= 140
    assert await invalid_count(1.0) == 200


# --- tools ---------------------------------------------------------------------------------


class WeatherArgs(BaseModel):
    city: str
    days: int = Field(ge=1, le=7)
    unit: Literal["c", "f"] = "c"


TOOLS = (
    ToolSpec("search_web", "search the web", {"type": "object", "properties": {}}),
    ToolSpec("get_weather", "the forecast", WeatherArgs.model_json_schema()),
)


async def test_tools_are_called_first_then_their_results_are_used() -> None:
    provider = instant()
    messages: list[Message] = [{"role": "user", "content": "get_weather for Paris please"}]
    first = await provider.complete(ChatRequest(model="m", messages=messages, tools=TOOLS))
    assert first.finish_reason == "tool_calls"
    assert first.content is None
    (call,) = first.tool_calls
    assert call.name == "get_weather"
    assert re.fullmatch(r"call_[0-9a-f]{8}", call.id)
    args = WeatherArgs.model_validate_json(call.arguments)
    assert args.city in {"get_weather", "for", "Paris", "please"}

    messages.append({"role": "assistant", "content": None, "tool_calls": [call.to_wire()]})
    result = "Sunny, 24 degrees, light wind from the south-west all afternoon and evening."
    messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    second = await provider.complete(ChatRequest(model="m", messages=messages, tools=TOOLS))
    assert second.finish_reason == "stop"
    assert second.tool_calls == ()
    assert second.content == f"Based on get_weather: {result[:60]}"


async def test_the_first_tool_is_called_when_none_is_named() -> None:
    request = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], tools=TOOLS)
    reply = await instant().complete(request)
    assert [c.name for c in reply.tool_calls] == ["search_web"]


# --- faults --------------------------------------------------------------------------------


async def test_fail_marker_always_fails_with_a_retryable_500() -> None:
    provider = instant()
    for _ in range(3):
        with pytest.raises(ProviderHTTPError) as info:
            await provider.complete(ask("[sim:fail] hello"))
        assert info.value.status_code == 500
        assert info.value.retryable
        assert info.value.provider == "sim"
    assert provider.calls == 3
    assert provider.in_flight == 0


async def test_fail_once_marker_fails_each_request_once() -> None:
    provider = instant()
    for text in ("[sim:fail-once] a", "[sim:fail-once] b"):
        with pytest.raises(ProviderHTTPError, match="injected server error"):
            await provider.complete(ask(text))
        reply = await provider.complete(ask(text))
        assert reply.content == "sim reply: " + text.split()[-1]


async def test_error_rate_fails_after_the_latency(clock: FakeClock) -> None:
    provider = SimProvider(latency_ms=300.0, jitter_sigma=0.0, error_rate=1.0, clock=clock)
    with pytest.raises(ProviderHTTPError):
        await provider.complete(ask("hello"))
    assert clock.now() == pytest.approx(0.3)


async def test_random_faults_are_fixed_per_attempt_and_a_retry_can_succeed() -> None:
    async def outcomes(provider: SimProvider) -> list[bool]:
        seen = []
        for _ in range(12):
            try:
                await provider.complete(ask("flaky request"))
                seen.append(True)
            except ProviderHTTPError:
                seen.append(False)
        return seen

    first = await outcomes(instant(error_rate=0.5))
    assert first == await outcomes(instant(error_rate=0.5))
    assert True in first and False in first


async def test_a_slow_call_times_out_at_the_deadline(clock: FakeClock) -> None:
    provider = SimProvider(latency_ms=5000.0, jitter_sigma=0.0, clock=clock)
    with pytest.raises(ProviderTimeout):
        await provider.complete(ask("hello"), timeout_s=2.0)
    assert clock.now() == 2.0


async def test_timeout_rate_hangs_until_the_timeout(clock: FakeClock) -> None:
    provider = SimProvider(latency_ms=10.0, timeout_rate=1.0, clock=clock)
    with pytest.raises(ProviderTimeout):
        await provider.complete(ask("hello"), timeout_s=3.0)
    assert clock.now() == 3.0
    with pytest.raises(ProviderTimeout):
        await provider.complete(ask("hello"))
    assert clock.now() == 3603.0


async def test_timeout_marker_hangs_that_request(clock: FakeClock) -> None:
    provider = SimProvider(latency_ms=10.0, jitter_sigma=0.0, clock=clock)
    with pytest.raises(ProviderTimeout):
        await provider.complete(ask("[sim:timeout] hello"), timeout_s=1.5)
    assert clock.now() == 1.5
    await provider.complete(ask("hello"), timeout_s=1.5)
    assert clock.now() == pytest.approx(1.51)


# --- latency -------------------------------------------------------------------------------


async def test_latency_is_slept_on_the_clock(clock: FakeClock) -> None:
    provider = SimProvider(
        latency_ms=200.0, latency_per_token_ms=10.0, jitter_sigma=0.0, clock=clock
    )
    reply = await provider.complete(ask("hello there"))
    assert clock.now() == pytest.approx((200.0 + 10.0 * reply.usage.output_tokens) / 1000)


async def test_jitter_is_fixed_per_request(clock: FakeClock) -> None:
    provider = SimProvider(latency_ms=1000.0, jitter_sigma=0.5, clock=clock)
    took = []
    for text in ("one", "one", "two"):
        start = clock.now()
        await provider.complete(ask(text))
        took.append(clock.now() - start)
    assert took[0] == pytest.approx(took[1])
    assert took[0] != pytest.approx(1.0)
    assert took[0] != pytest.approx(took[2])


async def test_latency_marker_sets_the_base_latency(clock: FakeClock) -> None:
    provider = SimProvider(latency_ms=1.0, jitter_sigma=0.0, clock=clock)
    done: list[tuple[str, float]] = []

    async def call(text: str) -> None:
        await provider.complete(ask(text))
        done.append((text, clock.now()))

    await asyncio.gather(call("[sim:latency=500] slow"), call("[sim:latency=50] fast"))
    assert done == [("[sim:latency=50] fast", 0.05), ("[sim:latency=500] slow", 0.5)]


async def test_zero_latency_never_sleeps() -> None:
    provider = instant(jitter_sigma=0.25)
    await provider.complete(ask("hello"))
    await provider.complete(ask("Rate the sentiment of: fine", response_schema={"type": "string"}))


# --- counters ------------------------------------------------------------------------------


async def test_counters_track_calls_and_peak_concurrency(clock: FakeClock) -> None:
    provider = SimProvider(latency_ms=100.0, clock=clock)
    gate = asyncio.Semaphore(3)

    async def capped(i: int) -> ChatResponse:
        async with gate:
            return await provider.complete(ask(f"q{i}", model="a" if i % 2 else "b"))

    await asyncio.gather(*(capped(i) for i in range(10)))
    assert provider.max_in_flight == 3
    await asyncio.gather(*(provider.complete(ask(f"r{i}")) for i in range(8)))
    assert provider.max_in_flight == 8
    assert provider.in_flight == 0
    assert provider.calls == 18
    assert provider.calls_by_model == {"a": 5, "b": 5, "sim-small": 8}
