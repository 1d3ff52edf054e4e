"""Batch jobs: a DAG over files of records (JSONL, CSV, Parquet), streamed into a Parquet dataset.

::

    from fanout import Engine
    from fanout.batch import run_file

    async with Engine.from_config("fanout.toml") as engine:
        stats = await run_file(engine, dag, "reviews.jsonl", "out/", key="id", max_in_flight=64)

``out/results/part-*.parquet`` gets a row per record, ``out/dead_letter/`` the
records that failed; running the same job into ``out/`` again resumes it. With
``provider_batch=True`` the calls go through the provider's Batch API
(:class:`BatchClient`), journaled in ``out/batches/``.
"""

from fanout.batch._batch_lines import BatchStats
from fanout.batch._batching import BatchClient
from fanout.batch._clients import batch_clients
from fanout.batch._job import CALLS_DIR, INVALID_RECORD, JobStats, Runner, run_file
from fanout.batch._keys import KeySet, content_key
from fanout.batch._manifest import MANIFEST_FILE, fingerprint, open_job
from fanout.batch._pipeline import load_pipeline
from fanout.batch._readers import (
    SUPPORTED_EXTENSIONS,
    Record,
    count_records,
    input_files,
    iter_records,
)
from fanout.batch._review import record_run_id
from fanout.batch._schema import output_types, result_schema
from fanout.batch._writer import DEAD_LETTER_DIR, RESULTS_DIR, ResultWriter, result_parts

__all__ = [
    "CALLS_DIR",
    "DEAD_LETTER_DIR",
    "INVALID_RECORD",
    "MANIFEST_FILE",
    "RESULTS_DIR",
    "SUPPORTED_EXTENSIONS",
    "BatchClient",
    "BatchStats",
    "JobStats",
    "KeySet",
    "Record",
    "ResultWriter",
    "Runner",
    "batch_clients",
    "content_key",
    "count_records",
    "fingerprint",
    "input_files",
    "iter_records",
    "load_pipeline",
    "open_job",
    "output_types",
    "record_run_id",
    "result_parts",
    "result_schema",
    "run_file",
]
