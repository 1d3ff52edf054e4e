"""Batch jobs end to end: files in, ``results.parquet`` read back, bounded in flight, bad rows."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import sim_config

from fanout import DAG, ConfigError, Engine, RunResult
from fanout.batch import JobStats, ResultWriter, run_file
from fanout.sim import FakeClock, SimProvider

REVIEWS = {
    "good": "Great product, I love it.",
    "bad": "It arrived broken. Terrible.",
    "meh": "It is a kettle.",
}


def classify_dag() -> DAG:
    dag = DAG("classify")
    text = dag.input("text")
    label = dag.llm("fast", "Rate the sentiment of: {text}", max_tokens=5, name="label")
    words = dag.tool(lambda t: len(str(t).split()), text, inline=True, name="words")
    dag.output(label=label, words=words)
    return dag


def sim(engine: Engine) -> SimProvider:
    provider = engine.providers["sim"]
    assert isinstance(provider, SimProvider)
    return provider


def read_rows(path: Path) -> dict[str, dict[str, object]]:
    rows = pq.read_table(path).to_pylist()
    by_key = {str(row["key"]): row for row in rows}
    assert len(by_key) == len(rows), "keys are unique in these tests"
    return by_key


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine(sim_config(0.0)) as eng:
        yield eng


async def test_jsonl_job_writes_a_row_per_record_and_error_rows_for_bad_ones(
    engine: Engine, tmp_path: Path
) -> None:
    lines = [json.dumps({"id": key, "text": text}) for key, text in REVIEWS.items()]
    lines.insert(1, "{this is not json")
    lines.append(json.dumps({"id": "no-text", "body": "wrong field"}))
    lines.append('"just a string"')
    source = write_jsonl(tmp_path / "reviews.jsonl", lines)

    stats = await run_file(engine, classify_dag(), source, tmp_path / "out")

    assert stats.output_path == tmp_path / "out" / "results.parquet"
    assert (stats.records, stats.ok, dict(stats.failed)) == (6, 3, {"error": 3})
    rows = read_rows(stats.output_path)
    assert set(rows) == {"good", "bad", "meh", "1", "no-text", "5"}
    assert {k: rows[k]["status"] for k in REVIEWS} == dict.fromkeys(REVIEWS, "ok")
    assert json.loads(str(rows["good"]["output_label"])) == "positive"
    assert json.loads(str(rows["bad"]["output_label"])) == "negative"
    assert json.loads(str(rows["meh"]["output_words"])) == 4
    assert rows["good"]["error_type"] is None
    assert rows["good"]["input_tokens"] > 0
    assert rows["good"]["cost_usd"] > 0

    bad_json = rows["1"]
    assert (bad_json["status"], bad_json["error_type"]) == ("error", "InvalidRecord")
    assert str(bad_json["error_message"]).startswith("row 1 (line 2): not valid JSON")
    assert bad_json["output_label"] is None
    missing = rows["no-text"]
    assert missing["error_type"] == "InvalidRecord"
    assert missing["error_message"] == (
        "row 4: missing input 'text'; each record needs the DAG's inputs ['text'] "
        "(it has ['body', 'id'])"
    )
    assert "expected a JSON object per line, got str" in str(rows["5"]["error_message"])
    # Totals in the stats are the sums of the rows.
    assert stats.input_tokens == sum(int(str(r["input_tokens"])) for r in rows.values())
    assert stats.cost_usd == pytest.approx(sum(float(str(r["cost_usd"])) for r in rows.values()))
    assert not list((tmp_path / "out").glob(".*partial"))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
async def test_csv_and_parquet_inputs(engine: Engine, tmp_path: Path, fmt: str) -> None:
    if fmt == "csv":
        source = tmp_path / "reviews.csv"
        with source.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["id", "text", "extra"])
            writer.writerows([key, text, "x"] for key, text in REVIEWS.items())
    else:
        source = tmp_path / "reviews.parquet"
        pq.write_table(pa.table({"id": list(REVIEWS), "text": list(REVIEWS.values())}), source)

    stats = await run_file(engine, classify_dag(), source, tmp_path / "out")

    rows = read_rows(stats.output_path)
    assert {k: json.loads(str(r["output_label"])) for k, r in rows.items()} == {
        "good": "positive",
        "bad": "negative",
        "meh": "neutral",
    }
    assert stats.ok == 3
    assert stats.errors == 0


async def test_keys_default_to_row_numbers(engine: Engine, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [json.dumps({"text": t}) for t in REVIEWS.values()])
    stats = await run_file(engine, classify_dag(), source, tmp_path / "out")
    assert set(read_rows(stats.output_path)) == {"0", "1", "2"}


async def test_in_flight_records_never_exceed_concurrency(tmp_path: Path) -> None:
    clock = FakeClock(autojump=True)
    n, concurrency = 60, 7
    source = write_jsonl(
        tmp_path / "in.jsonl", [json.dumps({"id": i, "text": f"review {i}"}) for i in range(n)]
    )
    seen_in_flight: list[int] = []
    try:
        async with Engine(sim_config(100.0), clock=clock) as engine:
            stats = await run_file(
                engine,
                classify_dag(),
                source,
                tmp_path / "out",
                concurrency=concurrency,
                on_progress=lambda s: seen_in_flight.append(s.in_flight),
            )
            provider = sim(engine)
    finally:
        await clock.aclose()

    assert stats.records == n
    assert stats.ok == n
    assert provider.calls == n
    # One call per record: the provider's peak is the job's peak, and the window was used.
    assert provider.max_in_flight == concurrency
    assert max(seen_in_flight) < concurrency  # a snapshot is taken after its record left
    assert len(seen_in_flight) == n
    assert pq.read_metadata(stats.output_path).num_rows == n


async def test_cancelling_the_job_keeps_finished_rows_in_a_readable_file(
    engine: Engine, tmp_path: Path
) -> None:
    fast = [json.dumps({"id": f"fast{i}", "text": "quick one"}) for i in range(3)]
    slow = [json.dumps({"id": f"slow{i}", "text": "[sim:latency=60000] slow"}) for i in range(3)]
    source = write_jsonl(tmp_path / "in.jsonl", slow[:1] + fast + slow[1:])
    three_done = asyncio.Event()

    def progress(stats: JobStats) -> None:
        if stats.records == 3:
            three_done.set()

    job = asyncio.create_task(
        run_file(engine, classify_dag(), source, tmp_path / "out", on_progress=progress)
    )
    await asyncio.wait_for(three_done.wait(), timeout=10)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job

    rows = read_rows(tmp_path / "out" / "results.parquet")
    assert set(rows) == {"fast0", "fast1", "fast2"}
    assert all(row["status"] == "ok" for row in rows.values())
    assert not list((tmp_path / "out").glob(".*partial"))


async def test_budget_and_unexpected_failures_are_rows_by_status(tmp_path: Path) -> None:
    class ExplodingEngine(Engine):
        async def run(  # type: ignore[override]  # same call, narrower for the test
            self, dag: DAG, inputs: Mapping[str, object], **kwargs: float | None
        ) -> RunResult:
            if inputs["text"] == "explode":
                raise RuntimeError("kaboom")
            return await super().run(dag, inputs, **kwargs)  # type: ignore[arg-type]

    source = write_jsonl(
        tmp_path / "in.jsonl",
        [json.dumps({"id": "a", "text": "fine"}), json.dumps({"id": "b", "text": "explode"})],
    )
    async with ExplodingEngine(sim_config(0.0)) as engine:
        stats = await run_file(engine, classify_dag(), source, tmp_path / "out", budget_tokens=3)

    rows = read_rows(stats.output_path)
    assert rows["a"]["status"] == "budget_exceeded"
    assert rows["a"]["error_type"] == "BudgetExceeded"
    assert rows["b"]["status"] == "error"
    assert rows["b"]["error_type"] == "RuntimeError"
    assert rows["b"]["error_message"] == "row 1: unexpected RuntimeError: kaboom"
    assert dict(stats.failed) == {"budget_exceeded": 1, "error": 1}


async def test_an_invalid_dag_fails_before_anything_is_read_or_written(
    engine: Engine, tmp_path: Path
) -> None:
    dag = DAG("bad")
    dag.output(x=dag.llm("huge", "hello {text}", text=dag.input("text")))
    with pytest.raises(ConfigError, match="model alias 'huge' is not configured"):
        await run_file(engine, dag, tmp_path / "missing.jsonl", tmp_path / "out")
    assert not (tmp_path / "out").exists()

    with pytest.raises(ConfigError, match="does not exist"):
        await run_file(engine, classify_dag(), tmp_path / "missing.jsonl", tmp_path / "out")
    with pytest.raises(ConfigError, match="concurrency must be at least 1"):
        await run_file(
            engine, classify_dag(), tmp_path / "x.jsonl", tmp_path / "out", concurrency=0
        )
    assert not (tmp_path / "out").exists()


def test_writer_row_groups_and_atomic_rename(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, ["label"], row_group_rows=3)
    for i in range(7):
        writer.write_error(str(i), "InvalidRecord", f"row {i}: bad")
    assert not writer.path.exists(), "the final name appears only on close"
    writer.close()
    writer.close()  # idempotent

    meta = pq.ParquetFile(writer.path).metadata
    assert (meta.num_rows, meta.num_row_groups) == (7, 3)
    assert meta.row_group(0).column(0).compression == "ZSTD"
    table = pq.read_table(writer.path)
    assert table.schema.names == [
        "key",
        "status",
        "output_label",
        "error_type",
        "error_message",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "wall_time_s",
        "trace_id",
    ]
    assert table.schema.field("input_tokens").type == pa.int64()
    assert table.column("key").to_pylist() == [str(i) for i in range(7)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.parquet"]
