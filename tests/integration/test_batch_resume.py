"""A batch job killed with SIGKILL at an arbitrary moment, then resumed, against the emulator:
exactly one row per record, and no call repeated for a record whose call had completed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from support import emulator_process

ROOT = Path(__file__).resolve().parents[2]
CLASSIFY = f"{ROOT / 'examples' / 'pipelines' / 'classify.py'}:dag"


def _config(path: Path, base_url: str) -> Path:
    path.write_text(
        f"""
[providers.emu]
kind = "openai"
base_url = "{base_url}"
api_key_env = "FANOUT_TEST_KEY"

[models.fast]
provider = "emu"
model = "sim-small"
input_usd_per_mtok = 1.0
""",
        encoding="utf-8",
    )
    return path


def _published(out: Path) -> set[str]:
    parts = sorted((out / "results").glob("part-*.parquet"))
    return {k for p in parts for k in pq.read_table(p, columns=["key"]).column("key").to_pylist()}


def _journaled(out: Path) -> set[str]:
    keys: set[str] = set()
    for path in (out / "calls").glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, KeyError):  # a line cut by the kill
                keys.add(json.loads(line)["record"])
    return keys


def test_sigkill_then_resume_gives_exactly_once_rows_and_no_repeated_calls(
    tmp_path: Path,
) -> None:
    n, window = 600, 16
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": f"review #{i}"}) + "\n" for i in range(n)),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    env = {**os.environ, "FANOUT_TEST_KEY": "sk-test-resume"}
    with emulator_process("--latency-ms", "40", "--record-prompts") as emulator:
        config = _config(tmp_path / "fanout.toml", emulator.base_url)
        command = [
            sys.executable, "-m", "fanout", "run", CLASSIFY, "-i", str(source), "-o", str(out),
            "-c", str(config), "--key", "id", "--max-in-flight", str(window), "--part-rows", "50",
        ]  # fmt: skip
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while len(list((out / "results").glob("part-*.parquet"))) < 3:
                assert time.monotonic() < deadline and proc.poll() is None, "the job never wrote"
                time.sleep(0.02)
            time.sleep(0.06)  # between two parts: finished calls not yet published
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL

        published, journaled = _published(out), _journaled(out)
        assert 0 < len(published) < n
        assert published <= journaled  # a row is published only after its call is journaled

        resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        assert "resumed: done before" in resumed.stdout
        prompts = emulator.prompts()

    table = pq.read_table(out / "results")
    keys = table.column("key").to_pylist()
    assert len(keys) == len(set(keys)) == n  # exactly one row per record
    assert set(table.column("status").to_pylist()) == {"ok"}

    calls: dict[str, int] = {}
    for prompt, count in prompts.items():
        match = re.search(r"review #(\d+)$", prompt)
        assert match, prompt
        calls[f"r{match.group(1)}"] = calls.get(f"r{match.group(1)}", 0) + count
    assert set(calls) == set(keys)
    # a record whose call had completed before the kill was never called again ...
    assert {k: calls[k] for k in journaled if calls[k] != 1} == {}
    # ... and only calls in flight at the kill can have been made twice
    assert sum(calls.values()) - n <= window
