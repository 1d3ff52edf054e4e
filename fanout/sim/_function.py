"""``FunctionProvider``: a provider whose replies a test function scripts (like FunctionModel)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable

from fanout.sim._counters import CallCounters
from fanout.sim._text import sim_usage, token_count
from fanout.types import ChatRequest, ChatResponse

__all__ = ["FunctionProvider", "ReplyFunction"]

Reply = ChatResponse | str
ReplyFunction = Callable[[ChatRequest], Reply | Awaitable[Reply]]
"""``fn(request)``, sync or async, returning a :class:`ChatResponse` or just its text."""


class FunctionProvider(CallCounters):
    """A :class:`fanout.providers.Provider` that answers with ``fn(request)``.

    A ``str`` becomes a reply with that content and the simulated provider's
    usage; a :class:`ChatResponse` is returned as it is (its ``model`` filled in
    if empty). ``fn`` may raise a :class:`fanout.errors.ProviderError` to script
    a failure. Every request is kept in ``requests``, in call order, and the
    same counters as :class:`SimProvider` are kept.
    """

    def __init__(self, name: str, fn: ReplyFunction) -> None:
        super().__init__()
        self.name = name
        self._fn = fn
        self.requests: list[ChatRequest] = []

    async def complete(
        self, request: ChatRequest, *, timeout_s: float | None = None
    ) -> ChatResponse:
        self._call_started(request.model)
        self.requests.append(request)
        try:
            reply = self._fn(request)
            if inspect.isawaitable(reply):
                reply = await reply
        finally:
            self._call_ended()
        if isinstance(reply, ChatResponse):
            return reply if reply.model else dataclasses.replace(reply, model=request.model)
        return ChatResponse(
            content=reply,
            usage=sim_usage(request.messages, max(1, token_count(reply))),
            model=request.model,
        )

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"FunctionProvider({self.name!r}, calls={self.calls})"
