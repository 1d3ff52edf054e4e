"""The bench report: figures from the load generator's records, the run's traces
(DuckDB over its Parquet) and, when emulated, the provider's own counts; as one dict
that is written to ``report.json``."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from fanout.bench._load import LoadResult
from fanout.bench._stats import latency_summary, per_second

__all__ = ["REPORT_FILE", "ModelLimit", "build_report", "read_report", "write_report"]

REPORT_FILE = "report.json"
REPORT_VERSION = 1
Report = dict[str, Any]

_LLM_CALL = "record_type = 'attempt' AND (tool_name IS NULL OR span_name LIKE 'chat%')"


@dataclass(frozen=True, slots=True)
class ModelLimit:
    """The provider's limits for one (provider, model), as far as they are known."""

    provider: str
    model: str
    requests_per_min: float | None
    tokens_per_min: float | None
    source: str  # "emulator" or "config"


class _Attempt(NamedTuple):
    """One provider call of the run, from its trace row."""

    provider: str
    model: str
    sent_s: float  # after the load began, once the limiter let it go
    status: str
    http_status: int | None
    tokens: int
    attempt: int
    duration_ms: float  # the call on the wire (the limiter's wait is before its start)
    limiter_wait_ms: float
    error_type: str | None

    @property
    def accepted(self) -> bool:
        """Not refused with a 429 (the provider counted it against its limit)."""
        return self.http_status != 429


def _attempts(traces: Path, t0_wall: float) -> list[_Attempt]:
    from fanout.trace import connect

    con = connect(traces)
    try:
        rows = con.execute(
            f"""
            SELECT coalesce(provider, '?'), coalesce(request_model, '?'),
                   epoch_us(start_time) / 1e6 - ?,
                   status, http_status,
                   coalesce(input_tokens, 0) + coalesce(output_tokens, 0),
                   coalesce(attempt, 1), coalesce(duration_ms, 0),
                   coalesce(limiter_wait_ms, 0), error_type
            FROM spans WHERE {_LLM_CALL}
            """,
            [t0_wall],
        ).fetchall()
    finally:
        con.close()
    return [
        # max(0, ...): trace times and the load's start come from two readings of the clock
        _Attempt(p, m, max(0.0, float(t)), s, h, int(tok), int(a), float(d), float(w), e)
        for p, m, t, s, h, tok, a, d, w, e in rows
    ]


def _nodes(traces: Path) -> dict[str, Report]:
    """Per node: latency, and where its time goes (queue, limiter, back-off, provider)."""
    from fanout.trace import connect

    con = connect(traces)
    try:
        nodes = con.execute(
            """
            SELECT node_id, list(duration_ms), avg(coalesce(queue_wait_ms, 0)), count(*)
            FROM spans WHERE record_type = 'node' AND status <> 'skipped'
            GROUP BY node_id ORDER BY node_id
            """
        ).fetchall()
        attempts = dict(
            (row[0], row[1:])
            for row in con.execute(
                """
                SELECT n.node_id, sum(coalesce(a.limiter_wait_ms, 0)),
                       sum(coalesce(a.backoff_ms, 0)),
                       sum(coalesce(a.duration_ms, 0)),
                       count(*)
                FROM spans a JOIN spans n ON a.parent_span_id = n.span_id
                WHERE a.record_type = 'attempt' AND n.record_type = 'node'
                  AND (a.tool_name IS NULL OR a.span_name LIKE 'chat%')
                GROUP BY n.node_id
                """
            ).fetchall()
        )
    finally:
        con.close()
    out: dict[str, Report] = {}
    for node_id, durations, queue_ms, count in nodes:
        limiter_ms, backoff_ms, provider_ms, calls = attempts.get(node_id, (0, 0, 0, 0))

        def mean(total: float, count: int = count) -> float:
            return round(float(total) / count, 3) if count else 0.0

        out[str(node_id)] = {
            "runs": int(count),
            "calls": int(calls),
            "latency_ms": latency_summary(float(d) for d in durations if d is not None),
            "time_ms": {  # mean per node run; calls of a map add up
                "queue_wait": round(float(queue_ms or 0), 3),
                "limiter_wait": mean(limiter_ms),
                "backoff": mean(backoff_ms),
                "provider": mean(provider_ms),
            },
        }
    return out


