"""The service streams a streamed step's tokens to its caller as SSE ``token`` events
beside the ``node`` events; a cut stream's pieces are voided by ``tokens_discarded``."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from support import Emulator, start_emulator

from fanout import DAG, Engine, parse_config
from fanout.service import ServiceServer, TokenStore, build_app
from fanout.sim.server import EmulatorConfig

TOKEN = "tok-" + "c0ffee00" * 4
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def chat_dag() -> DAG:
    dag = DAG("chat")
    text = dag.input("text", str)
    draft = dag.llm("fast", "Summarise: {text}", text=text, stream=True, name="draft")
    dag.output(draft=draft, label=dag.llm("fast", "Label: {text}", text=text, name="label"))
    return dag


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with start_emulator(EmulatorConfig(latency_ms=5, latency_per_token_ms=1)) as emu:
        yield emu


@pytest.fixture(scope="module")
def service(emulator: Emulator) -> Iterator[ServiceServer]:
    config = parse_config(
        {
            "providers": {
                "emu": {
                    "kind": "openai",
                    "base_url": emulator.base_url,
                    "retry": {"initial_backoff_s": 0.01, "max_backoff_s": 0.05},
                }
            },
            "models": {"fast": {"provider": "emu", "model": "sim-small"}},
        }
    )
    engine = Engine(config)
    tokens = TokenStore.parse(f"acme:{TOKEN}", source="test tokens")

    def make() -> object:
        return build_app({"chat": chat_dag()}, engine, tokens=tokens)

    with ServiceServer(make, close=engine.aclose) as server:  # type: ignore[arg-type]
        yield server


def events(service: ServiceServer, text: str) -> list[tuple[str, dict[str, object]]]:
    found: list[tuple[str, dict[str, object]]] = []
    with (
        httpx.Client(base_url=service.url, timeout=60) as client,
        client.stream(
            "POST",
            "/v1/pipelines/chat/runs",
            headers=AUTH,
            json={"inputs": {"text": text}, "stream": True},
        ) as reply,
    ):
        assert reply.status_code == 200
        kind = ""
        for line in reply.iter_lines():
            if line.startswith("event:"):
                kind = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                found.append((kind, json.loads(line.removeprefix("data:"))))
    return found


def test_a_streamed_steps_tokens_reach_the_caller_before_its_node_event(
    service: ServiceServer, emulator: Emulator
) -> None:
    emulator.faults(cut_streams=0)
    got = events(service, "the soup was cold and the waiter forgot our order twice")
    kinds = [k for k, _ in got]
    tokens = [e for k, e in got if k == "token"]
    assert tokens and all(e["node"] == "draft" and e["attempt"] == 1 for e in tokens)
    draft_at = next(i for i, (k, e) in enumerate(got) if k == "node" and e["node"] == "draft")
    assert max(i for i, k in enumerate(kinds) if k == "token") < draft_at
    kind, result = got[-1]
    assert kind == "result" and result["status"] == "ok"
    assert "".join(str(e["text"]) for e in tokens) == result["outputs"]["draft"]
    assert "tokens_discarded" not in kinds
    # the step that does not stream sends no tokens, only its node event
    assert not any(e["node"] == "label" for e in tokens)


def test_a_cut_stream_tells_the_caller_to_discard_what_it_sent(
    service: ServiceServer, emulator: Emulator
) -> None:
    emulator.faults(cut_streams=1)
    got = events(service, "a long reply that the emulator will cut half-way through")
    kinds = [k for k, _ in got]
    assert kinds.count("tokens_discarded") == 1
    cut = kinds.index("tokens_discarded")
    assert got[cut][1] == {"node": "draft", "attempt": 1, "map_index": None}
    kept = [e for k, e in got[cut + 1 :] if k == "token"]
    assert {e["attempt"] for e in kept} == {2}
    result = got[-1][1]
    assert result["status"] == "ok"
    assert "".join(str(e["text"]) for e in kept) == result["outputs"]["draft"]
    assert result["nodes"]["draft"]["calls"] == 2
