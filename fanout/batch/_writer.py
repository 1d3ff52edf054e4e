"""``ResultWriter``: a row per record into a Parquet dataset, in parts, each published whole.

``OUTPUT/results/part-000000.parquet, part-000001.parquet, ...``: rows are buffered
and written as a part when ``part_rows`` have gathered or the oldest is
``part_interval_s`` old, to a temporary name renamed into place, so every part
under its final name is complete and a killed job loses only its open buffer (the
job's call journal answers those records' calls again on resume, unpaid).

Records that did not end ``ok`` also go to ``OUTPUT/dead_letter/part-NNNNNN.jsonl``
with the same part number: the input record plus a ``_fanout`` field (key, status,
error, origin; the raw text of a malformed one), ready to re-run with
``fanout run ... --input OUTPUT/dead_letter``. A dead-letter part is published
before its results part; one whose results part never appeared (a kill between the
two renames) is removed when the directory is next opened.

Writers that share a directory (the shards of a job on Ray, one per worker) tag
their parts: ``part-000003-s00007.parquet``. Each numbers and cleans up its own.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from fanout.batch._readers import META_FIELD, Record
from fanout.batch._schema import json_text, result_schema, to_column
from fanout.errors import ConfigError
from fanout.run import RunResult
from fanout.types import RunStatus

__all__ = [
    "DEAD_LETTER_DIR",
    "RESULTS_DIR",
    "ResultWriter",
    "ensure_dir",
    "remove_orphan_letters",
    "result_parts",
]

RESULTS_DIR = "results"
DEAD_LETTER_DIR = "dead_letter"
_PART = re.compile(r"^part-(\d{6})(?:-([a-z0-9]+))?\.(?:parquet|jsonl)$")


def result_parts(output_dir: str | Path, *, tag: str | None = None) -> list[Path]:
    """The published results parts of ``output_dir``, in order (only ``tag``'s, if given)."""
    directory = Path(output_dir) / RESULTS_DIR
    return sorted(_parts(directory, "parquet", tag).values())


def remove_orphan_letters(output_dir: str | Path, *, tag: str | None = None) -> None:
    """Delete dead-letter parts (``tag``'s only, if given) whose results part was never
    published: a kill came between the two renames, and their records run again."""
    directory = Path(output_dir)
    published = _parts(directory / RESULTS_DIR, "parquet", tag)
    for stem, path in _parts(directory / DEAD_LETTER_DIR, "jsonl", tag).items():
        if stem not in published:
            path.unlink(missing_ok=True)


def ensure_dir(output_dir: str | Path) -> Path:
    """``output_dir``, created if need be; a :class:`ConfigError` if it cannot be written."""
    directory = Path(output_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(
            f"output {str(directory)!r} exists and is not a directory; pick a directory"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot create output directory {str(directory)!r}: {exc.strerror}"
        ) from None
    if not os.access(directory, os.W_OK):
        raise ConfigError(f"cannot write to {str(directory)!r}; pick a writable directory")
    return directory


def _parts(directory: Path, suffix: str, tag: str | None = None) -> dict[str, Path]:
    """Part files by stem (``part-000003`` or ``part-000003-s00007``), ``tag``'s only if given."""
    found: dict[str, Path] = {}
    if directory.is_dir():
        for path in directory.glob(f"part-*.{suffix}"):
            match = _PART.match(path.name)
            if match and (tag is None or match.group(2) == tag):
                found[path.name.removesuffix(f".{suffix}")] = path
    return found


def _number(stem: str) -> int:
    return int(stem[5:11])  # part-NNNNNN[-tag]


class ResultWriter:
    """Writes a job's results dataset and dead letters (see the module doc).

    ``outputs`` maps each DAG output to its Arrow type (``None``: JSON text);
    ``metadata`` goes into every part's schema (the job's fingerprint). ``tag``: this
    writer's parts among those of others writing the same directory at the same time.
    """

    def __init__(
        self,
        output_dir: str | Path,
        outputs: Mapping[str, pa.DataType | None],
        *,
        metadata: Mapping[str, str] | None = None,
        part_rows: int = 50_000,
        part_interval_s: float = 10.0,
        now: Callable[[], float] = time.monotonic,
        tag: str | None = None,
    ) -> None:
        if tag is not None and not re.fullmatch(r"[a-z0-9]+", tag):
            raise ConfigError(f"a part tag is lowercase letters and digits (got {tag!r})")
        if part_rows <= 0 or part_interval_s <= 0:
            raise ConfigError("part_rows and part_interval_s must be positive")
        self.directory = ensure_dir(output_dir)
        self.results_dir = self.directory / RESULTS_DIR
        self.dead_letter_dir = self.directory / DEAD_LETTER_DIR
        self.results_dir.mkdir(exist_ok=True)
        self.dead_letter_dir.mkdir(exist_ok=True)
        self.outputs = dict(outputs)
        self.schema = result_schema(self.outputs, metadata)
        self.rows_written = 0  # rows in published parts (this writer's)
        self.parts_written = 0
        self.dead_letters = 0
        self._part_rows = part_rows
        self._part_interval_s = part_interval_s
        self._now = now
        self._opened_at: float | None = None  # when the oldest buffered row came
        self._closed = False
        self._columns: dict[str, list[object]] = {name: [] for name in self.schema.names}
        self._letters: list[str] = []
        self._suffix = f"-{tag}" if tag is not None else ""
        # dead letters published just before a kill: their records run again
        remove_orphan_letters(self.directory, tag=tag)
        # after every part there is (each writer's tag keeps names apart)
        self._next = max(map(_number, _parts(self.results_dir, "parquet")), default=-1) + 1

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffered_dead_letters(self) -> int:
        return len(self._letters)

    @property
    def buffered(self) -> int:
        return len(self._columns["key"])

    def write_result(self, key: str, result: RunResult, record: Record | None = None) -> None:
        """One row for a finished run (whatever its status); a dead letter unless ``ok`` or
        ``waiting_for_review`` (a person decides, then a resume writes the record's new row)."""
        outputs = result.jsonable_outputs()
        self._append(
            key,
            str(result.status),
            outputs,
            result.error_type,
            result.error_message,
            # the record's own cost, whether this run or an earlier one paid for its calls
            result.usage.input_tokens + result.replayed.input_tokens,
            result.usage.output_tokens + result.replayed.output_tokens,
            result.total_cost_usd,
            result.calls,
            result.wall_time_s,
            result.trace_id,
        )
        waiting = result.status is RunStatus.WAITING_FOR_REVIEW
        if not result.ok and not waiting and record is not None:
            self._dead_letter(
                key, record, str(result.status), result.error_type, result.error_message
            )

    def write_error(
        self,
        key: str,
        error_type: str,
        error_message: str,
        record: Record | None = None,
        *,
        status: str = "error",
    ) -> None:
        """One row (and a dead letter) for a record that did not run: malformed, missing an
        input, refused."""
        self._append(key, status, {}, error_type, error_message, 0, 0, 0.0, 0, 0.0, None)
        if record is not None:
            self._dead_letter(key, record, status, error_type, error_message)

    def due(self) -> bool:
        """Whether the buffer should be published now (full, or its oldest row old enough)."""
        if self._opened_at is None:
            return False
        return (
            self.buffered >= self._part_rows
            or self._now() - self._opened_at >= self._part_interval_s
        )

    def commit(self) -> None:
        """Publish the buffered rows as the next part (and its dead letters)."""
        if self._closed:
            raise RuntimeError("ResultWriter is closed")
        if not self.buffered:
            return
        name = f"part-{self._next:06d}{self._suffix}"
        if self._letters:
            letters = self.dead_letter_dir / f"{name}.jsonl"
            tmp = letters.with_name(f".{letters.name}.tmp")
            with tmp.open("w", encoding="utf-8") as out:
                out.writelines(self._letters)
            os.replace(tmp, letters)
        path = self.results_dir / f"{name}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(self._table(), tmp, compression="zstd")
        os.replace(tmp, path)
        self._next += 1
        self.parts_written += 1
        self.rows_written += self.buffered
        self.dead_letters += len(self._letters)
        for column in self._columns.values():
            column.clear()
        self._letters.clear()
        self._opened_at = None

    def abort(self) -> None:
        """Close without publishing the buffer. Idempotent."""
        self._closed = True

    def close(self) -> None:
        """Publish what is buffered and close. Idempotent."""
        if self._closed:
            return
        try:
            self.commit()
        finally:
            self._closed = True

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _table(self) -> pa.Table:
        arrays = []
        for field in self.schema:
            values = self._columns[field.name]
            if field.name.startswith("output_"):
                arrays.append(to_column(values, field.type, field.name))
            else:
                arrays.append(pa.array(values, type=field.type))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _append(
        self,
        key: str,
        status: str,
        outputs: dict[str, object],
        error_type: str | None,
        error_message: str | None,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
        attempts: int,
        wall_time_s: float,
        trace_id: str | None,
    ) -> None:
        if self._closed:
            raise RuntimeError("ResultWriter is closed")
        if self._opened_at is None:
            self._opened_at = self._now()
        columns = self._columns
        columns["key"].append(key)
        columns["status"].append(status)
        for name, kind in self.outputs.items():
            value = outputs.get(name)
            columns[f"output_{name}"].append(value if kind is not None else json_text(value))
        columns["error_type"].append(error_type)
        columns["error_message"].append(error_message)
        columns["input_tokens"].append(input_tokens)
        columns["output_tokens"].append(output_tokens)
        columns["cost_usd"].append(cost_usd)
        columns["attempts"].append(attempts)
        columns["wall_time_s"].append(wall_time_s)
        columns["trace_id"].append(trace_id)

    def _dead_letter(
        self,
        key: str,
        record: Record,
        status: str,
        error_type: str | None,
        error_message: str | None,
    ) -> None:
        meta: dict[str, object] = {
            "key": key,
            "status": status,
            "error_type": error_type,
            "error_message": error_message,
            "origin": record.origin,
        }
        if record.data is None:
            meta["raw"] = record.raw
        line = {**(record.data or {}), META_FIELD: meta}
        self._letters.append(json.dumps(line, ensure_ascii=False, default=str) + "\n")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"ResultWriter({str(self.results_dir)!r}, rows={self.rows_written}, "
            f"buffered={self.buffered}, {state})"
        )
