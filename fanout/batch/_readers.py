"""Streaming record readers: JSON Lines (also gzipped), CSV and Parquet files, folders and globs.

Records stream a line, row or Parquet batch at a time: memory does not grow with
the input. A record's key is its ``key`` column when one is named, else a hash of
its content (:func:`content_key`), never its position, which changes when files
are re-split. Dead-letter files (``OUTPUT/dead_letter/*.jsonl``) carry each
record's original key in a ``_fanout`` field, so re-running them keeps it.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import itertools
import json
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from fanout.batch._keys import content_key
from fanout.errors import ConfigError

__all__ = [
    "META_FIELD",
    "PARQUET_BATCH_ROWS",
    "SUPPORTED_EXTENSIONS",
    "Record",
    "Shard",
    "count_records",
    "file_columns",
    "input_files",
    "iter_records",
    "iter_shard",
    "plan_shards",
]

PARQUET_BATCH_ROWS = 1024
"""Rows decoded from a Parquet file at a time: what bounds the reader's memory."""

META_FIELD = "_fanout"
"""The field a dead-letter record keeps its key, error and (if malformed) raw text in."""


@dataclass(frozen=True, slots=True)
class Record:
    """One input record.

    ``key`` identifies it across runs (see the module doc). ``index`` is its 0-based
    position in this read (blank JSONL lines do not count), for messages only.
    ``origin`` says where it came from (``file:line`` or ``file:row``). A record
    that could not be parsed has ``data=None``, ``error`` saying what is wrong and
    ``raw`` holding its text; the stream goes on after it.
    """

    key: str
    index: int
    data: dict[str, object] | None
    error: str | None = None
    origin: str = ""
    raw: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _Keyer:
    """Turns parsed rows into records: keys, dead-letter metadata, a missing key column."""

    __slots__ = ("column", "index")

    def __init__(self, column: str | None) -> None:
        self.column = column
        self.index = 0

    def record(self, data: dict[str, object], origin: str) -> Record:
        index = self.index
        self.index += 1
        meta = data.pop(META_FIELD, None) if META_FIELD in data else None
        key: str | None = None
        if isinstance(meta, dict):
            key = str(meta["key"]) if meta.get("key") is not None else None
            raw = meta.get("raw")
            if isinstance(raw, str) and not data:  # a malformed record, maybe fixed in place
                parsed = _parse_object(raw.encode("utf-8"))
                if isinstance(parsed, str):
                    return Record(
                        key or content_key(raw), index, None, f"{origin}: {parsed}", origin, raw
                    )
                data = parsed
        if key is None and self.column is not None:
            value = data.get(self.column)
            if value is None or value == "":
                return Record(
                    content_key(data),
                    index,
                    None,
                    f"{origin}: no value in the key column {self.column!r}; give every "
                    "record one, or drop --key to key records by their content",
                    origin,
                    json.dumps(data, ensure_ascii=False, default=str),
                )
            key = str(value)
        return Record(key or content_key(data), index, data, None, origin)

    def malformed(self, raw: str, origin: str, error: str) -> Record:
        index = self.index
        self.index += 1
        return Record(content_key(raw), index, None, f"{origin}: {error}", origin, raw)


def _open_binary(path: Path) -> BinaryIO:
    if path.name.lower().endswith(".gz"):
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]  # a BinaryIO in practice
    return path.open("rb")


