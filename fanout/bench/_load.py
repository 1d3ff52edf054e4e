"""The load generator: requests arrive open-loop (on a schedule) or from N closed-loop
clients, each one ``runner.run`` on the real engine; every request's outcome is kept."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fanout.bench._arrivals import ArrivalSpec, arrival_offsets
from fanout.clock import Clock
from fanout.dag import DAG
from fanout.errors import ConfigError
from fanout.limits import LimiterState
from fanout.run import RunResult

__all__ = ["Arrival", "LimiterSample", "LoadResult", "RequestRecord", "Runner", "generate_load"]

SAMPLE_EVERY_S = 0.5


class Runner(Protocol):
    """What the bench needs of an engine (``Engine`` and ``RayEngine`` both are one)."""

    async def run(
        self,
        dag: DAG,
        inputs: Mapping[str, object],
        *,
        request_id: str | None = None,
        record_key: str | None = None,
    ) -> RunResult: ...


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request to send: when (seconds after the start; ``None`` in a closed loop),
    its record key and its inputs."""

    at_s: float | None
    key: str
    inputs: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What happened to one request, times in seconds after the start of the load."""

    key: str
    arrival_s: float
    end_s: float
    status: str
    error_type: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    calls: int

    @property
    def latency_s(self) -> float:
        return self.end_s - self.arrival_s


@dataclass(frozen=True, slots=True)
class LimiterSample:
    at_s: float
    name: str
    requests_per_min: float | None
    tokens_per_min: float | None
    in_flight: int
    queued: int


@dataclass
class LoadResult:
    duration_s: float
    offered: int = 0
    arrivals: list[float] = field(default_factory=list)  # every arrival, finished or not
    records: list[RequestRecord] = field(default_factory=list)
    unfinished: int = 0  # still running when the drain timed out (cancelled)
    samples: list[LimiterSample] = field(default_factory=list)
    wall_s: float = 0.0  # load start to the last request settled
    started_wall: float = 0.0  # the load's start, seconds since the epoch (trace times)


def _record(key: str, arrival: float, end: float, result: RunResult) -> RequestRecord:
    calls = sum(node.calls for node in result.nodes.values())
    return RequestRecord(
        key,
        arrival,
        end,
        str(result.status),
        result.error_type,
        result.usage.input_tokens,
        result.usage.output_tokens,
        result.cost_usd,
        calls,
    )


async def generate_load(
    runner: Runner,
    dag: DAG,
    arrivals: ArrivalSpec,
    inputs: Sequence[Mapping[str, object]] | Sequence[Arrival],
    *,
    duration_s: float,
    clock: Clock,
    drain_s: float = 30.0,
    limiter_states: Callable[[], Iterable[LimiterState]] | None = None,
    seed: int = 0,
) -> LoadResult:
    """Drive ``runner`` for ``duration_s``, then wait up to ``drain_s`` for what is in flight.

    Open loop: a request starts at its arrival time whether or not earlier ones finished
    (``inputs`` cycle; for replay, pass :class:`Arrival` values with their own times).
    Closed loop: ``arrivals.clients`` clients each send their next request as soon as
    their last one finished, until ``duration_s``.
    """
    if not inputs:
        raise ConfigError("the bench has no inputs to send; give it at least one record")
    out = LoadResult(duration_s)
    t0 = clock.now()
    out.started_wall = clock.wall().timestamp()
    tasks: set[asyncio.Task[None]] = set()
    config_errors: list[ConfigError] = []

    def item(i: int) -> Arrival:
        value = inputs[i % len(inputs)]
        if isinstance(value, Arrival):
            return value
        return Arrival(None, f"bench-{i}", value)

    async def one(arrival: Arrival, at: float) -> None:
        try:
            result = await runner.run(dag, arrival.inputs, record_key=arrival.key)
        except ConfigError as exc:  # a DAG or inputs that cannot run: the bench stops
            config_errors.append(exc)
            return
        except Exception as exc:  # a runner failure is a failed request, not a crash
            end = clock.now() - t0
            out.records.append(
                RequestRecord(arrival.key, at, end, "error", type(exc).__name__, 0, 0, 0.0, 0)
            )
            return
        out.records.append(_record(arrival.key, at, clock.now() - t0, result))

    async def sampler() -> None:
        assert limiter_states is not None
        while True:
            at = clock.now() - t0
            for s in limiter_states():
                out.samples.append(
                    LimiterSample(
                        at, s.name, s.requests_per_min, s.tokens_per_min, s.in_flight, s.queued
                    )
                )
            await clock.sleep(SAMPLE_EVERY_S)

    sampling = asyncio.create_task(sampler()) if limiter_states is not None else None
    try:
        if arrivals.kind == "closed":
            assert arrivals.clients is not None
            counter = iter(range(1 << 62))

            async def client() -> None:
                while clock.now() - t0 < duration_s:
                    i = next(counter)
                    at = clock.now() - t0
                    out.offered += 1
                    out.arrivals.append(at)
                    await one(item(i), at)

            tasks = {asyncio.create_task(client()) for _ in range(arrivals.clients)}
        else:
            schedule: Iterable[tuple[float, Arrival]]
            if arrivals.kind == "replay":
                timed = [(a.at_s, a) for a in inputs if isinstance(a, Arrival)]
                schedule = [(at, a) for at, a in timed if at is not None and at < duration_s]
            else:
                offsets = arrival_offsets(arrivals, duration_s, seed=seed)
                schedule = ((at, item(i)) for i, at in enumerate(offsets))
            for at, arrival in schedule:
                delay = t0 + at - clock.now()
                if delay > 0:
                    await clock.sleep(delay)
                out.offered += 1
                out.arrivals.append(at)
                task = asyncio.create_task(one(arrival, at))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            left = t0 + duration_s - clock.now()
            if left > 0:
                await clock.sleep(left)
        await _drain(tasks, clock, t0 + duration_s + drain_s, out)
        if config_errors:
            raise config_errors[0]
    finally:
        if sampling is not None:
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling
    out.wall_s = clock.now() - t0
    return out


async def _drain(
    tasks: set[asyncio.Task[None]], clock: Clock, until: float, out: LoadResult
) -> None:
    """Wait for ``tasks`` until ``until`` on ``clock``; cancel and count what is left."""
    remaining = {t for t in tasks if not t.done()}
    timer = asyncio.create_task(clock.sleep(max(0.0, until - clock.now())))
    try:
        while remaining and not timer.done():
            done, _ = await asyncio.wait(remaining | {timer}, return_when=asyncio.FIRST_COMPLETED)
            remaining -= done
    finally:
        timer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await timer
    out.unfinished = len(remaining)
    for task in remaining:
        task.cancel()
    if remaining:
        await asyncio.gather(*remaining, return_exceptions=True)
