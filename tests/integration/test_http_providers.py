"""The OpenAI-compatible provider, limiter, retries, fallbacks and circuit against the emulator.

Everything runs over 127.0.0.1 against ``fanout.sim.server`` — the same emulator
``fanout sim-server`` runs — and asserts on the emulator's own counts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from support import Emulator, start_emulator

from fanout import DAG, Engine, NodeStatus, RunResult, parse_config
from fanout.config import Config
from fanout.sim.server import EmulatorConfig
from fanout.trace import read_segment, trace_files

KEY = "sk-fanout-test-0123456789-SECRET"
LIMIT_RPM = 1200.0  # 20 requests/s per key and model


@pytest.fixture(scope="module")
def limited() -> Iterator[Emulator]:
    with start_emulator(EmulatorConfig(requests_per_min=LIMIT_RPM, api_key=KEY)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def faulty() -> Iterator[Emulator]:
    with start_emulator(EmulatorConfig(api_key=KEY)) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _fresh(limited: Emulator, faulty: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    limited.reset()
    faulty.reset()
    monkeypatch.setenv("FANOUT_TEST_KEY", KEY)


def config(
    primary: Emulator,
    *,
    fallback: Emulator | None = None,
    rpm: float | None = None,
    adaptive: bool = True,
    retry: dict[str, object] | None = None,
    circuit: dict[str, object] | None = None,
    timeout_s: float = 10.0,
) -> Config:
    def provider(emulator: Emulator) -> dict[str, object]:
        return {
            "kind": "openai",
            "base_url": emulator.base_url,
            "api_key_env": "FANOUT_TEST_KEY",
            "requests_per_min": rpm,
            "adaptive": adaptive,
            "timeout_s": timeout_s,
            "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 2.0, **(retry or {})},
            "circuit": circuit or {},
        }

    providers = {"primary": provider(primary)}
    models: dict[str, object] = {
        "fast": {"provider": "primary", "model": "sim-small", "input_usd_per_mtok": 1.0}
    }
    if fallback is not None:
        providers["backup"] = provider(fallback)
        models["smart"] = {"provider": "backup", "model": "sim-large"}
        models["fast"]["fallbacks"] = ["smart"]  # type: ignore[index]
    return parse_config({"providers": providers, "models": models})


def classify() -> DAG:
    dag = DAG("classify")
    dag.input("text")
    dag.output(label=dag.llm("fast", "Rate the sentiment of: {text}", max_tokens=5, name="rate"))
    return dag


REVIEWS = ["great, I love it", "broken and late, terrible", "it is a chair"]
EXPECTED = ["positive", "negative", "neutral"]


async def run_many(engine: Engine, n: int) -> list[str]:
    dag = classify()
    results = await asyncio.gather(
        *(engine.run(dag, {"text": f"{REVIEWS[i % 3]} #{i}"}) for i in range(n))
    )
    assert all(r.ok for r in results), [r.error_message for r in results if not r.ok][:3]
    return [str(r.outputs["label"]) for r in results]


async def test_limits_are_respected_and_every_record_is_billed_once(limited: Emulator) -> None:
    async with Engine(config(limited, rpm=LIMIT_RPM)) as engine:
        labels = await run_many(engine, 90)
    assert labels == [EXPECTED[i % 3] for i in range(90)]
    stats = limited.stats()
    assert stats["accepted"] == 90  # nothing lost, nothing sent twice
    assert stats["limited"] <= 90 * 0.05


async def test_a_limit_configured_too_high_is_learned_from_the_provider(limited: Emulator) -> None:
    async with Engine(config(limited, rpm=LIMIT_RPM * 4)) as engine:
        await run_many(engine, 60)
        (state,) = engine.limiter_states()
    assert state.requests_per_min is not None and state.requests_per_min <= LIMIT_RPM
    stats = limited.stats()
    assert stats["accepted"] == 60
    assert stats["limited"] <= 60 * 0.1


async def test_retry_after_is_honoured(faulty: Emulator) -> None:
    with start_emulator(EmulatorConfig(requests_per_min=60, api_key=KEY)) as slow:
        # No local limit and no adaptation: only the 429s' Retry-After paces the retries.
        async with Engine(config(slow, adaptive=False, retry={"max_attempts": 6})) as engine:
            labels = await run_many(engine, 3)
        stats = slow.stats()
    assert sorted(labels) == sorted(EXPECTED)
    assert stats["accepted"] == 3
    # One token per second: two 429s at the start, one more at the first retry. Retrying
    # on the 50 ms back-off instead of the 1 s Retry-After would draw many more.
    assert stats["limited"] <= 4


async def test_fallback_is_taken_when_the_primary_fails(
    faulty: Emulator, limited: Emulator
) -> None:
    faulty.faults(error_rate=1.0)
    async with Engine(config(faulty, fallback=limited, retry={"max_attempts": 2})) as engine:
        result = await engine.run(classify(), {"text": "great, I love it"})
    assert result.ok
    assert result.outputs["label"] == "positive"
    assert result.nodes["rate"].fallbacks == 1
    assert result.nodes["rate"].calls == 3  # two attempts on the primary, one fallback
    assert faulty.stats()["errors"] == 2 and limited.stats()["accepted"] == 1


async def test_circuit_opens_then_half_opens_and_closes(
    faulty: Emulator, limited: Emulator
) -> None:
    faulty.faults(error_rate=1.0)
    cfg = config(
        faulty,
        fallback=limited,
        retry={"max_attempts": 1},
        circuit={"failure_threshold": 2, "cooldown_s": 0.5},
    )
    dag = classify()
    async with Engine(cfg) as engine:
        for _ in range(2):  # two failures open the circuit
            assert (await engine.run(dag, {"text": "x"})).nodes["rate"].fallbacks == 1
        assert faulty.stats()["accepted"] == 2
        open_result = await engine.run(dag, {"text": "x"})
        assert open_result.ok and open_result.nodes["rate"].fallbacks == 1
        assert faulty.stats()["accepted"] == 2  # open: the primary was not called
        faulty.faults(error_rate=0.0)
        await asyncio.sleep(0.6)  # the cool-down passes: one probe goes through
        probe = await engine.run(dag, {"text": "x"})
        assert probe.ok and probe.nodes["rate"].fallbacks == 0
        closed = await engine.run(dag, {"text": "x"})
        assert closed.nodes["rate"].fallbacks == 0
    assert faulty.stats()["accepted"] == 4


async def test_a_hang_is_cut_by_the_timeout(faulty: Emulator) -> None:
    faulty.faults(hang_rate=1.0)
    cfg = config(faulty, timeout_s=0.3, retry={"max_attempts": 2})
    async with Engine(cfg) as engine:
        result = await engine.run(classify(), {"text": "x"})
    node = result.nodes["rate"]
    assert node.status is NodeStatus.ERROR
    assert node.error_type == "ProviderTimeout"
    assert node.calls == 2


@pytest.mark.parametrize(
    ("fault", "error_type", "text"),
    [
        ("malformed_rate", "InvalidResponse", "malformed response"),
        ("truncate_rate", "ProviderConnectionError", "connection failed"),
    ],
)
async def test_broken_bodies_are_clear_provider_errors(
    faulty: Emulator, fault: str, error_type: str, text: str
) -> None:
    faulty.faults(**{fault: 1.0})
    async with Engine(config(faulty, retry={"max_attempts": 2})) as engine:
        result = await engine.run(classify(), {"text": "x"})
    node = result.nodes["rate"]
    assert node.error_type == error_type
    assert text in (node.error_message or "")
    assert node.calls == 2


async def test_the_key_never_reaches_a_log_an_error_or_a_repr(
    limited: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Engine(config(limited)) as engine:
        ok = await engine.run(classify(), {"text": "great"})
        seen = [repr(engine), repr(engine.providers["primary"]), str(ok.to_dict())]
    assert ok.ok
    wrong = "sk-wrong-key-abcdefghijklmnop"
    monkeypatch.setenv("FANOUT_TEST_KEY", wrong)
    async with Engine(config(limited, retry={"max_attempts": 1})) as engine:
        denied = await engine.run(classify(), {"text": "great"})
    assert denied.nodes["rate"].error_type == "ProviderHTTPError"
    assert "401" in (denied.error_message or "")
    seen += [str(denied.to_dict()), caplog.text]
    for text in seen:
        assert KEY not in text
        assert wrong not in text


def _all_text(directory: Path) -> str:
    """Every file under ``directory``: raw bytes, and every Parquet value decompressed."""
    chunks = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        chunks.append(path.read_bytes().decode("latin-1"))
        if path.suffix == ".parquet":
            chunks.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
        if path.suffix == ".arrows":
            chunks.append(json.dumps(read_segment(path).to_pylist(), default=str))
    return "\n".join(chunks)


async def test_traces_match_the_providers_counts_and_hold_no_key(
    limited: Emulator, faulty: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    faulty.faults(error_rate=0.3)  # retries and error rows, with messages, in the trace
    cfg = config(faulty, retry={"max_attempts": 6})
    cfg = cfg.model_copy(update={"traces": cfg.traces.model_copy(update={"content": "full"})})
    traces = tmp_path / "traces"
    async with Engine(cfg, traces=traces) as engine:
        results = await asyncio.gather(
            *(engine.run(classify(), {"text": f"{REVIEWS[i % 3]} #{i}"}) for i in range(30))
        )
    wrong = "sk-wrong-key-abcdefghijklmnop"
    monkeypatch.setenv("FANOUT_TEST_KEY", wrong)
    async with Engine(config(limited, retry={"max_attempts": 1}), traces=traces) as engine:
        denied = await engine.run(classify(), {"text": "great"})
    assert denied.nodes["rate"].error_type == "ProviderHTTPError"

    files = trace_files(traces)
    assert files.segments == [] and len(files.parts) == 2
    table = pa.concat_tables([pq.read_table(p) for p in files.parts])
    attempts = table.filter(pc.equal(table.column("record_type"), "attempt")).to_pylist()
    stats = faulty.stats()
    ok = [a for a in attempts if a["status"] == "ok" and a["job_id"] != denied_job(table, denied)]
    assert len(ok) == sum(r.ok for r in results) == 30
    assert sum(a["input_tokens"] for a in ok) == sum(r.usage.input_tokens for r in results)
    assert sum(a["output_tokens"] for a in ok) == sum(r.usage.output_tokens for r in results)
    errors = [a for a in attempts if a["http_status"] == 500]
    # one row per request the emulator answered; tokens as the emulator counted them
    assert (len(ok) + len(errors), len(errors)) == (stats["accepted"], stats["errors"])
    assert len(errors) > 0
    assert sum(a["input_tokens"] + a["output_tokens"] for a in ok) == stats["tokens"]
    assert all(a["retryable"] and a["error_message"] for a in errors)
    assert [a["http_status"] for a in attempts if a["job_id"] == denied_job(table, denied)] == [401]
    text = _all_text(tmp_path)
    assert "Rate the sentiment" in text  # content = "full" stores prompts...
    assert KEY not in text and wrong not in text  # ...but never a key


def denied_job(table: pa.Table, denied: RunResult) -> str:
    rows = table.filter(pc.equal(table.column("trace_id"), denied.trace_id)).to_pylist()
    return str(rows[0]["job_id"])


async def test_an_answer_that_arrived_while_the_loop_was_busy_is_not_a_timeout(
    faulty: Emulator,
) -> None:
    """The provider answers in 0.1 s; the client's loop is busy for 1 s meanwhile. With
    a 0.3 s timeout the answer was thrown away, retried and billed twice; now it is read."""
    faulty.faults(latency_ms=100)
    try:
        async with Engine(config(faulty, timeout_s=0.3)) as engine:
            running = asyncio.ensure_future(engine.run(classify(), {"text": "great"}))
            await asyncio.sleep(0.03)  # the request is out
            time.sleep(1.0)  # noqa: ASYNC251  (the point: a loop starved of CPU)
            result = await running
    finally:
        faulty.faults(latency_ms=0)
    assert result.ok, result.error_message
    assert result.nodes["rate"].calls == 1
    assert faulty.stats()["accepted"] == 1  # billed once


async def test_retry_hints_forwarded_by_a_litellm_proxy_are_honoured() -> None:
    proxied = EmulatorConfig(requests_per_min=60, api_key=KEY, proxy_headers=True)
    with start_emulator(proxied) as slow:
        async with Engine(config(slow, adaptive=False, retry={"max_attempts": 6})) as engine:
            labels = await run_many(engine, 3)
        stats = slow.stats()
    assert sorted(labels) == sorted(EXPECTED)
    # only llm_provider-retry-after-ms paces the retries (as test_retry_after_is_honoured)
    assert stats["limited"] <= 4


async def test_a_call_that_timed_out_once_sent_counts_as_spent(
    faulty: Emulator, tmp_path: Path
) -> None:
    from fanout import Budget
    from fanout.run import CallJournal, journal_spend

    faulty.faults(hang_rate=1.0)
    job = Budget(usd=1.0)
    journal = CallJournal(tmp_path, writer_id="w")
    cfg = config(faulty, timeout_s=0.2, retry={"max_attempts": 1})
    async with Engine(cfg, journal=journal, job_budget=job) as engine:
        result = await engine.run(classify(), {"text": "x"}, record_key="r1")
    journal.close()
    assert result.nodes["rate"].error_type == "ProviderTimeout"
    # the provider may have run it: its estimate (prompt + max_tokens, priced), not zero
    assert result.cost_usd > 0 and job.spent_usd == pytest.approx(result.cost_usd)
    assert journal_spend(tmp_path).usd == pytest.approx(result.cost_usd)