def _parse_object(raw: bytes) -> dict[str, object] | str:
    """A JSON object, or what is wrong with ``raw``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not valid UTF-8; re-encode the file"
    try:
        value = orjson.loads(text)  # a tenth of json's cost
    except orjson.JSONDecodeError:
        # what orjson refuses and json reads (integers past 64 bits, NaN), or the
        # standard library's clearer message for a line that is not JSON
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return f"not valid JSON ({exc.msg})"
    if not isinstance(value, dict):
        kind = type(value).__name__ if value is not None else "null"
        return f"expected a JSON object per line, got {kind}"
    return value


def _iter_jsonl(
    path: Path, keyer: _Keyer, start: int = 0, stop: int | None = None
) -> Iterator[Record]:
    """The lines of ``path``; with ``start``/``stop`` (an uncompressed file), those whose
    first byte lies in ``[start, stop)``: byte ranges that tile a file read each line once."""
    with _open_binary(path) as stream:
        first_line = 1
        if start > 0:
            first_line += _newlines_before(stream, start - 1)
            stream.seek(start - 1)
            first_line += stream.readline().endswith(b"\n")  # that line is the range before's
        position = stream.tell()
        lines = enumerate(stream, start=first_line)
        while True:
            if stop is not None and position >= stop:
                return
            try:
                line_no, raw = next(lines)
            except StopIteration:
                return
            except (OSError, EOFError) as exc:  # a truncated or corrupt .gz
                raise ConfigError(f"{path}: cannot read past row {keyer.index}: {exc}") from None
            position += len(raw)
            if not raw.strip():
                continue
            parsed = _parse_object(raw)
            origin = f"{path.name}:{line_no}"
            if isinstance(parsed, str):
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                yield keyer.malformed(text, origin, parsed)
            else:
                yield keyer.record(parsed, origin)


def _iter_csv(path: Path, keyer: _Keyer) -> Iterator[Record]:
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
    return _Closing(_csv_rows(path, text, reader, header or [], keyer), text)


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
    path: Path,
    text: io.TextIOWrapper,
    reader: Iterator[list[str]],
    header: list[str],
    keyer: _Keyer,
) -> Generator[Record, None, None]:
    with text:
        if not header:
            return
        row_no = 0
        while True:
            row_no += 1
            origin = f"{path.name}:row {row_no}"
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield keyer.malformed(
                    f"<unreadable row at {origin}>", origin, f"malformed CSV ({exc})"
                )
                continue
            except (UnicodeDecodeError, OSError, EOFError) as exc:
                utf8 = isinstance(exc, UnicodeDecodeError)
                hint = "; re-encode the file as UTF-8" if utf8 else ""
                raise ConfigError(f"{path}: cannot read past row {row_no} ({exc}){hint}") from None
            if not row:
                row_no -= 1
                continue  # a blank line
            if len(row) != len(header):
                message = f"has {len(row)} fields, the header has {len(header)}"
                yield keyer.malformed(json.dumps(row, ensure_ascii=False), origin, message)
            else:
                yield keyer.record(dict(zip(header, row, strict=True)), origin)


def _newlines_before(stream: BinaryIO, offset: int) -> int:
    """How many line ends the first ``offset`` bytes of ``stream`` hold (for line numbers)."""
    stream.seek(0)
    count, left = 0, offset
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            break
        count += chunk.count(b"\n")
        left -= len(chunk)
    return count


def _iter_parquet(
    path: Path, keyer: _Keyer, start: int = 0, stop: int | None = None
) -> Iterator[Record]:
    """The rows of ``path``; with ``start``/``stop``, those of row groups ``[start, stop)``."""
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"{path}: not a readable Parquet file ({exc})") from None
    with file:
        groups = range(start, file.num_row_groups if stop is None else stop)
        row_no = sum(file.metadata.row_group(g).num_rows for g in range(start))
        if not groups:
            return
        for batch in file.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups):
            for row in batch.to_pylist():
                row_no += 1
                yield keyer.record(row, f"{path.name}:row {row_no}")


_Reader = Callable[[Path, _Keyer], Iterator[Record]]
_READERS: dict[str, _Reader] = {
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


def _extension(path: Path) -> str | None:
    name = path.name.lower()
    # Longest suffix first, so ".jsonl.gz" wins over a bare ".gz".
    for ext in sorted(_READERS, key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return None


def _reader_for(path: Path) -> _Reader:
    ext = _extension(path)
    if ext is None:
        raise ConfigError(
            f"input file {str(path)!r}: unknown extension; supported: "
            f"{', '.join(SUPPORTED_EXTENSIONS)} (JSON files must hold one object per line)"
        )
    return _READERS[ext]


def _check_not_json_array(path: Path) -> None:
    with _open_binary(path) as stream:
        head = stream.read(4096).lstrip()
    if head.startswith(b"["):
        raise ConfigError(
            f"input file {str(path)!r} holds a JSON array; fanout reads JSON Lines (one "
            "object per line); convert it, e.g. jq -c '.[]' in.json > in.jsonl"
        )


def _check_file(file: Path) -> _Reader:
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
    return reader


def input_files(source: str | Path) -> list[Path]:
    """The files ``source`` names: a file, a folder (its supported files, recursively,
    skipping names that start with ``.`` or ``_``) or a glob pattern; sorted by path.

    Raises :class:`ConfigError` when it names nothing readable.
    """
    text = str(source)
    path = Path(text)
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and _extension(p) is not None
            and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
        )
        if not files:
            raise ConfigError(
                f"input folder {text!r} holds no {', '.join(SUPPORTED_EXTENSIONS)} files"
            )
        return files
    if glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise ConfigError(f"input pattern {text!r} matches no file; check the pattern")
        return files
    return [path]


def iter_records(source: str | Path, *, key: str | None = None) -> Iterator[Record]:
    """Stream the records of ``source`` (a file, folder or glob), each file by its extension.

    ``key``: the column that keys each record; ``None`` keys records by content.
    Raises :class:`ConfigError` now (not while iterating) for a missing file, an
    unknown extension, a JSON array or an unreadable Parquet file, for any file.
    A malformed line or row becomes a :class:`Record` with ``error`` set, and the
    stream goes on.
    """
    if key is not None and not key:
        raise ConfigError("--key needs a column name")
    files = input_files(source)
    readers = [(file, _check_file(file)) for file in files]
    keyer = _Keyer(key)
    if len(readers) == 1:
        file, reader = readers[0]
        return reader(file, keyer)
    return _chain(readers, keyer)


def _chain(readers: list[tuple[Path, _Reader]], keyer: _Keyer) -> Generator[Record, None, None]:
    for file, reader in readers:
        records = reader(file, keyer)
        try:
            yield from records
        finally:
            close: Callable[[], None] | None = getattr(records, "close", None)
            if close is not None:
                close()


def file_columns(file: Path) -> list[str] | None:
    """The columns every record of ``file`` has, when the format says so up front (a
    Parquet schema, a CSV header); ``None`` for JSON Lines, whose records may differ."""
    reader = _check_file(file)
    if reader is _iter_parquet:
        return list(pq.read_schema(file).names)
    if reader is _iter_csv:
        with io.TextIOWrapper(_open_binary(file), encoding="utf-8-sig", newline="") as text:
            try:
                return next(csv.reader(text), [])
            except (csv.Error, UnicodeDecodeError, OSError, EOFError):
                return None  # the reader says what is wrong with it
    return None


def count_records(source: str | Path) -> int | None:
    """How many records ``source`` holds, when that is cheap to know: Parquet metadata and
    newline counts of uncompressed text files. ``None`` when any file is compressed."""
    total = 0
    for file in input_files(source):
        ext = _extension(file)
        if ext is None or ext.endswith(".gz"):
            return None
        if _READERS[ext] is _iter_parquet:
            total += pq.read_metadata(file).num_rows
            continue
        lines, last = 0, b"\n"
        with file.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        lines += last != b"\n"  # a last line without a newline
        total += lines - (1 if _READERS[ext] is _iter_csv else 0)  # the CSV header
    return total


@dataclass(frozen=True, slots=True)
class Shard:
    """A piece of a job's input that one worker reads on its own.

    A whole file; a byte range ``[start, stop)`` of an uncompressed JSON Lines file
    (the lines whose first byte lies in it); or row groups ``[start, stop)`` of a
    Parquet file. ``stop=None``: to the end. ``index`` numbers the job's shards.
    """

    index: int
    path: str
    start: int = 0
    stop: int | None = None

    @property
    def tag(self) -> str:
        """A name for what this shard writes (its results parts)."""
        return f"s{self.index:05d}"


def plan_shards(source: str | Path, *, pieces: int, min_bytes: int = 1 << 20) -> list[Shard]:
    """Cut ``source`` into about ``pieces`` shards (more when it has more files).

    Uncompressed JSON Lines files split into byte ranges of at least ``min_bytes``
    and Parquet files into runs of row groups, in proportion to their size; gzipped
    and CSV files are one shard each (neither can be entered mid-way safely).
    Raises :class:`ConfigError` as :func:`iter_records` does.
    """
    if pieces < 1:
        raise ConfigError(f"pieces must be at least 1 (got {pieces})")
    files = [file.resolve() for file in input_files(source)]  # workers have another cwd
    readers = [(file, _check_file(file)) for file in files]
    sizes = [file.stat().st_size for file in files]
    per_piece = max(min_bytes, -(-sum(sizes) // pieces))
    shards: list[Shard] = []
    for (file, reader), size in zip(readers, sizes, strict=True):
        count = -(-size // per_piece)  # pieces of this file, rounded up
        if reader is _iter_parquet:
            units = pq.read_metadata(file).num_row_groups  # row groups
            count = min(count, units)
        else:
            units = size  # bytes
            splittable = reader is _iter_jsonl and not file.name.lower().endswith(".gz")
            count = count if splittable else 1
        if count > 1:
            bounds = [units * i // count for i in range(count + 1)]
            for start, stop in itertools.pairwise(bounds):
                shards.append(Shard(len(shards), str(file), start, stop))
        else:
            shards.append(Shard(len(shards), str(file)))
    return shards


def iter_shard(shard: Shard, *, key: str | None = None) -> Iterator[Record]:
    """Stream the records of one shard (see :func:`iter_records`)."""
    path = Path(shard.path)
    reader = _check_file(path)
    keyer = _Keyer(key)
    if reader is _iter_jsonl or reader is _iter_parquet:
        return reader(path, keyer, shard.start, shard.stop)
    return reader(path, keyer)
