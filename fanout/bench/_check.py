"""``compare``: a prediction set against a bench report, figure by figure, with the error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fanout.bench._plan import Prediction
from fanout.limits import AdaptiveRate

__all__ = ["CheckRow", "compare"]

_SAFETY = AdaptiveRate(1.0).safety  # the share of a stated limit the limiter paces at


@dataclass(frozen=True, slots=True)
class CheckRow:
    figure: str
    predicted: float | None
    measured: float | None
    note: str = ""

    @property
    def error(self) -> float | None:
        """(predicted - measured) / measured; None when either is missing or measured is 0."""
        if self.predicted is None or self.measured is None or self.measured == 0:
            return None
        return (self.predicted - self.measured) / self.measured


def compare(prediction: Prediction, report: dict[str, Any]) -> list[CheckRow]:
    """The figures both give: throughput, calls/s per provider/model, tokens, cost, latency."""
    req = report["requests"]
    rows = [
        CheckRow(
            "throughput, records/s (steady)",
            prediction.throughput_per_s,
            req["steady_completed_per_s"],
            f"binding: {prediction.binding.kind} {prediction.binding.where}",
        )
    ]
    measured_calls = {f"{p['provider']}/{p['model']}": p for p in report.get("providers", [])}
    for key, rate in sorted(prediction.calls_per_s.items()):
        p = measured_calls.get(key)
        rows.append(
            CheckRow(f"{key} calls/s (steady)", rate, p["steady_calls_per_s"] if p else None)
        )
    for key, p in sorted(measured_calls.items()):
        util = {"rpm": "utilisation_requests", "tpm": "utilisation_tokens"}.get(
            prediction.binding.kind
        )
        if util and key == prediction.binding.where and p.get(util) is not None:
            rows.append(
                CheckRow(
                    f"{key} {prediction.binding.kind} utilisation",
                    _SAFETY,
                    p[util],
                    "the limiter paces just under the limit",
                )
            )
    for key, latency in sorted(prediction.call_latency_ms.items()):
        p = measured_calls.get(key)
        rows.append(
            CheckRow(
                f"{key} call latency (mean), ms",
                latency,
                p["call_latency_ms"]["mean"] if p else None,
                "measured: the provider's time plus HTTP, on this machine",
            )
        )
    rows.append(
        CheckRow("tokens per record", prediction.tokens_per_record, report["tokens"]["per_request"])
    )
    rows.append(
        CheckRow(
            "cost per 1,000 records, USD",
            prediction.cost_usd_per_record * 1000,
            report["cost_usd"]["per_1000_records"],
        )
    )
    rows.append(
        CheckRow(
            "latency p50, ms",
            prediction.latency_ms,
            report["latency_ms"]["end_to_end"]["p50"],
            "predicted: one request on an idle system; measured: under the bench's load",
        )
    )
    return rows
