"""``fanout.client``: the pipeline API from Python, against a real service (uvicorn) with
the emulator upstream; the retry schedule against ``httpx.MockTransport``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from support import Emulator, start_emulator

from fanout import DAG, Engine, parse_config
from fanout.client import AsyncClient, Client, NodeReport, PipelineRun, ServiceError
from fanout.service import ServiceServer, TenantLimits, TokenStore, build_app
from fanout.sim.server import EmulatorConfig

TOKEN = "tok-" + "c0ffee00" * 4


def two_speeds() -> DAG:
    dag = DAG("two_speeds")
    dag.input("text")
    quick = dag.llm("fast", "Rate: {text}", name="quick", max_tokens=5)
    slow = dag.llm("fast", "Wait [sim:latency=30000] {text}", name="slow", max_tokens=5)
    dag.output(quick=quick, slow=slow)
    return dag


def one_call() -> DAG:
    dag = DAG("one_call")
    dag.input("text")
    dag.output(answer=dag.llm("fast", "Answer [sim:latency={text}]", max_tokens=5))
    return dag


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with start_emulator(EmulatorConfig(latency_ms=1)) as emu:
        yield emu


@pytest.fixture(scope="module")
def service(emulator: Emulator) -> Iterator[ServiceServer]:
    config = parse_config(
        {
            "providers": {"emu": {"kind": "openai", "base_url": emulator.base_url,
                                  "retry": {"max_attempts": 1}}},
            "models": {"fast": {"provider": "emu", "model": "sim-small"}},
        }
    )  # fmt: skip
    engine = Engine(config)
    pipelines = {"two_speeds": two_speeds(), "one_call": one_call()}
    app = lambda: build_app(  # noqa: E731
        pipelines, engine, tokens=TokenStore({TOKEN: "acme"}),
        tenant_limits=TenantLimits(max_concurrent=1),
    )  # fmt: skip
    with ServiceServer(app, close=engine.aclose) as server:
        yield server


def wait_for(check: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_run_answers_a_typed_result(service: ServiceServer) -> None:
    with Client(service.url, token=TOKEN) as client:
        (info,) = [p for p in client.pipelines() if p.name == "one_call"]
        run = client.run("one_call", {"text": "1"})
    assert info.inputs == ["text"] and info.outputs == ["answer"]
    assert isinstance(run, PipelineRun) and run.status == "ok" and run.outputs["answer"]
    (node,) = run.nodes.values()
    assert node.calls == 1 and node.status == "ok" and run.usage.total_tokens > 0


def test_deadline_answers_what_finished(service: ServiceServer) -> None:
    with Client(service.url, token=TOKEN) as client:
        run = client.run("two_speeds", {"text": "x"}, deadline_ms=1500)
    assert run.status == "partial"
    assert run.nodes["quick"].status == "ok" and run.nodes["slow"].status == "cancelled"
    assert run.outputs["slow"] is None


def test_stream_yields_nodes_then_the_run(service: ServiceServer) -> None:
    with Client(service.url, token=TOKEN) as client:
        items = list(client.stream("two_speeds", {"text": "x"}, deadline_ms=1500))
    assert isinstance(items[-1], PipelineRun) and items[-1].status == "partial"
    nodes = [i.node for i in items if isinstance(i, NodeReport)]
    assert nodes[0] == "quick" and sorted(nodes) == ["quick", "slow"]


def test_refusals_are_service_errors_with_fields(service: ServiceServer) -> None:
    with Client(service.url, token=TOKEN) as client:
        with pytest.raises(ServiceError) as missing:
            client.run("one_call", {})
        with pytest.raises(ServiceError) as unknown:
            client.run("nope", {"text": "x"})
    assert missing.value.status == 422 and missing.value.fields[0]["field"] == "inputs.text"
    assert unknown.value.status == 404 and unknown.value.kind == "unknown_pipeline"
    with (
        Client(service.url, token="wrong-token-0123456789", max_retries=0) as client,
        pytest.raises(ServiceError) as denied,
    ):
        client.run("one_call", {"text": "1"})
    assert denied.value.status == 401 and "wrong-token" not in str(denied.value)


def test_a_429_is_retried_after_its_retry_after(service: ServiceServer) -> None:
    """The tenant may run one at a time: a second run is refused 429 (Retry-After: 1)
    while the first holds the slot, and the client's retry gets in after it."""

    async def main() -> tuple[PipelineRun, PipelineRun]:
        async with AsyncClient(service.url, token=TOKEN, max_retries=5) as client:
            first = asyncio.ensure_future(client.run("one_call", {"text": "1500"}))
            await asyncio.sleep(0.3)  # the first is in flight
            second = await client.run("one_call", {"text": "1"})
            return await first, second

    before = _refusals(service)
    first, second = asyncio.run(main())
    assert first.status == "ok" and second.status == "ok"
    assert _refusals(service) > before


