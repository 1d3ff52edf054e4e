"""Failure semantics against the emulator on loopback: what waits, what fails, exit codes.

Outages wait (the emulator stopped and restarted on its port), an oversized request
fails alone, a job budget holds across kills and resumes, bad input stops before any
call, and each case exits with the code the CLI documents.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from support import Emulator, write_records
from typer.testing import CliRunner

from fanout import DAG, Engine, parse_config
from fanout.batch import run_file
from fanout.cli import app
from fanout.run import journal_spend
from fanout.sim.server import EmulatorConfig, EmulatorServer

ROOT = Path(__file__).resolve().parents[2]
CLASSIFY = f"{ROOT / 'examples' / 'pipelines' / 'classify.py'}:dag"
USD_PER_MTOK = 100.0  # the same for input and output: billed USD = billed tokens * 1e-4


def provider_toml(base_url: str, *, cooldown_s: float = 0.5, timeout_s: float = 5.0) -> str:
    return f"""
[providers.emu]
kind = "openai"
base_url = "{base_url}"
timeout_s = {timeout_s}
connect_timeout_s = 1.0

[providers.emu.retry]
max_attempts = 3
initial_backoff_s = 0.05
max_backoff_s = 0.2

[providers.emu.circuit]
failure_threshold = 3
cooldown_s = {cooldown_s}

