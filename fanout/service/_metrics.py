"""Prometheus metrics of one service instance (its own registry: no global state).

Request counters, latency histogram, in-flight gauge and cost are kept as runs end;
limiter figures (waits, 429s, queue) and hedges are read from the engine at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fanout.limits import LimiterState
from fanout.retry import HedgePolicy
from fanout.types import Usage

__all__ = ["CONTENT_TYPE", "ServiceMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class ServiceMetrics:
    """The service's metrics; ``render()`` is the body of ``GET /metrics``."""

    def __init__(
        self,
        limiters: Callable[[], list[LimiterState]],
        hedges: Callable[[], Mapping[str, HedgePolicy]],
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "fanout_service_requests",
            "Run requests answered, by pipeline and outcome (run status, or the 4xx kind).",
            ["pipeline", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fanout_service_request_duration_seconds",
            "End-to-end run latency as the service saw it.",
            ["pipeline"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "fanout_service_in_flight",
            "Runs in progress.",
            ["pipeline"],
            registry=self.registry,
        )
        self.cost = Counter(
            "fanout_service_cost_usd",
            "What finished runs spent, in USD.",
            ["pipeline"],
            registry=self.registry,
        )
        self.disconnects = Counter(
            "fanout_service_client_disconnects",
            "Runs cancelled because their client went away.",
            ["pipeline"],
            registry=self.registry,
        )
        self.key_requests = Counter(
            "fanout_gateway_requests",
            "OpenAI-compatible calls answered, by tenant, virtual key and model.",
            ["tenant", "key_id", "model"],
            registry=self.registry,
        )
        self.key_cost = Counter(
            "fanout_gateway_key_cost_usd",
            "What each virtual key's gateway calls spent, in USD.",
            ["tenant", "key_id"],
            registry=self.registry,
        )
        self.key_tokens = Counter(
            "fanout_gateway_key_tokens",
            "Tokens of each virtual key's gateway calls, by kind (input, output).",
            ["tenant", "key_id", "kind"],
            registry=self.registry,
        )
        self.key_refusals = Counter(
            "fanout_gateway_key_refused",
            "Gateway calls refused for the key's own quota (insufficient_quota, share).",
            ["tenant", "key_id", "reason"],
            registry=self.registry,
        )
        self.registry.register(_EngineCollector(limiters, hedges))

    def key_spend(self, tenant: str, key_id: str, model: str, usage: Usage, cost: float) -> None:
        """One answered gateway call of ``key_id``: its tokens and cost."""
        self.key_requests.labels(tenant, key_id, model).inc()
        self.key_cost.labels(tenant, key_id).inc(cost)
        self.key_tokens.labels(tenant, key_id, "input").inc(usage.input_tokens)
        self.key_tokens.labels(tenant, key_id, "output").inc(usage.output_tokens)

    def key_refused(self, tenant: str, key_id: str, reason: str) -> None:
        self.key_refusals.labels(tenant, key_id, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector(Collector):
    """Limiter and hedging figures, read from the engine when scraped."""

    def __init__(
        self,
        limiters: Callable[[], list[LimiterState]],
        hedges: Callable[[], Mapping[str, HedgePolicy]],
    ) -> None:
        self._limiters = limiters
        self._hedges = hedges

    def describe(self) -> Iterable[Metric]:
        return []  # read at scrape time; nothing to check when registered

    def collect(self) -> Iterable[Metric]:
        wait = CounterMetricFamily(
            "fanout_limiter_wait_seconds",
            "Time calls waited for rate-limit capacity, per provider/model.",
            labels=["limiter"],
        )
        limited = CounterMetricFamily(
            "fanout_limiter_rate_limited",
            "429 answers seen, per provider/model.",
            labels=["limiter"],
        )
        granted = CounterMetricFamily(
            "fanout_limiter_granted", "Calls let through, per provider/model.", labels=["limiter"]
        )
        queued = GaugeMetricFamily(
            "fanout_limiter_queued", "Calls waiting for capacity.", labels=["limiter"]
        )
        in_flight = GaugeMetricFamily(
            "fanout_limiter_in_flight", "Calls in flight.", labels=["limiter"]
        )
        for state in self._limiters():
            wait.add_metric([state.name], state.total_wait_s)
            limited.add_metric([state.name], state.rate_limited)
            granted.add_metric([state.name], state.granted)
            queued.add_metric([state.name], state.queued)
            in_flight.add_metric([state.name], state.in_flight)
        hedges = CounterMetricFamily(
            "fanout_hedges", "Duplicates sent for slow calls, per model alias.", labels=["model"]
        )
        delay = GaugeMetricFamily(
            "fanout_hedge_delay_seconds",
            "The learned latency quantile after which a call is hedged (NaN: not learned yet).",
            labels=["model"],
        )
        for alias, policy in self._hedges().items():
            hedges.add_metric([alias], policy.hedges)
            learned = policy.delay_s()
            delay.add_metric([alias], learned if learned is not None else float("nan"))
        yield from (wait, limited, granted, queued, in_flight, hedges, delay)
