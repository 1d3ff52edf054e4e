"""Frameworks that speak OpenAI, pointed at the gateway: LangChain's ``ChatOpenAI`` and
LlamaIndex's ``OpenAI`` LLM each make calls through it (the emulator upstream)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import Emulator, ListSink, start_emulator

from fanout import Engine, parse_config
from fanout.service import ServiceServer, build_app
from fanout.sim.server import EmulatorConfig
from fanout.store import KeyStore


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with start_emulator(EmulatorConfig(latency_ms=1)) as emu:
        yield emu


@pytest.fixture(scope="module")
def sink() -> ListSink:
    return ListSink()


@pytest.fixture(scope="module")
def gateway(
    emulator: Emulator, sink: ListSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    # LlamaIndex checks the model's name against OpenAI's: the alias is the name the
    # application already uses, and the config says where it goes
    config = parse_config(
        {
            "providers": {"emu": {"kind": "openai", "base_url": emulator.base_url}},
            "models": {"gpt-4o-mini": {"provider": "emu", "model": "sim-small",
                                       "input_usd_per_mtok": 0.15, "output_usd_per_mtok": 0.6}},
        }
    )  # fmt: skip
    keys = KeyStore(tmp_path_factory.mktemp("keys") / "keys.db")
    _, key = keys.create("frameworks")
    engine = Engine(config, traces=sink)
    app = lambda: build_app({}, engine, tokens=None, keys=keys)  # noqa: E731
    with ServiceServer(app, close=engine.aclose) as server:
        yield f"{server.url}/v1", key


def _calls(sink: ListSink) -> int:
    return sum(s.record_type == "attempt" and s.dag_name == "gateway" for s in sink.spans)


def test_langchain_chat_openai(gateway: tuple[str, str], sink: ListSink) -> None:
    from langchain_openai import ChatOpenAI

    url, key = gateway
    before = _calls(sink)
    llm = ChatOpenAI(model="gpt-4o-mini", base_url=url, api_key=key, max_retries=0)
    reply = llm.invoke("Say hello")
    assert reply.content == "sim reply: Say hello"
    assert reply.usage_metadata is not None and reply.usage_metadata["total_tokens"] > 0
    streamed = "".join(str(chunk.content) for chunk in llm.stream("Say hello"))
    assert streamed == reply.content
    assert _calls(sink) == before + 2  # each through the engine


def test_llama_index_openai(gateway: tuple[str, str], sink: ListSink) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI

    url, key = gateway
    before = _calls(sink)
    llm = OpenAI(model="gpt-4o-mini", api_base=url, api_key=key, max_retries=0)
    chat = llm.chat([ChatMessage(role="user", content="Say hello")])
    assert chat.message.content == "sim reply: Say hello"
    assert llm.complete("Say hi").text == "sim reply: Say hi"
    assert _calls(sink) == before + 2
