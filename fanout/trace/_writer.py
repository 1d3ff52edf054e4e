"""``TraceWriter``: spans buffered in memory, logged every flush, rolled into Parquet parts.

``emit`` appends a span's values to its kind's flat list (no object per row the garbage
collector would track), safe from any thread and cheap on the event loop. A background
thread wakes every ``flush_interval_s``, turns the buffered rows into an Arrow record
batch per kind (a column is a strided slice of the list) and appends them to the open
log segment (an Arrow IPC stream: a process killed at any moment leaves every complete
batch readable).
When the segment holds ``row_group_rows`` rows, or is ``roll_interval_s`` old,
it is rewritten as one zstd Parquet part with row groups of ``row_group_rows``
(never one row group per flush: small groups make files bigger and scans slower)
and deleted. A writer that opens a directory converts the segments of writers
that died (their lock is free); a live writer's segment is left alone.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import operator
import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from fanout.errors import ConfigError
from fanout.trace._files import WAL_DIR, WAL_SUFFIX, part_path, read_segment
from fanout.trace._span import KIND_COLUMNS, SPAN_SCHEMA, Span, span_columns

__all__ = ["TraceWriter", "recover_segments", "spans_to_batch"]

_log = logging.getLogger(__name__)
_COLUMNS = span_columns()
_TIMESTAMPS = frozenset(i for i, f in enumerate(SPAN_SCHEMA) if pa.types.is_timestamp(f.type))
_WRITER_ID = _COLUMNS.index("writer_id")
_SEQ_NO = _COLUMNS.index("seq_no")
_SET_BY_WRITER = frozenset({_WRITER_ID, _SEQ_NO})


def _carried(names: frozenset[str]) -> tuple[tuple[int, ...], Callable[[Span], tuple[object, ...]]]:
    """The columns a kind's rows carry (table order; the writer's own two left out) and
    the getter reading them off a span as one tuple."""
    indexes = tuple(
        i for i, name in enumerate(_COLUMNS) if name in names and i not in _SET_BY_WRITER
    )
    return indexes, operator.attrgetter(*(_COLUMNS[i] for i in indexes))


_KIND_GETTERS = {kind: _carried(names) for kind, names in KIND_COLUMNS.items()}
# the type each carried column converts to (timestamps arrive as float seconds)
_CARRIED_TYPES = [pa.float64() if pa.types.is_timestamp(f.type) else f.type for f in SPAN_SCHEMA]
# Parquet: dictionary pages where values repeat (ids and digests would only grow them);
# min/max statistics where queries filter (time ranges, kinds, jobs): both cut write time.
_DICTIONARY_COLUMNS = [
    "record_type", "span_name", "job_id", "dag_name", "node_id", "status", "error_type",
    "provider", "request_model", "response_model", "finish_reason", "tool_name",
    "model_alias", "writer_id", "provider_name", "server_address", "request_tools",
]  # fmt: skip
_STATISTICS_COLUMNS = [
    "start_time", "end_time", "record_type", "job_id", "dag_name", "node_id", "status",
    "http_status", "model_alias", "seq_no",
]  # fmt: skip


def spans_to_batch(spans: list[Span], writer_id: str, first_seq: int) -> pa.RecordBatch:
    """Spans as one record batch of :data:`SPAN_SCHEMA` (grouped by kind, in order of kinds)."""
    flat: dict[str, list[object]] = {kind: [] for kind in _KIND_GETTERS}
    for span in spans:
        flat[span.record_type].extend(_KIND_GETTERS[span.record_type][1](span))
    batches = _kind_batches(flat, writer_id, first_seq)
    if len(batches) == 1:
        return batches[0]
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=SPAN_SCHEMA)
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _kind_batches(
    flat: dict[str, list[object]], writer_id: str, first_seq: int
) -> list[pa.RecordBatch]:
    """A record batch per kind that has rows, numbered from ``first_seq`` in kind order."""
    batches = []
    seq = first_seq
    for kind, values in flat.items():
        if values:
            batch = _kind_batch(values, kind, writer_id, seq)
            batches.append(batch)
            seq += batch.num_rows
    return batches


def _kind_batch(flat: list[object], kind: str, writer_id: str, first_seq: int) -> pa.RecordBatch:
    """Rows of one kind, laid end to end in ``flat`` (each row: the values of its
    :data:`KIND_COLUMNS`, in table order).

    A column is a strided slice of ``flat`` (a C loop), converted by Arrow's C++
    converter; the columns a kind never fills are null.
    """
    indexes, _ = _KIND_GETTERS[kind]
    width = len(indexes)
    n = len(flat) // width
    columns = {i: flat[j::width] for j, i in enumerate(indexes)}
    arrays: list[pa.Array] = []
    for i, field in enumerate(SPAN_SCHEMA):
        values = columns.get(i)
        if i == _WRITER_ID:
            arrays.append(pa.repeat(pa.scalar(writer_id, pa.string()), n))
        elif i == _SEQ_NO:
            arrays.append(pa.array(range(first_seq, first_seq + n), pa.int64()))
        elif values is None:
            arrays.append(pa.nulls(n, field.type))
        elif i in _TIMESTAMPS:  # float seconds -> µs
            seconds = pa.array(values, pa.float64())
            micros = pc.cast(pc.round(pc.multiply(seconds, 1e6)), pa.int64())
            arrays.append(micros.cast(field.type))
        else:
            arrays.append(pa.array(values, _CARRIED_TYPES[i]))
    return pa.RecordBatch.from_arrays(arrays, schema=SPAN_SCHEMA)


class _Segment:
    """The open log segment: an Arrow IPC stream appended flush by flush."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = pa.OSFile(str(path), "wb")
        # buffered (a batch is a write per column buffer: ~270 a batch unbuffered), and
        # flushed by every flush: each flush's batches reach the OS
        self.sink = pa.BufferedOutputStream(self.file, 1 << 20)
        self.stream = ipc.new_stream(self.sink, SPAN_SCHEMA)
        self.rows = 0
        self.opened = time.monotonic()
        self.date: str | None = None
        self.batches: list[pa.RecordBatch] = []  # kept: rolling needs no re-read

    def write(self, batch: pa.RecordBatch) -> None:
        if self.date is None and batch.num_rows:
            self.date = _date_of(batch)
        self.stream.write_batch(batch)
        self.batches.append(batch)
        self.rows += batch.num_rows

    def sync(self, fsync: bool) -> None:
        self.sink.flush()
        if fsync:
            os.fsync(self.file.fileno())

    def close(self) -> None:
        self.stream.close()
        self.sink.close()  # and the file under it


