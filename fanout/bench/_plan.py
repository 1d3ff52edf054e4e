"""``predict``: throughput, wall time, binding constraint, latency and cost of a pipeline
from its measured shape and the config's limits and prices — no provider is called.

Steady throughput (records/s) is the smallest of these ceilings:

- requests/min of each (provider, model): its pace / calls per record;
- tokens/min of each (provider, model): its pace / tokens per record;
- concurrency x latency: calls in flight are capped per (provider, model), so by
  Little's law max_concurrency / (calls per record x call latency);
- the load itself: the arrival rate (open loop), or N clients / one record's latency;
- CPU: the engine's own work per record, measured on this machine, per worker.

Paces are the limiter's (``fanout.limits.AdaptiveRate``: just under the limit).

Wall time models the provider's buckets: a bucket starts full and holds ``window_s``
seconds of its limit (the emulator's ``burst``, or the provider's ``window_s``; 1 s
for the simulated provider, which states no bucket), so a requests/min or tokens/min
ceiling needs ``(records - what its bucket holds) / its pace``; every other ceiling
needs ``records / its rate``; the wall is the longest of these plus one record's
critical path.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from fanout.bench._emulate import EmulateSpec
from fanout.bench._shape import Shape
from fanout.config import Config, ProviderConfig, SimProviderConfig
from fanout.dag import DAG, MapNode
from fanout.limits import AdaptiveRate

__all__ = ["Constraint", "Prediction", "predict"]


@dataclass(frozen=True, slots=True)
class Constraint:
    """One ceiling on throughput, and the lever that raises it."""

    kind: str  # rpm, tpm, concurrency, arrivals, clients, cpu
    where: str  # provider/model, or "load", or "engine"
    records_per_s: float
    detail: str
    lever: str  # the setting that moves it
    value: float | None  # the setting's value now
    bucket_records: float = 0.0  # records the provider's full bucket admits at once


@dataclass(slots=True)
class Prediction:
    dag: str
    records: int
    throughput_per_s: float
    wall_time_s: float
    binding: Constraint
    constraints: list[Constraint]
    latency_ms: float | None  # one request on an idle system: its critical path
    cost_usd_per_record: float
    cost_usd: float
    tokens_per_record: float
    calls_per_s: dict[str, float]  # per provider/model at the predicted throughput
    calls_per_record: dict[str, float]
    call_latency_ms: dict[str, float | None]
    halve: list[str] = field(default_factory=list)
    shape_source: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _call_latency_ms(
    config: Config,
    alias: str,
    out_tokens_per_call: float,
    shape: Shape,
    emulate: EmulateSpec | None,
    latency_ms: float | None,
) -> float | None:
    if alias in shape.latency_ms:
        return shape.latency_ms[alias]
    if emulate is not None:
        return emulate.mean_latency_ms + emulate.latency_per_token_ms * out_tokens_per_call
    provider = config.providers[config.models[alias].provider]
    if isinstance(provider, SimProviderConfig):
        mean = provider.latency_ms * math.exp(provider.jitter_sigma**2 / 2)
        return mean + provider.latency_per_token_ms * out_tokens_per_call
    return latency_ms


def _pace_per_s(configured_per_min: float | None, provider_per_min: float | None) -> float | None:
    """The limiter's pace for a limit: the lower of the configured and the provider's."""
    known = [v for v in (configured_per_min, provider_per_min) if v]
    if not known:
        return None
    return AdaptiveRate(min(known) / 60).rate


def predict(
    dag: DAG,
    config: Config,
    shape: Shape,
    *,
    records: int,
    arrival_rate: float | None = None,
    clients: int | None = None,
    workers: int = 1,
    emulate: EmulateSpec | None = None,
    latency_ms: float | None = None,
) -> Prediction:
    """A prediction for ``records`` records (see the module docstring for the model)."""
    plan = dag.validate(models=config.models.keys())
    notes: list[str] = []
    # per (provider, model): calls, tokens and in-flight seconds per record
    calls: dict[str, float] = {}
    tokens: dict[str, float] = {}
    busy_s: dict[str, float] = {}
    latency_of: dict[str, float | None] = {}
    cost = 0.0
    node_latency_s: dict[str, float] = {}
    for node in shape.nodes.values():
        if node.model is None or node.calls == 0:
            continue
        model = config.models[node.model]
        key = f"{model.provider}/{model.model}"
        out_per_call = node.output_tokens / node.calls
        lat = _call_latency_ms(config, node.model, out_per_call, shape, emulate, latency_ms)
        latency_of[key] = lat
        calls[key] = calls.get(key, 0.0) + node.calls
        tokens[key] = tokens.get(key, 0.0) + node.input_tokens + node.output_tokens
        cost += (
            node.input_tokens * model.input_usd_per_mtok
            + node.output_tokens * model.output_usd_per_mtok
        ) / 1_000_000
        if lat is None:
            notes.append(
                f"no latency known for model {node.model!r} ({key}): pass --latency-ms "
                "or --traces DIR; its concurrency ceiling and the latency are left out"
            )
            continue
        busy_s[key] = busy_s.get(key, 0.0) + node.calls * lat / 1000
        per_call_s = lat / 1000
        spec = plan.nodes[node.node_id]
        if isinstance(spec, MapNode) and node.items > 0:
            per_item_calls = node.calls / node.items
            width = min(spec.concurrency or math.inf, node.items)
            node_latency_s[node.node_id] = (
                math.ceil(node.items / width) * per_item_calls * per_call_s
            )
        else:
            node_latency_s[node.node_id] = node.calls * per_call_s

    constraints = _limit_ceilings(config, calls, tokens, busy_s, latency_of, emulate)
    critical_s = _critical_path_s(dag, node_latency_s) if node_latency_s else None
    if arrival_rate is not None:
        constraints.append(
            Constraint(
                "arrivals", "load", arrival_rate, f"{arrival_rate:,.2f} records/s offered",
                "the arrival rate", arrival_rate,
            )
        )  # fmt: skip
    if clients is not None and critical_s:
        constraints.append(
            Constraint(
                "clients", "load", clients / critical_s,
                f"{clients} clients / {critical_s * 1000:,.0f} ms per record",
                "closed-loop clients (--concurrency of a batch job)", float(clients),
            )
        )  # fmt: skip
    if shape.cpu_records_per_s:
        constraints.append(
            Constraint(
                "cpu", "engine", shape.cpu_records_per_s * workers,
                f"{shape.cpu_records_per_s:,.0f} records/s per worker (engine work measured "
                f"here, without HTTP) x {workers} worker(s)",
                "workers (--ray --workers N)", float(workers),
            )
        )  # fmt: skip
    if not constraints:
        _unbounded(dag)
    binding = min(constraints, key=lambda c: c.records_per_s)
    throughput = binding.records_per_s
    wall = _wall_s(constraints, records) + (critical_s or 0.0)
    total_tokens = sum(tokens.values())
    prediction = Prediction(
        dag=dag.name,
        records=records,
        throughput_per_s=throughput,
        wall_time_s=wall,
        binding=binding,
        constraints=sorted(constraints, key=lambda c: c.records_per_s),
        latency_ms=critical_s * 1000 if critical_s is not None else None,
        cost_usd_per_record=cost,
        cost_usd=cost * records,
        tokens_per_record=total_tokens,
        calls_per_s={k: v * throughput for k, v in calls.items()},
        calls_per_record=dict(calls),
        call_latency_ms=latency_of,
        shape_source=shape.source,
        notes=notes,
    )
    if arrival_rate is not None and arrival_rate > throughput * 1.001:
        notes.append(
            f"arrivals ({arrival_rate:,.2f}/s) exceed the throughput ({throughput:,.2f}/s): "
            "the queue, and so the latency, grow for as long as they last"
        )
    prediction.halve = _halve(prediction, calls, tokens, busy_s, critical_s)
    return prediction


def _wall_s(constraints: list[Constraint], records: int) -> float:
    """Seconds to get ``records`` past every ceiling, the buckets' bursts included."""
    return max(max(0.0, records - c.bucket_records) / c.records_per_s for c in constraints)


