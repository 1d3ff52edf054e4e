"""The service's input limits and partial results, over loopback against the emulator.

A body over the limit is a 413 (declared or streamed), inputs are checked against the
DAG's declared types (422 naming the field) and for depth and numbers (400), the
OpenAPI schema offers only what a DAG accepts, ``serve`` refuses a busy port before it
announces itself, an oversized request fails alone, and a deadline returns every item
that was paid for.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import pytest
from support import Emulator, start_emulator
from typer.testing import CliRunner

from fanout import DAG, Engine, parse_config
from fanout.cli import app
from fanout.config import Config
from fanout.service import ServiceServer, build_app
from fanout.sim.server import EmulatorConfig


def config(url: str) -> Config:
    return parse_config(
        {
            "providers": {"emu": {"kind": "openai", "base_url": url, "retry": {"max_attempts": 2}}},
            "models": {"fast": {"provider": "emu", "model": "sim-small"}},
        }
    )


def typed() -> DAG:
    dag = DAG("typed")
    dag.input("text", type=str)
    dag.input("tags", type=list[str])
    dag.output(label=dag.llm("fast", "Classify: {text}", max_tokens=5, name="label"))
    return dag


def loose() -> DAG:
    dag = DAG("loose")
    data = dag.input("data")  # no type: any JSON value but null
    dag.output(echo=dag.tool(lambda value: str(value)[:20], data, name="echo"))
    return dag


def chat() -> DAG:
    dag = DAG("chat")
    dag.input("message", type=str)
    dag.session(user="message", answer="reply")
    dag.output(reply=dag.llm("fast", "{message}", conversation=True, max_tokens=8))
    return dag


def fan() -> DAG:
    dag = DAG("fan")
    items = dag.input("items", type=list[str])
    dag.output(rated=dag.map(dag.llm("fast", "Rate {item}", max_tokens=5), over=items,
                             concurrency=4, name="rated"))  # fmt: skip
    return dag


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    # a 10k-token bucket (600k tokens/min) and some latency, prompts counted
    emu_config = EmulatorConfig(
        tokens_per_min=600_000, latency_ms=40, jitter_sigma=0.3, record_prompts=True
    )
    with start_emulator(emu_config) as emu:
        yield emu


@pytest.fixture(scope="module")
def engine(emulator: Emulator) -> Engine:
    return Engine(config(emulator.base_url))


@pytest.fixture(scope="module")
def service(engine: Engine) -> Iterator[ServiceServer]:
    pipelines = {"typed": typed(), "loose": loose(), "chat": chat(), "fan": fan()}

    def make() -> object:
        return build_app(pipelines, engine, tokens=None, max_body_bytes=2 << 20)

    with ServiceServer(make, close=engine.aclose) as server:  # type: ignore[arg-type]
        yield server


@pytest.fixture
def client(service: ServiceServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=60) as c:
        yield c


def error(reply: httpx.Response) -> dict[str, object]:
    body: dict[str, object] = reply.json()["error"]
    return body


def test_a_body_over_the_limit_is_a_413_declared_or_streamed(client: httpx.Client) -> None:
    big = b'{"inputs": {"data": "' + b"x" * (3 << 20) + b'"}}'
    declared = client.post("/v1/pipelines/loose/runs", content=big,
                           headers={"content-type": "application/json"})  # fmt: skip
    assert declared.status_code == 413 and error(declared)["type"] == "body_too_large"
    assert "2,097,152 bytes" in str(error(declared)["message"])

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off once past the limit
        for start in range(0, len(big), 64 << 10):
            yield big[start : start + (64 << 10)]

    streamed = client.post("/v1/pipelines/loose/runs", content=chunks(),
                           headers={"content-type": "application/json"})  # fmt: skip
    assert streamed.status_code == 413 and error(streamed)["type"] == "body_too_large"


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ({"text": 123, "tags": []}, "inputs.text"),
        ({"text": None, "tags": []}, "inputs.text"),
        ({"text": {"a": 1}, "tags": []}, "inputs.text"),
        ({"text": "ok", "tags": "not a list"}, "inputs.tags"),
    ],
)
def test_inputs_are_checked_against_the_dags_declared_types(
    client: httpx.Client, inputs: dict[str, object], field: str
) -> None:
    reply = client.post("/v1/pipelines/typed/runs", json={"inputs": inputs})
    assert reply.status_code == 422
    assert [f["field"] for f in error(reply)["fields"]] == [field]  # type: ignore[attr-defined]


def test_an_untyped_input_takes_any_value_but_null(client: httpx.Client) -> None:
    assert client.post("/v1/pipelines/loose/runs", json={"inputs": {"data": 5}}).json()[
        "outputs"
    ] == {"echo": "5"}
    null = client.post("/v1/pipelines/loose/runs", json={"inputs": {"data": None}})
    assert null.status_code == 422 and "null is not a value" in str(error(null)["message"])


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (nested(40), "nests deeper than 32 levels"),
        (nested(50_000), "nests too deep to parse"),
        (str(10**30), "an integer beyond 64 bits"),
        ("9" * 5000, "a number with too many digits"),
    ],
    ids=["deep", "too-deep-to-parse", "big-int", "huge-int"],
)
def test_nesting_and_number_limits_are_clear_400s(
    client: httpx.Client, data: str, reason: str
) -> None:
    reply = client.post("/v1/pipelines/loose/runs", content=f'{{"inputs": {{"data": {data}}}}}',
                        headers={"content-type": "application/json"})  # fmt: skip
    assert reply.status_code == 400, reply.text
    assert reason in str(error(reply)["message"])


def test_the_openapi_schema_offers_only_what_each_dag_accepts(client: httpx.Client) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert "session_id" not in schemas["typed_run_request"]["properties"]
    assert "session_id" in schemas["chat_run_request"]["properties"]
    text = schemas["typed_inputs"]["properties"]["text"]
    assert text["type"] == "string"  # the declared type, for clients generated from it
    reply = client.post("/v1/pipelines/typed/runs",
                        json={"inputs": {"text": "x", "tags": []}, "session_id": "s1"})  # fmt: skip
    assert reply.status_code == 422  # not a field of this DAG


async def test_one_oversized_request_fails_alone_and_pauses_no_one(
    service: ServiceServer, emulator: Emulator, engine: Engine
) -> None:
    emulator.reset()
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as client:

        async def run(text: str) -> dict[str, object]:
            reply = await client.post("/v1/pipelines/typed/runs",
                                      json={"inputs": {"text": text, "tags": []}})  # fmt: skip
            body: dict[str, object] = reply.json()
            return body

        huge = asyncio.ensure_future(run("word " * 200_000))  # ~250k tokens, 1 MB
        await asyncio.sleep(0.05)
        small = await asyncio.gather(*(run(f"review {i}") for i in range(8)))
        big = await huge
    assert all(s["status"] == "ok" for s in small)
    assert big["status"] == "error" and big["error_type"] == "RequestTooLarge"
    stats = emulator.stats()
    assert stats["too_large"] == 1  # tried once, never retried
    (limit,) = engine.limiter_states()  # it was not a rate limit: no pause for anyone
    assert limit.rate_limited == stats["limited"] and limit.paused_s == 0


def test_a_deadline_returns_every_item_that_was_paid_for(
    client: httpx.Client, emulator: Emulator
) -> None:
    emulator.reset()
    items = [f"item-{i:03d}" for i in range(200)]
    reply = client.post("/v1/pipelines/fan/runs", json={"inputs": {"items": items},
                                                         "deadline_ms": 1000})  # fmt: skip
    body = reply.json()
    assert body["status"] == "partial"
    rated = body["outputs"]["rated"]
    node = body["nodes"]["rated"]
    finished = {i for i, value in enumerate(rated) if value is not None}
    assert finished and len(finished) < 200
    assert set(node["unfinished_items"]) == set(range(200)) - finished
    assert node["output"] == rated  # the node's own value, as the output shows it
    prompts = emulator.prompts()
    answered = {int(p.rsplit("-", 1)[1]) for p, n in prompts.items() if n and "item-" in p}
    assert finished <= answered  # each item returned was answered by the provider ...
    assert len(answered - finished) <= 4  # ... and only those in flight at the cut are not


def test_serve_refuses_a_busy_port_before_announcing_itself(tmp_path: object) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = CliRunner().invoke(
            app, ["serve", "examples/pipelines/classify.py:dag", "--no-auth", "--port", str(port)]
        )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: cannot listen on 127.0.0.1:") and (
        "pick another --port" in result.stderr
    )
    assert "fanout serve on" not in result.output
