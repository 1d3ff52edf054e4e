"""The response cache across jobs: a second job on the same prompts makes no provider call, a
changed prompt makes exactly the changed calls; hits are trace rows at zero cost, and
``fanout traces summary`` shows them apart from online and batch calls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import ListSink, batch_config, start_emulator, write_records

from fanout import DAG, Engine
from fanout.batch import run_file
from fanout.sim.server import EmulatorConfig

ROOT = Path(__file__).resolve().parents[2]
CLASSIFY = f"{ROOT / 'examples' / 'pipelines' / 'classify.py'}:dag"


def _dag() -> DAG:
    dag = DAG("summarize")
    dag.output(reply=dag.llm("fast", "Summarize: {text}", text=dag.input("text"), max_tokens=20))
    return dag


async def test_a_second_job_is_answered_by_the_cache(tmp_path: Path) -> None:
    n = 50
    source = write_records(tmp_path / "in.jsonl", n, "note {i}")
    cache = tmp_path / "cache"
    with start_emulator(EmulatorConfig()) as emu:
        config = batch_config(emu.base_url, enabled=False)
        async with Engine(config, cache=cache) as engine:
            first = await run_file(engine, _dag(), source, tmp_path / "one", key="id")
        assert emu.stats()["accepted"] == n and first.ok == n

        sink = ListSink()
        async with Engine(config, cache=cache, traces=sink) as engine:
            second = await run_file(engine, _dag(), source, tmp_path / "two", key="id")
        assert emu.stats()["accepted"] == n  # no provider call at all
        assert second.ok == n and second.cost_usd == 0
        attempts = [s for s in sink.spans if s.record_type == "attempt"]
        assert len(attempts) == n and all(s.cache_hit and s.cost_usd == 0 for s in attempts)

        changed = tmp_path / "changed.jsonl"
        lines = source.read_text(encoding="utf-8").splitlines()
        for i in (3, 17, 41):
            lines[i] = json.dumps({"id": f"r{i}", "text": f"note {i}, revised"})
        changed.write_text("\n".join(lines) + "\n", encoding="utf-8")
        async with Engine(config, cache=cache) as engine:
            third = await run_file(engine, _dag(), changed, tmp_path / "three", key="id")
        assert emu.stats()["accepted"] == n + 3  # exactly the changed calls
        assert third.ok == n


async def test_batch_mode_reads_and_fills_the_same_cache(tmp_path: Path) -> None:
    n = 20
    source = write_records(tmp_path / "in.jsonl", n, "note {i}")
    cache = tmp_path / "cache"
    with start_emulator(EmulatorConfig()) as emu:
        async with Engine(batch_config(emu.base_url), cache=cache) as engine:
            await run_file(engine, _dag(), source, tmp_path / "one", key="id")
        async with Engine(batch_config(emu.base_url, enabled=False), cache=cache) as engine:
            again = await run_file(engine, _dag(), source, tmp_path / "two", key="id")
        assert again.ok == n
        assert emu.stats()["accepted"] == 0  # online: all from the cache
        assert emu.batch_stats()["lines_submitted"] == n


def test_cli_cache_flag_and_traces_summary_by_mode(tmp_path: Path) -> None:
    source = write_records(tmp_path / "in.jsonl", 5, "great product {i}")
    cache = tmp_path / "cache"
    for name in ("one", "two"):
        run = subprocess.run(
            [sys.executable, "-m", "fanout", "run", CLASSIFY, "-i", str(source), "-o",
             str(tmp_path / name), "--key", "id", "--cache", str(cache)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
    summary = subprocess.run(
        [sys.executable, "-m", "fanout", "traces", "summary", str(tmp_path / "two" / "traces"),
         "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert summary.returncode == 0, summary.stderr
    models = json.loads(summary.stdout)["models"]
    assert [(m["mode"], m["stats"]["calls"], m["stats"]["cost_usd"]) for m in models] == [
        ("cache", 5, 0.0)
    ]
