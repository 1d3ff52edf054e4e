"""``fanout run --provider-batch`` killed with SIGKILL while its batches run, then run again:
the second run polls the batches the first submitted, submits no call twice (the
emulator's counters) and completes every record; through OpenAI's Batch API and
Anthropic's Message Batches alike."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support import emulator_process, write_records

PIPELINE = """
from fanout import DAG

dag = DAG("two_step")
text = dag.input("text")
summary = dag.llm("fast", "Summarize: {text}", text=text, max_tokens=20, name="summary")
label = dag.llm("fast", "Classify the sentiment of: {summary}", summary=summary, max_tokens=5,
                name="label")
dag.output(summary=summary, label=label)
"""


def _config(path: Path, base_url: str, kind: str) -> Path:
    path.write_text(
        f"""
[providers.emu]
kind = "{kind}"
base_url = "{base_url}"
api_key_env = "FANOUT_TEST_KEY"

[providers.emu.batch]
poll_initial_s = 0.1
poll_max_s = 0.3
flush_idle_s = 0.3

[models.fast]
provider = "emu"
model = "sim-small"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 2.0
""",
        encoding="utf-8",
    )
    return path


def _submitted(log: Path) -> list[str]:
    if not log.exists():
        return []
    events = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:  # a line cut by the kill
            continue
    return [e["batch_id"] for e in events if e.get("e") == "submitted"]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_killed_while_batches_run_then_rerun_submits_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    n = 400
    source = write_records(tmp_path / "in.jsonl", n, "review {i}: great value")
    pipeline = tmp_path / "pipeline.py"
    pipeline.write_text(PIPELINE, encoding="utf-8")
    out = tmp_path / "out"
    log = out / "batches" / "emu" / "log.jsonl"
    monkeypatch.setenv("FANOUT_TEST_KEY", "sk-test-batch-resume")  # the emulator's too
    env = dict(os.environ)
    with emulator_process("--batch-delay-s", "3", "--api-key-env", "FANOUT_TEST_KEY") as emu:
        config = _config(tmp_path / "fanout.toml", emu.base_url, kind)
        command = [
            sys.executable, "-m", "fanout", "run", f"{pipeline}:dag", "-i", str(source),
            "-o", str(out), "-c", str(config), "--key", "id", "--provider-batch",
        ]  # fmt: skip
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not _submitted(log):
                assert time.monotonic() < deadline and proc.poll() is None, "nothing submitted"
                time.sleep(0.02)
            time.sleep(0.3)  # the batch is in progress (3 s)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        before = emu.batch_stats(kind)
        assert before["batches_created"] >= 1 and before["lines_completed"] < 2 * n
        assert not (out / "results").exists() or not list((out / "results").glob("*.parquet"))

        resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        assert "provider batches" in resumed.stdout
        after = emu.batch_stats(kind)

    # every request went out once: the first run's batch was polled, not sent again
    assert after["lines_submitted"] == after["distinct_requests"] == 2 * n
    assert after["batches_created"] == len(set(_submitted(log)))
    assert after["batches_by_status"] == {"completed": after["batches_created"]}
    table = pq.read_table(out / "results")
    keys = table.column("key").to_pylist()
    assert len(keys) == len(set(keys)) == n
    assert set(table.column("status").to_pylist()) == {"ok"}
    billed = (after["billed_input_tokens"] * 0.5 + after["billed_output_tokens"] * 1.0) / 1e6
    assert sum(table.column("cost_usd").to_pylist()) == pytest.approx(billed)
    assert "sk-test-batch-resume" not in "".join(p.read_text() for p in log.parent.glob("*"))