[models.fast]
provider = "emu"
model = "sim-small"
input_usd_per_mtok = {USD_PER_MTOK}
output_usd_per_mtok = {USD_PER_MTOK}
"""


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    emulator = EmulatorServer(EmulatorConfig(latency_ms=10, record_prompts=True)).start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def config(tmp_path: Path, server: EmulatorServer) -> Path:
    path = tmp_path / "emu.toml"
    path.write_text(provider_toml(server.base_url), encoding="utf-8")
    return path


def outage_after(server: EmulatorServer, calls: int, down_s: float | None) -> threading.Thread:
    """Stop the emulator once it answered ``calls``; bring it back ``down_s`` later."""
    emulator = Emulator(server)

    def run() -> None:
        deadline = time.monotonic() + 60
        while emulator.stats()["accepted"] < calls and time.monotonic() < deadline:
            time.sleep(0.02)
        server.stop()
        if down_s is not None:
            time.sleep(down_s)
            server.start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def job(config: Path, records: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli("run", CLASSIFY, "-i", str(records), "-o", str(out), "--config",
                   str(config), "--key", "id", "--max-in-flight", "16", *extra)  # fmt: skip


def rows(out: Path) -> dict[str, str]:
    table = pq.read_table(out / "results", columns=["key", "status"])
    keys, statuses = table.column("key").to_pylist(), table.column("status").to_pylist()
    assert len(set(keys)) == len(keys), "a record has two rows"
    return dict(zip(keys, statuses, strict=True))


@pytest.mark.parametrize(
    "down_s", [3.0, pytest.param(15.0, marks=pytest.mark.slow)], ids=["3s", "15s"]
)
def test_records_wait_out_an_outage_and_none_is_a_dead_letter(
    tmp_path: Path, server: EmulatorServer, config: Path, down_s: float
) -> None:
    records = write_records(tmp_path / "in.jsonl", 300)
    outage = outage_after(server, 60, down_s)
    code, stdout, stderr = job(config, records, tmp_path / "out")
    outage.join()
    assert code == 0, stderr
    assert set(rows(tmp_path / "out").values()) == {"ok"} and len(rows(tmp_path / "out")) == 300
    assert not list((tmp_path / "out" / "dead_letter").glob("*.jsonl"))
    assert "dead letters" not in stdout
    prompts = Emulator(server).prompts()
    assert len(prompts) == 300 and max(prompts.values()) == 1  # each answered, none twice


def test_a_provider_down_longer_than_max_outage_stops_the_job_resumably(
    tmp_path: Path, server: EmulatorServer, config: Path
) -> None:
    records = write_records(tmp_path / "in.jsonl", 300)
    outage = outage_after(server, 60, None)  # down mid-job, and not coming back by itself
    code, _, stderr = job(config, records, tmp_path / "out", "--max-outage", "2s")
    outage.join()
    assert code == 3, stderr
    (error,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "ProviderConnectionError" in error and "connection failed" in error
    assert "has been down" in error and "run the same command again to resume" in error
    assert "trying fallbacks" not in stderr
    done = rows(tmp_path / "out") if (tmp_path / "out" / "results").exists() else {}
    assert set(done.values()) <= {"ok"} and len(done) < 300  # what finished; no error rows
    assert not list((tmp_path / "out" / "dead_letter").glob("*.jsonl"))

    server.start()  # back: the same command resumes with nothing lost, nothing paid twice
    code, stdout, stderr = job(config, records, tmp_path / "out")
    assert code == 0, stderr
    assert set(rows(tmp_path / "out").values()) == {"ok"} and len(rows(tmp_path / "out")) == 300
    assert re.search(rf"resumed: done before\s*│ {len(done)}\b", stdout), stdout
    prompts = Emulator(server).prompts()
    assert len(prompts) == 300 and max(prompts.values()) == 1


def classify_dag() -> DAG:
    dag = DAG("classify")
    dag.input("text", type=str)
    dag.output(label=dag.llm("fast", "Classify: {text}", max_tokens=5, name="label"))
    return dag


def _records(path: Path, *, huge: bool) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for i in range(300):
            out.write(json.dumps({"id": f"r{i}", "text": f"review {i}"}) + "\n")
            if i == 10 and huge:
                out.write(json.dumps({"id": "huge", "text": "word " * 200_000}) + "\n")
    return path


async def test_one_oversized_record_fails_alone_after_one_call(tmp_path: Path) -> None:
    # 600k tokens/min, a bucket of 10k tokens: a 1 MB record (~250k tokens) never fits
    with EmulatorServer(EmulatorConfig(tokens_per_min=600_000)) as server:
        cfg = parse_config(_toml_dict(provider_toml(server.base_url)))
        async with Engine(cfg) as engine:  # the same job without it, for the time it takes
            alone = await run_file(engine, classify_dag(), _records(tmp_path / "small.jsonl",
                                   huge=False), tmp_path / "small")  # fmt: skip
        Emulator(server).reset()
        async with Engine(cfg) as engine:
            records = _records(tmp_path / "in.jsonl", huge=True)
            stats = await run_file(engine, classify_dag(), records, tmp_path / "out", key="id")
        emulator = Emulator(server).stats()
    table = pq.read_table(tmp_path / "out" / "results")
    huge = table.filter(pc.equal(table["key"], "huge")).to_pylist()[0]
    assert huge["status"] == "error" and huge["error_type"] == "RequestTooLarge"
    assert "tokens for a tokens/min limit" in huge["error_message"]
    assert huge["attempts"] == 1 and emulator["too_large"] == 1  # one call, never retried
    assert stats.ok == 300
    (limit,) = stats.limits
    # it was not a rate-limit signal: only real 429s count, and nothing was left paused
    assert limit.rate_limited == emulator["limited"] and limit.paused_s == 0
    # ... nor did the debt it ran up in the local token bucket hold the others (it was
    # 60x: the queue slept off 240k tokens it had been given back)
    assert stats.wall_time_s < 5 * alone.wall_time_s


def _toml_dict(text: str) -> dict[str, object]:
    import tomllib

    return tomllib.loads(text)


def test_a_job_budget_holds_across_kills_and_the_totals_are_what_was_billed(
    tmp_path: Path, server: EmulatorServer, config: Path
) -> None:
    records = write_records(tmp_path / "in.jsonl", 200)
    out = tmp_path / "out"
    budget = 0.25  # about 70 of the 200 calls (~35 tokens each, at 1e-4 USD a token)
    argv = [sys.executable, "-m", "fanout", "run", CLASSIFY, "-i", str(records), "-o",
            str(out), "--config", str(config), "--key", "id", "--max-in-flight", "8",
            "--job-budget-usd", str(budget), "--no-traces"]  # fmt: skip
    emulator = Emulator(server)
    for answered in (25, 50):  # killed twice, each time with calls in flight
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while emulator.stats()["accepted"] < answered:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                time.sleep(0.01)
            # calls from here on hang (in flight, unanswered, so unbilled) and the answers
            # already sent are journaled; then the kill leaves no answered call unrecorded
            emulator.faults(hang_rate=1.0)
            time.sleep(0.5)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            if proc.stderr is not None:
                proc.stderr.close()
        emulator.faults(hang_rate=0.0)
    last = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert last.returncode == 0, last.stderr
    billed_usd = emulator.stats()["tokens"] * USD_PER_MTOK / 1e6
    worst_call_usd = (30 + 5) * USD_PER_MTOK / 1e6 * 2  # a generous worst case per call
    assert budget * 0.5 < billed_usd <= budget + 8 * worst_call_usd  # + what was in flight
    assert max(emulator.prompts().values()) == 1  # no call billed twice
    assert journal_spend(out / "calls").usd == pytest.approx(billed_usd)
    whole = re.search(r"cost, whole job\s*│ \$([0-9.]+)", last.stdout)
    assert whole is not None and float(whole.group(1)) == pytest.approx(billed_usd, abs=1e-6)
    results = pq.read_table(out / "results")
    assert pc.sum(results["cost_usd"]).as_py() == pytest.approx(billed_usd)
    statuses = set(results.column("status").to_pylist())
    assert statuses == {"ok", "budget_exceeded"} and results.num_rows == 200
