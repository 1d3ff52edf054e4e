"""The emulator's Message Batches API against Anthropic's documented shapes, through our client
(``AnthropicBatchAPI``) and the official SDK: lifecycle, request counts, results, errored
lines, expiry, cancel, envelope validation, finding a batch whose submit answer was lost,
and the key kept out of errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from fanout.errors import ProviderHTTPError, ProviderTimeout
from fanout.providers import AnthropicBatchAPI
from fanout.sim.server import BatchEmulatorConfig, EmulatorConfig, EmulatorServer
from fanout.types import ChatRequest

KEY = "sk-ant-test-emulated-0123456789"


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorServer]:
    batch = getattr(request, "param", BatchEmulatorConfig(delay_s=0.2))
    with EmulatorServer(EmulatorConfig(batch=batch, api_key=KEY)) as server:
        yield server


def _api(server: EmulatorServer, key: str = KEY) -> AnthropicBatchAPI:
    return AnthropicBatchAPI("emu", api_key=key, base_url=server.base_url)


def _requests(n: int, marker: str = "") -> list[ChatRequest]:
    return [
        ChatRequest(
            "sim-small",
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Summarize: note {i}{marker}"},
            ],
            20,
        )
        for i in range(n)
    ]


def _payload(api: AnthropicBatchAPI, requests: list[ChatRequest], prefix: str) -> bytes:
    return b"".join(api.encode(f"{prefix}{i}", r) for i, r in enumerate(requests))


async def _until_ended(api: AnthropicBatchAPI, batch_id: str) -> list[str]:
    states: list[str] = []
    for _ in range(400):
        status = await api.poll(batch_id)
        if not states or states[-1] != status.state:
            states.append(status.state)
        if status.ended:
            return states
        await asyncio.sleep(0.01)
    raise AssertionError(f"batch {batch_id} never ended: {states}")


async def test_a_batch_runs_then_answers_every_line_as_the_messages_api_does(
    emulator: EmulatorServer,
) -> None:
    api = _api(emulator)
    requests = _requests(5)
    status = await api.submit(_payload(api, requests, "id-"), label="job-1")
    assert status.state == "in_progress" and status.total == 5
    assert status.completed == 0 and status.output_ref is None  # counts wait for the end
    assert (await _until_ended(api, status.batch_id))[-1] == "completed"
    done = await api.poll(status.batch_id)
    assert (done.total, done.completed, done.failed) == (5, 5, 0)
    assert done.ended_at is not None and done.created_at is not None
    assert done.created_at <= done.ended_at
    results = await api.results(done)
    assert sorted(r.custom_id for r in results) == [f"id-{i}" for i in range(5)]
    # the same simulated model as POST /v1/messages: the same reply and usage
    async with httpx.AsyncClient(base_url=emulator.base_url) as client:
        body = {"model": "sim-small", "max_tokens": 20, "system": "Be brief.",
                "messages": [{"role": "user", "content": "Summarize: note 0"}]}  # fmt: skip
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        online = (await client.post("/messages", json=body, headers=headers)).json()
    first = next(r for r in results if r.custom_id == "id-0").response
    assert first is not None and first.content == online["content"][0]["text"]
    assert first.usage.output_tokens == online["usage"]["output_tokens"]
    assert first.usage.input_tokens == online["usage"]["input_tokens"]
    await api.aclose()


async def test_errored_lines_come_back_classified_and_retryable(emulator: EmulatorServer) -> None:
    api = _api(emulator)
    payload = _payload(api, _requests(2, " [sim:fail]"), "f") + _payload(api, _requests(1), "ok")
    status = await api.submit(payload, label="failing")
    await _until_ended(api, status.batch_id)
    done = await api.poll(status.batch_id)
    assert (done.completed, done.failed) == (1, 2)
    results = {r.custom_id: r for r in await api.results(done)}
    failed = [results["f0"].error, results["f1"].error]
    assert all(isinstance(e, ProviderHTTPError) and e.retryable for e in failed)
    assert all(e is not None and e.status_code == 500 for e in failed)
    assert results["ok0"].response is not None
    async with httpx.AsyncClient() as client:
        root = emulator.base_url.removesuffix("/v1")
        stats = (await client.get(f"{root}/stats/messages/batches")).json()
    assert (stats["lines_completed"], stats["lines_failed"]) == (1, 2)
    await api.aclose()


@pytest.mark.parametrize(
    "emulator", [BatchEmulatorConfig(delay_s=1.0, expire_s=0.5)], indirect=True
)
async def test_an_expired_batch_keeps_what_it_answered(emulator: EmulatorServer) -> None:
    api = _api(emulator)
    status = await api.submit(_payload(api, _requests(10), "e"), label="expiring")
    assert (await _until_ended(api, status.batch_id))[-1] == "expired"
    results = await api.results(await api.poll(status.batch_id))
    answered = [r for r in results if r.response is not None]
    expired = [r for r in results if isinstance(r.error, ProviderTimeout)]
    assert answered and expired and len(answered) + len(expired) == 10
    await api.aclose()


@pytest.mark.parametrize("emulator", [BatchEmulatorConfig(delay_s=5.0)], indirect=True)
async def test_cancel_ends_the_batch_with_the_rest_canceled(emulator: EmulatorServer) -> None:
    api = _api(emulator)
    status = await api.submit(_payload(api, _requests(3), "c"), label="cancelled")
    assert (await api.cancel(status.batch_id)).state == "cancelling"
    assert (await _until_ended(api, status.batch_id))[-1] == "cancelled"
    results = await api.results(await api.poll(status.batch_id))
    assert len(results) == 3 and all(isinstance(r.error, ProviderTimeout) for r in results)
    with pytest.raises(ProviderHTTPError, match="only in_progress"):
        await api.cancel(status.batch_id)
    await api.aclose()


@pytest.mark.parametrize(
    ("ids", "match"),
    [(["a", "a"], "not unique"), (["x" * 65], "1-64 letters"), (["a b"], "1-64 letters")],
)
async def test_a_bad_envelope_is_refused_at_create(
    emulator: EmulatorServer, ids: list[str], match: str
) -> None:
    api = _api(emulator)
    payload = b"".join(api.encode(c, _requests(1)[0]) for c in ids)
    with pytest.raises(ProviderHTTPError, match=match) as caught:
        await api.submit(payload, label="bad")
    assert caught.value.status_code == 400 and not caught.value.retryable
    await api.aclose()


def test_a_params_body_that_is_no_messages_request_is_an_errored_line(
    emulator: EmulatorServer,
) -> None:
    body = {"requests": [{"custom_id": "bad", "params": {"model": "sim-small"}}]}
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=emulator.base_url, headers=headers) as client:
        created = client.post("/messages/batches", json=body).json()
        deadline = time.monotonic() + 10
        while (batch := client.get(f"/messages/batches/{created['id']}").json())[
            "processing_status"
        ] != "ended":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        line = client.get(batch["results_url"]).json()
    assert line["result"]["type"] == "errored"
    assert line["result"]["error"]["error"]["type"] == "invalid_request_error"


async def test_find_recognises_the_batch_of_a_payload(emulator: EmulatorServer) -> None:
    """No labels on Anthropic's batches: a lost submit is found by its size, its time and
    (once it ended) its custom ids; another job's batch of the same size is not taken."""
    api = _api(emulator)
    since = time.time() - 60
    ours = _payload(api, _requests(3), "ours-")
    other = _payload(api, _requests(3, " other"), "other-")
    assert await api.find("x", since=since, payload=ours) is None
    theirs = await api.submit(other, label="theirs")
    await _until_ended(api, theirs.batch_id)
    assert await api.find("x", since=since, payload=ours) is None  # ended, not ours
    await api.submit(_payload(api, _requests(2), "two-"), label="smaller")
    made = await api.submit(ours, label="ours")
    found = await api.find("x", since=since, payload=ours)
    assert found is not None and found.batch_id == made.batch_id  # running, of our size
    await _until_ended(api, made.batch_id)
    found = await api.find("x", since=since, payload=ours)
    assert found is not None and found.batch_id == made.batch_id  # ended, with our ids
    assert await api.find("x", since=time.time() + 60, payload=ours) is None
    await api.aclose()


