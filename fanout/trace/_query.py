"""Reading a traces directory with DuckDB: the ``spans`` view, summaries, one request's tree.

Every figure is one SQL query over all rows (Parquet parts plus the rows of open or
orphaned log segments), so a summary of millions of spans never loops in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

from fanout.errors import ConfigError
from fanout.trace._files import WAL_DIR, read_segment, trace_files
from fanout.trace._span import SPAN_SCHEMA

__all__ = [
    "CallStats",
    "JobSummary",
    "ModelSummary",
    "NodeSummary",
    "TraceSummary",
    "TreeRow",
    "connect",
    "sql_literal",
    "summarize",
    "trace_tree",
]

MIN_PREFIX = 6
_HEX = frozenset("0123456789abcdef")
_SUGGEST = 5  # trace ids listed when one is unknown or ambiguous

# An LLM call: tool attempts have a tool_name and are not named "chat ..."; an LLM
# attempt that asked for tools carries their names in tool_name too.
LLM_CALL = "(tool_name IS NULL OR span_name LIKE 'chat%')"


# -- opening a directory -----------------------------------------------------------


def connect(directory: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a ``spans`` view over every row of ``directory``.

    The view is the Parquet parts (by explicit file list: ``job_id`` is both a
    partition folder and a column) plus the complete batches of the ``_wal`` log
    segments, so a running or crashed job reads as far as it got. A segment's rows
    already in its converted part (a writer stopped between converting and deleting
    it) are counted once.
    """
    root = Path(directory)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise ConfigError(
            f"traces directory {str(root)!r} {what}: pass the --traces directory of a "
            "`fanout run` (by default OUTPUT/traces)"
        )
    files = trace_files(root)
    if not files:
        raise ConfigError(
            f"no trace files in {str(root)!r} (expected date=*/job=*/part-*.parquet or "
            f"{WAL_DIR}/*.arrows): pass the --traces directory of a `fanout run` "
            "(by default OUTPUT/traces)"
        )
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")  # it would write into stdout exports
        # Every column of the schema, typed, even if all parts come from an older writer.
        con.register("_schema", SPAN_SCHEMA.empty_table())
        sources = ["SELECT * FROM _schema"]
        if files.parts:
            sources.append(f"SELECT * FROM {_read_parquet(files.parts)}")
        if files.segments:
            _register_segments(con, files.parts, files.segments)
            sources.append("SELECT * FROM _wal_rows")
        con.execute(f"CREATE VIEW spans AS {' UNION ALL BY NAME '.join(sources)}")
    except duckdb.Error as exc:
        con.close()
        raise ConfigError(f"cannot read the traces in {str(root)!r}: {exc}") from None
    return con


def _read_parquet(parts: list[Path]) -> str:
    files = ", ".join(sql_literal(str(p)) for p in parts)
    return f"read_parquet([{files}], union_by_name = true, hive_partitioning = false)"


