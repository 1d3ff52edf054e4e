"""Where trace files live, and reading them back (including a crashed writer's log).

Layout under a traces directory::

    DIR/date=YYYY-MM-DD/job=JOB/part-WRITER-SEQ.parquet   rolled, zstd, large row groups
    DIR/_wal/WRITER-SEQ.arrows                             the open segment: an Arrow IPC
                                                           stream, appended every flush

The partition key is ``job``, not ``job_id``: every row holds its ``job_id`` column, and
a hive partition of the same name is a second, differently typed ``job_id`` to readers
that discover partitions (pandas and pyarrow refuse the directory then). With ``job``,
``pandas.read_parquet(DIR)``, ``pyarrow.parquet.read_table(DIR)`` and Polars read it as
one table (plus the ``date`` and ``job`` partition columns); ``_wal`` is skipped by them
(a leading underscore). Directories written before (``job_id=JOB``) still read here.

A segment is converted to its Parquet part when it rolls; a segment left by a
killed process is converted by the next writer that opens the directory.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from fanout.trace._span import SPAN_SCHEMA

__all__ = ["WAL_DIR", "TraceFiles", "part_path", "read_segment", "trace_files"]

WAL_DIR = "_wal"
WAL_SUFFIX = ".arrows"


class TraceFiles:
    """The Parquet parts and open (or orphaned) log segments of a traces directory."""

    __slots__ = ("parts", "segments")

    def __init__(self, parts: list[Path], segments: list[Path]) -> None:
        self.parts = parts
        self.segments = segments

    def __bool__(self) -> bool:
        return bool(self.parts or self.segments)


def trace_files(directory: str | Path) -> TraceFiles:
    root = Path(directory)
    parts = sorted(
        p
        for pattern in ("date=*/job=*/part-*.parquet", "date=*/job_id=*/part-*.parquet")
        for p in root.glob(pattern)
        if p.is_file()
    )
    segments = sorted((root / WAL_DIR).glob(f"*{WAL_SUFFIX}"))
    return TraceFiles(parts, segments)


def part_path(root: Path, date: str, job_id: str, segment_name: str) -> Path:
    """The Parquet part a segment becomes (named after it, so conversion is idempotent)."""
    return root / f"date={date}" / f"job={job_id}" / f"part-{segment_name}.parquet"


def read_segment(path: Path) -> pa.Table:
    """Every complete batch of a log segment; a torn last batch (a killed writer) is dropped."""
    batches: list[pa.RecordBatch] = []
    try:
        with pa.OSFile(str(path), "rb") as source:
            reader = ipc.open_stream(source)
            while True:
                try:
                    batches.append(reader.read_next_batch())
                except StopIteration:
                    break
    except (pa.ArrowInvalid, OSError, EOFError):
        pass  # torn tail, or a header never written: keep what was complete
    return pa.Table.from_batches(batches, schema=SPAN_SCHEMA)
