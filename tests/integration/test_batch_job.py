"""Batch jobs end to end: files in, the results dataset and dead letters read back, resume."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel
from support import sim_config

from fanout import DAG, ConfigError, Engine, RunResult
from fanout.batch import JobStats, ResultWriter, content_key, result_parts, run_file
from fanout.sim import FakeClock, SimProvider

REVIEWS = {
    "good": "Great product, I love it.",
    "bad": "It arrived broken. Terrible.",
    "meh": "It is a kettle.",
}
EXPECTED = {"good": "positive", "bad": "negative", "meh": "neutral"}


def classify_dag(prompt: str = "Rate the sentiment of: {text}") -> DAG:
    dag = DAG("classify")
    text = dag.input("text")
    label = dag.llm("fast", prompt, max_tokens=5, name="label")
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
    assert len(by_key) == len(rows), "one row per key"
    return by_key


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def review_lines(n: int) -> list[str]:
    kinds = list(REVIEWS)
    return [
        json.dumps({"id": f"r{i}", "kind": kinds[i % 3], "text": f"{REVIEWS[kinds[i % 3]]} #{i}"})
        for i in range(n)
    ]


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine(sim_config(0.0)) as eng:
        yield eng


async def test_rows_error_rows_and_dead_letters_ready_to_rerun(
    engine: Engine, tmp_path: Path
) -> None:
    lines = [json.dumps({"id": key, "text": text}) for key, text in REVIEWS.items()]
    lines.insert(1, "{this is not json")
    lines.append(json.dumps({"id": "no-text", "body": "wrong field"}))
    lines.append('"just a string"')
    source = write_jsonl(tmp_path / "reviews.jsonl", lines)
    out = tmp_path / "out"

    stats = await run_file(engine, classify_dag(), source, out, key="id")

    assert stats.output_path == out / "results"
    assert (stats.records, stats.ok, dict(stats.failed)) == (6, 3, {"error": 3})
    assert stats.dead_letters == 3
    rows = read_rows(stats.output_path)
    assert set(rows) == {"good", "bad", "meh", "no-text"} | {
        content_key("{this is not json"),
        content_key('"just a string"'),
    }
    assert {k: rows[k]["status"] for k in REVIEWS} == dict.fromkeys(REVIEWS, "ok")
    # a plain llm node's output is typed text; the lambda's is JSON text
    assert {k: rows[k]["output_label"] for k in REVIEWS} == EXPECTED
    assert (
        pq.read_schema(next((out / "results").glob("*.parquet"))).field("output_label").type
        == pa.string()
    )
    assert json.loads(str(rows["meh"]["output_words"])) == 4
    assert rows["good"]["error_type"] is None
    assert rows["good"]["attempts"] == 1
    assert int(str(rows["good"]["input_tokens"])) > 0
    assert float(str(rows["good"]["cost_usd"])) > 0

    bad_json = rows[content_key("{this is not json")]
    assert (bad_json["status"], bad_json["error_type"]) == ("error", "InvalidRecord")
    assert str(bad_json["error_message"]).startswith("reviews.jsonl:2: not valid JSON")
    assert bad_json["output_label"] is None
    missing = rows["no-text"]
    assert missing["error_type"] == "InvalidRecord"
    assert missing["error_message"] == (
        "reviews.jsonl:5: missing input 'text'; each record needs the DAG's inputs ['text'] "
        "(it has ['body', 'id'])"
    )
    assert stats.input_tokens == sum(int(str(r["input_tokens"])) for r in rows.values())
    assert stats.cost_usd == pytest.approx(sum(float(str(r["cost_usd"])) for r in rows.values()))
    assert not list(out.rglob(".*tmp"))

    # Dead letters: the input record and the error, ready to re-run (keys kept).
    letters = [
        json.loads(line)
        for path in sorted((out / "dead_letter").glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    assert {letter["_fanout"]["key"] for letter in letters} == set(rows) - set(REVIEWS)
    fixed = next(letter for letter in letters if letter["_fanout"]["key"] == "no-text")
    assert fixed["body"] == "wrong field" and fixed["_fanout"]["error_type"] == "InvalidRecord"
    raw = [letter for letter in letters if "raw" in letter["_fanout"]]
    assert sorted(letter["_fanout"]["raw"] for letter in raw) == [
        '"just a string"',
        "{this is not json",
    ]

    with pytest.raises(ConfigError, match="lies inside the output directory"):
        await run_file(engine, classify_dag(), out / "dead_letter", out, key="id")
    again = await run_file(engine, classify_dag(), out / "dead_letter", tmp_path / "retry")
    assert set(read_rows(again.output_path)) == set(rows) - set(REVIEWS)  # same keys


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

    stats = await run_file(engine, classify_dag(), source, tmp_path / "out", key="id")

    rows = read_rows(stats.output_path)
    assert {k: r["output_label"] for k, r in rows.items()} == EXPECTED
    assert stats.ok == 3
    assert stats.errors == 0


async def test_keys_default_to_content_hashes(engine: Engine, tmp_path: Path) -> None:
    records = [{"text": t} for t in REVIEWS.values()]
    source = write_jsonl(tmp_path / "in.jsonl", [json.dumps(r) for r in records])
    stats = await run_file(engine, classify_dag(), source, tmp_path / "out")
    assert set(read_rows(stats.output_path)) == {content_key(r) for r in records}


async def test_fifty_thousand_records_in_parts_with_the_right_contents(tmp_path: Path) -> None:
    n = 50_000
    source = write_jsonl(tmp_path / "in.jsonl", review_lines(n))
    snapshots: list[JobStats] = []
    async with Engine(sim_config(0.0)) as engine:
        stats = await run_file(
            engine,
            classify_dag(),
            source,
            tmp_path / "out",
            key="id",
            max_in_flight=256,
            part_rows=20_000,
            on_progress=snapshots.append,
        )
        calls = sim(engine).calls

    assert (stats.records, stats.ok, stats.errors, calls) == (n, n, 0, n)
    parts = sorted((tmp_path / "out" / "results").glob("part-*.parquet"))
    assert len(parts) >= 3  # written as the job went, not held to the end
    table = pq.read_table(tmp_path / "out" / "results", columns=["key", "output_label"])
    assert table.num_rows == n
    keys, values = table.column("key").to_pylist(), table.column("output_label").to_pylist()
    labels = dict(zip(keys, values, strict=True))
    kinds = list(REVIEWS)
    assert len(labels) == n
    assert all(labels[f"r{i}"] == EXPECTED[kinds[i % 3]] for i in range(n))
    assert snapshots[-1].total == n and snapshots[-1].records == n
    assert max(s.in_flight for s in snapshots) <= 256


async def test_in_flight_records_never_exceed_max_in_flight(tmp_path: Path) -> None:
    clock = FakeClock(autojump=True)
    n, window = 60, 7
    source = write_jsonl(
        tmp_path / "in.jsonl", [json.dumps({"id": i, "text": f"review {i}"}) for i in range(n)]
    )
    try:
        async with Engine(sim_config(100.0), clock=clock) as engine:
            stats = await run_file(
                engine, classify_dag(), source, tmp_path / "out", max_in_flight=window
            )
            provider = sim(engine)
    finally:
        await clock.aclose()

    assert (stats.records, stats.ok, provider.calls) == (n, n, n)
    # One call per record: the provider's peak is the job's peak, and the window was used.
    assert provider.max_in_flight == window
    assert pq.read_table(stats.output_path).num_rows == n


async def test_cancelling_the_job_publishes_finished_rows(engine: Engine, tmp_path: Path) -> None:
    fast = [json.dumps({"id": f"fast{i}", "text": "quick one"}) for i in range(3)]
    slow = [json.dumps({"id": f"slow{i}", "text": "[sim:latency=60000] slow"}) for i in range(3)]
    source = write_jsonl(tmp_path / "in.jsonl", slow[:1] + fast + slow[1:])
    three_done = asyncio.Event()

    def progress(stats: JobStats) -> None:
        if stats.records == 3:
            three_done.set()

    job = asyncio.create_task(
        run_file(
            engine,
            classify_dag(),
            source,
            tmp_path / "out",
            key="id",
            on_progress=progress,
            progress_every_s=0.05,
        )
    )
    await asyncio.wait_for(three_done.wait(), timeout=10)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job

    rows = read_rows(tmp_path / "out" / "results")
    assert set(rows) == {"fast0", "fast1", "fast2"}
    assert all(row["status"] == "ok" for row in rows.values())
    assert not list((tmp_path / "out").rglob(".*tmp"))


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
        stats = await run_file(
            engine, classify_dag(), source, tmp_path / "out", key="id", budget_tokens=3
        )

    rows = read_rows(stats.output_path)
    assert rows["a"]["status"] == "budget_exceeded"
    assert rows["a"]["error_type"] == "BudgetExceeded"
    assert rows["b"]["status"] == "error"
    assert rows["b"]["error_type"] == "RuntimeError"
    assert rows["b"]["error_message"] == "in.jsonl:2: unexpected RuntimeError: kaboom"
    assert dict(stats.failed) == {"budget_exceeded": 1, "error": 1}
    assert stats.dead_letters == 2


async def test_bad_options_fail_before_anything_is_read_or_written(
    engine: Engine, tmp_path: Path
) -> None:
    dag = DAG("bad")
    dag.output(x=dag.llm("huge", "hello {text}", text=dag.input("text")))
    with pytest.raises(ConfigError, match="model alias 'huge' is not configured"):
        await run_file(engine, dag, tmp_path / "missing.jsonl", tmp_path / "out")
    with pytest.raises(ConfigError, match="does not exist"):
        await run_file(engine, classify_dag(), tmp_path / "missing.jsonl", tmp_path / "out")
    with pytest.raises(ConfigError, match="max_in_flight must be at least 1"):
        await run_file(
            engine, classify_dag(), tmp_path / "x.jsonl", tmp_path / "out", max_in_flight=0
        )
    assert not (tmp_path / "out").exists()
    source = write_jsonl(tmp_path / "in.jsonl", review_lines(3))
    with pytest.raises(ConfigError, match="nothing to resume"):
        await run_file(engine, classify_dag(), source, tmp_path / "out", resume=True)


async def test_resume_skips_finished_records_and_replays_unpublished_calls(
    tmp_path: Path,
) -> None:
    n = 90
    source = write_jsonl(tmp_path / "in.jsonl", review_lines(n))
    out = tmp_path / "out"
    async with Engine(sim_config(0.0)) as engine:
        first = await run_file(engine, classify_dag(), source, out, key="id", part_rows=30)
        assert sim(engine).calls == n
    parts = sorted((out / "results").glob("part-*.parquet"))
    assert len(parts) == 3
    # A kill loses the rows not yet published: drop the last part, as if it had been.
    lost = set(pq.read_table(parts[-1], columns=["key"]).column("key").to_pylist())
    parts[-1].unlink()

    async with Engine(sim_config(0.0)) as engine:
        second = await run_file(engine, classify_dag(), source, out, key="id", part_rows=30)
        calls = sim(engine).calls
        replayed = engine.journal.replayed if engine.journal is not None else -1

    assert first.records == n and second.resumed
    assert (second.skipped, second.records) == (n - len(lost), len(lost))
    assert calls == 0  # their calls had completed: answered from the journal, unpaid
    assert replayed == len(lost)
    rows = read_rows(out / "results")
    assert len(rows) == n and all(r["status"] == "ok" for r in rows.values())
    # the journal now holds only what unfinished records needed
    assert sum(1 for _ in (out / "calls").glob("*.jsonl")) >= 1


def two_step_dag(label_prompt: str) -> DAG:
    dag = DAG("two-step")
    text = dag.input("text")
    label = dag.llm("fast", label_prompt, max_tokens=5, name="label")
    summary = dag.llm("fast", "Summarise: {text}", max_tokens=20, name="summary", text=text)
    dag.output(label=label, summary=summary)
    return dag


async def test_a_changed_node_refuses_resume_unless_forced(tmp_path: Path) -> None:
    n = 12
    source = write_jsonl(tmp_path / "in.jsonl", review_lines(n))
    out = tmp_path / "out"
    async with Engine(sim_config(0.0)) as engine:
        await run_file(engine, two_step_dag("Sentiment of: {text}"), source, out, key="id")
        assert sim(engine).calls == 2 * n
        with pytest.raises(ConfigError) as refused:
            await run_file(engine, two_step_dag("Rate the sentiment: {text}"), source, out)
        message = str(refused.value)
        assert "nodes changed since: label" in message
        assert "keyed records by column 'id', not content" in message
        assert "--force-rerun-changed" in message

    async with Engine(sim_config(0.0)) as engine:
        stats = await run_file(
            engine,
            two_step_dag("Rate the sentiment: {text}"),
            source,
            out,
            key="id",
            force_rerun_changed=True,
        )
        calls = sim(engine).calls
    assert (stats.records, stats.skipped, stats.resumed) == (n, 0, False)
    assert calls == n  # only the changed node called again; summary came from the journal
    assert len(read_rows(out / "results")) == n
    superseded = list((out / "_superseded").glob("*/results/part-*.parquet"))
    assert superseded, "the earlier rows are kept aside, not deleted"


class Verdict(BaseModel):
    label: str
    score: float
    tags: list[str]


def count_words(text: str) -> int:
    return len(text.split())


async def test_typed_outputs_get_typed_columns(engine: Engine, tmp_path: Path) -> None:
    dag = DAG("typed")
    text = dag.input("text")
    verdict = dag.llm("fast", "Judge: {text}", output=Verdict, name="verdict")
    words = dag.tool(count_words, text, name="words")
    dag.output(verdict=verdict, words=words, echo=text)
    source = write_jsonl(tmp_path / "in.jsonl", review_lines(4))

    stats = await run_file(engine, dag, source, tmp_path / "out", key="id")

    table = pq.read_table(stats.output_path)
    assert table.schema.field("output_verdict").type == pa.struct(
        [("label", pa.string()), ("score", pa.float64()), ("tags", pa.list_(pa.string()))]
    )
    assert table.schema.field("output_words").type == pa.int64()
    assert table.schema.field("output_echo").type == pa.string()  # an input: JSON text
    row = table.to_pylist()[0]
    assert isinstance(row["output_verdict"]["label"], str)
    assert row["output_words"] == len(json.loads(str(row["output_echo"])).split())
    assert b"fanout.job" in (table.schema.metadata or {})


def test_parts_are_published_whole_and_orphan_dead_letters_removed(tmp_path: Path) -> None:
    from fanout.batch import Record

    writer = ResultWriter(tmp_path, {"label": pa.string()}, part_rows=3)
    for i in range(7):
        bad = Record(str(i), i, None, f"row {i}: bad", f"in.jsonl:{i}", raw="{")
        writer.write_error(str(i), "InvalidRecord", f"row {i}: bad", bad)
        if writer.due():
            writer.commit()
    assert (writer.parts_written, writer.buffered) == (2, 1)
    writer.close()
    writer.close()  # idempotent

    parts = sorted((tmp_path / "results").glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-{i:06d}.parquet" for i in range(3)]
    meta = pq.ParquetFile(parts[0]).metadata
    assert meta.num_rows == 3 and meta.row_group(0).column(0).compression == "ZSTD"
    table = pq.read_table(tmp_path / "results")
    assert table.schema.names == [
        "key",
        "status",
        "output_label",
        "error_type",
        "error_message",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "attempts",
        "wall_time_s",
        "trace_id",
    ]
    assert sorted(table.column("key").to_pylist()) == [str(i) for i in range(7)]
    letters = sorted((tmp_path / "dead_letter").glob("*.jsonl"))
    assert [p.stem for p in letters] == [p.stem for p in parts]

    # A kill between the two renames leaves a dead-letter part without its results part.
    (tmp_path / "dead_letter" / "part-000003.jsonl").write_text("{}\n", encoding="utf-8")
    reopened = ResultWriter(tmp_path, {"label": pa.string()})
    assert not (tmp_path / "dead_letter" / "part-000003.jsonl").exists()
    reopened.write_error("x", "InvalidRecord", "bad")
    reopened.close()
    assert (tmp_path / "results" / "part-000003.parquet").exists()


def test_tagged_writers_share_a_directory_and_clean_up_only_their_own(tmp_path: Path) -> None:
    from fanout.batch import Record
    from fanout.batch._writer import remove_orphan_letters

    def bad(key: str) -> Record:
        return Record(key, 0, None, f"{key}: bad", f"in.jsonl:{key}", raw="{")

    one = ResultWriter(tmp_path, {"label": pa.string()}, tag="s00001")
    two = ResultWriter(tmp_path, {"label": pa.string()}, tag="s00002")
    for writer, key in ((one, "a"), (two, "b"), (one, "c")):
        writer.write_error(key, "InvalidRecord", "bad", bad(key))
        writer.commit()
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "part-000000-s00001.parquet",
        "part-000000-s00002.parquet",
        "part-000001-s00001.parquet",
    ]
    assert [p.name for p in result_parts(tmp_path, tag="s00002")] == [
        "part-000000-s00002.parquet"
    ]
    assert len(result_parts(tmp_path)) == 3
    # orphaned dead letters (a kill between the renames): a tagged writer removes its own
    for stem in ("part-000007-s00001", "part-000007-s00002"):
        (tmp_path / "dead_letter" / f"{stem}.jsonl").write_text("{}\n", encoding="utf-8")
    ResultWriter(tmp_path, {"label": pa.string()}, tag="s00001").close()
    assert not (tmp_path / "dead_letter" / "part-000007-s00001.jsonl").exists()
    assert (tmp_path / "dead_letter" / "part-000007-s00002.jsonl").exists()  # a live writer's
    remove_orphan_letters(tmp_path)  # the job's driver, before any writer starts: all of them
    assert not (tmp_path / "dead_letter" / "part-000007-s00002.jsonl").exists()
    assert len(list((tmp_path / "dead_letter").glob("*.jsonl"))) == 3
    with pytest.raises(ConfigError, match="part tag"):
        ResultWriter(tmp_path, {}, tag="Bad-Tag")


async def test_a_second_job_into_a_running_jobs_directory_is_refused(
    engine: Engine, tmp_path: Path
) -> None:
    slow = [json.dumps({"id": f"s{i}", "text": "[sim:latency=60000] slow"}) for i in range(2)]
    source = write_jsonl(tmp_path / "in.jsonl", slow)
    out = tmp_path / "out"
    first = asyncio.create_task(run_file(engine, classify_dag(), source, out, key="id"))
    for _ in range(200):
        if (out / "_fanout_job.json").exists():
            break
        await asyncio.sleep(0.01)
    with pytest.raises(ConfigError, match=r"is in use by a running job \(pid \d+\)"):
        await run_file(engine, classify_dag(), source, out, key="id")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    fast = write_jsonl(tmp_path / "fast.jsonl", review_lines(2))
    stats = await run_file(engine, classify_dag(), fast, out, key="id")  # released
    assert stats.records == 2
