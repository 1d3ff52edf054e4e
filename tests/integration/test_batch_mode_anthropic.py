"""Batch jobs in batch mode on a kind = "anthropic" provider, through the emulator's Message
Batches API: the same rows as online (structured output too), cost at the batch prices of
the billed usage, errored lines retried then error-rowed, an expired batch's answers kept,
online fallback, --detach, a lost submit found not repeated, the key in no log, trace, file
or error, and a clear exit 2 for a provider kind without a Batch API."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel
from support import Emulator, ListSink, batch_config, start_emulator, write_records
from typer.testing import CliRunner

from fanout import DAG, Engine, parse_config
from fanout.batch import run_file
from fanout.batch._batch_log import BatchLog
from fanout.cli import app
from fanout.config import Config
from fanout.errors import ConfigError
from fanout.providers import AnthropicBatchAPI
from fanout.run import call_key
from fanout.sim.server import BatchEmulatorConfig, EmulatorConfig
from fanout.types import ChatRequest

KEY = "sk-ant-batch-mode-secret-0123456789"
COLUMNS = ("key", "status", "output_summary", "output_label", "input_tokens", "output_tokens")


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


class Verdict(BaseModel):
    label: str
    score: int


def structured() -> DAG:
    dag = DAG("structured")
    verdict = dag.llm("fast", "Rate: {text}", text=dag.input("text"), max_tokens=60,
                      output=Verdict, name="verdict")  # fmt: skip
    dag.output(verdict=verdict)
    return dag


def rows(out: Path) -> list[dict[str, object]]:
    return pq.read_table(out / "results").sort_by("key").to_pylist()


def config(emulator: Emulator, **extra: object) -> Config:
    return batch_config(emulator.base_url, kind="anthropic", **extra)


@pytest.fixture
def emulator(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Emulator]:
    monkeypatch.setenv("FANOUT_TEST_KEY", KEY)
    batch = getattr(request, "param", BatchEmulatorConfig(delay_s=0.2))
    with start_emulator(EmulatorConfig(batch=batch, api_key=KEY)) as emu:
        yield emu


@pytest.mark.parametrize("n", [200, pytest.param(5_000, marks=pytest.mark.slow)])
async def test_batch_mode_gives_the_rows_of_online_mode_at_the_batch_price(
    emulator: Emulator, tmp_path: Path, n: int
) -> None:
    source = write_records(tmp_path / "in.jsonl", n, "review {i}: great and fast")
    async with Engine(config(emulator, enabled=False)) as engine:
        online = await run_file(engine, two_step(), source, tmp_path / "online", key="id")
    assert emulator.batch_stats("anthropic")["batches_created"] == 0
    sink = ListSink()
    async with Engine(config(emulator), traces=sink) as engine:
        batched = await run_file(
            engine, two_step(), source, tmp_path / "batch", key="id", max_in_flight=n
        )
    expected = [{c: r[c] for c in COLUMNS} for r in rows(tmp_path / "online")]
    assert [{c: r[c] for c in COLUMNS} for r in rows(tmp_path / "batch")] == expected
    assert batched.ok == online.ok == n

    stats = emulator.batch_stats("anthropic")
    assert (
        stats["lines_completed"] == stats["lines_submitted"] == stats["distinct_requests"] == 2 * n
    )
    assert stats["batches_by_status"] == {"completed": stats["batches_created"]}
    assert stats["batches_created"] >= 2  # waves: a second step waits for its first
    assert emulator.batch_stats("openai")["batches_created"] == 0
    billed = (stats["billed_input_tokens"] * 0.5 + stats["billed_output_tokens"] * 1.0) / 1e6
    assert batched.cost_usd == pytest.approx(billed, rel=1e-9)
    assert batched.cost_usd == pytest.approx(online.cost_usd / 2, rel=1e-9)

    attempts = [s for s in sink.spans if s.record_type == "attempt"]
    assert len(attempts) == 2 * n
    assert all(s.batch_id and s.batch_id.startswith("msgbatch_") for s in attempts)
    assert all(s.batch_submitted_at and s.batch_completed_at for s in attempts)
    assert sum(s.cost_usd or 0 for s in attempts) == pytest.approx(billed, rel=1e-9)
    first = min(attempts, key=lambda s: s.batch_submitted_at or 0).batch_id
    assert {s.node_id for s in attempts if s.batch_id == first} == {"summary"}


async def test_a_structured_answer_comes_back_as_online(
    emulator: Emulator, tmp_path: Path
) -> None:
    source = write_records(tmp_path / "in.jsonl", 20, "item {i}")
    async with Engine(config(emulator, enabled=False)) as engine:
        await run_file(engine, structured(), source, tmp_path / "online", key="id")
    async with Engine(config(emulator)) as engine:
        stats = await run_file(engine, structured(), source, tmp_path / "batch", key="id")
    assert stats.ok == 20
    online, batched = rows(tmp_path / "online"), rows(tmp_path / "batch")
    assert [r["output_verdict"] for r in batched] == [r["output_verdict"] for r in online]
    verdict = Verdict.model_validate(batched[0]["output_verdict"])
    assert verdict.label
    assert emulator.batch_stats("anthropic")["lines_completed"] == 20


async def test_errored_lines_are_retried_in_later_batches_then_error_rowed(
    emulator: Emulator, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    texts = ["a fine note", "a flaky note [sim:fail-once]", "a broken note [sim:fail]"]
    source.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts)),
        encoding="utf-8",
    )
    async with Engine(config(emulator, max_attempts=3)) as engine:
        stats = await run_file(engine, one_step(), source, tmp_path / "out", key="id")
    by_key = {r["key"]: r for r in rows(tmp_path / "out")}
    assert (by_key["r0"]["status"], by_key["r1"]["status"]) == ("ok", "ok")
    assert by_key["r2"]["status"] == "error"
    assert by_key["r2"]["error_type"] == "ProviderHTTPError"
    assert by_key["r1"]["attempts"] == 2 and by_key["r2"]["attempts"] == 3
    counts = emulator.batch_stats("anthropic")
    assert counts["lines_submitted"] == 1 + 2 + 3 and counts["distinct_requests"] == 3
    assert counts["batches_created"] == 3 and stats.errors == 1


@pytest.mark.parametrize(
    "emulator", [BatchEmulatorConfig(delay_s=1.0, expire_s=0.75)], indirect=True
)
async def test_an_expired_batch_keeps_its_answers_and_sends_the_rest_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    n = 40
    source = write_records(tmp_path / "in.jsonl", n, "note {i}")
    async with Engine(config(emulator, max_attempts=4)) as engine:
        stats = await run_file(engine, one_step(), source, tmp_path / "out", key="id")
    counts = emulator.batch_stats("anthropic")
    assert counts["batches_by_status"].get("expired", 0) >= 1
    resent = counts["lines_submitted"] - counts["distinct_requests"]
    assert resent == counts["lines_expired"] - stats.errors  # no answered line went again
    assert counts["lines_completed"] == stats.ok
    assert stats.ok > n // 2 and stats.ok + stats.errors == n


async def test_a_line_still_failing_goes_online_with_online_fallback(
    emulator: Emulator, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "r0", "text": "a flaky note [sim:fail-once]"}) + "\n")
    sink = ListSink()
    async with Engine(config(emulator, max_attempts=1), traces=sink) as engine:
        await run_file(engine, one_step(), source, tmp_path / "out", key="id", online_fallback=True)
    assert rows(tmp_path / "out")[0]["status"] == "ok"
    attempts = sorted(
        (s for s in sink.spans if s.record_type == "attempt"), key=lambda s: s.fallback_index or 0
    )
    assert [(s.fallback_index, s.status, bool(s.batch_id)) for s in attempts] == [
        (0, "error", True),  # the batch line errored...
        (1, "ok", False),  # ... and the same model answered online, on /v1/messages
    ]
    assert emulator.stats()["accepted"] == 1


@pytest.mark.parametrize("emulator", [BatchEmulatorConfig(delay_s=1.0)], indirect=True)
async def test_detach_leaves_batches_running_and_the_next_run_collects_them(
    emulator: Emulator, tmp_path: Path
) -> None:
    n = 50
    source = write_records(tmp_path / "in.jsonl", n, "note {i}")
    out = tmp_path / "out"
    async with Engine(config(emulator)) as engine:
        first = await run_file(engine, two_step(), source, out, key="id", detach=True)
    assert first.detached and first.records == 0
    assert first.batches is not None and first.batches.lines_submitted == n
    assert emulator.batch_stats("anthropic")["batches_created"] == 1
    async with Engine(config(emulator)) as engine:
        second = await run_file(engine, two_step(), source, out, key="id")
    assert second.ok == n and not second.detached
    counts = emulator.batch_stats("anthropic")
    assert counts["lines_submitted"] == counts["distinct_requests"] == 2 * n
    assert counts["batches_created"] == 2  # the first run's batch collected, not sent again


async def test_a_submit_whose_answer_was_lost_is_found_not_repeated(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A kill between creating a batch and journaling its id: Anthropic keeps no label,
    so the next run finds it by size and time, collects it and submits nothing again."""
    out = tmp_path / "out"
    empty = tmp_path / "none.jsonl"
    empty.write_text("", encoding="utf-8")
    async with Engine(config(emulator)) as engine:
        await run_file(engine, one_step(), empty, out, key="id")
    api = AnthropicBatchAPI("emu", api_key=KEY, base_url=emulator.base_url)
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
    source = write_records(tmp_path / "in.jsonl", 2, "note {i}")
    async with Engine(config(emulator)) as engine:
        stats = await run_file(engine, one_step(), source, out, key="id")
    assert stats.ok == 2
    counts = emulator.batch_stats("anthropic")
    assert counts["batches_created"] == 1 and counts["lines_submitted"] == 2