def sql_literal(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _register_segments(
    con: duckdb.DuckDBPyConnection, parts: list[Path], segments: list[Path]
) -> None:
    rows: pa.Table = pa.concat_tables([read_segment(s) for s in segments])
    con.register("_wal_raw", rows)
    # A part is named after the segment it came from; where both exist, the part
    # wins (anti-join on the span's identity, over those few parts only).
    stems = {s.stem for s in segments}
    converted = [p for p in parts if p.stem.removeprefix("part-") in stems]
    if converted:
        con.execute(
            "CREATE TEMP TABLE _wal_rows AS SELECT w.* FROM _wal_raw w "
            f"ANTI JOIN {_read_parquet(converted)} p "
            "ON w.trace_id = p.trace_id AND w.span_id = p.span_id"
        )
    else:
        con.execute("CREATE VIEW _wal_rows AS SELECT * FROM _wal_raw")


# -- summary -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallStats:
    """Attempts (provider or tool calls) of one model or node.

    ``errors`` counts attempts that did not end ``ok`` (error or cancelled), by
    ``error_type``; ``rate_limited`` those answered HTTP 429; ``retries`` attempts
    after the first of a call. Durations are percentiles of ``duration_ms``: the call on
    the wire (a provider's latency), never the waits before it, which are
    ``limiter_wait_ms`` (for rate-limit capacity), ``backoff_ms`` (between retries) and
    the percentiles of an attempt's whole wait (``wait_p50_ms``, ``wait_p95_ms``).
    ``replayed``: rows answered from a batch job's call journal, not calls; their tokens
    and cost (spent by the earlier run that made the call) count only where that run's
    row is missing (a kill lost it), so the sums are what the job spent, once.
    """

    calls: int
    errors: int
    errors_by_type: dict[str, int]
    rate_limited: int
    retries: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    limiter_wait_ms: float
    mean_limiter_wait_ms: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    replayed: int = 0
    backoff_ms: float = 0.0
    wait_p50_ms: float | None = None
    wait_p95_ms: float | None = None


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """One model's calls of one ``mode``: ``online``, ``batch`` (through the provider's
    Batch API), ``cache`` (answered by the response cache) or ``replayed`` (the journal)."""

    model_alias: str | None
    provider: str | None
    request_model: str | None
    stats: CallStats
    mode: str = "online"


@dataclass(frozen=True, slots=True)
class NodeSummary:
    dag_name: str
    node_id: str | None
    stats: CallStats


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One job: its finished runs by status, and ``unfinished`` traces with no run row yet."""

    job_id: str
    spans: int
    runs: int
    runs_by_status: dict[str, int]
    unfinished: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    first_start: datetime | None
    last_end: datetime | None

    @property
    def wall_s(self) -> float | None:
        if self.first_start is None or self.last_end is None:
            return None
        return (self.last_end - self.first_start).total_seconds()


@dataclass(frozen=True, slots=True)
class TraceSummary:
    directory: Path
    parts: int
    segments: int
    spans: int
    models: tuple[ModelSummary, ...]
    nodes: tuple[NodeSummary, ...]
    jobs: tuple[JobSummary, ...]


# An attempt's wait before its call went out: rate-limit capacity, retry back-off, a
# hedge's delay (none of it in duration_ms, which is the call on the wire)
WAIT_MS = "(coalesce(limiter_wait_ms, 0) + coalesce(backoff_ms, 0) + coalesce(hedge_delay_ms, 0))"

# A row whose tokens and cost count: a call made, or a replay of a call whose own row
# is not in the directory (the run that made it was killed before writing it).
_PAID = """(NOT coalesce(replayed, false) OR call_key NOT IN (
    SELECT call_key FROM spans WHERE call_key IS NOT NULL AND NOT coalesce(replayed, false)))"""

_CALL_STATS = f"""
    count(*) FILTER (WHERE NOT coalesce(replayed, false)) AS calls,
    count(*) FILTER (WHERE status NOT IN ('ok', 'skipped')) AS errors,
    histogram(coalesce(error_type, status)) FILTER (WHERE status NOT IN ('ok', 'skipped'))
        AS errors_by_type,
    count(*) FILTER (WHERE http_status = 429) AS rate_limited,
    count(*) FILTER (WHERE attempt > 1) AS retries,
    quantile_cont(duration_ms, [0.5, 0.95, 0.99]) AS duration_q,
    coalesce(sum(limiter_wait_ms), 0) AS limiter_wait_ms,
    avg(limiter_wait_ms) AS mean_limiter_wait_ms,
    coalesce(sum(input_tokens) FILTER (WHERE {_PAID}), 0) AS input_tokens,
    coalesce(sum(output_tokens) FILTER (WHERE {_PAID}), 0) AS output_tokens,
    coalesce(sum(cost_usd) FILTER (WHERE {_PAID}), 0) AS cost_usd,
    count(*) FILTER (WHERE replayed) AS replayed,
    coalesce(sum(backoff_ms), 0) AS backoff_ms,
    quantile_cont({WAIT_MS}, [0.5, 0.95]) AS wait_q
"""

CALL_MODE = """CASE WHEN cache_hit THEN 'cache' WHEN replayed THEN 'replayed'
    WHEN batch_id IS NOT NULL THEN 'batch' ELSE 'online' END"""

_MODELS_SQL = f"""
SELECT model_alias, provider, request_model, {CALL_MODE} AS mode, {_CALL_STATS}
FROM spans WHERE record_type = 'attempt' AND {LLM_CALL}
GROUP BY ALL
ORDER BY calls DESC, model_alias NULLS LAST, provider NULLS LAST, request_model NULLS LAST, mode
"""

_NODES_SQL = f"""
SELECT dag_name, node_id, {_CALL_STATS}
FROM spans WHERE record_type = 'attempt'
GROUP BY ALL
ORDER BY dag_name, min(start_time) NULLS LAST, node_id NULLS LAST
"""

_JOBS_SQL = f"""
SELECT
    job_id,
    count(*) AS spans,
    count(*) FILTER (WHERE record_type = 'run') AS runs,
    histogram(status) FILTER (WHERE record_type = 'run') AS runs_by_status,
    count(DISTINCT trace_id) AS traces,
    coalesce(sum(input_tokens) FILTER (WHERE record_type = 'attempt' AND {_PAID}), 0)
        AS input_tokens,
    coalesce(sum(output_tokens) FILTER (WHERE record_type = 'attempt' AND {_PAID}), 0)
        AS output_tokens,
    coalesce(sum(cost_usd) FILTER (WHERE record_type = 'attempt' AND {_PAID}), 0) AS cost_usd,
    epoch_us(min(start_time)) AS first_start_us,
    epoch_us(max(end_time)) AS last_end_us
FROM spans
GROUP BY job_id
ORDER BY min(start_time) NULLS LAST, job_id
"""


def summarize(directory: str | Path) -> TraceSummary:
    """Per model, per node and per job figures over every span of ``directory``."""
    root = Path(directory)
    con = connect(root)
    try:
        models = tuple(
            ModelSummary(
                _opt_str(row[0]),
                _opt_str(row[1]),
                _opt_str(row[2]),
                _call_stats(row[4:]),
                mode=str(row[3]),
            )
            for row in _fetch(con, _MODELS_SQL, root)
        )
        nodes = tuple(
            NodeSummary(str(row[0]), _opt_str(row[1]), _call_stats(row[2:]))
            for row in _fetch(con, _NODES_SQL, root)
        )
        jobs = tuple(_job(row) for row in _fetch(con, _JOBS_SQL, root))
    finally:
        con.close()
    files = trace_files(root)
    return TraceSummary(
        directory=root,
        parts=len(files.parts),
        segments=len(files.segments),
        spans=sum(job.spans for job in jobs),
        models=models,
        nodes=nodes,
        jobs=jobs,
    )


def _fetch(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    root: Path,
    params: list[object] | dict[str, object] | None = None,
) -> list[tuple[object, ...]]:
    try:
        return con.execute(sql, params).fetchall()
    except duckdb.Error as exc:  # a part that is not Parquet, or a column of the wrong type
        raise ConfigError(f"cannot read the traces in {str(root)!r}: {exc}") from None


def _call_stats(row: tuple[object, ...]) -> CallStats:
    calls, errors, by_type, limited, retries, q, wait, mean_wait, tin, tout, cost, again = row[:12]
    backoff, wait_q = row[12:14]
    p50, p95, p99 = q if isinstance(q, list) else (None, None, None)
    w50, w95 = wait_q if isinstance(wait_q, list) else (None, None)
    return CallStats(
        calls=_int(calls),
        errors=_int(errors),
        errors_by_type=_counts(by_type),
        rate_limited=_int(limited),
        retries=_int(retries),
        p50_ms=_opt_float(p50),
        p95_ms=_opt_float(p95),
        p99_ms=_opt_float(p99),
        limiter_wait_ms=_float(wait),
        mean_limiter_wait_ms=_opt_float(mean_wait),
        input_tokens=_int(tin),
        output_tokens=_int(tout),
        cost_usd=_float(cost),
        replayed=_int(again),
        backoff_ms=_float(backoff),
        wait_p50_ms=_opt_float(w50),
        wait_p95_ms=_opt_float(w95),
    )


def _job(row: tuple[object, ...]) -> JobSummary:
    job_id, spans, runs, by_status, traces, tin, tout, cost, first_us, last_us = row
    return JobSummary(
        job_id=str(job_id),
        spans=_int(spans),
        runs=_int(runs),
        runs_by_status=_counts(by_status),
        unfinished=max(0, _int(traces) - _int(runs)),
        input_tokens=_int(tin),
        output_tokens=_int(tout),
        cost_usd=_float(cost),
        first_start=_datetime(first_us),
        last_end=_datetime(last_us),
    )


# -- one request ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TreeRow:
    """One span of a request, in tree order: ``depth`` 0 for the run, 1 nodes, 2 attempts.

    ``offset_ms`` is from the start of the run (the earliest span if the run row is
    not written yet: an unfinished request).
    """

    depth: int
    trace_id: str
    span_id: str
    parent_span_id: str | None
    record_type: str
    span_name: str
    job_id: str
    dag_name: str
    node_id: str | None
    map_index: int | None
    record_key: str | None
    attempt: int | None
    fallback_index: int | None
    model_alias: str | None
    provider: str | None
    request_model: str | None
    tool_name: str | None
    start_time: datetime | None
    offset_ms: float | None
    duration_ms: float | None
    limiter_wait_ms: float | None
    backoff_ms: float | None
    status: str
    error_type: str | None
    error_message: str | None
    http_status: int | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None

    @property
    def is_llm_call(self) -> bool:
        return self.record_type == "attempt" and (
            self.tool_name is None or self.span_name.startswith("chat")
        )


_TREE_KEYS = (
    *("trace_id", "span_id", "parent_span_id", "record_type", "span_name", "job_id"),
    *("dag_name", "node_id", "map_index", "record_key", "attempt", "fallback_index"),
    *("model_alias", "provider", "request_model", "tool_name", "start_us", "duration_ms"),
    *("limiter_wait_ms", "backoff_ms", "status", "error_type", "error_message"),
    *("http_status", "input_tokens", "output_tokens", "cost_usd", "seq_no"),
)
_TREE_COLUMNS = ", ".join(
    "epoch_us(start_time) AS start_us" if key == "start_us" else key for key in _TREE_KEYS
)
_RECORD_ORDER = {"run": 0, "node": 1, "attempt": 2}


def trace_tree(directory: str | Path, trace_id: str) -> list[TreeRow]:
    """The spans of one request as a depth-first tree, children by start time.

    ``trace_id`` may be a unique prefix of at least 6 hex characters. Spans whose
    parent is missing (a request still running when its job stopped) become roots.
    """
    root = Path(directory)
    wanted = trace_id.strip().lower()
    if len(wanted) < MIN_PREFIX or not set(wanted) <= _HEX:
        raise ConfigError(
            f"trace id {trace_id!r} is not a trace id: give at least {MIN_PREFIX} hex "
            f"characters of one (`fanout traces list {root}` lists them)"
        )
    con = connect(root)
    try:
        found = [
            str(r[0])
            for r in _fetch(
                con,
                "SELECT DISTINCT trace_id FROM spans WHERE starts_with(lower(trace_id), ?) "
                f"ORDER BY trace_id LIMIT {_SUGGEST + 1}",
                root,
                [wanted],
            )
        ]
        if len(found) != 1:
            raise _unknown_trace(con, root, trace_id, found)
        rows = _fetch(
            con,
            f"SELECT {_TREE_COLUMNS} FROM spans WHERE trace_id = ?",
            root,
            [found[0]],
        )
    finally:
        con.close()
    return _as_tree(rows)


def _unknown_trace(
    con: duckdb.DuckDBPyConnection, root: Path, given: str, matches: list[str]
) -> ConfigError:
    if matches:
        more = ", ..." if len(matches) > _SUGGEST else ""
        return ConfigError(
            f"trace id {given!r} is ambiguous in {str(root)!r}: it matches "
            f"{', '.join(matches[:_SUGGEST])}{more}; give more characters"
        )
    recent = _fetch(
        con,
        "SELECT trace_id FROM spans WHERE record_type = 'run' "
        f"ORDER BY start_time DESC NULLS LAST, trace_id LIMIT {_SUGGEST}",
        root,
    )
    some = ", ".join(str(r[0]) for r in recent) or "(no finished runs yet)"
    return ConfigError(
        f"no trace {given!r} in {str(root)!r}; some trace ids there: {some} "
        f"(`fanout traces list {root}` lists them, newest first; "
        f"`fanout traces summary {root}` summarizes the directory)"
    )


def _as_tree(rows: list[tuple[object, ...]]) -> list[TreeRow]:
    spans = [dict(zip(_TREE_KEYS, row, strict=True)) for row in rows]
    ids = {s["span_id"] for s in spans}
    children: dict[object, list[dict[str, object]]] = {}
    for span in spans:
        parent = span["parent_span_id"] if span["parent_span_id"] in ids else None
        children.setdefault(parent, []).append(span)
    for group in children.values():
        group.sort(key=_sibling_order)
    run_start = [s["start_us"] for s in spans if s["record_type"] == "run"]
    starts = [s["start_us"] for s in spans if s["start_us"] is not None]
    t0 = _opt_int(run_start[0]) if run_start and run_start[0] is not None else None
    if t0 is None and starts:
        t0 = min(_int(s) for s in starts)

    out: list[TreeRow] = []
    seen: set[object] = set()

    def visit(span: dict[str, object], depth: int) -> None:
        if span["span_id"] in seen:  # a parent cycle in damaged data: show each span once
            return
        seen.add(span["span_id"])
        out.append(_tree_row(span, depth, t0))
        for child in children.get(span["span_id"], ()):
            visit(child, depth + 1)

    for top in children.get(None, ()):
        visit(top, 0)
    for span in sorted(spans, key=_sibling_order):  # spans only reachable through a cycle
        if span["span_id"] not in seen:
            visit(span, 0)
    return out


def _sibling_order(span: dict[str, object]) -> tuple[int, int, int, int]:
    start = span["start_us"]
    return (
        0 if start is not None else 1,
        _int(start) if start is not None else 0,
        _RECORD_ORDER.get(str(span["record_type"]), 3),
        _int(span["seq_no"]),
    )


def _tree_row(span: dict[str, object], depth: int, t0: int | None) -> TreeRow:
    start_us = _opt_int(span["start_us"])
    return TreeRow(
        depth=depth,
        trace_id=str(span["trace_id"]),
        span_id=str(span["span_id"]),
        parent_span_id=_opt_str(span["parent_span_id"]),
        record_type=str(span["record_type"]),
        span_name=str(span["span_name"]),
        job_id=str(span["job_id"]),
        dag_name=str(span["dag_name"]),
        node_id=_opt_str(span["node_id"]),
        map_index=_opt_int(span["map_index"]),
        record_key=_opt_str(span["record_key"]),
        attempt=_opt_int(span["attempt"]),
        fallback_index=_opt_int(span["fallback_index"]),
        model_alias=_opt_str(span["model_alias"]),
        provider=_opt_str(span["provider"]),
        request_model=_opt_str(span["request_model"]),
        tool_name=_opt_str(span["tool_name"]),
        start_time=_datetime(start_us),
        offset_ms=(start_us - t0) / 1000 if start_us is not None and t0 is not None else None,
        duration_ms=_opt_float(span["duration_ms"]),
        limiter_wait_ms=_opt_float(span["limiter_wait_ms"]),
        backoff_ms=_opt_float(span["backoff_ms"]),
        status=str(span["status"]),
        error_type=_opt_str(span["error_type"]),
        error_message=_opt_str(span["error_message"]),
        http_status=_opt_int(span["http_status"]),
        input_tokens=_opt_int(span["input_tokens"]),
        output_tokens=_opt_int(span["output_tokens"]),
        cost_usd=_opt_float(span["cost_usd"]),
    )


# -- values from DuckDB rows (typed object -> the field's type) ------------------------


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _opt_int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def _opt_float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _counts(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    pairs = [(str(k), _int(v)) for k, v in value.items()]
    return dict(sorted(pairs, key=lambda kv: (-kv[1], kv[0])))


def _datetime(epoch_us: object) -> datetime | None:
    if not isinstance(epoch_us, int):
        return None
    return _EPOCH + timedelta(microseconds=epoch_us)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
