"""Outages wait: a batch call whose provider is down waits for it instead of failing.

An outage is the provider's, not the record's: connection errors, or an open circuit
with no fallback left. A batch run (``max_outage_s`` set) holds such a call until the
circuit's half-open probe gets an answer, then tries again; once the provider has been
down ``max_outage_s``, every waiting call raises :class:`ProviderOutage` at once and the
job stops (resumably). A service (``max_outage_s`` ``None``) fails fast instead: its
deadline decides.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from fanout.clock import Clock
from fanout.errors import CircuitOpen, ProviderConnectionError, ProviderError, ProviderOutage
from fanout.retry import CircuitBreaker, CircuitState, provider_fault

__all__ = ["Outage", "describe", "is_outage", "outage_of", "wait_until_up"]


@dataclass(frozen=True, slots=True)
class Outage:
    """A provider/model that is down now: since when (UTC), for how long, and why."""

    name: str
    since: datetime
    down_s: float
    cause: str


def describe(error: BaseException) -> str:
    """``ErrorType: message``: the root cause a report names."""
    return f"{type(error).__name__}: {error}"


def is_outage(error: ProviderError, circuit: CircuitBreaker) -> bool:
    """Is this failure the provider being down (not this request's own problem)?"""
    if isinstance(error, CircuitOpen | ProviderConnectionError):
        return True
    return provider_fault(error) and circuit.state is not CircuitState.CLOSED


def outage_of(name: str, circuit: CircuitBreaker, clock: Clock) -> Outage | None:
    """The circuit's outage, if it is open now."""
    since = circuit.down_since
    if since is None:
        return None
    down_s = max(0.0, clock.now() - since)
    return Outage(name, clock.wall() - timedelta(seconds=down_s), down_s, circuit.cause)


async def wait_until_up(
    name: str, provider: str, circuit: CircuitBreaker, clock: Clock, max_outage_s: float
) -> None:
    """Return when a call may go out again (the circuit is closed, or half-open with no
    probe out: the call that goes first is the probe); raise :class:`ProviderOutage`
    once it has been down ``max_outage_s``.

    Wakes at every verdict of the circuit and when the cool-down ends; never polls.
    """
    loop = asyncio.get_running_loop()
    while not circuit.ready():
        since = circuit.down_since
        down_s = clock.now() - since if since is not None else 0.0
        if down_s >= max_outage_s:
            raise _gave_up(name, provider, down_s, circuit.cause, max_outage_s)
        waiter: asyncio.Future[None] = loop.create_future()
        circuit.notify(waiter)
        # when a probe may go, or (a probe is out: its verdict wakes us) when we give up
        probe_in, give_up_in = circuit.probe_in_s(), max_outage_s - down_s
        wake_in = min(probe_in, give_up_in) if probe_in > 0 else give_up_in

        def expire(waiter: asyncio.Future[None] = waiter) -> None:
            if not waiter.done():
                waiter.set_result(None)

        timer = clock.call_later(max(0.0, wake_in), expire)
        try:
            await waiter
        finally:
            timer.cancel()


def _gave_up(
    name: str, provider: str, down_s: float, cause: str, max_outage_s: float
) -> ProviderOutage:
    minutes, seconds = divmod(int(down_s), 60)
    return ProviderOutage(
        f"{name} has been down for {minutes}m{seconds:02d}s ({cause or 'no answer'}); "
        f"the job stopped after waiting max_outage_s={max_outage_s:g}: records that "
        "waited have no row and run again when you run the same command once the "
        "provider is back (--max-outage waits longer)",
        provider=provider,
        name=name,
        down_s=down_s,
        cause=cause,
    )
