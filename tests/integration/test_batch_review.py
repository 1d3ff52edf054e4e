"""Batch records that wait for a person: waiting rows (not dead letters), and a later
run into the same directory resumes the records a person decided."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from support import sim_config

from fanout import DAG, Engine
from fanout.batch import record_run_id, result_parts, run_file
from fanout.store import ReviewStore


def shout(text: str) -> str:
    return text.upper()


def reviewed() -> DAG:
    dag = DAG("reviewed")
    dag.input("topic")
    draft = dag.llm("fast", "Write a line about {topic}.", name="draft", max_tokens=8)
    checked = dag.review(draft, instructions="Is it polite?", name="check")
    dag.output(final=dag.tool(shout, checked, name="final", inline=True))
    return dag


def last_rows(out: Path) -> tuple[dict[str, dict[str, object]], int]:
    """The last row per key (parts in order), and how many rows there are in all."""
    last: dict[str, dict[str, object]] = {}
    total = 0
    for part in result_parts(out):
        for row in pq.read_table(part).to_pylist():
            last[str(row["key"])] = row
            total += 1
    return last, total


async def test_waiting_records_resume_once_decided(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": k, "topic": k}) + "\n" for k in "abc"))
    out = tmp_path / "out"
    async with Engine(sim_config()) as engine:
        stats = await run_file(engine, reviewed(), source, out, key="id")
    assert stats.failed == {"waiting_for_review": 3} and stats.dead_letters == 0
    rows, total = last_rows(out)
    assert total == 3 and {r["status"] for r in rows.values()} == {"waiting_for_review"}
    assert not list((out / "dead_letter").glob("*.jsonl"))

    store = ReviewStore(out)  # the engine had no data_dir: the job kept them in out/
    assert len(store.list(status="pending")) == 3
    by_topic = {k: store.list(run_id=record_run_id(out, k))[0] for k in "abc"}
    assert {r.status for r in by_topic.values()} == {"pending"}
    store.decide(by_topic["a"].review_id, "approved")
    store.decide(by_topic["b"].review_id, "rejected", reason="off topic")

    async with Engine(sim_config()) as engine:
        stats = await run_file(engine, reviewed(), source, out, key="id")
    assert stats.records == 2 and stats.skipped == 1  # c still waits: not run again
    rows, total = last_rows(out)
    assert total == 5  # the two new rows supersede their waiting rows
    assert rows["a"]["status"] == "ok" and rows["a"]["attempts"] == 0  # restored, not re-called
    assert rows["a"]["output_final"] == str(by_topic["a"].value).upper()
    assert rows["b"]["status"] == "error" and rows["b"]["error_type"] == "ReviewRejected"
    assert rows["c"]["status"] == "waiting_for_review"