async def test_the_key_stays_out_of_errors_and_reprs(emulator: EmulatorServer) -> None:
    wrong = "sk-ant-wrong-key-that-must-not-leak-42"
    api = _api(emulator, key=wrong)
    with pytest.raises(ProviderHTTPError) as caught:
        await api.submit(_payload(api, _requests(1), "k"), label="k")
    assert caught.value.status_code == 401 and not caught.value.retryable
    assert wrong not in str(caught.value) and wrong not in repr(caught.value)
    assert wrong not in repr(api)
    await api.aclose()


def test_the_official_sdk_drives_the_emulated_message_batches(emulator: EmulatorServer) -> None:
    from anthropic import Anthropic

    root = emulator.base_url.removesuffix("/v1")
    with Anthropic(base_url=root, api_key=KEY, max_retries=0) as sdk:
        batch = sdk.messages.batches.create(
            requests=[
                {
                    "custom_id": f"r{i}",
                    "params": {
                        "model": "sim-small",
                        "max_tokens": 20,
                        "messages": [{"role": "user", "content": f"Summarize: n{i}"}],
                    },
                }
                for i in range(3)
            ]
        )
        assert batch.type == "message_batch" and batch.processing_status == "in_progress"
        assert batch.request_counts.processing == 3 and batch.results_url is None
        deadline = time.monotonic() + 10
        while (batch := sdk.messages.batches.retrieve(batch.id)).processing_status != "ended":
            assert time.monotonic() < deadline, batch.processing_status
            time.sleep(0.02)
        assert batch.request_counts.succeeded == 3 and batch.request_counts.processing == 0
        assert batch.ended_at is not None and batch.expires_at > batch.created_at
        out = list(sdk.messages.batches.results(batch.id))
        assert sorted(x.custom_id for x in out) == ["r0", "r1", "r2"]
        assert all(x.result.type == "succeeded" for x in out)
        first = out[0].result
        assert first.type == "succeeded" and first.message.usage.output_tokens > 0
        assert [b.id for b in sdk.messages.batches.list(limit=5)] == [batch.id]
        assert sdk.messages.batches.delete(batch.id).type == "message_batch_deleted"
