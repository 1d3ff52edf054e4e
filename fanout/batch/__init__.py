"""Batch jobs: a DAG over a file of records (JSONL, CSV, Parquet), streamed into Parquet results.

::

    from fanout import Engine
    from fanout.batch import run_file

    async with Engine.from_config("fanout.toml") as engine:
        stats = await run_file(engine, dag, "reviews.jsonl", "out/", concurrency=64)
"""

from fanout.batch._job import JobStats, Runner, run_file
from fanout.batch._pipeline import load_pipeline
from fanout.batch._readers import SUPPORTED_EXTENSIONS, Record, iter_records
from fanout.batch._writer import RESULTS_FILE, ResultWriter, result_schema

__all__ = [
    "RESULTS_FILE",
    "SUPPORTED_EXTENSIONS",
    "JobStats",
    "Record",
    "ResultWriter",
    "Runner",
    "iter_records",
    "load_pipeline",
    "result_schema",
    "run_file",
]
