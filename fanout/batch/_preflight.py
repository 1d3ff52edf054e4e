"""Structural input problems stop a job before it spends anything, with one clear message.

A bad record is data (an error row, a dead letter, the job goes on), but a whole input
that cannot work is not: a Parquet or CSV file without a column the DAG needs (or the
``--key`` column) is refused from its schema, and when every one of the first records
fails the same input check (a binary file read as JSON Lines, a field named otherwise,
``--key`` naming a column no record has), the job stops before its first call.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

from fanout.batch._readers import Record, file_columns, input_files
from fanout.errors import ConfigError

__all__ = ["SAMPLE_RECORDS", "check_columns", "check_first_records", "record_problem"]

SAMPLE_RECORDS = 20
"""How many first records must all fail the same way for the input to be refused."""

_DETAIL = re.compile(r"\s*\(.*\)$")  # "not valid JSON (Expecting value)" -> the kind


def check_columns(source: str | Path, inputs: tuple[str, ...], key: str | None) -> None:
    """Refuse a Parquet or CSV file that lacks a column the DAG's inputs or ``--key`` need."""
    for file in input_files(source):
        columns = file_columns(file)
        if columns is None:
            continue
        missing = [name for name in inputs if name not in columns]
        if missing:
            names = ", ".join(repr(name) for name in missing)
            raise ConfigError(
                f"input file {str(file)!r} has no column {names}, which the DAG's inputs "
                f"{list(inputs)} need (its columns: {', '.join(columns) or 'none'}); rename "
                "the column, or the DAG's input"
            )
        if key is not None and key not in columns:
            raise ConfigError(
                f"--key {key}: input file {str(file)!r} has no column {key!r} (its columns: "
                f"{', '.join(columns) or 'none'}); pick one of them, or drop --key to key "
                "records by their content"
            )


def record_problem(record: Record, inputs: tuple[str, ...]) -> str | None:
    """What keeps this record from running, as a kind shared by records with the same
    problem (``None``: it can run)."""
    if record.data is None:
        text = record.error or "unreadable record"
        if record.origin and text.startswith(f"{record.origin}: "):
            text = text[len(record.origin) + 2 :]
        return _DETAIL.sub("", text.split(";")[0])
    missing = [name for name in inputs if name not in record.data]
    return f"missing input {', '.join(repr(n) for n in missing)}" if missing else None


def check_first_records(
    records: Iterator[Record],
    inputs: tuple[str, ...],
    source: str | Path,
    key: str | None,
    sample: int = SAMPLE_RECORDS,
) -> Iterator[Record]:
    """``records`` as they were, after refusing an input whose first ``sample`` records
    (or all of them, if fewer) every one fail the same way: a :class:`ConfigError` naming
    the problem, the first such record and the fix."""
    first = list(itertools.islice(records, sample))
    problems = {record_problem(record, inputs) for record in first}
    if first and len(problems) == 1 and None not in problems:
        (problem,) = problems
        assert problem is not None
        example = first[0].error or _missing(first[0], inputs)
        count = f"all {len(first)} records" if len(first) < sample else f"the first {sample}"
        raise ConfigError(
            f"input {str(source)!r}: {count} fail the same way, so the job stopped before "
            f"any call: {example}; {_fix(problem, inputs, key)}"
        )
    return itertools.chain(first, records)


def _missing(record: Record, inputs: tuple[str, ...]) -> str:
    data = record.data or {}
    missing = ", ".join(repr(name) for name in inputs if name not in data)
    return f"{record.origin}: no field {missing} (its fields: {', '.join(sorted(data)) or 'none'})"


def _fix(problem: str, inputs: tuple[str, ...], key: str | None) -> str:
    if problem.startswith("missing input"):
        return (
            f"each record needs the DAG's inputs {list(inputs)} as fields; rename the "
            "fields, or the DAG's inputs"
        )
    if "key column" in problem:
        return f"--key {key} names a column the records lack; pick one they have, or drop --key"
    if "UTF-8" in problem or "JSON" in problem:
        return (
            "is it JSON Lines (one JSON object per line, UTF-8)? Convert it, or give the "
            "file the extension of its format (.csv, .parquet)"
        )
    return "fix the input file, or point --input at the right one"
