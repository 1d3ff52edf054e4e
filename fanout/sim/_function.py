"""``FunctionProvider``: a provider whose replies a test function scripts (like FunctionModel)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from fanout.sim._provider import sim_usage
from fanout.sim._text import token_count
from fanout.types import ChatRequest, ChatResponse

__all__ = ["FunctionProvider"]

Reply = ChatResponse | str
ReplyFn = Callable[[ChatRequest], Reply | Awaitable[Reply]]


class FunctionProvider:
    """Calls ``fn(request)`` (sync or async); a ``str`` becomes a reply with simulated usage."""

    def __init__(self, name: str, fn: ReplyFn) -> None:
        self.name = name
        self._fn = fn
        self.calls = 0
        self.calls_by_model: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[ChatRequest] = []

    async def complete(
        self, request: ChatRequest, *, timeout_s: float | None = None
    ) -> ChatResponse:
        self.calls += 1
        self.calls_by_model[request.model] = self.calls_by_model.get(request.model, 0) + 1
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            reply = self._fn(request)
            if inspect.isawaitable(reply):
                reply = await reply
        finally:
            self.in_flight -= 1
        if isinstance(reply, ChatResponse):
            return reply
        return ChatResponse(
            content=reply,
            usage=sim_usage(request.messages, token_count(reply)),
            model=request.model,
        )

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"FunctionProvider({self.name!r}, calls={self.calls})"