def _bucket_s(provider: ProviderConfig, emulate: EmulateSpec | None) -> float:
    """How many seconds of its limit the provider's bucket holds, as the limiter sees it."""
    if emulate is not None:
        return emulate.burst_s
    if isinstance(provider, SimProviderConfig):
        return 1.0  # states no bucket: the limiter holds a second
    return provider.window_s


def _limit_ceilings(
    config: Config,
    calls: dict[str, float],
    tokens: dict[str, float],
    busy_s: dict[str, float],
    latency_of: dict[str, float | None],
    emulate: EmulateSpec | None,
) -> list[Constraint]:
    """The rpm, tpm and concurrency ceilings of every (provider, model) the DAG calls."""
    constraints: list[Constraint] = []
    seen_keys: set[str] = set()
    for model in config.models.values():
        key = f"{model.provider}/{model.model}"
        if key not in calls or key in seen_keys:
            continue
        seen_keys.add(key)
        provider = config.providers[model.provider]
        rpm_conf = model.requests_per_min or provider.requests_per_min
        tpm_conf = model.tokens_per_min or provider.tokens_per_min
        rpm_real = emulate.requests_per_min if emulate else None
        tpm_real = emulate.tokens_per_min if emulate else None
        rpm_pace = _pace_per_s(rpm_conf, rpm_real)
        bucket_s = _bucket_s(provider, emulate)
        if rpm_pace is not None:
            limit = min(v for v in (rpm_conf, rpm_real) if v)
            constraints.append(
                Constraint(
                    "rpm", key, rpm_pace / calls[key],
                    f"{limit:,.0f} requests/min (paced at {rpm_pace * 60:,.0f}), "
                    f"{calls[key]:.2f} calls/record",
                    f"requests_per_min of {key}", limit,
                    limit / 60 * bucket_s / calls[key],
                )
            )  # fmt: skip
        tpm_pace = _pace_per_s(tpm_conf, tpm_real)
        if tpm_pace is not None and tokens[key] > 0:
            limit = min(v for v in (tpm_conf, tpm_real) if v)
            constraints.append(
                Constraint(
                    "tpm", key, tpm_pace / tokens[key],
                    f"{limit:,.0f} tokens/min (paced at {tpm_pace * 60:,.0f}), "
                    f"{tokens[key]:.1f} tokens/record",
                    f"tokens_per_min of {key}", limit,
                    limit / 60 * bucket_s / tokens[key],
                )
            )  # fmt: skip
        if busy_s.get(key):
            cap = provider.max_concurrency
            constraints.append(
                Constraint(
                    "concurrency", key, cap / busy_s[key],
                    f"max_concurrency {cap} x call latency {latency_of[key]:,.0f} ms, "
                    f"{calls[key]:.2f} calls/record",
                    f"max_concurrency of provider {model.provider}", float(cap),
                )
            )  # fmt: skip
    return constraints


