"""The Provider protocol: one async chat-completion call, OpenAI message and tool schema."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from fanout.types import ChatRequest, ChatResponse

__all__ = ["Provider"]


@runtime_checkable
class Provider(Protocol):
    """A chat-completion backend.

    ``complete`` returns the reply or raises a :class:`fanout.errors.ProviderError`
    subclass; it must be cancellable (a cancelled call releases whatever it holds).
    ``timeout_s`` is the time left for this call (the request's deadline included).
    """

    name: str

    async def complete(
        self, request: ChatRequest, *, timeout_s: float | None = None
    ) -> ChatResponse: ...

    async def aclose(self) -> None: ...