def _refusals(service: ServiceServer) -> float:
    text = httpx.get(f"{service.url}/metrics").text
    for line in text.splitlines():
        if line.startswith('fanout_service_requests_total{pipeline="one_call",status="tenant_con'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_cancelling_the_caller_cancels_the_run(service: ServiceServer, emulator: Emulator) -> None:
    before = emulator.stats()["cancelled"]

    async def main() -> None:
        async with AsyncClient(service.url, token=TOKEN) as client:
            task = asyncio.ensure_future(client.run("one_call", {"text": "30000"}))
            # once the call reached the provider
            assert await asyncio.to_thread(
                wait_for, lambda: emulator.stats()["accepted"] > accepted
            )
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    accepted = emulator.stats()["accepted"]
    asyncio.run(main())
    assert wait_for(lambda: emulator.stats()["cancelled"] == before + 1)


def _scripted(statuses: list[int], seen: list[float]) -> httpx.MockTransport:
    """Answers ``statuses`` in turn (503/429 with Retry-After: 0), recording each call."""
    run = {"run_id": "r", "pipeline": "p", "status": "ok", "outputs": {}, "nodes": {},
           "usage": {"input_tokens": 1, "output_tokens": 1}, "cost_usd": 0.0,
           "duration_ms": 1.0}  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        status = statuses[min(len(seen), len(statuses)) - 1]
        if status == 200:
            return httpx.Response(200, json=run)
        error = {"error": {"type": "busy", "message": "try later", "fields": []}}
        return httpx.Response(status, json=error, headers={"retry-after": "0"})

    return httpx.MockTransport(handler)


def test_503_and_429_retried_until_an_answer() -> None:
    seen: list[float] = []
    transport = _scripted([503, 429, 200], seen)
    with Client("http://svc", transport=transport, backoff_s=0.0) as client:
        assert client.run("p", {}).status == "ok"
    assert len(seen) == 3


def test_retries_stop_at_max_retries_and_other_errors_are_not_retried() -> None:
    seen: list[float] = []
    with (
        Client("http://svc", transport=_scripted([503], seen), max_retries=2) as client,
        pytest.raises(ServiceError) as busy,
    ):
        client.run("p", {})
    assert len(seen) == 3 and busy.value.status == 503 and busy.value.retry_after_s == 0
    seen.clear()
    with (
        Client("http://svc", transport=_scripted([422], seen)) as client,
        pytest.raises(ServiceError),
    ):
        client.run("p", {})
    assert len(seen) == 1


def test_no_retry_past_the_deadline() -> None:
    """A Retry-After longer than the time left: the error now, not a wait."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        return httpx.Response(429, json={"error": {"message": "later"}},
                              headers={"retry-after": "30"})  # fmt: skip

    seen: list[float] = []
    with (
        Client("http://svc", transport=httpx.MockTransport(handler)) as client,
        pytest.raises(ServiceError) as refused,
    ):
        client.run("p", {}, deadline_ms=2000)
    assert len(seen) == 1 and refused.value.retry_after_s == 30


def test_the_token_is_not_in_the_repr() -> None:
    client = Client("http://svc", token="secret-token-0123456789")
    assert "secret-token" not in repr(client)
    client.close()
