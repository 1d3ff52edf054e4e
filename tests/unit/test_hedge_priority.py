"""Hedging (learned quantile, budget, first answer wins) and interactive-before-batch priority,
on a fake clock: virtual time, so ratios are exact and nothing waits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from support import ListSink

from fanout import DAG, Engine, NodeStatus, RunStatus, parse_config
from fanout.errors import ProviderHTTPError
from fanout.limits import Limiter
from fanout.retry import HedgePolicy
from fanout.run import NodeResult, RunResult
from fanout.sim import FakeClock, SimProvider
from fanout.types import ChatRequest, ChatResponse, Usage


def test_hedge_delay_is_the_learned_quantile_once_there_are_enough_samples() -> None:
    policy = HedgePolicy(quantile=0.9, min_samples=10, max_extra=0.5)
    for latency in range(1, 10):
        policy.observe(latency / 100)
    assert policy.delay_s() is None  # 9 samples: not learned yet
    policy.observe(0.10)
    assert policy.delay_s() == pytest.approx(0.09)  # nearest rank of 1..10 at 0.9


def test_hedge_budget_allows_max_extra_hedges_per_call() -> None:
    policy = HedgePolicy(max_extra=0.1, min_samples=1, burst=3)
    granted = 0
    for _ in range(1000):
        policy.note_call()
        granted += policy.try_hedge()  # every call wants a hedge: only the budget stops it
    assert granted == 100
    assert policy.hedges == 100 and policy.calls == 1000


def test_hedge_budget_holds_at_most_burst_hedges() -> None:
    policy = HedgePolicy(max_extra=0.5, min_samples=1, burst=2)
    for _ in range(100):
        policy.note_call()  # nothing hedged for a long time ...
    assert [policy.try_hedge() for _ in range(4)] == [True, True, False, False]  # ... 2 saved


def _tail_config(*, hedge: bool) -> object:
    model: dict[str, object] = {"provider": "sim", "model": "sim-small"}
    if hedge:
        model["hedge"] = {"quantile": 0.9, "max_extra": 0.15, "min_samples": 20}
    return parse_config(
        {
            "providers": {
                "sim": {
                    "kind": "sim",
                    "latency_ms": 100,
                    "jitter_sigma": 0.1,
                    "tail_rate": 0.05,  # 1 call in 20 takes 2 s more
                    "tail_latency_ms": 2000,
                    "max_concurrency": 10_000,
                }
            },
            "models": {"fast": model},
        }
    )


async def _p99_and_calls(hedge: bool) -> tuple[float, int, int, Engine]:
    clock = FakeClock(autojump=True)
    dag = DAG("one")
    dag.output(reply=dag.llm("fast", "Say {n}", n=dag.input("n"), max_tokens=5, name="reply"))
    engine = Engine(_tail_config(hedge=hedge), clock=clock)  # type: ignore[arg-type]
    results = []
    for batch in range(10):  # 400 requests, 40 at a time
        results += await asyncio.gather(
            *(engine.run(dag, {"n": batch * 40 + i}) for i in range(40))
        )
    await clock.aclose()
    assert all(r.ok for r in results)
    times = sorted(r.wall_time_s for r in results)
    p99 = times[int(0.99 * len(times)) - 1]
    provider = engine.providers["sim"]
    assert isinstance(provider, SimProvider)
    hedges = sum(r.nodes["reply"].hedges for r in results)
    return p99, provider.calls, hedges, engine


async def test_hedging_cuts_the_p99_of_a_heavy_tailed_call_within_its_budget() -> None:
    plain_p99, plain_calls, plain_hedges, _ = await _p99_and_calls(hedge=False)
    hedged_p99, hedged_calls, hedges, engine = await _p99_and_calls(hedge=True)
    assert plain_hedges == 0 and plain_calls == 400
    assert plain_p99 > 2.0  # the tail: 2 s more
    assert hedged_p99 < 0.3 * plain_p99  # the duplicate of a slow call answers first
    assert 0 < hedges <= 0.15 * 400  # within max_extra: credit is earned before it is spent
    assert hedged_calls == 400 + hedges
    policy = engine.hedges()["fast"]
    delay = policy.delay_s()
    assert delay is not None and 0.1 < delay < 2.0  # learned: above the body, below the tail


async def test_a_hedged_call_cancels_the_loser_and_releases_its_budget() -> None:
    clock = FakeClock(autojump=True)
    config = _tail_config(hedge=True)
    sink = ListSink()
    engine = Engine(config, clock=clock, traces=sink)  # type: ignore[arg-type]
    dag = DAG("one")
    dag.output(reply=dag.llm("fast", "Say {n}", n=dag.input("n"), max_tokens=5, name="reply"))
    results = []
    for batch in range(10):
        results += await asyncio.gather(
            *(engine.run(dag, {"n": batch * 40 + i}, budget_usd=1.0) for i in range(40))
        )
    await clock.aclose()
    provider = engine.providers["sim"]
    assert isinstance(provider, SimProvider)
    assert provider.in_flight == 0  # every loser was cancelled, none left running
    assert all(r.ok for r in results)
    assert sum(r.nodes["reply"].hedges for r in results) > 0
    limiter = engine.limiters()[0]
    assert limiter.state().in_flight == 0  # permits of cancelled losers released
    # the trace marks each duplicate; per hedged call one attempt won and one was cancelled
    attempts = [s for s in sink.spans if s.record_type == "attempt"]
    hedged = [s for s in attempts if s.hedged]
    assert len(hedged) == sum(r.nodes["reply"].hedges for r in results)
    assert len(attempts) == 400 + len(hedged)
    assert sum(s.status == "cancelled" for s in attempts) == len(hedged)
    assert all(s.status in ("ok", "cancelled") for s in attempts)
    assert sum(s.cost_usd or 0 for s in attempts) == pytest.approx(sum(r.cost_usd for r in results))


async def test_on_node_reports_each_node_as_it_finishes() -> None:
    clock = FakeClock(autojump=True)
    engine = Engine(_tail_config(hedge=False), clock=clock)  # type: ignore[arg-type]
    dag = DAG("two")
    text = dag.input("text")
    quick = dag.llm("fast", "[sim:latency=10] quick {text}", name="quick")
    slow = dag.llm("fast", "[sim:latency=5000] slow {text}", name="slow")
    dag.output(quick=quick, slow=slow, text=text)
    seen: list[NodeResult] = []
    result = await engine.run(dag, {"text": "x"}, deadline_s=1.0, on_node=seen.append)
    await clock.aclose()
    assert result.status is RunStatus.DEADLINE_EXCEEDED
    assert [(n.node_id, n.status) for n in seen] == [
        ("quick", NodeStatus.OK),
        ("slow", NodeStatus.CANCELLED),
    ]


async def test_interactive_calls_go_first_but_batch_keeps_its_share() -> None:
    clock = FakeClock(autojump=True)
    limiter = Limiter(clock=clock, requests_per_min=600, burst_s=0.1, interactive_weight=4)
    order: list[str] = []

    async def call(kind: str) -> None:
        permit = await limiter.acquire(interactive=kind == "i")
        order.append(kind)
        permit.release()

    first = await limiter.acquire()  # empties the burst: everything below queues
    first.release()
    tasks = [asyncio.ensure_future(call("b")) for _ in range(20)]
    await asyncio.sleep(0)
    tasks += [asyncio.ensure_future(call("i")) for _ in range(20)]
    await asyncio.gather(*tasks)
    await clock.aclose()
    # interactive work arrived later yet finishes far sooner ...
    last_interactive = max(i for i, kind in enumerate(order) if kind == "i")
    assert last_interactive < 30
    # ... while batch work still got one grant in five meanwhile: it never starves
    head = order[: last_interactive + 1]
    assert head.count("b") >= (len(head) - 1) // 5
    assert order[:5].count("i") >= 3


async def test_interactive_runs_finish_before_batch_runs_sharing_the_quota() -> None:
    clock = FakeClock(autojump=True)
    config = parse_config(
        {
            "providers": {
                "sim": {"kind": "sim", "latency_ms": 50, "jitter_sigma": 0, "requests_per_min": 600}
            },
            "models": {"fast": {"provider": "sim", "model": "sim-small"}},
        }
    )
    engine = Engine(config, clock=clock)
    dag = DAG("one")
    dag.output(reply=dag.llm("fast", "Say {n}", n=dag.input("n"), max_tokens=5, name="reply"))
    ends: dict[str, list[float]] = {"batch": [], "interactive": []}

    async def run(kind: str, n: int) -> None:
        result = await engine.run(dag, {"n": n}, interactive=kind == "interactive")
        assert result.ok
        ends[kind].append(clock.now())

    batch = [asyncio.ensure_future(run("batch", n)) for n in range(60)]  # a 6 s backlog
    await clock.sleep(1.0)
    interactive = [asyncio.ensure_future(run("interactive", 100 + n)) for n in range(10)]
    await asyncio.gather(*batch, *interactive)
    await clock.aclose()
    # the interactive runs arrived behind a backlog of batch runs yet were served first ...
    assert max(ends["interactive"]) < 3.0 < max(ends["batch"])
    # ... while batch runs kept finishing meanwhile (one grant in five): no starvation
    window = (1.0, max(ends["interactive"]))
    assert sum(window[0] < t <= window[1] for t in ends["batch"]) >= 2


async def test_hedges_can_go_to_the_fallback_model() -> None:
    clock = FakeClock(autojump=True)
    config = parse_config(
        {
            "providers": {
                "sim": {
                    "kind": "sim",
                    "latency_ms": 100,
                    "jitter_sigma": 0.1,
                    "tail_rate": 0.1,
                    "tail_latency_ms": 2000,
                }
            },
            "models": {
                "fast": {
                    "provider": "sim",
                    "model": "sim-small",
                    "fallbacks": ["smart"],
                    "hedge": {"quantile": 0.8, "max_extra": 0.5, "to": "fallback"},
                },
                "smart": {"provider": "sim", "model": "sim-large"},
            },
        }
    )
    sink = ListSink()
    engine = Engine(config, clock=clock, traces=sink)
    dag = DAG("one")
    dag.output(reply=dag.llm("fast", "Say {n}", n=dag.input("n"), max_tokens=5, name="reply"))
    for batch in range(5):
        await asyncio.gather(*(engine.run(dag, {"n": batch * 20 + i}) for i in range(20)))
    await clock.aclose()
    hedged = [s for s in sink.spans if s.record_type == "attempt" and s.hedged]
    assert hedged and {s.model_alias for s in hedged} == {"smart"}
    assert {s.request_model for s in hedged} == {"sim-large"}


class Scripted:
    """A provider whose n-th call takes ``script[n]`` = (seconds, fails); counts outcomes."""

    name = "sim"

    def __init__(self, clock: FakeClock, script: list[tuple[float, bool]]) -> None:
        self.clock = clock
        self.script = script
        self.calls = self.cancelled = 0

    async def complete(
        self, request: ChatRequest, *, timeout_s: float | None = None
    ) -> ChatResponse:
        seconds, fails = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        try:
            await self.clock.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if fails:
            raise ProviderHTTPError("scripted 500", provider="sim", status_code=500)
        return ChatResponse(content=f"answer {self.calls}", usage=Usage(1, 1), model=request.model)

    async def aclose(self) -> None:
        return None


async def _scripted_run(
    script: list[tuple[float, bool]], deadline_s: float | None = None
) -> tuple[RunResult, Scripted, FakeClock]:
    clock = FakeClock(autojump=True)
    config = parse_config(
        {
            "providers": {"sim": {"kind": "sim", "retry": {"max_attempts": 1}}},
            "models": {
                "fast": {
                    "provider": "sim",
                    "model": "sim-small",
                    "hedge": {"quantile": 0.5, "max_extra": 1.0, "min_samples": 1},
                }
            },
        }
    )
    provider = Scripted(clock, script)
    engine = Engine(config, clock=clock, providers={"sim": provider})
    dag = DAG("one")
    dag.output(reply=dag.llm("fast", "Say {n}", n=dag.input("n"), max_tokens=5, name="reply"))
    await engine.run(dag, {"n": 0})  # learns a hedge delay of 0.1 s
    start = clock.now()
    result = await engine.run(dag, {"n": 1}, deadline_s=deadline_s)
    object.__setattr__(result, "wall_time_s", clock.now() - start)
    await clock.aclose()
    return result, provider, clock


async def test_a_duplicate_that_answers_first_wins_and_the_first_is_cancelled() -> None:
    result, provider, _ = await _scripted_run([(0.1, False), (5.0, False), (0.1, False)])
    assert result.ok and result.outputs["reply"] == "answer 3"
    assert result.wall_time_s == pytest.approx(0.2)  # the delay, then the duplicate's 0.1 s
    assert provider.calls == 3 and provider.cancelled == 1
    assert result.nodes["reply"].hedges == 1


async def test_when_the_first_attempt_fails_the_duplicate_in_flight_still_answers() -> None:
    result, provider, _ = await _scripted_run([(0.1, False), (0.5, True), (1.0, False)])
    assert result.ok and result.outputs["reply"] == "answer 3"
    assert result.wall_time_s == pytest.approx(1.1)
    assert provider.cancelled == 0


async def test_both_attempts_failing_reports_the_first_attempts_error() -> None:
    result, provider, _ = await _scripted_run([(0.1, False), (0.5, True), (1.0, True)])
    assert result.status is RunStatus.ERROR
    assert result.nodes["reply"].error_type == "ProviderHTTPError"
    assert provider.calls == 3


async def test_a_deadline_cancels_both_the_first_attempt_and_its_duplicate() -> None:
    script = [(0.1, False), (5.0, False), (5.0, False)]
    result, provider, _ = await _scripted_run(script, deadline_s=1.0)
    assert result.status is RunStatus.DEADLINE_EXCEEDED
    assert provider.calls == 3 and provider.cancelled == 2  # nothing left running


async def test_hedged_attempts_are_marked_in_the_parquet_trace(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    clock = FakeClock(autojump=True)
    engine = Engine(_tail_config(hedge=True), clock=clock, traces=tmp_path)  # type: ignore[arg-type]
    dag = DAG("one")
    dag.output(reply=dag.llm("fast", "Say {n}", n=dag.input("n"), max_tokens=5, name="reply"))
    results = []
    for batch in range(5):
        results += await asyncio.gather(
            *(engine.run(dag, {"n": batch * 40 + i}) for i in range(40))
        )
    await clock.aclose()
    await engine.aclose()
    parts = await asyncio.to_thread(lambda: sorted(tmp_path.rglob("*.parquet")))
    rows = [row for part in parts for row in pq.read_table(part).to_pylist()]
    attempts = [r for r in rows if r["record_type"] == "attempt"]
    hedges = sum(r.nodes["reply"].hedges for r in results)
    assert hedges > 0
    assert sum(1 for r in attempts if r["hedged"]) == hedges
    assert all(r["hedged"] is None for r in rows if r["record_type"] != "attempt")


class ScriptedStream(Scripted):
    """A streaming provider: its n-th call sends one piece after ``script[n][0]`` seconds,
    then ends ``script[n][1]`` seconds later."""

    def __init__(self, clock: FakeClock, script: list[tuple[float, float]]) -> None:
        super().__init__(clock, [])
        self.pieces = script

    async def stream(
        self,
        request: ChatRequest,
        *,
        on_delta: Callable[[str], None],
        timeout_s: float | None = None,
    ) -> ChatResponse:
        first_s, rest_s = self.pieces[min(self.calls, len(self.pieces) - 1)]
        self.calls += 1
        try:
            await self.clock.sleep(first_s)
            on_delta(f"piece {self.calls}")
            await self.clock.sleep(rest_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return ChatResponse(content=f"piece {self.calls}", usage=Usage(1, 1), model=request.model)


@pytest.mark.parametrize(("first_s", "hedges"), [(0.05, 0), (0.5, 1)])
async def test_a_stream_that_has_begun_is_not_hedged(first_s: float, hedges: int) -> None:
    clock = FakeClock(autojump=True)
    config = parse_config(
        {
            "providers": {"sim": {"kind": "sim", "retry": {"max_attempts": 1}}},
            "models": {"fast": {"provider": "sim", "model": "sim-small",
                                "hedge": {"quantile": 0.5, "max_extra": 1.0, "min_samples": 1}}},
        }
    )  # fmt: skip
    # the first call teaches a delay of 0.1 s; the second's first piece comes before it
    # (its pieces are the caller's: no duplicate) or after it (hedged as any slow call)
    provider = ScriptedStream(clock, [(0.05, 0.05), (first_s, 1.0), (0.05, 0.05)])
    engine = Engine(config, clock=clock, providers={"sim": provider})
    dag = DAG("one")
    reply = dag.llm("fast", "Say {n}", n=dag.input("n"), max_tokens=5, stream=True, name="reply")
    dag.output(reply=reply)
    await engine.run(dag, {"n": 0})
    result = await engine.run(dag, {"n": 1})
    await clock.aclose()
    assert result.ok and result.nodes["reply"].hedges == hedges
    assert provider.calls == 2 + hedges
