"""The HTTP provider's transport habits: one call per pool, deadlines that measure the
provider (not a busy loop), the key held as a secret."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from fanout import ChatRequest
from fanout.providers import OpenAIProvider
from fanout.providers._deadline import CallDeadline

KEY = "sk-test-SECRET-0123456789abcdef"
REQUEST = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
REPLY = {
    "model": "m",
    "choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}


async def test_no_two_calls_ever_share_a_pool() -> None:
    """httpx's pool can starve a queued request (a newcomer takes the connection it was
    given, again and again, until the pool timeout): so a call never queues in one."""
    in_flight: dict[int, int] = {}
    most = [0]

    async def handle(request: httpx.Request) -> httpx.Response:
        pool = int(request.headers["x-pool"])
        in_flight[pool] = in_flight.get(pool, 0) + 1
        most[0] = max(most[0], in_flight[pool])
        await asyncio.sleep(0.001 * (pool % 3))
        in_flight[pool] -= 1
        return httpx.Response(200, json=REPLY)

    provider = OpenAIProvider("p", base_url="http://llm.test/v1", max_connections=16,
                              transport=httpx.MockTransport(handle))  # fmt: skip
    original = provider._client

    def tagged() -> int:  # each client marks its requests, to count them per pool
        index = original()
        provider._clients[index].headers["x-pool"] = str(index)
        return index

    provider._client = tagged  # type: ignore[method-assign]
    for _ in range(5):
        await asyncio.gather(*(provider.complete(REQUEST) for _ in range(16)))
    await provider.aclose()
    assert most[0] == 1
    assert len(provider._clients) == 16  # made as needed, up to max_connections


async def test_a_timer_late_because_the_loop_was_busy_lets_an_arrived_answer_be_read() -> None:
    """The answer arrives while the loop is blocked past the deadline: a plain
    asyncio.timeout throws it away (the call is retried and billed again); CallDeadline
    reads it."""

    async def call(deadline: CallDeadline | asyncio.Timeout) -> bytes:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)

        def busy() -> None:  # the provider answers, then the loop is busy for a while
            theirs.send(b"answer\n")
            time.sleep(0.4)

        try:
            async with deadline:
                asyncio.get_running_loop().call_soon(busy)
                return await reader.readline()
        finally:
            writer.close()
            theirs.close()

    with pytest.raises(TimeoutError):
        await call(asyncio.timeout(0.1))
    deadline = CallDeadline(0.1)
    assert await call(deadline) == b"answer\n"
    assert deadline.extended == 1 and not deadline.expired()


async def test_a_call_deadline_still_cuts_a_provider_that_does_not_answer() -> None:
    deadline = CallDeadline(0.05)
    with pytest.raises(TimeoutError):
        async with deadline:
            await asyncio.sleep(10)
    assert deadline.expired()


async def test_the_key_is_a_secret_up_to_the_header() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {KEY}"  # it does reach the wire
        return httpx.Response(200, json=REPLY)

    provider = OpenAIProvider("p", base_url="http://llm.test/v1", api_key=KEY,
                              transport=httpx.MockTransport(handle))  # fmt: skip
    await provider.complete(REQUEST)
    # what a debugger or a "show locals" traceback prints of it
    shown = [repr(provider), repr(vars(provider) if hasattr(provider, "__dict__") else {})]
    shown += [repr(value) for value in vars(provider).values()]
    shown += [repr(client.headers) for client in provider._clients]
    await provider.aclose()
    assert all(KEY not in text for text in shown)
    assert "**********" in repr(vars(provider)["_api_key"])
