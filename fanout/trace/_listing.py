"""``list_traces``: the requests of a traces directory, newest first, one line each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fanout.trace._query import (
    LLM_CALL,
    _datetime,
    _fetch,
    _float,
    _int,
    _opt_float,
    _opt_str,
    connect,
)

__all__ = ["TraceListing", "TraceRow", "list_traces"]


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One request: its trace id, where it came from, how it ended, what it cost.

    ``status`` is the run row's (``ok``, ``error``, ...), or ``unfinished`` while a
    request has no run row (still running, or its process died).
    """

    trace_id: str
    job_id: str
    dag_name: str
    record_key: str | None
    status: str
    started: datetime | None
    duration_ms: float | None
    calls: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class TraceListing:
    """The rows asked for, and how many requests matched in all."""

    rows: tuple[TraceRow, ...]
    matched: int


_LIST_SQL = f"""
WITH traces AS (
    SELECT trace_id,
           any_value(job_id) AS job_id,
           any_value(dag_name) AS dag_name,
           any_value(record_key) FILTER (WHERE record_key IS NOT NULL) AS record_key,
           coalesce(any_value(status) FILTER (WHERE record_type = 'run'), 'unfinished')
               AS status,
           epoch_us(min(start_time)) AS started_us,
           max(duration_ms) FILTER (WHERE record_type = 'run') AS duration_ms,
           count(*) FILTER (WHERE record_type = 'attempt' AND {LLM_CALL}) AS calls,
           coalesce(sum(cost_usd) FILTER (WHERE record_type = 'attempt'), 0) AS cost_usd
    FROM spans
    GROUP BY trace_id
)
SELECT *, count(*) OVER () AS matched FROM traces
WHERE ($status IS NULL OR status = $status)
  AND ($job IS NULL OR job_id = $job)
  AND ($key IS NULL OR record_key = $key)
ORDER BY started_us DESC NULLS LAST, trace_id
LIMIT $limit
"""


def list_traces(
    directory: str | Path,
    *,
    limit: int = 20,
    status: str | None = None,
    job: str | None = None,
    key: str | None = None,
) -> TraceListing:
    """The newest ``limit`` requests of ``directory`` (a run, or a record of a batch job),
    optionally only those with ``status``, of ``job`` or for the record ``key``."""
    root = Path(directory)
    con = connect(root)
    try:
        params: dict[str, object] = {"status": status, "job": job, "key": key, "limit": limit}
        rows = _fetch(con, _LIST_SQL, root, params)
    finally:
        con.close()
    listed = tuple(
        TraceRow(
            trace_id=str(r[0]),
            job_id=str(r[1]),
            dag_name=str(r[2]),
            record_key=_opt_str(r[3]),
            status=str(r[4]),
            started=_datetime(r[5]),
            duration_ms=_opt_float(r[6]),
            calls=_int(r[7]),
            cost_usd=_float(r[8]),
        )
        for r in rows
    )
    return TraceListing(listed, _int(rows[0][9]) if rows else 0)
