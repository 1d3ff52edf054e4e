"""Trace files on disk: rolled Parquet parts, crash-safe log, recovery, SIGKILL, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from support import sim_config

from fanout import DAG, Engine
from fanout.trace import (
    SPAN_SCHEMA,
    Span,
    TraceWriter,
    read_segment,
    recover_segments,
    spans_to_batch,
    trace_files,
)

ROOT = Path(__file__).resolve().parents[2]


def _spans(n: int, *, trace: str = "a" * 32, job: str = "job1") -> list[Span]:
    now = time.time()
    return [
        Span(
            trace_id=trace,
            span_id=f"{i:016x}",
            parent_span_id=None,
            record_type="attempt",
            span_name="chat m",
            job_id=job,
            dag_name="d",
            start_time=now,
            end_time=now + 0.25,
            duration_ms=250.0,
            input_tokens=i,
            output_tokens=1,
            cost_usd=0.5,
        )
        for i in range(n)
    ]


def _read_all(directory: Path) -> pa.Table:
    files = trace_files(directory)
    tables = [pq.read_table(p, schema=SPAN_SCHEMA) for p in files.parts]
    tables += [read_segment(p) for p in files.segments]
    return pa.concat_tables(tables) if tables else SPAN_SCHEMA.empty_table()


def test_spans_roll_into_one_zstd_part_with_large_row_groups(tmp_path: Path) -> None:
    with TraceWriter(tmp_path, job_id="job1", row_group_rows=1000) as writer:
        for span in _spans(2500):
            writer.emit(span)
    files = trace_files(tmp_path)
    assert files.segments == []
    (part,) = files.parts
    assert part.parent.name == "job=job1" and part.parent.parent.name.startswith("date=")
    meta = pq.ParquetFile(part).metadata
    assert meta.num_rows == 2500
    assert meta.num_row_groups == 3  # 1000 + 1000 + 500: never a group per flush
    assert meta.row_group(0).column(0).compression == "ZSTD"
    table = pq.read_table(part)
    assert table.schema.equals(SPAN_SCHEMA, check_metadata=False)
    assert table.column("seq_no").to_pylist() == list(range(2500))
    assert set(table.column("writer_id").to_pylist()) == {writer.writer_id}
    assert sum(table.column("input_tokens").to_pylist()) == sum(range(2500))
    start = table.column("start_time")[0].as_py()
    assert start.tzinfo is not None and abs(start.timestamp() - time.time()) < 600


def test_each_flush_is_readable_before_the_roll(tmp_path: Path) -> None:
    writer = TraceWriter(tmp_path, job_id="job1", flush_interval_s=3600)
    try:
        for span in _spans(10):
            writer.emit(span)
        writer.flush()
        for span in _spans(5):
            writer.emit(span)
        writer.flush()
        files = trace_files(tmp_path)
        assert files.parts == [] and len(files.segments) == 1
        assert read_segment(files.segments[0]).num_rows == 15
    finally:
        writer.close()
    assert _read_all(tmp_path).num_rows == 15


def test_an_orphaned_segment_with_a_torn_tail_is_recovered(tmp_path: Path) -> None:
    wal = tmp_path / "_wal"
    wal.mkdir()
    segment = wal / "deadbeef-000001.arrows"
    with pa.OSFile(str(segment), "wb") as sink:
        stream = ipc.new_stream(sink, SPAN_SCHEMA)
        stream.write_batch(spans_to_batch(_spans(7, job="crashed"), "deadbeef", 0))
        stream.write_batch(spans_to_batch(_spans(3, job="crashed"), "deadbeef", 7))
        # no end-of-stream marker: the writer was killed
    data = segment.read_bytes()
    segment.write_bytes(data + data[-200:-50])  # and the next batch was cut mid-write
    assert read_segment(segment).num_rows == 10

    with TraceWriter(tmp_path, job_id="job2"):
        pass  # opening the directory recovers what the dead writer left
    files = trace_files(tmp_path)
    assert files.segments == []
    (part,) = files.parts
    assert part.parent.name == "job=crashed"
    assert pq.read_table(part).column("seq_no").to_pylist() == list(range(10))


def test_a_live_writers_segment_is_left_alone(tmp_path: Path) -> None:
    first = TraceWriter(tmp_path, job_id="one", flush_interval_s=3600)
    for span in _spans(4, job="one"):
        first.emit(span)
    first.flush()
    assert recover_segments(tmp_path) == 0  # its lock is held
    second = TraceWriter(tmp_path, job_id="two")
    assert len(trace_files(tmp_path).segments) == 1
    second.close()
    first.close()
    files = trace_files(tmp_path)
    assert files.segments == [] and len(files.parts) == 1
    assert _read_all(tmp_path).num_rows == 4


_KILLED_JOB = """
import asyncio, json, sys
from support import sim_config
from fanout import DAG, Engine

