"""The gateway's callers: virtual keys (or service tokens), their budgets and limit shares.

A key is looked up by its digest in the :class:`KeyStore` and kept for ``cache_s``
(a revoked key is refused within that long; 0: looked up on every call). Each key's
budget for its current period is one :class:`Budget` shared by all its calls in this
process: a call reserves its worst case before it is sent, so concurrent calls cannot
overrun it together. Spend goes to the store after each call (off the answer's path),
and each process reads the others' back every ``cache_s``: several replicas share one
budget, within what their calls hold in flight. A key's ``share`` caps its calls per
minute at that fraction of each (provider, model) limiter's pace; over it, a 429 with
``retry-after``.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

from fanout.budget import Budget
from fanout.clock import Clock
from fanout.limits import TokenBucket
from fanout.service._auth import TokenStore
from fanout.store import ApiKey, KeyStore, period_bounds

__all__ = ["Caller", "KeyBudget", "KeyGate"]

_CACHE_MAX = 10_000  # looked-up tokens kept (a flood of bad ones cannot grow it past this)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: a virtual key's record, or a service token's tenant."""

    tenant: str
    key: ApiKey | None = None

    @property
    def key_id(self) -> str:
        return self.key.key_id if self.key is not None else f"tenant:{self.tenant}"

    @property
    def interactive(self) -> bool:
        return self.key is None or self.key.priority == "interactive"


@dataclass(slots=True)
class KeyBudget:
    """A key's budget in one period: shared by its calls here, synced with the store."""

    budget: Budget
    start: float
    end: float | None
    synced_at: float = 0.0
    syncing: asyncio.Task[None] | None = field(default=None, repr=False)

    def exhausted(self) -> bool:
        b = self.budget
        over_usd = b.usd is not None and b.spent_usd >= b.usd
        return over_usd or (b.tokens is not None and b.spent_tokens >= b.tokens)


class KeyGate:
    """Authenticates callers and keeps each key's budget and limit shares."""

    def __init__(
        self,
        keys: KeyStore | None,
        tokens: TokenStore | None,
        *,
        clock: Clock,
        cache_s: float = 1.0,
    ) -> None:
        self.keys = keys
        self.tokens = tokens
        self.clock = clock
        self.cache_s = cache_s
        self._found: dict[bytes, tuple[ApiKey | None, float]] = {}
        self._budgets: dict[str, KeyBudget] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    @property
    def open(self) -> bool:
        """No keys and no tokens: every caller is tenant ``default`` (local use)."""
        return self.keys is None and self.tokens is None

    async def caller(self, token: str | None) -> Caller | None:
        """The caller ``token`` names, or ``None`` (missing, unknown or revoked)."""
        if self.open:
            return Caller("default")
        if not token:
            return None
        if self.tokens is not None:
            tenant = self.tokens.tenant(token)
            if tenant is not None:
                return Caller(tenant)
        if self.keys is None:
            return None
        key = await self._lookup(token)
        return Caller(key.tenant, key) if key is not None else None

    async def _lookup(self, token: str) -> ApiKey | None:
        assert self.keys is not None
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        now = self.clock.now()
        found = self._found.get(digest)
        if found is not None and found[1] > now:
            return found[0]
        key = await asyncio.to_thread(self.keys.lookup, token)
        if self.cache_s > 0:
            if len(self._found) >= _CACHE_MAX:
                self._found.clear()
            self._found[digest] = (key, now + self.cache_s)
        return key

    async def budget(self, caller: Caller) -> KeyBudget | None:
        """The caller's key's budget for the current period (``None``: unlimited)."""
        key = caller.key
        if key is None or (key.budget_usd is None and key.budget_tokens is None):
            return None
        assert self.keys is not None
        start, end = period_bounds(key.period, self.clock.wall().timestamp())
        held = self._budgets.get(key.key_id)
        if held is None or held.start != start:
            held = KeyBudget(Budget(usd=key.budget_usd, tokens=key.budget_tokens), start, end)
            self._budgets[key.key_id] = held
            await self._sync(key.key_id, held)
        elif self.clock.now() - held.synced_at >= self.cache_s and held.syncing is None:
            held.syncing = asyncio.ensure_future(self._sync(key.key_id, held))
        return held

    async def _sync(self, key_id: str, held: KeyBudget) -> None:
        """What every process spent, from the store: this one's own spend is in it once
        written, so the larger of the two is what the key has spent."""
        assert self.keys is not None
        try:
            usd, tokens, _ = await asyncio.to_thread(self.keys.spent, key_id, held.start)
            budget = held.budget
            budget.spent_usd = max(budget.spent_usd, usd)
            budget.spent_tokens = max(budget.spent_tokens, tokens)
            held.synced_at = self.clock.now()
        finally:
            held.syncing = None

    def share_wait_s(self, caller: Caller, limiter: str, requests_per_min: float | None) -> float:
        """0 and a call counted if the caller's share of ``limiter`` allows one now; else
        the seconds until it would."""
        key = caller.key
        if key is None or key.share is None or not requests_per_min:
            return 0.0
        rate = key.share * requests_per_min / 60
        now = self.clock.now()
        bucket = self._buckets.get((key.key_id, limiter))
        if bucket is None:
            bucket = self._buckets[(key.key_id, limiter)] = TokenBucket(rate, max(1.0, rate), now)
        elif bucket.rate != rate:
            bucket.set_rate(rate, max(1.0, rate), now)
        wait = bucket.wait_s(1, now)
        if wait <= 0:
            bucket.take(1, now)
        return wait

    def record(self, caller: Caller, held: KeyBudget | None, usd: float, tokens: int) -> None:
        """Add a call's spend to the key's row in the store (run after the answer went)."""
        if self.keys is None or caller.key is None:
            return
        key = caller.key
        start = held.start if held is not None else period_bounds(
            key.period, self.clock.wall().timestamp()
        )[0]
        self.keys.add_spend(key.key_id, start, usd=usd, tokens=tokens)
