"""Batch records that wait for a person: their run ids, and which ones a person decided.

A record whose run pauses at a review step gets a ``waiting_for_review`` row (not a
dead letter); its run id is derived from the job directory and the record's key, so
a later ``fanout run`` into the same directory finds its reviews in the store. A
decided one is resumed from its checkpoint and its new row, in a later part,
supersedes the waiting one: readers take the **last row per key** (parts in order).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq

from fanout.batch._writer import result_parts
from fanout.store import ReviewStore
from fanout.types import RunStatus

__all__ = ["decided_records", "record_run_id"]


def record_run_id(output_dir: Path, key: str) -> str:
    """The run id of record ``key`` of the job in ``output_dir`` (stable across runs)."""
    digest = hashlib.sha256(f"{output_dir.resolve()}\0{key}".encode()).hexdigest()
    return f"record-{digest[:24]}"


def waiting_keys(output_dir: Path) -> set[str]:
    """Keys whose last row says ``waiting_for_review``."""
    last: dict[str, str] = {}
    for part in result_parts(output_dir):
        table = pq.read_table(part, columns=["key", "status"])
        for key, status in zip(
            table.column("key").to_pylist(), table.column("status").to_pylist(), strict=True
        ):
            last[str(key)] = str(status)
    return {key for key, status in last.items() if status == RunStatus.WAITING_FOR_REVIEW}


def decided_records(output_dir: Path, store: ReviewStore) -> dict[str, str]:
    """Waiting records a person has decided: key -> a decided review's id (to resume)."""
    decided: dict[str, str] = {}
    for key in waiting_keys(output_dir):
        reviews = store.list(run_id=record_run_id(output_dir, key))
        done = [r.review_id for r in reviews if r.status != "pending"]
        if done:
            decided[key] = done[0]
    return decided
