"""The service's ``token`` events for a streamed step on Anthropic, Gemini, Bedrock and
Azure OpenAI: the pieces reach the caller before the step's node event, and a stream
cut mid-way is voided by ``tokens_discarded`` before the retry's pieces."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from support import Emulator, start_emulator

from fanout import DAG, Engine, parse_config
from fanout.service import ServiceServer, TokenStore, build_app
from fanout.sim.server import EmulatorConfig

TOKEN = "tok-" + "beef0000" * 4
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEY = "sk-fanout-service-stream-0123456789"
PROTOCOLS = ("anthropic", "gemini", "bedrock", "azure")


def chat_dag() -> DAG:
    dag = DAG("chat")
    text = dag.input("text", str)
    dag.output(draft=dag.llm("fast", "Summarise: {text}", text=text, stream=True, name="draft"))
    return dag


def providers(root: str) -> dict[str, object]:
    retry = {"initial_backoff_s": 0.01, "max_backoff_s": 0.05}
    return {
        "anthropic": {"kind": "anthropic", "base_url": f"{root}/v1", "api_key_env": "SVC_KEY",
                      "retry": retry},
        "gemini": {"kind": "gemini", "base_url": f"{root}/v1beta", "api_key_env": "SVC_KEY",
                   "retry": retry},
        "bedrock": {"kind": "bedrock", "region": "us-east-1", "base_url": root, "retry": retry},
        "azure": {"kind": "azure", "endpoint": root, "api_key_env": "SVC_KEY", "retry": retry},
    }  # fmt: skip


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(api_key=KEY, latency_ms=5, latency_per_token_ms=1)
    with start_emulator(config) as emu:
        yield emu


@pytest.fixture(scope="module", params=PROTOCOLS)
def service(
    request: pytest.FixtureRequest, emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceServer]:
    protocol = str(request.param)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SVC_KEY", KEY)
        env.setenv("AWS_ACCESS_KEY_ID", "AKIASERVICESTREAM001")
        env.setenv("AWS_SECRET_ACCESS_KEY", "service/stream/SECRET/0123456789")
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        env.delenv("AWS_PROFILE", raising=False)
        nowhere = tmp_path_factory.mktemp("aws") / "none"
        for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            env.setenv(name, str(nowhere))
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        model = {"azure": "prod-deployment", "bedrock": "anthropic.claude-3-haiku:0"}
        config = parse_config(
            {
                "providers": {protocol: providers(emulator.root)[protocol]},
                "models": {"fast": {"provider": protocol, "model": model.get(protocol, "m-1")}},
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
        client.stream("POST", "/v1/pipelines/chat/runs", headers=AUTH,
                      json={"inputs": {"text": text}, "stream": True}) as reply,
    ):  # fmt: skip
        assert reply.status_code == 200
        kind = ""
        for line in reply.iter_lines():
            if line.startswith("event:"):
                kind = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                found.append((kind, json.loads(line.removeprefix("data:"))))
    return found


def test_tokens_reach_the_caller_before_the_node_event(
    service: ServiceServer, emulator: Emulator
) -> None:
    emulator.faults(cut_streams=0)
    got = events(service, "the soup was cold and the waiter forgot our order twice")
    kinds = [k for k, _ in got]
    tokens = [e for k, e in got if k == "token"]
    assert len(tokens) > 3 and all(e["node"] == "draft" for e in tokens)
    draft_at = next(i for i, (k, e) in enumerate(got) if k == "node" and e["node"] == "draft")
    assert max(i for i, k in enumerate(kinds) if k == "token") < draft_at
    kind, result = got[-1]
    assert kind == "result" and result["status"] == "ok"
    assert "".join(str(e["text"]) for e in tokens) == result["outputs"]["draft"]
    assert "tokens_discarded" not in kinds


def test_a_cut_stream_is_discarded_then_sent_again(
    service: ServiceServer, emulator: Emulator
) -> None:
    emulator.faults(cut_streams=1)
    got = events(service, "a long reply that the emulator will cut half-way through")
    kinds = [k for k, _ in got]
    assert kinds.count("tokens_discarded") == 1
    cut = kinds.index("tokens_discarded")
    assert got[cut][1] == {"node": "draft", "attempt": 1, "map_index": None}
    assert [e for k, e in got[:cut] if k == "token"]  # the cut attempt had sent pieces
    kept = [e for k, e in got[cut + 1 :] if k == "token"]
    result = got[-1][1]
    assert result["status"] == "ok" and result["nodes"]["draft"]["calls"] == 2
    assert "".join(str(e["text"]) for e in kept) == result["outputs"]["draft"]
