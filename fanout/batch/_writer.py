"""``ResultWriter``: a row per record into ``results.parquet``, in row groups, moved into place."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from fanout.errors import ConfigError
from fanout.run import RunResult

__all__ = ["RESULTS_FILE", "ResultWriter", "result_schema"]

RESULTS_FILE = "results.parquet"


def result_schema(outputs: Sequence[str]) -> pa.Schema:
    """The results table: key, status, ``output_<name>`` (JSON text) per output, usage, errors."""
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("status", pa.string(), nullable=False),
            *(pa.field(f"output_{name}", pa.string()) for name in outputs),
            pa.field("error_type", pa.string()),
            pa.field("error_message", pa.string()),
            pa.field("input_tokens", pa.int64(), nullable=False),
            pa.field("output_tokens", pa.int64(), nullable=False),
            pa.field("cost_usd", pa.float64(), nullable=False),
            pa.field("wall_time_s", pa.float64(), nullable=False),
            pa.field("trace_id", pa.string()),  # joins the record to its trace rows
        ]
    )


class ResultWriter:
    """Writes ``output_dir/results.parquet`` (zstd), a row group every ``row_group_rows`` rows.

    Rows go to a temporary file that :meth:`close` renames to ``results.parquet``,
    so a crash never leaves a half-written file under the final name. Each output
    column holds the JSON text of that output (``null`` when it is unavailable).
    """

    def __init__(
        self,
        output_dir: str | Path,
        outputs: Sequence[str],
        *,
        row_group_rows: int = 10_000,
    ) -> None:
        if row_group_rows <= 0:
            raise ConfigError(f"row_group_rows must be positive (got {row_group_rows})")
        directory = Path(output_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise ConfigError(
                f"output {str(directory)!r} exists and is not a directory; pick a directory"
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"cannot create output directory {str(directory)!r}: {exc.strerror}"
            ) from None
        self.outputs = tuple(outputs)
        self.path = directory / RESULTS_FILE
        self.rows_written = 0
        self._tmp_path = directory / f".{RESULTS_FILE}.partial"
        self._row_group_rows = row_group_rows
        self._schema = result_schema(self.outputs)
        self._columns: dict[str, list[object]] = {name: [] for name in self._schema.names}
        try:
            self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
                self._tmp_path, self._schema, compression="zstd"
            )
        except OSError as exc:
            raise ConfigError(f"cannot write to {str(directory)!r}: {exc}") from None

    @property
    def closed(self) -> bool:
        return self._writer is None

    def write_result(self, key: str, result: RunResult) -> None:
        """One row for a finished run (whatever its status)."""
        outputs = result.to_dict()["outputs"]
        assert isinstance(outputs, dict)
        self._append(
            key=key,
            status=str(result.status),
            outputs={name: outputs.get(name) for name in self.outputs},
            error_type=result.error_type,
            error_message=result.error_message,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            cost_usd=result.cost_usd,
            wall_time_s=result.wall_time_s,
            trace_id=result.trace_id,
        )

    def write_error(
        self,
        key: str,
        error_type: str,
        error_message: str,
        *,
        status: str = "error",
        wall_time_s: float = 0.0,
    ) -> None:
        """One row for a record that did not run (malformed, missing an input, ...)."""
        self._append(
            key=key,
            status=status,
            outputs={},
            error_type=error_type,
            error_message=error_message,
            input_tokens=0,
            output_tokens=0,
            cost_usd=0.0,
            wall_time_s=wall_time_s,
            trace_id=None,
        )

    def flush(self) -> None:
        """Write the buffered rows as one row group."""
        if self._writer is None:
            raise RuntimeError("ResultWriter is closed")
        if not self._columns["key"]:
            return
        table = pa.Table.from_pydict(self._columns, schema=self._schema)
        self._writer.write_table(table, row_group_size=len(table))
        for column in self._columns.values():
            column.clear()

    def abort(self) -> None:
        """Close without publishing: the partial file is removed. Idempotent."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        writer.close()
        self._tmp_path.unlink(missing_ok=True)

    def close(self) -> None:
        """Flush, finish the file and move it to ``results.parquet``. Idempotent."""
        if self._writer is None:
            return
        try:
            self.flush()
        finally:
            writer, self._writer = self._writer, None
            writer.close()
        os.replace(self._tmp_path, self.path)

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _append(
        self,
        *,
        key: str,
        status: str,
        outputs: dict[str, object],
        error_type: str | None,
        error_message: str | None,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
        wall_time_s: float,
        trace_id: str | None,
    ) -> None:
        if self._writer is None:
            raise RuntimeError("ResultWriter is closed")
        columns = self._columns
        columns["key"].append(key)
        columns["status"].append(status)
        for name in self.outputs:
            value = outputs.get(name)
            columns[f"output_{name}"].append(
                None if value is None else json.dumps(value, ensure_ascii=False, default=str)
            )
        columns["error_type"].append(error_type)
        columns["error_message"].append(error_message)
        columns["input_tokens"].append(input_tokens)
        columns["output_tokens"].append(output_tokens)
        columns["cost_usd"].append(cost_usd)
        columns["wall_time_s"].append(wall_time_s)
        columns["trace_id"].append(trace_id)
        self.rows_written += 1
        if len(columns["key"]) >= self._row_group_rows:
            self.flush()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"ResultWriter({str(self.path)!r}, rows={self.rows_written}, {state})"