async def test_the_key_is_in_no_log_trace_file_or_error(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    source = write_records(tmp_path / "in.jsonl", 5, "note {i}")
    sink = ListSink()
    async with Engine(config(emulator), traces=sink) as engine:
        assert (await run_file(engine, one_step(), source, tmp_path / "ok", key="id")).ok == 5
    wrong = "sk-ant-wrong-key-never-to-be-seen-987654"
    monkeypatch.setenv("FANOUT_TEST_KEY", wrong)  # the emulator echoes a wrong key in its 401
    async with Engine(config(emulator), traces=sink) as engine:
        refused = await run_file(engine, one_step(), source, tmp_path / "refused", key="id")
    assert refused.errors == 5
    errors = [str(r["error_message"]) for r in rows(tmp_path / "refused")]
    assert all("401" in e and "invalid x-api-key: ***" in e for e in errors)  # scrubbed
    files = _every_file(tmp_path)
    seen = caplog.text + "".join(repr(s) for s in sink.spans) + "".join(errors)
    for secret in (KEY, wrong):
        assert secret not in seen and secret.encode() not in files


def _every_file(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("kind", ["gemini", "bedrock", "azure"])
def test_a_kind_without_a_batch_api_is_a_clear_exit_2(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("GEMINI_API_KEY", "AZURE_OPENAI_API_KEY", "AWS_ACCESS_KEY_ID",
                     "AWS_SECRET_ACCESS_KEY"):  # fmt: skip
        monkeypatch.setenv(variable, "test-credential")
    wire = {"gemini": "", "bedrock": 'region = "us-east-1"',
            "azure": 'endpoint = "https://x.openai.azure.com"'}[kind]  # fmt: skip
    path = tmp_path / "fanout.toml"
    path.write_text(
        f'[providers.p]\nkind = "{kind}"\n{wire}\n\n[models.fast]\nprovider = "p"\nmodel = "m"\n',
        encoding="utf-8",
    )
    pipeline = tmp_path / "pipeline.py"
    pipeline.write_text(
        "from fanout import DAG\n\ndag = DAG('d')\n"
        "dag.output(r=dag.llm('fast', 'Summarize: {text}', text=dag.input('text')))\n",
        encoding="utf-8",
    )
    source = write_records(tmp_path / "in.jsonl", 2)
    result = CliRunner().invoke(app, [
        "run", f"{pipeline}:dag", "-i", str(source), "-o", str(tmp_path / "out"),
        "-c", str(path), "--provider-batch",
    ])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--provider-batch: no model's provider has a Batch API" in result.stderr
    assert "'anthropic'" in result.stderr
    table = parse_config({
        "providers": {"p": {"kind": kind, **({"region": "us-east-1"} if kind == "bedrock" else {}),
                            **({"endpoint": "https://x"} if kind == "azure" else {})}},
        "models": {"fast": {"provider": "p", "model": "m", "batch": {"enabled": True}}},
    })  # fmt: skip
    from fanout.batch._batch_mode import batch_config as batch_mode_config

    with pytest.raises(ConfigError, match=re.escape(f"(kind '{kind}') has no Batch API")):
        batch_mode_config(table, all_models=False, online_fallback=False)
