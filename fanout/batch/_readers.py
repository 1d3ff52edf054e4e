"""Streaming record readers: JSON Lines (also gzipped), CSV and Parquet, a record at a time."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from fanout.errors import ConfigError

__all__ = ["PARQUET_BATCH_ROWS", "SUPPORTED_EXTENSIONS", "Record", "iter_records"]

PARQUET_BATCH_ROWS = 1024
"""Rows decoded from a Parquet file at a time: what bounds the reader's memory."""


@dataclass(frozen=True, slots=True)
class Record:
    """One input record.

    ``key`` is the record's ``id`` field (as text) when it has one, else its row
    number. ``index`` is the 0-based row number among the file's records (blank
    JSONL lines do not count). A record that could not be parsed has ``data=None``
    and ``error`` saying what is wrong; the stream goes on after it.
    """

    key: str
    index: int
    data: dict[str, object] | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _key(data: dict[str, object], index: int) -> str:
    value = data.get("id")
    if value is None or value == "":
        return str(index)
    return str(value)


def _open_binary(path: Path) -> BinaryIO:
    if path.name.lower().endswith(".gz"):
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]  # a BinaryIO in practice
    return path.open("rb")


def _iter_jsonl(path: Path) -> Iterator[Record]:
    index = 0
    with _open_binary(path) as stream:
        lines = enumerate(stream, start=1)
        while True:
            try:
                line_no, raw = next(lines)
            except StopIteration:
                return
            except (OSError, EOFError) as exc:  # a truncated or corrupt .gz
                raise ConfigError(f"{path}: cannot read past row {index}: {exc}") from None
            if not raw.strip():
                continue
            yield _parse_json_line(raw, index, line_no)
            index += 1


def _parse_json_line(raw: bytes, index: int, line_no: int) -> Record:
    where = f"row {index} (line {line_no})"
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return Record(str(index), index, None, f"{where}: not valid UTF-8; re-encode the file")
    except json.JSONDecodeError as exc:
        return Record(str(index), index, None, f"{where}: not valid JSON ({exc.msg})")
    if not isinstance(value, dict):
        kind = type(value).__name__ if value is not None else "null"
        return Record(
            str(index), index, None, f"{where}: expected a JSON object per line, got {kind}"
        )
    return Record(_key(value, index), index, value)


def _iter_csv(path: Path) -> Iterator[Record]:
    # The header is read now, so a file that is not CSV fails before the job starts.
    text = io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError, OSError, EOFError) as exc:
        text.close()
        raise ConfigError(f"input file {str(path)!r}: cannot read the CSV header ({exc})") from None
    if header is not None and (len(set(header)) != len(header) or not all(header)):
        text.close()
        raise ConfigError(
            f"input file {str(path)!r}: CSV header {header} has empty or repeated column "
            "names; give every column a unique name"
        )
    return _Closing(_csv_rows(path, text, reader, header or []), text)


class _Closing:
    """An iterator that also closes ``resource`` when closed (even if never started)."""

    __slots__ = ("_items", "_resource")

    def __init__(self, items: Generator[Record, None, None], resource: io.TextIOWrapper) -> None:
        self._items = items
        self._resource = resource

    def __iter__(self) -> _Closing:
        return self

    def __next__(self) -> Record:
        return next(self._items)

    def close(self) -> None:
        self._items.close()
        self._resource.close()


def _csv_rows(
    path: Path, text: io.TextIOWrapper, reader: Iterator[list[str]], header: list[str]
) -> Generator[Record, None, None]:
    with text:
        if not header:
            return
        index = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Record(str(index), index, None, f"row {index}: malformed CSV ({exc})")
                index += 1
                continue
            except (UnicodeDecodeError, OSError, EOFError) as exc:
                raise ConfigError(
                    f"{path}: cannot read past row {index} ({exc}); re-encode the file as UTF-8"
                    if isinstance(exc, UnicodeDecodeError)
                    else f"{path}: cannot read past row {index} ({exc})"
                ) from None
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                message = f"row {index}: has {len(row)} fields, the header has {len(header)}"
                yield Record(str(index), index, None, message)
            else:
                data: dict[str, object] = dict(zip(header, row, strict=True))
                yield Record(_key(data, index), index, data)
            index += 1


def _iter_parquet(path: Path) -> Iterator[Record]:
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"{path}: not a readable Parquet file ({exc})") from None
    index = 0
    with file:
        for batch in file.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                yield Record(_key(row, index), index, row)
                index += 1


_READERS: dict[str, Callable[[Path], Iterator[Record]]] = {
    ".jsonl": _iter_jsonl,
    ".ndjson": _iter_jsonl,
    ".json": _iter_jsonl,
    ".jsonl.gz": _iter_jsonl,
    ".ndjson.gz": _iter_jsonl,
    ".json.gz": _iter_jsonl,
    ".csv": _iter_csv,
    ".csv.gz": _iter_csv,
    ".parquet": _iter_parquet,
    ".pq": _iter_parquet,
}
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(_READERS)


def _reader_for(path: Path) -> Callable[[Path], Iterator[Record]]:
    name = path.name.lower()
    # Longest suffix first, so ".jsonl.gz" wins over a bare ".gz".
    for ext in sorted(_READERS, key=len, reverse=True):
        if name.endswith(ext):
            return _READERS[ext]
    raise ConfigError(
        f"input file {str(path)!r}: unknown extension; supported: "
        f"{', '.join(SUPPORTED_EXTENSIONS)} (JSON files must hold one object per line)"
    )


def _check_not_json_array(path: Path) -> None:
    with _open_binary(path) as stream:
        head = stream.read(4096).lstrip()
    if head.startswith(b"["):
        raise ConfigError(
            f"input file {str(path)!r} holds a JSON array; fanout reads JSON Lines (one "
            "object per line); convert it, e.g. jq -c '.[]' in.json > in.jsonl"
        )


def iter_records(path: str | Path) -> Iterator[Record]:
    """Stream the records of ``path``, chosen by extension; never loads the whole file.

    Raises :class:`ConfigError` now (not while iterating) for a missing file or an
    unknown extension. A malformed line or row becomes a :class:`Record` with
    ``error`` set, and the stream goes on.
    """
    file = Path(path)
    reader = _reader_for(file)
    if not file.exists():
        raise ConfigError(f"input file {str(file)!r} does not exist; check the path")
    if not file.is_file():
        raise ConfigError(f"input file {str(file)!r} is not a regular file")
    if reader is _iter_parquet:
        try:
            pq.read_metadata(file)
        except (pa.ArrowException, OSError) as exc:
            raise ConfigError(
                f"input file {str(file)!r} is not a readable Parquet file ({exc})"
            ) from None
    elif reader is _iter_jsonl:
        try:
            _check_not_json_array(file)
        except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            raise ConfigError(f"input file {str(file)!r} cannot be read: {exc}") from None
    return reader(file)
