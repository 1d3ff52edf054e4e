"""A streamed attempt's tap: the time of its first token, its chunks, and the tokens
told to whoever listens (a service's caller) as :class:`TokenEvent` s."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fanout.clock import Clock
from fanout.types import ToolCallDelta

__all__ = ["TokenEvent", "TokenTap"]


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """A piece of a streamed reply as it arrived, or (``discard``) word that the
    attempt's pieces so far are void: it failed (a cut stream, a timeout) and the call
    is tried again, or lost to a hedge. ``attempt`` counts per model of the chain.
    ``tool_call``: a piece of a tool call (``text`` is then empty), from a provider that
    streams them; others give their tool calls whole, in the reply."""

    node_id: str
    text: str
    attempt: int
    map_index: int | None = None
    discard: bool = False
    tool_call: ToolCallDelta | None = None


class TokenTap:
    """``on_delta`` of one streamed attempt: notes when the first piece came and how
    many came, and passes each on to ``listener`` (``None``: nobody listens, or a
    hedge's duplicate, whose pieces would interleave with the first attempt's)."""

    __slots__ = ("_clock", "_listener", "attempt", "chunks", "first_at", "map_index", "node_id")

    def __init__(
        self,
        clock: Clock,
        listener: Callable[[TokenEvent], None] | None,
        node_id: str,
        map_index: int | None,
        attempt: int,
    ) -> None:
        self._clock = clock
        self._listener = listener
        self.node_id = node_id
        self.map_index = map_index
        self.attempt = attempt
        self.chunks = 0
        self.first_at: float | None = None

    def __call__(self, text: str) -> None:
        if self.first_at is None:
            self.first_at = self._clock.now()
        self.chunks += 1
        if self._listener is not None:
            self._listener(TokenEvent(self.node_id, text, self.attempt, self.map_index))

    def tool_call(self, piece: ToolCallDelta) -> None:
        """A piece of a tool call (the tap is a :class:`fanout.providers.ToolCallListener`)."""
        if self.first_at is None:
            self.first_at = self._clock.now()
        self.chunks += 1
        if self._listener is not None:
            event = TokenEvent(self.node_id, "", self.attempt, self.map_index, tool_call=piece)
            self._listener(event)

    def discard(self) -> None:
        """The attempt failed: what it passed on is void."""
        if self._listener is not None and self.chunks:
            self._listener(TokenEvent(self.node_id, "", self.attempt, self.map_index, discard=True))
