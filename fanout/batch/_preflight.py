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
from fanout.dag import Plan, check_input_types
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


def record_problem(record: Record, plan: Plan) -> tuple[str, str] | None:
    """What keeps this record from running: a kind shared by records with the same
    problem, and this record's message (``None``: it can run)."""
    if record.data is None:
        text = record.error or "unreadable record"
        if record.origin and text.startswith(f"{record.origin}: "):
            text = text[len(record.origin) + 2 :]
        return _DETAIL.sub("", text.split(";")[0]), record.error or text
    missing = [name for name in plan.inputs if name not in record.data]
    if missing:
        data = record.data
        names = ", ".join(repr(n) for n in missing)
        fields = ", ".join(sorted(data)) or "none"
        return f"missing input {names}", f"{record.origin}: no field {names} (its fields: {fields})"
    try:
        check_input_types(plan, record.data)
    except ConfigError as exc:
        return str(exc).split(" (")[0], f"{record.origin}: {exc}"
    return None


def check_first_records(
    records: Iterator[Record],
    plan: Plan,
    source: str | Path,
    key: str | None,
    sample: int = SAMPLE_RECORDS,
) -> Iterator[Record]:
    """``records`` as they were, after refusing an input whose first ``sample`` records
    (or all of them, if fewer) every one fail the same way: a :class:`ConfigError` naming
    the problem, the first such record and the fix."""
    first = list(itertools.islice(records, sample))
    problems = [record_problem(record, plan) for record in first]
    kinds = {problem[0] if problem is not None else None for problem in problems}
    if first and len(kinds) == 1 and None not in kinds:
        kind, example = problems[0]  # type: ignore[misc]  # every one is a problem here
        count = f"all {len(first)} records" if len(first) < sample else f"the first {sample}"
        raise ConfigError(
            f"input {str(source)!r}: {count} fail the same way, so the job stopped before "
            f"any call: {example}; {_fix(kind, plan.inputs, key)}"
        )
    return _again(first, records)


def _again(first: list[Record], records: Iterator[Record]) -> Iterator[Record]:
    """The peeked records, then the rest; closing it closes the reader (its file)."""
    try:
        yield from first
        yield from records
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()


def _fix(problem: str, inputs: tuple[str, ...], key: str | None) -> str:
    if "must be" in problem:
        return "give each record a value of the input's declared type (dag.input(name, type=...))"
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
