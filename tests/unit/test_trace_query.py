"""Reading traces back: summary figures, one request's tree, log segments, bad directories.

The data is ``support_traces.sample_traces``; every expected figure below is worked
out by hand from the table in its docstring.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support_traces import (
    T0,
    TRACE_1,
    TRACE_2,
    TRACE_3,
    attempt,
    sample_traces,
    sid,
    table,
    write_part,
    write_segment,
)

from fanout.errors import ConfigError
from fanout.trace._files import part_path
from fanout.trace._query import CallStats, connect, summarize, trace_tree


@pytest.fixture
def traces(tmp_path: Path) -> Path:
    return sample_traces(tmp_path / "traces")


def _count(directory: Path) -> int:
    con = connect(directory)
    try:
        (count,) = con.execute("SELECT count(*) FROM spans").fetchone() or (0,)
    finally:
        con.close()
    return int(count)


FAST = CallStats(
    calls=5,  # a11 a12 a21 a22 a31 (a31 asked for a tool but is a "chat" span)
    errors=3,
    errors_by_type={"RateLimited": 2, "ProviderTimeout": 1},
    rate_limited=2,
    retries=2,  # a12 and a22 are second attempts
    p50_ms=300.0,  # 100 200 300 400 500
    p95_ms=pytest.approx(480.0),  # type: ignore[arg-type]  # 400 + 0.8 * 100
    p99_ms=pytest.approx(496.0),  # type: ignore[arg-type]  # 400 + 0.96 * 100
    limiter_wait_ms=40.0,  # 5 + 15 + 20 + 0 (a31 has none)
    mean_limiter_wait_ms=10.0,
    input_tokens=150,
    output_tokens=15,
    cost_usd=pytest.approx(0.0015),  # type: ignore[arg-type]
    backoff_ms=85.0,  # a12's
    wait_p50_ms=5.0,  # waits before each call: 0 0 5 20 100 (a12: limiter 15 + back-off 85)
    wait_p95_ms=pytest.approx(84.0),  # type: ignore[arg-type]  # 20 + 0.8 * 80
)


# -- summary ---------------------------------------------------------------------------


def test_summary_per_model_counts_llm_attempts_only(traces: Path) -> None:
    summary = summarize(traces)

    keys = [(m.model_alias, m.provider, m.request_model) for m in summary.models]
    assert keys == [("fast", "sim", "sim-small"), ("smart", "sim", "sim-large")]
    fast, smart = summary.models
    assert fast.stats == FAST
    assert smart.stats == CallStats(
        calls=1,
        errors=0,
        errors_by_type={},
        rate_limited=0,
        retries=0,
        p50_ms=300.0,
        p95_ms=300.0,
        p99_ms=300.0,
        limiter_wait_ms=0.0,
        mean_limiter_wait_ms=0.0,
        input_tokens=200,
        output_tokens=50,
        cost_usd=0.01,
        wait_p50_ms=0.0,
        wait_p95_ms=0.0,
    )


def test_summary_per_node_includes_tool_attempts_in_start_order(traces: Path) -> None:
    summary = summarize(traces)

    assert [(n.dag_name, n.node_id) for n in summary.nodes] == [
        ("triage", "classify"),
        ("triage", "lookup"),
        ("triage", "summarize"),
    ]
    classify, lookup, _ = summary.nodes
    assert classify.stats == FAST
    assert lookup.stats.calls == 1
    assert (lookup.stats.p50_ms, lookup.stats.p99_ms) == (50.0, 50.0)
    assert lookup.stats.limiter_wait_ms == 0.0
    assert lookup.stats.mean_limiter_wait_ms is None  # tools wait for no limiter


def test_summary_per_job_counts_runs_unfinished_tokens_cost_and_wall_time(traces: Path) -> None:
    summary = summarize(traces)

    assert (summary.parts, summary.segments, summary.spans) == (2, 1, 14)
    job_a, job_b = summary.jobs
    assert job_a.job_id == "job-a"
    assert (job_a.spans, job_a.runs, job_a.unfinished) == (12, 2, 0)
    assert job_a.runs_by_status == {"error": 1, "ok": 1}
    assert (job_a.input_tokens, job_a.output_tokens) == (300, 60)
    assert job_a.cost_usd == pytest.approx(0.011)
    assert job_a.first_start == T0
    assert job_a.last_end == T0 + timedelta(milliseconds=3500)
    assert job_a.wall_s == pytest.approx(3.5)
    # job-b is still running: its rows are only in the open log segment, no run row yet
    assert job_b.job_id == "job-b"
    assert (job_b.spans, job_b.runs, job_b.unfinished) == (2, 0, 1)
    assert job_b.runs_by_status == {}
    assert (job_b.input_tokens, job_b.output_tokens) == (50, 5)
    assert job_b.cost_usd == pytest.approx(0.0005)


def test_errors_count_cancelled_attempts_but_not_ok_ones(tmp_path: Path) -> None:
    rows = [
        attempt(TRACE_1, "x1", "n", "classify", start_ms=0, duration_ms=10, status="cancelled",
                error_type="CancelledError"),
        attempt(TRACE_1, "x2", "n", "classify", start_ms=0, duration_ms=10, status="error"),
        attempt(TRACE_1, "x3", "n", "classify", start_ms=0, duration_ms=10),
    ]  # fmt: skip
    write_part(tmp_path, rows, "w1-000001")

    (model,) = summarize(tmp_path).models

    assert model.stats.errors == 2
    assert model.stats.errors_by_type == {"CancelledError": 1, "error": 1}  # no type: status


# -- the files behind the view ------------------------------------------------------------


def test_segment_rows_are_read_alongside_parts(traces: Path) -> None:
    assert _count(traces) == 14
    for segment in (traces / "_wal").iterdir():
        segment.unlink()
    assert _count(traces) == 12


def test_torn_segment_keeps_its_complete_batches(tmp_path: Path) -> None:
    first = [attempt(TRACE_3, "b1", "n", "classify", start_ms=0, duration_ms=10)]
    second = [attempt(TRACE_3, f"c{i}", "n", "classify", start_ms=0, duration_ms=10)
              for i in range(20)]  # fmt: skip
    write_segment(tmp_path, "w1-000001", first, second, torn=True)

    assert _count(tmp_path) == 1
    assert summarize(tmp_path).models[0].stats.calls == 1


def test_segment_with_no_complete_batch_reads_as_no_rows(tmp_path: Path) -> None:
    (tmp_path / "_wal").mkdir()
    (tmp_path / "_wal" / "w1-000001.arrows").write_bytes(b"")

    summary = summarize(tmp_path)

    assert (summary.spans, summary.models, summary.jobs) == (0, (), ())


def test_segment_already_converted_to_its_part_counts_once(tmp_path: Path) -> None:
    done = [attempt(TRACE_1, f"d{i}", "n", "classify", start_ms=0, duration_ms=10)
            for i in range(3)]  # fmt: skip
    later = [attempt(TRACE_1, "e1", "n", "classify", start_ms=0, duration_ms=10)]
    write_part(tmp_path, done, "w1-000001")
    # the writer stopped after converting the segment and before deleting it
    write_segment(tmp_path, "w1-000001", done)
    write_segment(tmp_path, "w1-000002", later)

    assert _count(tmp_path) == 4


def test_part_from_a_writer_with_fewer_columns_still_reads(tmp_path: Path) -> None:
    old_row = attempt(TRACE_1, "o1", "n", "classify", start_ms=0, duration_ms=10, input_tokens=7)
    old = table([old_row]).drop_columns(["estimated_input_tokens", "input_hmac"])
    path = part_path(tmp_path, "2025-03-04", "job-a", "w0-000001")
    path.parent.mkdir(parents=True)
    pq.write_table(old, path)
    write_part(tmp_path, [attempt(TRACE_2, "o2", "n", "classify", start_ms=0, duration_ms=10,
                                  input_tokens=5)], "w1-000001")  # fmt: skip

    assert summarize(tmp_path).models[0].stats.input_tokens == 12


def test_job_id_comes_from_the_column_not_the_folder(tmp_path: Path) -> None:
    rows = [attempt(TRACE_1, "p1", "n", "classify", start_ms=0, duration_ms=10)]
    write_part(tmp_path, rows, "w1-000001", job_id="some-folder")

    assert [job.job_id for job in summarize(tmp_path).jobs] == ["job-a"]


# -- one request ------------------------------------------------------------------------


def test_tree_is_run_then_nodes_by_start_with_attempts_under_each(traces: Path) -> None:
    tree = trace_tree(traces, TRACE_1)

    assert [(r.depth, r.span_id) for r in tree] == [
        (0, sid("r1")),
        (1, sid("n1c")),
        (2, sid("a11")),
        (2, sid("a12")),
        (1, sid("n1l")),
        (2, sid("a14")),
        (1, sid("n1s")),
        (2, sid("a13")),
    ]
    by_id = {r.span_id: r for r in tree}
    retry = by_id[sid("a12")]
    assert (retry.offset_ms, retry.duration_ms, retry.attempt) == (200.0, 200.0, 2)
    assert (retry.input_tokens, retry.output_tokens, retry.cost_usd) == (100, 10, 0.001)
    failed = by_id[sid("a11")]
    assert (failed.status, failed.error_type, failed.http_status) == ("error", "RateLimited", 429)
    assert failed.is_llm_call and not by_id[sid("a14")].is_llm_call


def test_tree_of_an_unfinished_request_starts_at_spans_without_a_parent(traces: Path) -> None:
    tree = trace_tree(traces, TRACE_3)

    assert [(r.depth, r.span_id, r.offset_ms) for r in tree] == [
        (0, sid("n3c"), 0.0),  # its run row (r3) is not written yet
        (1, sid("a31"), 0.0),
    ]


def test_trace_id_prefix_finds_the_one_trace(traces: Path) -> None:
    assert trace_tree(traces, "1111AAA")[0].trace_id == TRACE_1  # case does not matter
    assert trace_tree(traces, "1111aab")[0].trace_id == TRACE_2


def test_ambiguous_prefix_lists_the_matches(traces: Path) -> None:
    with pytest.raises(ConfigError, match="'1111aa' is ambiguous") as info:
        trace_tree(traces, "1111aa")
    assert TRACE_1 in str(info.value) and TRACE_2 in str(info.value)


def test_unknown_trace_suggests_some_ids_and_the_summary(traces: Path) -> None:
    with pytest.raises(ConfigError, match="no trace 'deadbeef'") as info:
        trace_tree(traces, "deadbeef")
    message = str(info.value)
    assert TRACE_1 in message and TRACE_2 in message
    assert "fanout traces summary" in message


@pytest.mark.parametrize("bad", ["1111a", "1111zz", ""])
def test_trace_id_must_be_six_hex_characters(traces: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="at least 6 hex"):
        trace_tree(traces, bad)


# -- bad directories -----------------------------------------------------------------------


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'.*nope' does not exist: pass the --traces directory"):
        summarize(tmp_path / "nope")


def test_a_file_is_not_a_traces_directory(tmp_path: Path) -> None:
    (tmp_path / "f.parquet").write_bytes(b"")
    with pytest.raises(ConfigError, match="is not a directory"):
        connect(tmp_path / "f.parquet")


def test_directory_without_trace_files_says_what_it_expected(tmp_path: Path) -> None:
    (tmp_path / "results.parquet").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"no trace files in .*part-\*\.parquet"):
        summarize(tmp_path)


def test_unreadable_part_is_a_config_error_naming_the_directory(tmp_path: Path) -> None:
    path = part_path(tmp_path, "2025-03-04", "job-a", "w1-000001")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError, match="cannot read the traces in"):
        summarize(tmp_path)
