"""``SessionStore``: what the engine needs of a session store; ``SessionRecord``: one session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from fanout.types import Message

__all__ = ["SessionRecord", "SessionStore"]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session as stored: its history (chat messages), its state as JSON, its version.

    ``version`` is 0 for a session never saved; each save adds one.
    """

    session_id: str
    messages: list[Message] = field(default_factory=list)
    state_json: str | None = None
    version: int = 0


@runtime_checkable
class SessionStore(Protocol):
    """Sessions with a lease: one run holds a session from :meth:`acquire` to
    :meth:`save` or :meth:`release`; another run's ``acquire`` meanwhile raises
    :class:`fanout.errors.SessionBusy`. Calls are short and blocking (the engine runs
    them in a thread)."""

    def acquire(self, session_id: str, owner: str, ttl_s: float) -> SessionRecord:
        """Lease the session to ``owner`` for ``ttl_s`` seconds and return it (empty if new)."""
        ...

    def save(
        self,
        session_id: str,
        owner: str,
        *,
        messages: list[Message],
        state_json: str | None,
        version: int,
    ) -> int:
        """Write the session if ``owner`` still holds it at ``version``; release it;
        return the new version. Raises ``SessionBusy`` if the lease was lost."""
        ...

    def release(self, session_id: str, owner: str) -> None:
        """Give the lease up without writing (a failed run)."""
        ...

    def load(self, session_id: str) -> SessionRecord:
        """The session as last saved (empty if none), without leasing it."""
        ...
