"""The trace dataset reads as one table with the tools people use on Parquet directories:
pandas, pyarrow, DuckDB and Polars (the hive partitions are ``date`` and ``job``, so no
partition clashes with the ``job_id`` column every row holds)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from fanout import DAG, Engine


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    directory = tmp_path_factory.mktemp("readers") / "traces"
    dag = DAG("readers")
    dag.input("text")
    dag.output(label=dag.llm("fast", "Classify: {text}", name="classify"))

    async def run() -> None:
        for job in ("job-a", "job-b"):  # two jobs: two partitions
            async with Engine(traces=directory, job_id=job, otel=False) as engine:
                for i in range(3):
                    await engine.run(dag, {"text": f"review {i}"})

    asyncio.run(run())
    return directory


def _check(job_ids: list[str], span_names: list[str]) -> None:
    assert len(job_ids) == 18  # 2 jobs x 3 runs x (run, node, attempt)
    assert sorted(set(job_ids)) == ["job-a", "job-b"]
    assert span_names.count("chat sim-small") == 6


def test_pandas_reads_the_directory(traces: Path) -> None:
    frame = pd.read_parquet(traces)
    _check([str(j) for j in frame["job_id"]], list(frame["span_name"]))
    assert set(frame["job"].astype(str)) == {"job-a", "job-b"}  # the partition column


def test_pyarrow_reads_the_directory(traces: Path) -> None:
    table = pq.read_table(traces)
    _check(table.column("job_id").to_pylist(), table.column("span_name").to_pylist())


def test_duckdb_reads_the_directory_with_hive_partitions(traces: Path) -> None:
    rows = duckdb.sql(
        f"SELECT job_id, span_name, job FROM read_parquet('{traces}/**/*.parquet', "
        "hive_partitioning = true)"
    ).fetchall()
    _check([r[0] for r in rows], [r[1] for r in rows])
    assert all(r[0] == r[2] for r in rows)


def test_polars_reads_the_directory(traces: Path) -> None:
    frame = pl.read_parquet(traces)
    _check(frame["job_id"].to_list(), frame["span_name"].to_list())