def _unbounded(dag: DAG) -> None:
    from fanout.errors import ConfigError

    raise ConfigError(
        f"plan: nothing bounds DAG {dag.name!r}'s throughput (no limits, latency, arrival "
        "rate or CPU measurement); set limits in the config or pass --arrival-rate"
    )


def _critical_path_s(dag: DAG, node_latency_s: dict[str, float]) -> float:
    plan = dag.validate()
    finish: dict[str, float] = {}
    for event in plan.order:
        start = max((finish.get(d, 0.0) for d in plan.deps.get(event, ())), default=0.0)
        finish[event] = start + node_latency_s.get(event, 0.0)
    return max(finish.values(), default=0.0)


def _halve(
    p: Prediction,
    calls: dict[str, float],
    tokens: dict[str, float],
    busy_s: dict[str, float],
    critical_s: float | None,
) -> list[str]:
    """What would have to change for twice the throughput (half the time)."""
    target = 2 * p.throughput_per_s
    steps = []
    for c in p.constraints:
        if c.records_per_s >= target:
            continue
        if c.kind == "rpm":
            need = target * calls[c.where] * 60 / AdaptiveRate(1.0).safety
            steps.append(f"raise {c.lever} from {c.value:,.0f} to {need:,.0f} requests/min")
        elif c.kind == "tpm":
            need = target * tokens[c.where] * 60 / AdaptiveRate(1.0).safety
            steps.append(f"raise {c.lever} from {c.value:,.0f} to {need:,.0f} tokens/min")
        elif c.kind == "concurrency":
            need = math.ceil(target * busy_s[c.where])
            steps.append(f"raise {c.lever} from {c.value:,.0f} to {need:,}")
        elif c.kind == "arrivals":
            steps.append(
                f"the load is the limit: {target:,.2f} records/s must arrive "
                f"(now {c.value:,.2f}); the engine has room"
            )
        elif c.kind == "clients" and critical_s:
            steps.append(f"raise {c.lever} from {c.value:,.0f} to {math.ceil(target * critical_s)}")
        elif c.kind == "cpu" and c.value:
            per_worker = c.records_per_s / c.value
            steps.append(f"run on {math.ceil(target / per_worker)} workers (--ray --workers N)")
    return steps