def build_report(
    setup: Report,
    load: LoadResult,
    *,
    t0_wall: float,
    traces: Path | None,
    limits: list[ModelLimit],
    warmup_s: float,
    emulator: Mapping[str, Any] | None = None,
) -> Report:
    """Every figure of a bench run (see the README's "Capacity planning")."""
    duration = load.duration_s
    seconds = math.ceil(max(duration, load.wall_s))
    records = load.records
    ok = [r for r in records if r.status == "ok"]
    in_window = [r for r in records if r.end_s <= duration]
    steady = [r for r in records if warmup_s <= r.end_s <= duration]
    steady_ok = [r for r in steady if r.status == "ok"]
    steady_s = duration - warmup_s
    n = len(records)
    tokens_in = sum(r.input_tokens for r in records)
    tokens_out = sum(r.output_tokens for r in records)
    cost = sum(r.cost_usd for r in records)

    report: Report = {
        "fanout_bench": REPORT_VERSION,
        "setup": {**setup, "warmup_s": warmup_s},
        "requests": {
            "offered": load.offered,
            "completed": n,
            "ok": len(ok),
            "unfinished": load.unfinished,
            "by_status": dict(Counter(r.status for r in records)),
            "offered_per_s": round(load.offered / duration, 4),
            "completed_per_s": round(len(in_window) / duration, 4),
            "steady_completed_per_s": round(len(steady) / steady_s, 4),
            "goodput_per_s": round(len(steady_ok) / steady_s, 4),
            "wall_s": round(load.wall_s, 3),
        },
        "latency_ms": {
            "end_to_end": latency_summary(r.latency_s * 1000 for r in records),
            "end_to_end_ok": latency_summary(r.latency_s * 1000 for r in ok),
        },
        "tokens": {
            "input": tokens_in,
            "output": tokens_out,
            "per_request": round((tokens_in + tokens_out) / n, 3) if n else None,
            "per_1000_records": round((tokens_in + tokens_out) * 1000 / n, 1) if n else None,
        },
        "cost_usd": {
            "total": round(cost, 8),
            "per_request": round(cost / n, 10) if n else None,
            "per_1000_records": round(cost * 1000 / n, 6) if n else None,
        },
        "errors": {
            "requests_by_type": dict(Counter(r.error_type for r in records if r.error_type))
        },
    }
    timeline: Report = {
        "second": list(range(seconds)),
        "offered": per_second(load.arrivals, seconds),
        "completed": per_second((r.end_s for r in records), seconds),
        "ok": per_second((r.end_s for r in ok), seconds),
        "calls": {},
        "limit_calls_per_s": {},
        "pace_calls_per_s": defaultdict(list),
    }
    report["timeline"] = timeline
    for s in load.samples:
        rpm = s.requests_per_min
        timeline["pace_calls_per_s"][s.name].append([round(s.at_s, 3), rpm / 60 if rpm else None])
    timeline["pace_calls_per_s"] = dict(timeline["pace_calls_per_s"])
    report["providers"] = []
    if traces is not None:
        _provider_figures(report, traces, t0_wall, limits, warmup_s, duration, seconds)
        report["latency_ms"]["per_node"] = _nodes(traces)
    if emulator is not None:
        report["emulator"] = {
            k: emulator[k] for k in ("accepted", "limited", "errors", "tokens", "elapsed_s")
        }
        report["emulator"]["per_second"] = emulator.get("per_second", [])
    return report


def _provider_figures(
    report: Report,
    traces: Path,
    t0_wall: float,
    limits: list[ModelLimit],
    warmup_s: float,
    duration: float,
    seconds: int,
) -> None:
    attempts = _attempts(traces, t0_wall)
    by_key: dict[tuple[str, str], list[_Attempt]] = defaultdict(list)
    for row in attempts:
        by_key[(row.provider, row.model)].append(row)
    known = {(lim.provider, lim.model): lim for lim in limits}
    errors: Counter[str] = Counter()
    steady_s = duration - warmup_s
    for (provider, model), rows in sorted(by_key.items()):
        accepted = [r for r in rows if r.accepted]
        steady = [r for r in accepted if warmup_s <= r.sent_s < duration]
        steady_tokens = sum(r.tokens for r in steady)
        limit = known.get((provider, model))
        rpm = limit.requests_per_min if limit else None
        tpm = limit.tokens_per_min if limit else None
        util_rpm = len(steady) / (rpm / 60 * steady_s) if rpm else None
        util_tpm = steady_tokens / (tpm / 60 * steady_s) if tpm else None
        name = f"{provider}/{model}"
        report["providers"].append(
            {
                "provider": provider,
                "model": model,
                "calls": len(rows),
                "ok": sum(1 for r in rows if r.status == "ok"),
                "rate_limited": len(rows) - len(accepted),
                "retries": sum(1 for r in rows if r.attempt > 1),
                "errors": sum(1 for r in accepted if r.status != "ok"),
                "accepted": len(accepted),
                "tokens": sum(r.tokens for r in rows),
                "steady_calls_per_s": round(len(steady) / steady_s, 4),
                "steady_tokens_per_s": round(steady_tokens / steady_s, 3),
                "limit_requests_per_min": rpm,
                "limit_tokens_per_min": tpm,
                "limit_source": limit.source if limit else None,
                "utilisation_requests": round(util_rpm, 4) if util_rpm is not None else None,
                "utilisation_tokens": round(util_tpm, 4) if util_tpm is not None else None,
                "call_latency_ms": latency_summary(
                    r.duration_ms for r in accepted
                ),
                "limiter_wait_ms": latency_summary(r.limiter_wait_ms for r in rows),
            }
        )
        report["timeline"]["calls"][name] = per_second((r.sent_s for r in accepted), seconds)
        if rpm:
            report["timeline"]["limit_calls_per_s"][name] = rpm / 60
        for r in rows:
            if r.status != "ok":
                errors[r.error_type or r.status] += 1
    report["errors"]["attempts_by_type"] = dict(errors)


def write_report(report: Report, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / REPORT_FILE
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def read_report(directory: Path) -> Report:
    """A bench report from ``directory`` (or the report.json file itself)."""
    from fanout.errors import ConfigError

    path = directory / REPORT_FILE if directory.is_dir() else directory
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"--check {str(directory)!r}: no {REPORT_FILE} there; pass the --report "
            "directory of a `fanout bench` run"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--check {str(path)!r}: cannot read the report: {exc}") from None
    if not isinstance(data, dict) or data.get("fanout_bench") != REPORT_VERSION:
        raise ConfigError(f"--check {str(path)!r}: not a fanout bench report (version 1)")
    return data
