"""``BudgetLedger``: one job budget (USD and/or tokens) shared by many workers through allowances.

A worker spends against its own :class:`Budget`, whose limit is the allowance it
was granted so far; when a call does not fit, it asks for more (one request per
chunk, never one per call). The ledger grants chunks while the job's cap minus
what every worker holds allows, so all workers together stop within one chunk per
worker of the cap. A worker silent for ``ttl_s`` gives back what it held unspent.
Pure logic on an injected clock; ``fanout.distributed`` wraps it in a Ray actor.
"""

from __future__ import annotations

from dataclasses import dataclass

from fanout.clock import Clock

__all__ = ["Allowance", "BudgetLedger"]


@dataclass(frozen=True, slots=True)
class Allowance:
    """A worker's total allowance so far (its budget's limits); ``None``: not limited."""

    usd: float | None
    tokens: int | None
    exhausted: bool  # the job's cap is reached: nothing more will be granted


@dataclass(slots=True)
class _Holder:
    granted_usd: float = 0.0
    granted_tokens: int = 0
    spent_usd: float = 0.0
    spent_tokens: int = 0
    seen: float = 0.0


class BudgetLedger:
    def __init__(
        self,
        *,
        clock: Clock,
        usd: float | None,
        tokens: int | None,
        chunk_fraction: float = 0.02,
        ttl_s: float = 10.0,
    ) -> None:
        self.clock = clock
        self.usd = usd
        self.tokens = tokens
        self.chunk_fraction = chunk_fraction
        self.ttl_s = ttl_s
        self._holders: dict[str, _Holder] = {}

    @property
    def spent_usd(self) -> float:
        return sum(h.spent_usd for h in self._holders.values())

    @property
    def spent_tokens(self) -> int:
        return sum(h.spent_tokens for h in self._holders.values())

    def grant(
        self,
        worker_id: str,
        *,
        spent_usd: float,
        spent_tokens: int,
        want_usd: float = 0.0,
        want_tokens: int = 0,
    ) -> Allowance:
        """Record a worker's spending; grant it at least what it wants, if the cap allows."""
        now = self.clock.now()
        holder = self._holders.setdefault(worker_id, _Holder())
        holder.spent_usd, holder.spent_tokens, holder.seen = spent_usd, spent_tokens, now
        self._expire(now)
        if want_usd <= 0 and want_tokens <= 0:  # a report only: alive, and what it spent
            return self._allowance(holder, exhausted=False)
        exhausted = False
        if self.usd is not None:
            free = self.usd - self._committed_usd()
            chunk = max(want_usd, self.usd * self.chunk_fraction)
            extra = max(0.0, min(chunk, free))
            holder.granted_usd += extra
            exhausted |= extra < want_usd or free <= 0
        if self.tokens is not None:
            free_tokens = self.tokens - self._committed_tokens()
            chunk_tokens = max(want_tokens, int(self.tokens * self.chunk_fraction))
            extra_tokens = max(0, min(chunk_tokens, free_tokens))
            holder.granted_tokens += extra_tokens
            exhausted |= extra_tokens < want_tokens or free_tokens <= 0
        return self._allowance(holder, exhausted=exhausted)

    def _allowance(self, holder: _Holder, *, exhausted: bool) -> Allowance:
        return Allowance(
            usd=holder.granted_usd if self.usd is not None else None,
            tokens=holder.granted_tokens if self.tokens is not None else None,
            exhausted=exhausted,
        )

    def _committed_usd(self) -> float:
        return sum(max(h.granted_usd, h.spent_usd) for h in self._holders.values())

    def _committed_tokens(self) -> int:
        return sum(max(h.granted_tokens, h.spent_tokens) for h in self._holders.values())

    def _expire(self, now: float) -> None:
        for holder in self._holders.values():
            if now - holder.seen > self.ttl_s:  # gone: what it held unspent comes back
                holder.granted_usd = holder.spent_usd
                holder.granted_tokens = holder.spent_tokens

    def __repr__(self) -> str:
        return (
            f"BudgetLedger(usd={self.usd}, tokens={self.tokens}, spent_usd={self.spent_usd:.6f}, "
            f"holders={len(self._holders)})"
        )
