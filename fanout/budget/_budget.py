"""``Budget``: reservations against token and USD limits; a call that would overrun is refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fanout.errors import BudgetExceeded

__all__ = ["Budget", "Reservation"]


@dataclass(slots=True)
class Reservation:
    """Capacity held for one call until it is settled or released (exactly once)."""

    tokens: int
    usd: float
    open: bool = True


class Budget:
    """A token and/or USD limit shared by every call of one request (or job).

    ``reserve`` holds the worst case of a call (estimated prompt tokens plus
    ``max_tokens``, priced) and raises :class:`BudgetExceeded` if spent plus held
    plus this would pass a limit, so the call is never made. ``settle`` replaces
    the hold by what the provider reported; ``release`` drops it (a cancelled or
    failed call). Not thread-safe: one event loop owns it.
    """

    __slots__ = (
        "_held_tokens",
        "_held_usd",
        "refill",
        "spent_tokens",
        "spent_usd",
        "tokens",
        "usd",
    )

    def __init__(self, *, usd: float | None = None, tokens: int | None = None) -> None:
        if usd is not None and usd < 0:
            raise ValueError("budget usd must be >= 0")
        if tokens is not None and tokens < 0:
            raise ValueError("budget tokens must be >= 0")
        self.usd = usd
        self.tokens = tokens
        self.spent_usd = 0.0
        self.spent_tokens = 0
        self._held_usd = 0.0
        self._held_tokens = 0
        # A share of a larger budget (a Ray worker's allowance of the job's): asked for
        # more when a call does not fit; True if the limits were raised.
        self.refill: Callable[[int, float], Awaitable[bool]] | None = None

    @property
    def limited(self) -> bool:
        return self.usd is not None or self.tokens is not None

    @property
    def held_usd(self) -> float:
        return self._held_usd

    @property
    def held_tokens(self) -> int:
        return self._held_tokens

    def reserve(self, *, tokens: int, usd: float) -> Reservation:
        if self.tokens is not None and self.spent_tokens + self._held_tokens + tokens > self.tokens:
            raise BudgetExceeded(
                f"token budget: {self.spent_tokens} spent + {self._held_tokens} held + "
                f"{tokens} for this call > limit {self.tokens}; raise the budget or lower "
                "max_tokens",
                limit=self.tokens,
                needed=self.spent_tokens + self._held_tokens + tokens,
                unit="tokens",
            )
        if self.usd is not None and self.spent_usd + self._held_usd + usd > self.usd + 1e-12:
            raise BudgetExceeded(
                f"USD budget: ${self.spent_usd:.6f} spent + ${self._held_usd:.6f} held + "
                f"${usd:.6f} for this call > limit ${self.usd:.6f}; raise the budget or lower "
                "max_tokens",
                limit=self.usd,
                needed=self.spent_usd + self._held_usd + usd,
                unit="usd",
            )
        self._held_tokens += tokens
        self._held_usd += usd
        return Reservation(tokens, usd)

    async def reserve_or_refill(self, *, tokens: int, usd: float) -> Reservation:
        """:meth:`reserve`; if the call does not fit and the budget can be refilled, ask
        for more once and try again."""
        try:
            return self.reserve(tokens=tokens, usd=usd)
        except BudgetExceeded:
            if self.refill is None or not await self.refill(tokens, usd):
                raise
        return self.reserve(tokens=tokens, usd=usd)

    def settle(self, reservation: Reservation, *, tokens: int, usd: float) -> None:
        """Replace the hold by actual usage (which may exceed the estimate)."""
        self.release(reservation)
        self.charge(tokens=tokens, usd=usd)

    def charge(self, *, tokens: int, usd: float) -> None:
        """Count spending that was reserved and settled elsewhere (another worker)."""
        self.spent_tokens += tokens
        self.spent_usd += usd

    def release(self, reservation: Reservation) -> None:
        if not reservation.open:
            return
        reservation.open = False
        self._held_tokens -= reservation.tokens
        self._held_usd -= reservation.usd

    def __repr__(self) -> str:
        return (
            f"Budget(usd={self.usd}, tokens={self.tokens}, spent_usd={self.spent_usd:.6f}, "
            f"spent_tokens={self.spent_tokens}, held_tokens={self._held_tokens})"
        )