config = sim_config(5.0)
config = config.model_copy(
    update={"traces": config.traces.model_copy(update={"flush_interval_s": 0.2})}
)
dag = DAG("killed")
dag.input("text")
dag.output(a=dag.llm("fast", "{text}", name="a"))

async def main():
    async with Engine(config, traces=sys.argv[1], job_id="killed") as engine:
        done = [(await engine.run(dag, {"text": f"r{i}"})).trace_id for i in range(20)]
        await asyncio.sleep(0.6)  # three flush intervals
        print(json.dumps(done), flush=True)
        while True:
            await engine.run(dag, {"text": "more"})

asyncio.run(main())
"""


def test_sigkill_loses_nothing_recorded_before_the_last_flush(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_JOB, str(traces)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        time.sleep(0.3)  # it keeps running and writing
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finished = json.loads(line)
    assert len(finished) == 20

    def rows_of(table: pa.Table) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for trace_id, kind in zip(
            table.column("trace_id").to_pylist(),
            table.column("record_type").to_pylist(),
            strict=True,
        ):
            out.setdefault(trace_id, set()).add(kind)
        return out

    before = _read_all(traces)  # readable as the killed process left it
    kinds = rows_of(before)
    assert all(kinds.get(t) == {"run", "node", "attempt"} for t in finished)
    assert trace_files(traces).segments  # nothing was rolled: the log is all there is

    assert recover_segments(traces) >= 1
    after = _read_all(traces)
    assert trace_files(traces).segments == []
    assert after.num_rows == before.num_rows
    assert all(rows_of(after).get(t) == {"run", "node", "attempt"} for t in finished)


def test_sigterm_flushes_the_cli_job(tmp_path: Path) -> None:
    records = tmp_path / "in.jsonl"
    records.write_text(
        "".join(json.dumps({"id": i, "text": f"review {i}"}) + "\n" for i in range(5000)),
        encoding="utf-8",
    )
    pipeline = tmp_path / "p.py"
    pipeline.write_text(
        textwrap.dedent(
            """
            from fanout import DAG
            dag = DAG("slow")
            dag.input("text")
            dag.output(a=dag.llm("fast", "[sim:latency=200] {text}", name="a"))
            """
        ),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", "run", f"{pipeline}:dag", "-i", str(records),
         "-o", str(out), "--concurrency", "8"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "traces" / "_wal").exists() or not trace_files(out / "traces").segments:
            assert time.monotonic() < deadline, "no trace segment appeared"
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    files = trace_files(out / "traces")
    assert files.segments == [] and files.parts  # rolled into Parquet on the way out
    table = _read_all(out / "traces")
    runs = table.filter(pa.compute.equal(table.column("record_type"), "run"))
    results = pq.read_table(out / "results")
    # every record written to the results has its run row, joined by trace_id
    assert set(results.column("trace_id").to_pylist()) <= set(runs.column("trace_id").to_pylist())
    assert results.num_rows > 0


def test_a_segment_rolls_by_age_without_a_close(tmp_path: Path) -> None:
    writer = TraceWriter(tmp_path, job_id="aged", flush_interval_s=0.05, roll_interval_s=0.2)
    try:
        for span in _spans(3, job="aged"):
            writer.emit(span)
        deadline = time.monotonic() + 30
        while not trace_files(tmp_path).parts:
            assert time.monotonic() < deadline, "the open segment was never rolled"
            time.sleep(0.05)
    finally:
        writer.close()
    assert writer.parts_written == 1  # rolled by age; close found nothing more to write
    assert _read_all(tmp_path).num_rows == 3


async def test_hmac_mode_writes_no_plaintext_to_any_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FANOUT_TRACE_KEY", "k")
    async with Engine(sim_config(), traces=tmp_path / "traces") as engine:
        dag = DAG("private")
        dag.input("text")
        dag.output(a=dag.llm("fast", "Repeat {text}", name="a"))
        result = await engine.run(dag, {"text": "ZEBRA-7781 lives at 12 Quay St"})
    assert result.ok and "ZEBRA" in str(result.outputs["a"])  # the sim echoes it back
    files = [p for p in (tmp_path / "traces").rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert b"ZEBRA" not in path.read_bytes()
        if path.suffix == ".parquet":
            assert "ZEBRA" not in json.dumps(pq.read_table(path).to_pylist(), default=str)
    table = _read_all(tmp_path / "traces")
    assert table.column("input_hmac").null_count < table.num_rows  # digests are there
