"""The OpenAI-compatible gateway over loopback: the official openai SDK against
``fanout serve``'s app (real uvicorn), with the emulator as the upstream provider.

Counts, statuses and bodies only; nothing here asserts on timings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import openai
import pytest
from support import Emulator, ListSink, start_emulator

from fanout import DAG, Engine, parse_config
from fanout.config import Config
from fanout.service import ServiceServer, build_app
from fanout.sim.server import EmulatorConfig
from fanout.store import KeyStore

T = TypeVar("T")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CITY = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["name", "population"],
    "additionalProperties": False,
}


def gateway_config(url: str) -> Config:
    """``fast`` falls back to ``smart``; both on the emulator, priced."""
    return parse_config(
        {
            "providers": {
                "emu": {"kind": "openai", "base_url": url, "retry": {"max_attempts": 2,
                                                                     "initial_backoff_s": 0.01}},
            },
            "models": {
                "fast": {"provider": "emu", "model": "sim-small", "fallbacks": ["smart"],
                         "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0},
                "smart": {"provider": "emu", "model": "sim-large",
                          "input_usd_per_mtok": 10.0, "output_usd_per_mtok": 20.0},
            },
        }
    )  # fmt: skip


def echo_dag() -> DAG:
    dag = DAG("summarize", description="one call")
    dag.input("text")
    dag.output(summary=dag.llm("fast", "Summarize: {text}", max_tokens=20))
    return dag


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with start_emulator(EmulatorConfig(latency_ms=1)) as emu:
        yield emu


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore(tmp_path_factory.mktemp("keys") / "keys.db")


@pytest.fixture(scope="module")
def sink() -> ListSink:
    return ListSink()


@pytest.fixture(scope="module")
def gateway(emulator: Emulator, keys: KeyStore, sink: ListSink) -> Iterator[ServiceServer]:
    engine = Engine(gateway_config(emulator.base_url), traces=sink)
    app = lambda: build_app(  # noqa: E731
        {"summarize": echo_dag()}, engine, tokens=None, keys=keys, key_cache_s=0
    )
    with ServiceServer(app, close=engine.aclose) as server:
        yield server


@pytest.fixture(scope="module")
def key(keys: KeyStore) -> str:
    return keys.create("acme", name="tests")[1]


@pytest.fixture
def client(gateway: ServiceServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def test_chat_reads_content_and_usage(client: openai.OpenAI, sink: ListSink) -> None:
    reply = client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "Say hello"}], max_tokens=20
    )
    assert reply.object == "chat.completion" and reply.model == "fast"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    # through the engine: a run row and an attempt row of the gateway, the key's id on them
    attempts = [s for s in sink.spans if s.record_type == "attempt" and s.dag_name == "gateway"]
    assert attempts and attempts[-1].model_alias == "fast" and attempts[-1].cost_usd
    assert attempts[-1].record_key is not None and attempts[-1].record_key.startswith("key_")


def test_n_choices_sum_usage(client: openai.OpenAI) -> None:
    one = client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "Pick a colour"}], max_tokens=10
    )
    three = client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "Pick a colour"}], max_tokens=10, n=3
    )
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert one.usage is not None and three.usage is not None
    assert three.usage.total_tokens == 3 * one.usage.total_tokens


def test_stream_is_openai_sse(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "Tell a story"}], max_tokens=30
    )
    stream = client.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "Tell a story"}],
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and finishes.count(None) == len(
        finishes
    ) - 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens  # type: ignore[union-attr]


def test_stream_without_usage_ends_with_done(gateway: ServiceServer, key: str) -> None:
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "fast", "messages": [{"role": "user", "content": "hi"}], "stream": True},
    ) as response:  # fmt: skip
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all("usage" not in c for c in chunks)


def test_tool_calling_round_trip(client: openai.OpenAI) -> None:
    messages: list[dict[str, object]] = [
        {"role": "user", "content": "What is the weather in Paris? use get_weather"}
    ]
    first = client.chat.completions.create(
        model="fast", messages=messages, tools=[WEATHER], max_tokens=50  # type: ignore[list-item]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"})
    second = client.chat.completions.create(
        model="fast", messages=messages, tools=[WEATHER], max_tokens=50  # type: ignore[arg-type]
    )
    assert second.choices[0].finish_reason == "stop"
    assert "sunny, 21 C" in (second.choices[0].message.content or "")


def test_structured_output_parses(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "Name a big city"}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "city", "schema": CITY, "strict": True}},
        max_tokens=60,
    )  # fmt: skip
    city = json.loads(reply.choices[0].message.content or "")
    assert isinstance(city["name"], str) and isinstance(city["population"], int)


def test_structured_output_with_pydantic_parse(client: openai.OpenAI) -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    parsed = client.chat.completions.parse(
        model="fast", messages=[{"role": "user", "content": "A city"}], response_format=City
    )
    city = parsed.choices[0].message.parsed
    assert isinstance(city, City)


def test_models_lists_aliases_and_pipelines(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["fast", "smart", "pipeline/summarize"]
    assert client.models.retrieve("smart").id == "smart"


def test_pipeline_as_a_model(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="pipeline/summarize", messages=[{"role": "user", "content": "a long text"}]
    )
    assert reply.choices[0].message.content and reply.usage is not None
    assert reply.usage.total_tokens > 0


def test_unknown_model_is_openai_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "model_not_found"
    assert "fast" in error["message"]


def test_bad_body_names_the_parameter(gateway: ServiceServer, key: str) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "fast", "messages": [{"role": "wizard", "content": "x"}]},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "messages.0.role"


def test_embeddings_through_the_engine_as_the_sdk_reads_them(
    client: openai.OpenAI, emulator: Emulator
) -> None:
    before = emulator.stats()["embedding_requests"]
    texts = ["a chair", "great product, I love it", "arrived broken"]
    reply = client.embeddings.create(model="fast", input=texts)  # the SDK asks for base64
    assert [d.index for d in reply.data] == [0, 1, 2]
    vectors = [d.embedding for d in reply.data]
    assert len({len(v) for v in vectors}) == 1 and len(vectors[0]) > 8
    assert reply.usage.prompt_tokens > 0 and reply.model == "fast"
    floats = client.embeddings.create(model="fast", input=texts, encoding_format="float")
    for got, want in zip((d.embedding for d in floats.data), vectors, strict=True):
        assert got == pytest.approx(want, abs=1e-6)  # float32 either way
    single = client.embeddings.create(model="fast", input="a chair")
    assert single.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)  # deterministic
    # the three texts of a request went packed: one upstream request each time
    assert emulator.stats()["embedding_requests"] - before == 3
    with pytest.raises(openai.BadRequestError, match="token arrays"):
        client.embeddings.create(model="fast", input=[[1, 2, 3]])
    with pytest.raises(openai.NotFoundError, match="does not exist here"):
        client.embeddings.create(model="nope", input="x")


def test_over_budget_key_gets_openai_429(gateway: ServiceServer, keys: KeyStore) -> None:
    record, plain = keys.create("thrifty", budget_usd=0.0005, period="day")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=plain, max_retries=0)
    messages = [{"role": "user", "content": "spend"}]
    answered = 0
    refused: openai.RateLimitError | None = None
    for _ in range(100):  # ~$0.00006 each at max_tokens=20: the budget runs out
        try:
            client.chat.completions.create(model="fast", messages=messages, max_tokens=20)
        except openai.RateLimitError as exc:
            refused = exc
            break
        answered += 1
    assert answered >= 1 and refused is not None
    body = refused.body
    assert isinstance(body, dict) and body["type"] == "insufficient_quota"
    assert body["code"] == "insufficient_quota" and "param" in body
    retry_after = refused.response.headers["retry-after"]
    assert 0 < int(retry_after) <= 86_400  # the day's end
    # the store has every answered call's spend (written just after each answer went)
    spent = _eventually(lambda: keys.spent(record.key_id, _day_start()), lambda s: s[2] >= answered)
    assert spent[2] == answered and 0 < spent[0] <= 0.0005


def _day_start() -> float:
    from fanout.store import period_bounds

    return period_bounds("day", time.time())[0]


def _eventually(read: Callable[[], T], done: Callable[[T], bool]) -> T:
    deadline = time.monotonic() + 10
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.01)
        value = read()
    return value


def test_key_share_caps_its_calls(emulator: Emulator, tmp_path: Path) -> None:
    """Half of a 60/min limit is one call a second: the second call of a burst is the
    key's own 429 with retry-after (the provider is never asked)."""
    config = gateway_config(emulator.base_url).model_copy(deep=True)
    limited = parse_config(
        {**config.model_dump(mode="json"),
         "providers": {"emu": {"kind": "openai", "base_url": emulator.base_url,
                               "requests_per_min": 60}}}
    )  # fmt: skip
    store = KeyStore(tmp_path / "keys.db")
    _, plain = store.create("bursty", share=0.5)
    _, other = store.create("calm")
    engine = Engine(limited)
    app = lambda: build_app({}, engine, tokens=None, keys=store, key_cache_s=0)  # noqa: E731
    with ServiceServer(app, close=engine.aclose) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=plain, max_retries=0)
        messages = [{"role": "user", "content": "x"}]
        client.chat.completions.create(model="fast", messages=messages)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="fast", messages=messages)  # type: ignore[arg-type]
        # another key has no share of its own: it is paced, not refused
        calm = openai.OpenAI(base_url=f"{server.url}/v1", api_key=other, max_retries=0)
        calm.chat.completions.create(model="fast", messages=messages)  # type: ignore[arg-type]
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "rate_limit_exceeded"
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_revoked_key_gets_401(gateway: ServiceServer, keys: KeyStore) -> None:
    record, plain = keys.create("leaver")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=plain, max_retries=0)
    client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    keys.revoke(record.key_id)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "invalid_api_key"
    assert plain not in str(caught.value)


def test_unknown_key_gets_401(gateway: ServiceServer) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-fo-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_spend_per_key_in_metrics(client: openai.OpenAI, gateway: ServiceServer) -> None:
    client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "m"}])
    text = httpx.get(f"{gateway.url}/metrics").text
    lines = [line for line in text.splitlines() if line.startswith("fanout_gateway_key_cost_usd")]
    assert any('tenant="acme"' in line and 'key_id="key_' in line for line in lines)


def test_plain_key_is_never_stored(keys: KeyStore, key: str, sink: ListSink) -> None:
    raw = Path(keys.path).read_bytes()
    for suffix in ("", "-wal"):
        path = Path(str(keys.path) + suffix)
        if path.exists():
            raw += path.read_bytes()
    assert key.encode() not in raw
    assert key not in repr(keys) and all(key not in repr(k) for k in keys.list())
    assert sink.spans and all(key not in repr(span) for span in sink.spans)
