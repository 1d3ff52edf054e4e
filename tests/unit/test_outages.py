"""Outages wait (fanout.run._outage): batch calls hold for a down provider, then give up."""

from __future__ import annotations

import asyncio
import gc
import pickle
from pathlib import Path

import pytest
from support import sim_config, write_records

from fanout import DAG, Engine, ProviderOutage, RunStatus
from fanout.batch import run_file
from fanout.errors import CircuitOpen, ProviderConnectionError
from fanout.retry import CircuitBreaker, CircuitState
from fanout.run._outage import is_outage, outage_of, wait_until_up
from fanout.sim import FakeClock


def opened(clock: FakeClock, *, cooldown_s: float = 10.0) -> CircuitBreaker:
    circuit = CircuitBreaker(clock, failure_threshold=2, cooldown_s=cooldown_s)
    circuit.record_failure("ProviderConnectionError: refused")
    circuit.record_failure("ProviderConnectionError: refused")
    assert circuit.state is CircuitState.OPEN
    return circuit


async def test_a_waiting_call_goes_when_the_cool_down_ends(clock: FakeClock) -> None:
    circuit = opened(clock)
    await wait_until_up("p/m", "p", circuit, clock, max_outage_s=600)
    assert clock.now() == 10.0  # woken by the timer when a probe may go, not by polling
    assert circuit.ready() and circuit.allow()  # the first one through is the probe
    assert not circuit.ready()  # ... and the others wait for its verdict


async def test_waiters_wake_at_the_probes_verdict(clock: FakeClock) -> None:
    circuit = opened(clock, cooldown_s=10.0)
    await clock.sleep(10.0)
    assert circuit.allow()  # the probe is out
    waiters = [
        asyncio.ensure_future(wait_until_up("p/m", "p", circuit, clock, max_outage_s=600))
        for _ in range(5)
    ]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    circuit.record_success()  # the provider is back: everyone goes at once
    await asyncio.gather(*waiters)
    assert clock.now() == 10.0 and circuit.state is CircuitState.CLOSED


async def test_every_waiter_gives_up_together_naming_the_cause(clock: FakeClock) -> None:
    circuit = opened(clock, cooldown_s=5.0)
    started = clock.now()

    async def wait_and_probe() -> None:
        while True:
            await wait_until_up("p/m", "p", circuit, clock, max_outage_s=30)
            if circuit.allow():  # the probe fails: still down
                circuit.record_failure("ProviderConnectionError: refused")

    with pytest.raises(ProviderOutage) as info:
        await asyncio.gather(*(wait_and_probe() for _ in range(3)))
    assert clock.now() - started == pytest.approx(30.0)  # since the failures began
    error = info.value
    assert error.name == "p/m" and error.cause == "ProviderConnectionError: refused"
    assert "ProviderConnectionError: refused" in str(error) and "run the same command" in str(error)
    again = pickle.loads(pickle.dumps(error))
    assert (again.name, again.cause) == ("p/m", error.cause)


async def test_an_outage_is_reported_since_its_failures_began(clock: FakeClock) -> None:
    circuit = CircuitBreaker(clock, failure_threshold=2, cooldown_s=5.0)
    assert outage_of("p/m", circuit, clock) is None
    circuit.record_failure("ProviderConnectionError: refused")
    await clock.sleep(3.0)
    circuit.record_failure("ProviderConnectionError: refused")
    await clock.sleep(2.0)
    outage = outage_of("p/m", circuit, clock)
    assert outage is not None and outage.down_s == 5.0 and outage.cause.startswith("Provider")
    circuit.record_success()
    assert outage_of("p/m", circuit, clock) is None


def test_what_counts_as_an_outage(clock: FakeClock) -> None:
    closed = CircuitBreaker(clock)
    assert is_outage(ProviderConnectionError("refused"), closed)
    assert is_outage(CircuitOpen("open"), closed)
    from fanout import ProviderHTTPError

    five_hundred = ProviderHTTPError("boom", status_code=500)
    assert not is_outage(five_hundred, closed)  # a 5xx alone is retried, then fails
    assert is_outage(five_hundred, opened(clock))  # ... unless the provider is down


def dead_provider_config(**retry: object) -> object:
    from fanout import parse_config

    data = sim_config(0.0, error_rate=1.0).model_dump()
    data["models"]["fast"]["fallbacks"] = []
    data["providers"]["sim"]["retry"] = {"max_attempts": 2, "initial_backoff_s": 0.1, **retry}
    data["providers"]["sim"]["circuit"] = {"failure_threshold": 3, "cooldown_s": 5.0}
    return parse_config(data)


def one_call() -> DAG:
    dag = DAG("one")
    dag.input("text")
    dag.output(label=dag.llm("fast", "Rate: {text}", max_tokens=5, name="rate"))
    return dag


async def test_a_service_run_fails_fast_but_a_batch_run_waits_then_gives_up(
    clock: FakeClock,
) -> None:
    async with Engine(dead_provider_config(), clock=clock) as engine:  # type: ignore[arg-type]
        dag = one_call()
        fast = [await engine.run(dag, {"text": f"t{i}"}) for i in range(3)]
        assert all(r.status is RunStatus.ERROR for r in fast)  # no max_outage_s: fail fast
        assert engine.outages() and engine.outages()[0].name == "sim/sim-small"
        started = clock.now()
        held = await engine.run(dag, {"text": "t"}, max_outage_s=60)
    assert held.status is RunStatus.ERROR and held.error_type == "ProviderOutage"
    assert "has been down" in (held.error_message or "")
    assert clock.now() - started >= 55  # it waited (virtual time) until the give-up


async def test_a_batch_call_waits_out_an_outage_and_then_succeeds(clock: FakeClock) -> None:
    async with Engine(dead_provider_config(), clock=clock) as engine:  # type: ignore[arg-type]
        provider = engine.providers["sim"]
        dag = one_call()

        async def recover() -> None:
            await clock.sleep(20.0)
            provider.error_rate = 0.0  # type: ignore[attr-defined]

        healer = asyncio.ensure_future(recover())
        results = await asyncio.gather(
            *(engine.run(dag, {"text": f"t{i}"}, max_outage_s=600) for i in range(10))
        )
        await healer
    assert all(r.ok for r in results), [r.error_message for r in results]
    assert clock.now() >= 20.0


async def test_a_job_stopped_by_an_outage_leaves_no_exception_unretrieved(
    clock: FakeClock, tmp_path: Path
) -> None:
    """Every record in flight hits the outage; the job raises the first and must still
    collect the others' (asyncio reports an exception nobody read when its task dies:
    "Task exception was never retrieved")."""
    reported: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    try:
        async with Engine(dead_provider_config(), clock=clock) as engine:  # type: ignore[arg-type]
            records = write_records(tmp_path / "in.jsonl", 20)
            with pytest.raises(ProviderOutage):
                await run_file(
                    engine, one_call(), records, tmp_path / "out", max_in_flight=8,
                    max_outage_s=30,
                )  # fmt: skip
        gc.collect()  # a finished task's unread exception is reported when it is freed
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []
