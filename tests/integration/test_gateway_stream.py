"""The gateway streams the upstream's tokens as they arrive: the official openai SDK
(``stream=True``) against ``fanout serve``'s app, the emulator upstream sending a piece
of text every few milliseconds.

Orderings and counts only (what the client had read while the emulator's stream was
still open, how many pieces came, what was retried); nothing here asserts on timings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from support import Emulator, start_emulator

from fanout import Engine, parse_config
from fanout.service import ServiceServer, build_app
from fanout.sim.server import EmulatorConfig
from fanout.store import KeyStore, period_bounds

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
STORY = [{"role": "user", "content": "Tell a long story about a lighthouse keeper"}]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    # 10 ms a token between pieces: a 40-token reply streams for ~0.4 s
    with start_emulator(EmulatorConfig(latency_ms=1, latency_per_token_ms=10)) as emu:
        yield emu


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore(tmp_path_factory.mktemp("keys") / "keys.db")


@pytest.fixture(scope="module")
def gateway(emulator: Emulator, keys: KeyStore) -> Iterator[ServiceServer]:
    config = parse_config(
        {
            "providers": {
                # a back-off long enough that a retry never goes out before the gateway
                # has seen the cut and cancelled the call
                "emu": {"kind": "openai", "base_url": emulator.base_url,
                        "retry": {"max_attempts": 3, "initial_backoff_s": 0.3,
                                  "max_backoff_s": 0.3}},
            },
            "models": {"fast": {"provider": "emu", "model": "sim-small",
                                "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}},
        }
    )  # fmt: skip
    engine = Engine(config)
    app = lambda: build_app({}, engine, tokens=None, keys=keys, key_cache_s=0)  # noqa: E731
    with ServiceServer(app, close=engine.aclose) as server:
        yield server


@pytest.fixture(scope="module")
def key(keys: KeyStore) -> str:
    return keys.create("acme", name="stream tests")[1]


@pytest.fixture
def client(gateway: ServiceServer, key: str, emulator: Emulator) -> openai.OpenAI:
    emulator.reset()
    emulator.faults(cut_streams=0, cut_at_piece=None)  # type: ignore[arg-type]
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def test_tokens_reach_the_caller_while_the_upstream_still_streams(
    client: openai.OpenAI, emulator: Emulator
) -> None:
    whole = client.chat.completions.create(model="fast", messages=STORY, max_tokens=40)
    stream = client.chat.completions.create(
        model="fast", messages=STORY, max_tokens=40, stream=True
    )
    pieces: list[str] = []
    open_at_first: int | None = None
    for chunk in stream:
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            pieces.append(text)
            if open_at_first is None:  # the first token: is the upstream still sending?
                open_at_first = emulator.stats()["streams_open"]
    assert open_at_first == 1  # read while the emulator's stream was still open
    assert len(pieces) > 1  # relayed piece by piece, not as one blob at the end
    assert "".join(pieces) == whole.choices[0].message.content
    stats = emulator.stats()
    assert stats["streams"] == 1 and stats["streams_open"] == 0


def test_the_usage_chunk_is_the_upstreams(client: openai.OpenAI, emulator: Emulator) -> None:
    stream = client.chat.completions.create(
        model="fast", messages=STORY, max_tokens=30, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert last.usage.total_tokens == emulator.stats()["tokens"]  # what the upstream counted
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length") and finishes.count(None) == len(finishes) - 1


def test_tool_call_deltas_reassemble(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "What is the weather in Paris? use get_weather"}]
    whole = client.chat.completions.create(
        model="fast", messages=messages, tools=[WEATHER], max_tokens=50  # type: ignore[arg-type,list-item]
    )
    stream = client.chat.completions.create(
        model="fast", messages=messages, tools=[WEATHER], max_tokens=50, stream=True,  # type: ignore[arg-type,list-item]
    )  # fmt: skip
    calls: dict[int, dict[str, str]] = {}
    pieces = 0
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for piece in choice.delta.tool_calls or ():
                pieces += 1
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = piece.id or call["id"]
                if piece.function is not None:
                    call["name"] = piece.function.name or call["name"]
                    call["arguments"] += piece.function.arguments or ""
    expected = whole.choices[0].message.tool_calls
    assert expected and finish == "tool_calls"
    assert pieces > len(expected)  # OpenAI's shape: an opening piece, then arguments
    assert [c["name"] for _, c in sorted(calls.items())] == [c.function.name for c in expected]
    got = json.loads(calls[0]["arguments"])
    assert got == json.loads(expected[0].function.arguments) and "city" in got
    assert calls[0]["id"]


def test_a_cut_before_the_first_token_is_retried_unseen(
    client: openai.OpenAI, emulator: Emulator
) -> None:
    whole = client.chat.completions.create(model="fast", messages=STORY, max_tokens=30)
    emulator.reset()
    emulator.faults(cut_streams=1, cut_at_piece=0)
    chunks = list(
        client.chat.completions.create(model="fast", messages=STORY, max_tokens=30, stream=True)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # once, whole: the caller saw no cut
    assert [c.choices[0].delta.role for c in chunks if c.choices].count("assistant") == 1
    stats = emulator.stats()
    assert stats["streams_cut"] == 1 and stats["streams"] == 2  # the retry answered


def test_a_cut_after_the_first_token_ends_the_stream_with_an_error(
    client: openai.OpenAI, emulator: Emulator
) -> None:
    whole = client.chat.completions.create(model="fast", messages=STORY, max_tokens=30)
    emulator.reset()
    emulator.faults(cut_streams=1, cut_at_piece=3)
    stream = client.chat.completions.create(
        model="fast", messages=STORY, max_tokens=30, stream=True
    )
    pieces: list[str] = []

    def read() -> None:
        for chunk in stream:
            pieces.append(chunk.choices[0].delta.content or "" if chunk.choices else "")

    with pytest.raises(openai.APIError) as caught:
        read()
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "stream_cut"
    assert caught.value.body["type"] == "server_error"
    text = "".join(pieces)
    assert text and whole.choices[0].message.content.startswith(text)  # type: ignore[union-attr]
    assert text != whole.choices[0].message.content  # never a second attempt's text after it
    stats = emulator.stats()
    assert stats["streams_cut"] == 1 and stats["streams"] == 1  # the call was not retried


def test_an_error_before_the_first_token_is_an_http_status(
    gateway: ServiceServer, key: str
) -> None:
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", "x-fanout-deadline-ms": "1"},
        json={"model": "fast", "messages": STORY, "stream": True},
    ) as response:  # fmt: skip
        response.read()
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"


def test_two_choices_stream_side_by_side(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="fast", messages=STORY, max_tokens=20, n=2, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    texts = {0: "", 1: ""}
    finishes: dict[int, str] = {}
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts[0] and texts[1] and set(finishes) == {0, 1}
    assert usage is not None and usage.completion_tokens > 0


def test_a_streamed_call_is_charged_to_its_key(
    gateway: ServiceServer, keys: KeyStore, emulator: Emulator
) -> None:
    record, plain = keys.create("metered", budget_usd=1.0, period="day")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=plain, max_retries=0)
    emulator.faults(cut_streams=0, cut_at_piece=None)  # type: ignore[arg-type]
    stream = client.chat.completions.create(
        model="fast", messages=STORY, max_tokens=20, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    tokens = chunks[-1].usage.total_tokens  # type: ignore[union-attr]
    start = period_bounds("day", time.time())[0]
    for _ in range(500):  # written just after the stream went out
        usd, spent_tokens, requests = keys.spent(record.key_id, start)
        if requests:
            break
        time.sleep(0.01)
    assert requests == 1 and spent_tokens == tokens and usd > 0
