"""``BatchClient`` over an in-memory Batch API: an outage waits, a refusal fails the calls, a
cancelled call's line is claimed by the next call of the same request (not sent again),
an unsent one is dropped, and a later client claims answers an earlier one never handed out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from fanout.batch import BatchClient
from fanout.batch._batch_log import BatchLog
from fanout.config import BatchProviderConfig
from fanout.errors import ProviderConnectionError, ProviderHTTPError
from fanout.providers import BatchStatus, LineResult
from fanout.sim import SimProvider
from fanout.types import ChatRequest, ChatResponse, Usage

SETTINGS = BatchProviderConfig(poll_initial_s=0.01, poll_max_s=0.02, flush_idle_s=0.02)


class MemoryBatchAPI:
    """Answers every line ``Re: <prompt>`` once a batch has been polled ``polls`` times."""

    name = "mem"
    max_requests = 1000
    max_bytes = 10_000_000

    def __init__(self, *, polls: int = 1, poll_failures: int = 0, refuse: bool = False) -> None:
        self.polls, self.poll_failures, self.refuse = polls, poll_failures, refuse
        self.batches: dict[str, list[dict[str, object]]] = {}
        self.seen: dict[str, int] = {}
        self.hold = asyncio.Event()
        self.hold.set()
        self.submitted = asyncio.Event()

    def encode(self, custom_id: str, request: ChatRequest) -> bytes:
        return orjson.dumps({"custom_id": custom_id, "prompt": request.messages[-1]["content"]})

    def lines(self) -> int:
        return sum(len(b) for b in self.batches.values())

    async def submit(self, payload: bytes, *, label: str) -> BatchStatus:
        if self.refuse:
            raise ProviderHTTPError("mem: HTTP 401: bad key", provider="mem", status_code=401)
        batch_id = f"batch-{len(self.batches)}"
        self.batches[batch_id] = [orjson.loads(line) for line in payload.splitlines()]
        self.seen[batch_id] = 0
        self.submitted.set()
        return BatchStatus(batch_id, "validating")

    async def find(self, label: str, *, since: float, payload: bytes) -> BatchStatus | None:
        return None

    def answer(self, request: ChatRequest, response: ChatResponse) -> ChatResponse:
        return response

    async def poll(self, batch_id: str) -> BatchStatus:
        if self.poll_failures:
            self.poll_failures -= 1
            raise ProviderConnectionError("mem: connection refused", provider="mem")
        await self.hold.wait()
        self.seen[batch_id] += 1
        done = self.seen[batch_id] >= self.polls
        return BatchStatus(batch_id, "completed" if done else "in_progress", ended_at=1.0)

    async def results(self, status: BatchStatus) -> list[LineResult]:
        return [
            LineResult(str(line["custom_id"]), ChatResponse(f"Re: {line['prompt']}", Usage(3, 2)))
            for line in self.batches[status.batch_id]
        ]

    async def cancel(self, batch_id: str) -> BatchStatus:
        return BatchStatus(batch_id, "cancelling")

    async def aclose(self) -> None:
        pass


def _client(api: MemoryBatchAPI, path: Path, writer: str = "a") -> BatchClient:
    return BatchClient(
        SimProvider("mem", latency_ms=0),
        api,
        BatchLog(path, writer_id=writer),  # type: ignore[arg-type]
        clock=SimProvider().clock,
        settings=SETTINGS,
    )


def _request(text: str) -> ChatRequest:
    return ChatRequest("m", [{"role": "user", "content": text}], 10)


async def test_an_outage_of_the_batch_api_waits_and_the_call_answers(tmp_path: Path) -> None:
    api = MemoryBatchAPI(poll_failures=2)
    client = _client(api, tmp_path)
    reply = await asyncio.wait_for(client.complete(_request("hello")), 30)
    assert reply.content == "Re: hello"
    assert reply.batch is not None and reply.batch.batch_id == "batch-0"
    await client.aclose()


async def test_a_refused_batch_fails_its_calls(tmp_path: Path) -> None:
    client = _client(MemoryBatchAPI(refuse=True), tmp_path)
    with pytest.raises(ProviderHTTPError, match="401"):
        await asyncio.wait_for(client.complete(_request("hello")), 30)
    await client.aclose()


async def test_a_cancelled_calls_line_is_claimed_not_sent_again(tmp_path: Path) -> None:
    api = MemoryBatchAPI(polls=1)
    api.hold.clear()  # the batch does not answer until released
    client = _client(api, tmp_path)
    first = asyncio.ensure_future(client.complete(_request("same")))
    await asyncio.wait_for(api.submitted.wait(), 30)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    second = asyncio.ensure_future(client.complete(_request("same")))
    await asyncio.sleep(0.05)
    api.hold.set()
    assert (await asyncio.wait_for(second, 30)).content == "Re: same"
    assert api.lines() == 1
    await client.aclose()


async def test_an_unsent_line_whose_call_was_cancelled_is_dropped(tmp_path: Path) -> None:
    api = MemoryBatchAPI()
    client = _client(api, tmp_path)
    gone = asyncio.ensure_future(client.complete(_request("never sent")))
    await asyncio.sleep(0)  # buffered, not cut yet (flush_idle_s has not passed)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert (await asyncio.wait_for(client.complete(_request("kept")), 30)).content == "Re: kept"
    assert [line["prompt"] for b in api.batches.values() for line in b] == ["kept"]
    await client.aclose()


async def test_a_later_client_claims_an_answer_never_handed_out(tmp_path: Path) -> None:
    api = MemoryBatchAPI()
    first = _client(api, tmp_path, "first")
    waiting = asyncio.ensure_future(first.complete(_request("owed")))
    await asyncio.wait_for(api.submitted.wait(), 30)
    waiting.cancel()  # the process "dies" with its batch submitted
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await first.aclose()
    second = _client(api, tmp_path, "second")  # a later run: polls the logged batch
    reply = await asyncio.wait_for(second.complete(_request("owed")), 30)
    assert reply.content == "Re: owed" and reply.batch is not None
    assert api.lines() == 1  # collected, not submitted again
    await second.aclose()
    third = _client(api, tmp_path, "third")  # delivered now: a new call is a new line
    await asyncio.wait_for(third.complete(_request("owed")), 30)
    assert api.lines() == 2
    await third.aclose()
