"""Batch jobs in batch mode against the emulator's Batch API: the same rows as online, cost at
the batch prices of the billed usage, failed lines retried then error-rowed, an expired
batch's answers kept, the enqueued-token limit, online fallback, --detach and a lost submit."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support import Emulator, ListSink, batch_config, start_emulator

from fanout import DAG, Engine, parse_config
from fanout.batch import run_file
from fanout.batch._batch_log import BatchLog
from fanout.providers import OpenAIBatchAPI
from fanout.sim.server import BatchEmulatorConfig, EmulatorConfig


def two_step() -> DAG:
    dag = DAG("two_step")
    dag.input("text")
    summary = dag.llm("fast", "Summarize: {text}", max_tokens=20, name="summary")
    label = dag.llm(
        "fast", "Classify the sentiment of: {summary}", summary=summary, max_tokens=5, name="label"
    )
    dag.output(summary=summary, label=label)
    return dag


def one_step() -> DAG:
    dag = DAG("one_step")
    dag.output(reply=dag.llm("fast", "Summarize: {text}", text=dag.input("text"), max_tokens=20))
    return dag


def records(path: Path, texts: list[str]) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts)),
        encoding="utf-8",
    )
    return path


def rows(out: Path) -> list[dict[str, object]]:
    table = pq.read_table(out / "results").sort_by("key")
    return table.to_pylist()


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    batch = getattr(request, "param", BatchEmulatorConfig(delay_s=0.2))
    with start_emulator(EmulatorConfig(batch=batch)) as emu:
        yield emu


def _online(config_url: str) -> Engine:
    config = batch_config(config_url, enabled=False)
    return Engine(config)


@pytest.mark.parametrize("n", [300, pytest.param(5_000, marks=pytest.mark.slow)])
async def test_batch_mode_gives_the_rows_of_online_mode_at_the_batch_price(
    emulator: Emulator, tmp_path: Path, n: int
) -> None:
    source = records(tmp_path / "in.jsonl", [f"review {i}: great and fast" for i in range(n)])
    async with _online(emulator.base_url) as engine:
        online = await run_file(engine, two_step(), source, tmp_path / "online", key="id")
    assert emulator.batch_stats()["batches_created"] == 0
    sink = ListSink()
    async with Engine(batch_config(emulator.base_url), traces=sink) as engine:
        batched = await run_file(
            engine, two_step(), source, tmp_path / "batch", key="id", max_in_flight=n
        )
    columns = ("key", "status", "output_summary", "output_label", "input_tokens", "output_tokens")
    expected = [{c: r[c] for c in columns} for r in rows(tmp_path / "online")]
    assert [{c: r[c] for c in columns} for r in rows(tmp_path / "batch")] == expected
    assert batched.ok == online.ok == n

    stats = emulator.batch_stats()
    assert (
        stats["lines_completed"] == stats["lines_submitted"] == stats["distinct_requests"] == 2 * n
    )
    assert stats["batches_by_status"] == {"completed": stats["batches_created"]}
    # waves: every record's first step is in a batch before any second step is
    assert stats["batches_created"] >= 2
    billed = (stats["billed_input_tokens"] * 0.5 + stats["billed_output_tokens"] * 1.0) / 1e6
    assert batched.cost_usd == pytest.approx(billed, rel=1e-9)
    assert batched.cost_usd == pytest.approx(online.cost_usd / 2, rel=1e-9)

    attempts = [s for s in sink.spans if s.record_type == "attempt"]
    assert len(attempts) == 2 * n
    assert all(s.batch_id and s.batch_submitted_at and s.batch_completed_at for s in attempts)
    # the provider's times are whole seconds
    assert all(int(s.batch_submitted_at) <= s.batch_completed_at for s in attempts)  # type: ignore[arg-type, operator]
    assert sum(s.cost_usd or 0 for s in attempts) == pytest.approx(billed, rel=1e-9)
    # waves: the first batch holds first steps only; second steps went out in later ones
    first = min(attempts, key=lambda s: s.batch_submitted_at or 0).batch_id
    assert {s.node_id for s in attempts if s.batch_id == first} == {"summary"}
    assert first not in {s.batch_id for s in attempts if s.node_id == "label"}


async def test_failed_lines_are_retried_in_later_batches_then_error_rowed(
    emulator: Emulator, tmp_path: Path
) -> None:
    texts = ["a fine note", "a flaky note [sim:fail-once]", "a broken note [sim:fail]"]
    source = records(tmp_path / "in.jsonl", texts)
    async with Engine(batch_config(emulator.base_url, max_attempts=3)) as engine:
        stats = await run_file(engine, one_step(), source, tmp_path / "out", key="id")
    by_key = {r["key"]: r for r in rows(tmp_path / "out")}
    assert (by_key["r0"]["status"], by_key["r1"]["status"]) == ("ok", "ok")
    assert by_key["r2"]["status"] == "error"
    assert by_key["r2"]["error_type"] == "ProviderHTTPError"
    assert by_key["r1"]["attempts"] == 2 and by_key["r2"]["attempts"] == 3
    counts = emulator.batch_stats()
    # r1 twice, r2 three times, each time in a later batch
    assert counts["lines_submitted"] == 1 + 2 + 3 and counts["distinct_requests"] == 3
    assert counts["batches_created"] == 3
    assert stats.errors == 1


async def test_a_line_still_failing_goes_online_with_online_fallback(
    emulator: Emulator, tmp_path: Path
) -> None:
    source = records(tmp_path / "in.jsonl", ["a flaky note [sim:fail-once]"])
    sink = ListSink()
    config = batch_config(emulator.base_url, max_attempts=1)
    async with Engine(config, traces=sink) as engine:
        await run_file(engine, one_step(), source, tmp_path / "out", key="id", online_fallback=True)
    assert rows(tmp_path / "out")[0]["status"] == "ok"
    attempts = sorted(
        (s for s in sink.spans if s.record_type == "attempt"), key=lambda s: s.fallback_index or 0
    )
    assert [(s.fallback_index, s.status, bool(s.batch_id)) for s in attempts] == [
        (0, "error", True),  # the batch line failed...
        (1, "ok", False),  # ... and the same model answered online
    ]
    assert emulator.stats()["accepted"] == 1


@pytest.mark.parametrize(
    "emulator", [BatchEmulatorConfig(delay_s=1.0, expire_s=0.75)], indirect=True
)
async def test_an_expired_batch_keeps_its_answers_and_sends_the_rest_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    n = 40
    source = records(tmp_path / "in.jsonl", [f"note {i}" for i in range(n)])
    async with Engine(batch_config(emulator.base_url, max_attempts=4)) as engine:
        stats = await run_file(engine, one_step(), source, tmp_path / "out", key="id")
    counts = emulator.batch_stats()
    assert counts["batches_by_status"].get("expired", 0) >= 1
    # every expired line but those on their last attempt went again; no answered line did
    resent = counts["lines_submitted"] - counts["distinct_requests"]
    assert resent == counts["lines_expired"] - stats.errors
    assert counts["lines_completed"] == stats.ok
    assert stats.ok > n // 2 and stats.ok + stats.errors == n


@pytest.mark.parametrize(
    "emulator", [BatchEmulatorConfig(delay_s=0.2, queue_tokens=400)], indirect=True
)
@pytest.mark.parametrize("configured", [False, True])
async def test_the_enqueued_token_limit_is_kept_or_learned(
    emulator: Emulator, tmp_path: Path, configured: bool
) -> None:
    n = 60  # ~13 prompt tokens each: about two batches' worth of the queue
    source = records(tmp_path / "in.jsonl", [f"note {i}" for i in range(n)])
    extra = {"enqueued_tokens": 400} if configured else {}
    async with Engine(batch_config(emulator.base_url, **extra)) as engine:
        stats = await run_file(engine, one_step(), source, tmp_path / "out", key="id")
    assert stats.ok == n
    counts = emulator.batch_stats()
    assert counts["lines_submitted"] == counts["distinct_requests"] == n  # none ran twice
    failed = counts["batches_by_status"].get("failed", 0)
    assert failed == 0 if configured else failed >= 1
    assert counts["batches_by_status"]["completed"] >= 2


@pytest.mark.parametrize("emulator", [BatchEmulatorConfig(delay_s=1.0)], indirect=True)
async def test_detach_leaves_batches_running_and_the_next_run_collects_them(
    emulator: Emulator, tmp_path: Path
) -> None:
    n = 50
    source = records(tmp_path / "in.jsonl", [f"note {i}" for i in range(n)])
    out = tmp_path / "out"
    async with Engine(batch_config(emulator.base_url)) as engine:
        first = await run_file(engine, two_step(), source, out, key="id", detach=True)
    assert first.detached and first.records == 0
    assert first.batches is not None and first.batches.lines_submitted == n
    assert emulator.batch_stats()["batches_created"] == 1
    async with Engine(batch_config(emulator.base_url)) as engine:
        second = await run_file(engine, two_step(), source, out, key="id")
    assert second.ok == n and not second.detached
    counts = emulator.batch_stats()
    assert counts["lines_submitted"] == counts["distinct_requests"] == 2 * n
    # the first run's step-1 batch was collected, not sent again
    assert counts["batches_created"] == 2
    assert second.cost_usd == pytest.approx(
        (counts["billed_input_tokens"] * 0.5 + counts["billed_output_tokens"]) / 1e6, rel=1e-9
    )


async def test_a_submit_whose_answer_was_lost_is_found_not_repeated(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A kill between sending a batch and journaling its id: the next run finds it by its
    label and collects it; nothing is submitted twice."""
    source = records(tmp_path / "in.jsonl", ["note 0", "note 1"])
    out = tmp_path / "out"
    # the first run: the job's files exist, its batch went out, its id never got logged
    async with Engine(batch_config(emulator.base_url)) as engine:
        await run_file(engine, one_step(), records(tmp_path / "none.jsonl", []), out, key="id")
    from fanout.run import call_key
    from fanout.types import ChatRequest

    api = OpenAIBatchAPI("emu", base_url=emulator.base_url)
    log = BatchLog(out / "batches" / "emu", writer_id="killed")
    requests = [
        ChatRequest("sim-small", [{"role": "user", "content": f"Summarize: note {i}"}], 20)
        for i in range(2)
    ]
    payload = b"".join(
        api.encode(f"{call_key('emu', r)[:48]}-x{i}", r) for i, r in enumerate(requests)
    )
    log.open_batch("lost", "sim-small", payload, 2, 20, time.time())
    await api.submit(payload, label="lost")
    log.close()
    await api.aclose()
    async with Engine(batch_config(emulator.base_url)) as engine:
        stats = await run_file(engine, one_step(), source, out, key="id")
    assert stats.ok == 2
    counts = emulator.batch_stats()
    assert counts["batches_created"] == 1 and counts["lines_submitted"] == 2


async def test_batch_mode_needs_a_provider_with_a_batch_api(tmp_path: Path) -> None:
    from fanout.errors import ConfigError

    source = records(tmp_path / "in.jsonl", ["x"])
    async with Engine() as engine:
        with pytest.raises(ConfigError, match="no model's provider has a Batch API"):
            await run_file(engine, one_step(), source, tmp_path / "out", provider_batch=True)
        with pytest.raises(ConfigError, match="apply to batch mode"):
            await run_file(engine, one_step(), source, tmp_path / "out", detach=True)
    sim = parse_config(
        {
            "providers": {"sim": {"kind": "sim"}},
            "models": {"fast": {"provider": "sim", "model": "m", "batch": {"enabled": True}}},
        }
    )
    async with Engine(sim) as engine:
        with pytest.raises(ConfigError, match="has no Batch API"):
            await run_file(engine, one_step(), source, tmp_path / "out2")