class TraceWriter:
    """Writes spans of one job to ``directory`` (see :mod:`fanout.trace._files` for the layout).

    Use it as a context manager or call :meth:`close`; it also closes at interpreter exit.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        job_id: str,
        flush_interval_s: float = 1.0,
        row_group_rows: int = 100_000,
        roll_interval_s: float = 300.0,
        fsync: bool = False,
    ) -> None:
        if flush_interval_s <= 0 or roll_interval_s <= 0 or row_group_rows < 1:
            raise ValueError("flush_interval_s, roll_interval_s and row_group_rows must be > 0")
        self.directory = Path(directory)
        self.job_id = job_id
        self.writer_id = f"{os.getpid():x}{secrets.token_hex(4)}"
        self.flush_interval_s = flush_interval_s
        self.row_group_rows = row_group_rows
        self.roll_interval_s = roll_interval_s
        self.fsync = fsync
        self.spans_written = 0
        self.parts_written = 0
        # per kind, the rows' values end to end: taken at emit, while the span is in cache.
        # Flat lists of strings and numbers hold no object the garbage collector tracks
        # (a tuple a row did: a second of rows made it run and sweep the heap).
        self._rows: dict[str, list[object]] = {k: [] for k in _KIND_GETTERS}
        self._rows_lock = threading.Lock()  # emit's appends and the flush's swap
        self._seq = 0
        self._segment_no = 0
        self._segment: _Segment | None = None
        self._io = threading.Lock()  # flushes: the thread's, and close()/flush() callers'
        self._wake = threading.Event()
        self._closed = False
        self._error: BaseException | None = None
        wal = self.directory / WAL_DIR
        try:
            wal.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot use traces directory {str(self.directory)!r}: "
                f"{exc.strerror or exc}; pick a writable directory"
            ) from None
        self._lock_file: IO[bytes] | None = open(wal / f"{self.writer_id}.lock", "wb")  # noqa: SIM115
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        recover_segments(self.directory, row_group_rows=row_group_rows)
        self._thread = threading.Thread(
            target=self._loop, name=f"fanout-trace-{self.writer_id}", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    # -- the hot path --------------------------------------------------------------

    def emit(self, span: Span) -> None:
        """Buffer one span (thread-safe, no I/O): the values of its kind's columns."""
        kind = span.record_type
        row = _KIND_GETTERS[kind][1](span)
        with self._rows_lock:
            self._rows[kind].extend(row)

    # -- the background thread -------------------------------------------------------

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._closed:
                break
            try:
                self.flush()
            except BaseException as exc:  # keep the job running; report once on close
                self._error = self._error or exc
                _log.exception("trace writer %s: flush failed", self.writer_id)

    def flush(self) -> None:
        """Log every buffered span now (and roll the segment if it is due)."""
        with self._io:
            self._flush_locked()

    def _flush_locked(self) -> None:
        with self._rows_lock:
            rows, self._rows = self._rows, {k: [] for k in _KIND_GETTERS}
        batches = _kind_batches(rows, self.writer_id, self._seq)
        if batches:
            if self._segment is None:
                self._segment_no += 1
                name = f"{self.writer_id}-{self._segment_no:06d}{WAL_SUFFIX}"
                self._segment = _Segment(self.directory / WAL_DIR / name)
            for batch in batches:  # a batch per kind: no copy to join them
                self._segment.write(batch)
            n = sum(b.num_rows for b in batches)
            self._seq += n
            self._segment.sync(self.fsync)
            self.spans_written += n
        segment = self._segment
        if segment is not None and (
            segment.rows >= self.row_group_rows
            or time.monotonic() - segment.opened >= self.roll_interval_s
        ):
            self._roll()

    def _roll(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        segment.close()
        table = pa.Table.from_batches(segment.batches, schema=SPAN_SCHEMA)
        if _convert(segment.path, self.directory, self.row_group_rows, table, segment.date):
            self.parts_written += 1

    # -- closing -------------------------------------------------------------------

    def close(self) -> None:
        """Write everything buffered, roll the open segment into Parquet, stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._io:
            self._flush_locked()
            self._roll()
        atexit.unregister(self.close)
        if self._lock_file is not None:
            lock_path = Path(self._lock_file.name)
            self._lock_file.close()
            self._lock_file = None
            with contextlib.suppress(OSError):
                lock_path.unlink()
        if self._error is not None:
            _log.error("trace writer %s: some flushes failed: %s", self.writer_id, self._error)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TraceWriter({str(self.directory)!r}, job_id={self.job_id!r}, id={self.writer_id})"


def _date_of(batch: pa.RecordBatch) -> str:
    first = batch.column("start_time")[0].as_py()
    when = first if isinstance(first, datetime) else datetime.now(UTC)
    return when.strftime("%Y-%m-%d")


def _convert(
    segment: Path,
    root: Path,
    row_group_rows: int,
    table: pa.Table | None = None,
    date: str | None = None,
) -> bool:
    """Rewrite a closed segment as its Parquet part (atomically), then delete it."""
    if table is None:
        table = read_segment(segment)
    if table.num_rows == 0:
        segment.unlink(missing_ok=True)
        return False
    job_id = str(table.column("job_id")[0].as_py())
    if date is None:
        date = _date_of(table.slice(0, 1).to_batches()[0])
    target = part_path(root, date, job_id, segment.name.removesuffix(WAL_SUFFIX))
    if not target.exists():  # else: converted before a crash that came ahead of the unlink
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".parquet.tmp")
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            row_group_size=row_group_rows,
            use_dictionary=_DICTIONARY_COLUMNS,
            write_statistics=_STATISTICS_COLUMNS,
        )
        os.replace(tmp, target)
    segment.unlink(missing_ok=True)
    return True


def recover_segments(
    directory: str | Path,
    *,
    row_group_rows: int = 100_000,
    is_alive: Callable[[str], bool] | None = None,
) -> int:
    """Convert the log segments of writers that are gone; returns how many parts were written.

    A writer is gone when its lock file is missing or can be locked (``flock`` is
    released by the kernel when a process dies, SIGKILL included).
    """
    root = Path(directory)
    wal = root / WAL_DIR
    converted = 0
    for segment in sorted(wal.glob(f"*{WAL_SUFFIX}")):
        writer_id = segment.name.split("-", 1)[0]
        alive = is_alive(writer_id) if is_alive is not None else _locked(wal, writer_id)
        if alive:
            continue
        try:
            if _convert(segment, root, row_group_rows):
                converted += 1
        except OSError as exc:
            _log.warning("traces: could not recover %s: %s", segment, exc)
    for lock in wal.glob("*.lock"):
        if not _locked(wal, lock.stem):
            with contextlib.suppress(OSError):
                lock.unlink()
    return converted


def _locked(wal: Path, writer_id: str) -> bool:
    """Whether a live writer holds ``writer_id``'s lock."""
    path = wal / f"{writer_id}.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock taken just now
    return False
