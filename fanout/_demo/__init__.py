"""The bundled demo: the ``triage`` pipeline and ~40 sample customer reviews (``fanout demo``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

__all__ = ["BAD_RECORD", "SAMPLE_FILE", "iter_sample", "write_sample"]

SAMPLE_FILE = "sample.jsonl"
BAD_RECORD = "r-missing-text"
"""The sample record that lacks its ``text`` on purpose: it shows an error row."""


def iter_sample(records: int | None = None) -> Iterator[dict[str, object]]:
    """The bundled sample records; with ``records``, cycled to that many (ids get ``~2``, ...)."""
    text = resources.files(__name__).joinpath(SAMPLE_FILE).read_text(encoding="utf-8")
    rows: list[dict[str, object]] = [json.loads(line) for line in text.splitlines() if line.strip()]
    total = len(rows) if records is None else records
    for n in range(total):
        row = dict(rows[n % len(rows)])
        repeat = n // len(rows)
        if repeat:
            row["id"] = f"{row['id']}~{repeat + 1}"
        yield row


def write_sample(path: str | Path, records: int | None = None) -> Path:
    """Write the sample (see :func:`iter_sample`) as JSON Lines to ``path``."""
    target = Path(path)
    with target.open("w", encoding="utf-8") as out:
        for row in iter_sample(records):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return target
