"""The HTTP provider's transport habits: deadlines that measure the
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
    await provider.aclose()
    assert all(KEY not in text for text in shown)
    assert "**********" in repr(vars(provider)["_api_key"])
