"""``stream: true`` on a model alias: the upstream's pieces reach the caller as they arrive.

The call is the engine's (its retries, fallbacks, hedging, limiter and the key's budget);
its streamed attempts tell the :class:`Relay` each piece (a :class:`fanout.run.TokenEvent`:
text, or a piece of a tool call). Nothing is sent before the first piece: an attempt
that fails before it is retried, or falls back, unseen, and a call that fails before it
is an HTTP error status, as a call that does not stream gets. From the first piece on
the response is under way, and an attempt that fails after sending some (a stream cut
upstream, a timeout) ends the caller's stream with an error chunk in OpenAI's shape;
the call is cancelled, so no second attempt's text ever follows the first's. A route
whose provider cannot stream answers whole: its reply goes out as one piece.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio

from fanout.run import TokenEvent
from fanout.service._openai_stream import Delta, whole_calls
from fanout.service._openai_wire import OpenAIError
from fanout.types import ChatResponse, Usage

__all__ = ["Answer", "Relay"]


@dataclass(frozen=True, slots=True)
class Answer:
    """What a gateway call gave: a reply per choice, their usage and cost, the alias."""

    answers: list[ChatResponse]
    usage: Usage
    cost_usd: float
    alias: str


_VOID = -1  # an item's index when an attempt's sent pieces are void (see Relay.listener)


class Relay:
    """The pieces of ``n`` calls (one per choice), in arrival order, to one stream."""

    __slots__ = ("_items", "_text", "_tools", "_wake", "answer", "n")

    def __init__(self, n: int) -> None:
        self.n = n
        self._items: deque[Delta] = deque()
        self._wake = asyncio.Event()
        self._text = [False] * n  # choice i's content went out piece by piece
        self._tools = [False] * n  # ... and its tool calls
        self.answer: Answer | None = None  # set once the whole stream went out

    def listener(self, index: int) -> Callable[[TokenEvent], None]:
        """The ``on_token`` of choice ``index``'s call."""

        def hear(event: TokenEvent) -> None:
            if event.discard:
                self._put(Delta(_VOID))
            elif event.tool_call is not None:
                self._put(Delta(index, tool_calls=(event.tool_call,)))
            elif event.text:
                self._put(Delta(index, content=event.text))

        return hear

    def _put(self, delta: Delta) -> None:
        self._items.append(delta)
        self._wake.set()

    async def started(self, work: asyncio.Future[Answer]) -> bool:
        """Wait for the first piece (``True``) or the end of ``work`` with none (``False``)."""
        work.add_done_callback(lambda _: self._wake.set())
        await self._arrival(work)
        return bool(self._items)

    async def _arrival(self, work: asyncio.Future[Answer]) -> None:
        while not self._items and not work.done():
            self._wake.clear()
            await self._wake.wait()

    async def deltas(
        self, work: asyncio.Future[Answer], fail: Callable[[BaseException], OpenAIError]
    ) -> AsyncIterator[Delta | OpenAIError]:
        """Each choice's role, its pieces as they come, what did not stream (whole), its
        finish; or an error once under way (``fail`` says what the caller is told of the
        call's own error). ``work`` is cancelled if the stream ends early."""
        roles = [False] * self.n
        try:
            while True:
                await self._arrival(work)
                while self._items:
                    delta = self._items.popleft()
                    if delta.index == _VOID:
                        yield _cut()
                        return
                    if not roles[delta.index]:
                        roles[delta.index] = True
                        yield Delta(delta.index, role="assistant", content="")
                    self._text[delta.index] |= delta.content is not None
                    self._tools[delta.index] |= bool(delta.tool_calls)
                    yield delta
                if work.done():
                    break
            try:
                answer = work.result()
            except BaseException as exc:  # the call failed after its first piece went out
                yield fail(exc)
                return
            for delta in self._rest(answer, roles):
                yield delta
            self.answer = answer
        finally:
            if not work.done():
                work.cancel()
                with anyio.CancelScope(shield=True):  # the response's own cancel scope
                    await asyncio.gather(work, return_exceptions=True)

    def _rest(self, answer: Answer, roles: list[bool]) -> list[Delta]:
        rest: list[Delta] = []
        for index, reply in enumerate(answer.answers):
            if not roles[index]:
                rest.append(Delta(index, role="assistant", content=""))
            if reply.content and not self._text[index]:
                rest.append(Delta(index, content=reply.content))
            if reply.tool_calls and not self._tools[index]:
                rest.append(Delta(index, tool_calls=whole_calls(reply.tool_calls)))
            rest.append(Delta(index, finish_reason=reply.finish_reason))
        return rest


def _cut() -> OpenAIError:
    return OpenAIError(
        502, "the upstream's stream broke off after its first tokens were sent to you; "
        "fanout retries a stream only before its first token (after it, a retry would "
        "send the text twice): send the request again",
        kind="server_error", code="stream_cut",
    )  # fmt: skip
