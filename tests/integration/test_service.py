"""The service over loopback: a real uvicorn server, a real httpx client, the real emulator.

Nothing here asserts on timings: counts, statuses and orderings only (the hedging
test compares two p99s measured in the same test).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from support import Emulator, start_emulator

from fanout import DAG, Engine, parse_config
from fanout.batch import load_pipeline
from fanout.config import Config
from fanout.service import ServiceServer, TenantLimits, TokenStore, build_app
from fanout.sim.server import EmulatorConfig

TOKEN = "tok-" + "a1b2c3d4" * 4
OTHER = "tok-" + "ffff0000" * 4
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def emu_config(url: str, *, hedge: bool = False) -> Config:
    model: dict[str, object] = {"provider": "emu", "model": "sim-small"}
    if hedge:
        model["hedge"] = {"quantile": 0.9, "max_extra": 0.2, "min_samples": 20}
    return parse_config(
        {
            "providers": {
                "emu": {
                    "kind": "openai",
                    "base_url": url,
                    "max_concurrency": 256,
                    "retry": {"max_attempts": 1},
                }
            },
            "models": {"fast": model, "smart": {"provider": "emu", "model": "sim-large"}},
        }
    )


def two_speeds() -> DAG:
    dag = DAG("two_speeds", description="one quick call, one that takes 30 s")
    dag.input("text")
    quick = dag.llm("fast", "Rate: {text}", name="quick", max_tokens=5)
    slow = dag.llm("fast", "Wait [sim:latency=30000] {text}", name="slow", max_tokens=5)
    dag.output(quick=quick, slow=slow)
    return dag


def slow_fan() -> DAG:
    dag = DAG("slow_fan")
    items = dag.input("items")
    dag.output(out=dag.map(dag.llm("fast", "[sim:latency=30000] {item}", max_tokens=5), over=items))
    return dag


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with start_emulator(EmulatorConfig(latency_ms=5)) as emu:
        yield emu


@pytest.fixture(scope="module")
def service(emulator: Emulator) -> Iterator[ServiceServer]:
    engine = Engine(emu_config(emulator.base_url))
    pipelines = {
        "map_reduce": load_pipeline("examples/pipelines/map_reduce.py:dag"),
        "two_speeds": two_speeds(),
        "slow_fan": slow_fan(),
        "agent": load_pipeline("examples/pipelines/agent.py:dag"),
    }
    tokens = TokenStore.parse(f"acme:{TOKEN}\nglobex:{OTHER}", source="test tokens")

    def make() -> object:
        return build_app(
            pipelines, engine, tokens=tokens, tenant_limits=TenantLimits(max_concurrent=8)
        )

    with ServiceServer(make, close=engine.aclose) as server:  # type: ignore[arg-type]
        yield server


@pytest.fixture
def client(service: ServiceServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=60) as c:
        yield c


def wait_for(predicate: object, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_run_returns_its_outputs_and_per_node_status(client: httpx.Client) -> None:
    text = "The food was great. The staff were rude! I would come back?"
    reply = client.post(
        "/v1/pipelines/map_reduce/runs", headers=AUTH, json={"inputs": {"text": text}}
    )
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "ok" and body["pipeline"] == "map_reduce"
    assert len(body["outputs"]["ratings"]) == 3
    assert sum(body["outputs"]["counts"].values()) == 3
    assert body["outputs"]["summary"]
    assert body["nodes"]["ratings"]["items_total"] == 3
    assert body["nodes"]["ratings"]["calls"] == 3 and body["nodes"]["summary"]["calls"] == 1
    assert {n["status"] for n in body["nodes"].values()} == {"ok"}
    assert body["usage"]["input_tokens"] > 0 and body["duration_ms"] > 0
    assert len(body["run_id"]) == 32


def test_an_agent_run_returns_its_transcript_and_a_max_steps_status(
    client: httpx.Client,
) -> None:
    url = "/v1/pipelines/agent/runs"
    script = '[sim:tools=lookup_unit({"name": "cup"});search_notes({"query": "tea"})]'
    ok = client.post(url, headers=AUTH, json={"inputs": {"question": f"{script} Cups?"}}).json()
    assert ok["status"] == "ok"
    transcript = ok["nodes"]["answer"]["transcript"]
    assert [m["role"] for m in transcript] == ["user", "assistant", "tool", "tool", "assistant"]
    assert transcript[2]["content"] == "1 cup = 240 ml"
    assert (ok["nodes"]["answer"]["tool_calls"], ok["nodes"]["answer"]["tool_errors"]) == (2, 0)
    assert ok["outputs"]["answer"] == transcript[-1]["content"]

    looping = "[sim:tools=" + "|".join(['lookup_unit({"name": "cup"})'] * 5) + "] Cups?"
    stuck = client.post(url, headers=AUTH, json={"inputs": {"question": looping}}).json()
    assert stuck["status"] == "error" and stuck["error_type"] == "MaxStepsExceeded"
    node = stuck["nodes"]["answer"]
    assert node["status"] == "max_steps_exceeded" and node["calls"] == 5  # max_steps=4
    assert [m["role"] for m in node["transcript"]].count("tool") == 4


def test_bad_json_a_missing_input_and_an_unknown_pipeline_get_clear_4xx(
    client: httpx.Client,
) -> None:
    url = "/v1/pipelines/map_reduce/runs"
    json_headers = {**AUTH, "Content-Type": "application/json"}
    bad = client.post(url, headers=json_headers, content=b'{"inputs": {"text": ')
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_json"
    assert "not valid JSON" in bad.json()["error"]["message"]

    missing = client.post(url, headers=AUTH, json={"inputs": {}})
    assert missing.status_code == 422
    assert missing.json()["error"]["fields"] == [
        {"field": "inputs.text", "reason": "required; add it"}
    ]

    wrong = client.post(
        url, headers=AUTH, json={"inputs": {"text": "x", "txt": 1}, "deadline_ms": -5}
    )
    assert wrong.status_code == 422
    fields = {f["field"] for f in wrong.json()["error"]["fields"]}
    assert fields == {"inputs.txt", "deadline_ms"}

    unknown = client.post("/v1/pipelines/nope/runs", headers=AUTH, json={"inputs": {}})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "unknown_pipeline"
    assert "map_reduce" in unknown.json()["error"]["message"]


def test_no_token_or_a_wrong_one_is_401_and_no_token_leaks(client: httpx.Client) -> None:
    url = "/v1/pipelines/map_reduce/runs"
    for headers in ({}, {"Authorization": "Bearer " + TOKEN[:-1] + "x"}, {"Authorization": TOKEN}):
        reply = client.post(url, headers=headers, json={"inputs": {"text": "hi"}})
        assert reply.status_code == 401
        assert reply.headers["www-authenticate"] == "Bearer"
        assert TOKEN[4:20] not in reply.text
    assert client.get("/v1/pipelines").status_code == 401
    listed = client.get("/v1/pipelines", headers={"Authorization": f"Bearer {OTHER}"})
    assert listed.status_code == 200
    by_name = {p["name"]: p for p in listed.json()}
    assert by_name["map_reduce"]["inputs"] == ["text"]
    assert by_name["map_reduce"]["input_schema"]["required"] == ["text"]
    assert TOKEN not in repr(TokenStore.parse(f"acme:{TOKEN}", source="x"))


def test_a_deadline_returns_the_finished_nodes_as_partial(
    client: httpx.Client, emulator: Emulator
) -> None:
    before = emulator.stats()["cancelled"]
    reply = client.post(
        "/v1/pipelines/two_speeds/runs",
        headers=AUTH,
        json={"inputs": {"text": "good"}, "deadline_ms": 2500},
    )
    body = reply.json()
    assert reply.status_code == 200 and body["status"] == "partial"
    assert body["nodes"]["quick"]["status"] == "ok"
    assert body["nodes"]["slow"]["status"] == "cancelled"
    assert body["outputs"]["quick"] and body["outputs"]["slow"] is None
    # the slow call was cancelled in flight: the provider saw its client hang up
    assert wait_for(lambda: emulator.stats()["cancelled"] == before + 1)


def test_a_client_that_disconnects_cancels_its_in_flight_calls(
    service: ServiceServer, client: httpx.Client, emulator: Emulator
) -> None:
    before = emulator.stats()
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and hangs up
        httpx.post(
            f"{service.url}/v1/pipelines/slow_fan/runs",
            headers=AUTH,
            json={"inputs": {"items": ["a", "b", "c", "d", "e"]}},
            timeout=httpx.Timeout(60, read=1.0),
        )
    assert wait_for(lambda: emulator.stats()["accepted"] - before["accepted"] == 5)
    assert wait_for(lambda: emulator.stats()["cancelled"] - before["cancelled"] == 5)
    metrics = client.get("/metrics").text
    assert 'fanout_service_client_disconnects_total{pipeline="slow_fan"} 1.0' in metrics


def test_a_streaming_client_that_disconnects_cancels_its_run(
    service: ServiceServer, client: httpx.Client, emulator: Emulator
) -> None:
    before = emulator.stats()
    with (
        httpx.Client(base_url=service.url, timeout=60) as own,
        own.stream(
            "POST",
            "/v1/pipelines/two_speeds/runs",
            headers=AUTH,
            json={"inputs": {"text": "x"}, "stream": True},
        ) as reply,
    ):
        for line in reply.iter_lines():
            if line.startswith("data:"):  # the quick node's event: now hang up
                assert '"node":"quick"' in line
                break
    assert wait_for(lambda: emulator.stats()["cancelled"] - before["cancelled"] == 1)
    assert wait_for(
        lambda: (
            'fanout_service_requests_total{pipeline="two_speeds",status="disconnected"}'
            in client.get("/metrics").text
        )
    )


def test_stream_sends_a_node_event_per_finished_node_then_the_result(
    client: httpx.Client,
) -> None:
    events: list[tuple[str, dict[str, object]]] = []
    with client.stream(
        "POST",
        "/v1/pipelines/two_speeds/runs",
        headers=AUTH,
        json={"inputs": {"text": "good"}, "stream": True, "deadline_ms": 2000},
    ) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in reply.iter_lines():
            if line.startswith("event:"):
                kind = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                events.append((kind, json.loads(line.removeprefix("data:"))))
    assert [(k, e.get("node")) for k, e in events[:2]] == [("node", "quick"), ("node", "slow")]
    assert events[0][1]["status"] == "ok" and events[1][1]["status"] == "cancelled"
    kind, result = events[-1]
    assert kind == "result" and result["status"] == "partial" and len(events) == 3


def test_openapi_health_and_metrics(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/pipelines/map_reduce/runs" in spec["paths"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    run = spec["paths"]["/v1/pipelines/map_reduce/runs"]["post"]
    assert run["requestBody"]["required"] is True
    assert client.get("/healthz").json()["status"] == "ok"
    client.post("/v1/pipelines/map_reduce/runs", headers=AUTH, json={"inputs": {"text": "Fine."}})
    metrics = client.get("/metrics").text
    for name in (
        'fanout_service_requests_total{pipeline="map_reduce",status="ok"}',
        "fanout_service_request_duration_seconds_bucket",
        'fanout_service_in_flight{pipeline="map_reduce"} 0.0',
        "fanout_service_cost_usd_total",
        'fanout_limiter_rate_limited_total{limiter="emu/sim-small"} 0.0',
        "fanout_limiter_wait_seconds_total",
    ):
        assert name in metrics, name


def test_a_tenant_over_its_concurrency_cap_gets_429(service: ServiceServer) -> None:
    async def go() -> list[int]:
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as c:
            slow = [
                asyncio.ensure_future(
                    c.post(
                        "/v1/pipelines/two_speeds/runs",
                        headers=AUTH,
                        json={"inputs": {"text": "x"}, "deadline_ms": 1500},
                    )
                )
                for _ in range(8)
            ]
            await asyncio.sleep(0.5)
            over = await c.post(
                "/v1/pipelines/map_reduce/runs", headers=AUTH, json={"inputs": {"text": "Hi."}}
            )
            other = await c.post(
                "/v1/pipelines/map_reduce/runs",
                headers={"Authorization": f"Bearer {OTHER}"},
                json={"inputs": {"text": "Hi."}},
            )
            done = await asyncio.gather(*slow)
            return [over.status_code, other.status_code, *(r.status_code for r in done)]

    codes = asyncio.run(go())
    assert codes[0] == 429  # acme has 8 runs in flight
    assert codes[1] == 200  # globex does not share acme's cap
    assert codes[2:] == [200] * 8


@contextmanager
def tail_emulator_process(**config: float) -> Iterator[str]:
    """The emulator in its own process (not sharing the test's CPU and GIL); its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = (
        "import sys; from fanout.sim.server import EmulatorConfig, serve; "
        f"serve(EmulatorConfig(**{config!r}), port={port})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _up(root) or proc.poll() is not None, 30) and proc.poll() is None
        yield f"{root}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _up(root: str) -> bool:
    try:
        return httpx.get(f"{root}/stats").status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow  # ~20 s; tests/unit/test_hedge_priority.py covers hedging in the default run
def test_hedging_cuts_the_p99_of_a_heavy_tailed_call() -> None:
    """Two aliases on one heavy-tailed emulator (1 call in 20 takes 3 s more), one
    hedged: the same requests through the same server, each p99 measured here."""
    pipelines = {}
    for alias in ("plain", "hedged"):
        dag = DAG(alias)
        dag.output(reply=dag.llm(alias, "Say {n}", n=dag.input("n"), max_tokens=5, name="reply"))
        pipelines[alias] = dag
    tail = {"latency_ms": 20, "tail_rate": 0.05, "tail_latency_ms": 3000, "seed": 3}
    with tail_emulator_process(**tail) as base_url:
        config = parse_config(
            {
                "providers": {
                    "emu": {"kind": "openai", "base_url": base_url, "max_concurrency": 256}
                },
                "models": {
                    "plain": {"provider": "emu", "model": "sim-small"},
                    "hedged": {
                        "provider": "emu",
                        "model": "sim-small",
                        "hedge": {"quantile": 0.8, "max_extra": 0.5, "min_samples": 20},
                    },
                },
            }
        )
        engine = Engine(config)
        make = lambda: build_app(pipelines, engine, tokens=None)  # noqa: E731
        with ServiceServer(make, close=engine.aclose) as server:

            async def latencies(name: str, count: int) -> tuple[list[float], int]:
                pool = asyncio.Semaphore(20)
                times: list[float] = []
                hedges = 0

                async def one(c: httpx.AsyncClient, n: int) -> None:
                    nonlocal hedges
                    async with pool:
                        start = time.perf_counter()
                        reply = await c.post(
                            f"/v1/pipelines/{name}/runs", json={"inputs": {"n": n}}
                        )
                        times.append(time.perf_counter() - start)
                    assert reply.json()["status"] == "ok"
                    hedges += reply.json()["nodes"]["reply"]["hedges"]

                async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
                    await asyncio.gather(*(one(c, n) for n in range(count)))
                return sorted(times), hedges

            async def both() -> tuple[float, float, int]:
                await latencies("hedged", 40)  # warm-up: the hedge learns its delay
                plain, _ = await latencies("plain", 200)
                hedged, hedges = await latencies("hedged", 200)
                return plain[197], hedged[197], hedges  # p99 of 200

            plain_p99, hedged_p99, hedges = asyncio.run(both())
    assert plain_p99 > 3.0  # the tail
    assert hedged_p99 < 0.5 * plain_p99
    assert 0 < hedges <= 0.5 * 240  # within the hedge budget


def test_a_tenants_budget_caps_its_runs_and_an_exhausted_one_gets_402() -> None:
    from support import sim_config

    engine = Engine(sim_config(0.0))  # priced: fast $1/$2 per million tokens in/out
    dag = load_pipeline("examples/pipelines/map_reduce.py:dag")
    tokens = TokenStore.parse(f"acme:{TOKEN}", source="test")
    text = "Good. " * 30  # a run costs ~$0.0026 unbounded

    def statuses(budget_usd: float) -> tuple[list[object], float]:
        limits = TenantLimits(budget_usd=budget_usd)

        def make() -> object:
            return build_app({"map_reduce": dag}, engine, tokens=tokens, tenant_limits=limits)

        seen: list[object] = []
        spent = 0.0
        with ServiceServer(make) as server, httpx.Client(base_url=server.url, timeout=60) as c:  # type: ignore[arg-type]
            for _ in range(4):
                reply = c.post(
                    "/v1/pipelines/map_reduce/runs", headers=AUTH, json={"inputs": {"text": text}}
                )
                body = reply.json()
                seen.append(body["status"] if reply.status_code == 200 else reply.status_code)
                spent += body.get("cost_usd", 0.0)
        return seen, spent

    seen, spent = statuses(0.0001)
    assert seen == ["budget_exceeded"] * 4  # each run is capped at what the tenant has left
    assert 0 < spent <= 0.0001
    seen, spent = statuses(0.0)
    assert seen == [402] * 4 and spent == 0


def test_interactive_runs_overtake_batch_runs_sharing_a_provider_limit() -> None:
    """One provider limited to 10 calls/s; 40 batch runs arrive first (10 pass in the
    limiter's burst, 30 queue), then 5 interactive runs, which finish long before the
    batch backlog does."""
    config = parse_config(
        {
            "providers": {
                "sim": {
                    "kind": "sim",
                    "latency_ms": 10,
                    "jitter_sigma": 0,
                    "requests_per_min": 600,
                }
            },
            "models": {"fast": {"provider": "sim", "model": "sim-small"}},
        }
    )
    engine = Engine(config)
    dag = DAG("one")
    dag.output(reply=dag.llm("fast", "Say {n}", n=dag.input("n"), max_tokens=5, name="reply"))
    make = lambda: build_app({"one": dag}, engine, tokens=None)  # noqa: E731
    with ServiceServer(make, close=engine.aclose) as server:

        async def go() -> list[str]:
            order: list[str] = []
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:

                async def run(kind: str, n: int) -> None:
                    reply = await c.post(
                        "/v1/pipelines/one/runs", json={"inputs": {"n": n}, "priority": kind}
                    )
                    assert reply.json()["status"] == "ok"
                    order.append(kind)

                batch = [asyncio.ensure_future(run("batch", n)) for n in range(40)]
                await asyncio.sleep(1.0)
                interactive = [asyncio.ensure_future(run("interactive", 100 + n)) for n in range(5)]
                await asyncio.gather(*batch, *interactive)
            return order

        order = asyncio.run(go())
    last_interactive = max(i for i, kind in enumerate(order) if kind == "interactive")
    assert last_interactive < 30  # well before the batch backlog drained (45 runs in all)
    first_interactive = order.index("interactive")
    between = order[first_interactive:last_interactive]
    assert between.count("batch") <= 2  # at most one batch grant per four interactive ones
