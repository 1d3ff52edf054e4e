"""The emulator's Files and Batch APIs against OpenAI's documented shapes, through our client
(``OpenAIBatchAPI``) and raw HTTP: lifecycle, request counts, output/error files, expiry,
cancel, validation failures, the enqueued-token limit and listing by label."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from fanout.errors import ProviderHTTPError, ProviderTimeout
from fanout.providers import OpenAIBatchAPI
from fanout.sim.server import BatchEmulatorConfig, EmulatorConfig, EmulatorServer
from fanout.types import ChatRequest


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorServer]:
    batch = getattr(request, "param", BatchEmulatorConfig(delay_s=0.2))
    with EmulatorServer(EmulatorConfig(batch=batch)) as server:
        yield server


def _requests(n: int, marker: str = "", model: str = "sim-small") -> list[ChatRequest]:
    return [
        ChatRequest(model, [{"role": "user", "content": f"Summarize: note {i}{marker}"}], 20)
        for i in range(n)
    ]


async def _until_ended(api: OpenAIBatchAPI, batch_id: str) -> list[str]:
    states = []
    for _ in range(400):
        status = await api.poll(batch_id)
        if not states or states[-1] != status.state:
            states.append(status.state)
        if status.ended:
            return states
        await asyncio.sleep(0.01)
    raise AssertionError(f"batch {batch_id} never ended: {states}")


async def test_a_batch_goes_through_its_lifecycle_and_answers_every_line(
    emulator: EmulatorServer,
) -> None:
    api = OpenAIBatchAPI("emu", base_url=emulator.base_url)
    requests = _requests(5)
    payload = b"".join(api.encode(f"id-{i}", r) for i, r in enumerate(requests))
    status = await api.submit(payload, label="job-1")
    assert status.state == "validating"
    states = await _until_ended(api, status.batch_id)
    assert states[0] == "validating" and states[-1] == "completed"
    assert "in_progress" in states
    done = await api.poll(status.batch_id)
    assert (done.total, done.completed, done.failed) == (5, 5, 0)
    assert done.error_ref is None and done.ended_at is not None
    results = await api.results(done)
    assert sorted(r.custom_id for r in results) == [f"id-{i}" for i in range(5)]
    assert all(r.response is not None and r.response.content for r in results)
    # the same simulated model as online: the same replies
    online = await emulator_reply(emulator, requests[0])
    by_id = {r.custom_id: r for r in results}
    assert by_id["id-0"].response is not None and by_id["id-0"].response.content == online
    await api.aclose()


async def emulator_reply(emulator: EmulatorServer, request: ChatRequest) -> str:
    async with httpx.AsyncClient(base_url=emulator.base_url) as client:
        body = {"model": request.model, "messages": request.messages, "max_tokens": 20}
        data = (await client.post("/chat/completions", json=body)).json()
    return str(data["choices"][0]["message"]["content"])


def test_the_wire_shapes_are_openais(emulator: EmulatorServer) -> None:
    with httpx.Client(base_url=emulator.base_url) as client:
        _check_wire_shapes(client)


def _check_wire_shapes(client: httpx.Client) -> None:
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]},
    }
    bad = {
        **line,
        "custom_id": "b",
        "body": {
            **line["body"],
            "messages": [  # type: ignore[dict-item]
                {"role": "user", "content": "hi [sim:fail]"}
            ],
        },
    }
    data = (json.dumps(line) + "\n" + json.dumps(bad) + "\n").encode()
    file = client.post("/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"})
    assert file.status_code == 200
    assert {"id", "object", "bytes", "created_at", "filename", "purpose"} <= set(file.json())
    assert file.json()["object"] == "file" and file.json()["bytes"] == len(data)
    created = client.post(
        "/batches",
        json={
            "input_file_id": file.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"k": "v"},
        },
    ).json()
    fields = {
        "id",
        "object",
        "endpoint",
        "errors",
        "input_file_id",
        "completion_window",
        "status",
        "output_file_id",
        "error_file_id",
        "created_at",
        "in_progress_at",
        "expires_at",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
        "request_counts",
        "metadata",
    }
    assert fields <= set(created)
    assert created["object"] == "batch" and created["status"] == "validating"
    assert created["metadata"] == {"k": "v"}
    deadline = time.monotonic() + 10
    while (batch := client.get(f"/batches/{created['id']}").json())["status"] != "completed":
        assert time.monotonic() < deadline, batch
        time.sleep(0.02)
    assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    out = client.get(f"/files/{batch['output_file_id']}/content").content.splitlines()
    err = client.get(f"/files/{batch['error_file_id']}/content").content.splitlines()
    ok, failed = json.loads(out[0]), json.loads(err[0])
    assert ok["custom_id"] == "a" and ok["error"] is None
    assert ok["response"]["status_code"] == 200
    assert ok["response"]["body"]["object"] == "chat.completion"
    assert {"prompt_tokens", "completion_tokens", "total_tokens"} <= set(
        ok["response"]["body"]["usage"]
    )
    assert failed["custom_id"] == "b" and failed["response"]["status_code"] == 500
    page = client.get("/batches", params={"limit": 1}).json()
    assert page["object"] == "list" and page["data"][0]["id"] == created["id"]
    assert client.get("/batches/batch_nope").status_code == 404
    assert (
        client.post(
            "/batches",
            json={
                "input_file_id": file.json()["id"],
                "endpoint": "/v1/embeddings",
                "completion_window": "24h",
            },
        ).status_code
        == 400
    )


async def test_failed_lines_come_back_as_errors_the_engine_retries(
    emulator: EmulatorServer,
) -> None:
    api = OpenAIBatchAPI("emu", base_url=emulator.base_url)
    payload = b"".join(api.encode(f"f{i}", r) for i, r in enumerate(_requests(2, " [sim:fail]")))
    status = await api.submit(payload, label="failing")
    await _until_ended(api, status.batch_id)
    results = await api.results(await api.poll(status.batch_id))
    assert [type(r.error) for r in results] == [ProviderHTTPError, ProviderHTTPError]
    assert all(r.error is not None and r.error.retryable for r in results)
    await api.aclose()


@pytest.mark.parametrize(
    "emulator", [BatchEmulatorConfig(delay_s=1.0, expire_s=0.5)], indirect=True
)
async def test_an_expired_batch_keeps_what_it_answered(emulator: EmulatorServer) -> None:
    api = OpenAIBatchAPI("emu", base_url=emulator.base_url)
    payload = b"".join(api.encode(f"e{i}", r) for i, r in enumerate(_requests(10)))
    status = await api.submit(payload, label="expiring")
    assert (await _until_ended(api, status.batch_id))[-1] == "expired"
    results = await api.results(await api.poll(status.batch_id))
    answered = [r for r in results if r.response is not None]
    expired = [r for r in results if isinstance(r.error, ProviderTimeout)]
    assert answered and expired and len(answered) + len(expired) == 10
    await api.aclose()


async def test_cancel_leaves_partial_results(emulator: EmulatorServer) -> None:
    api = OpenAIBatchAPI("emu", base_url=emulator.base_url)
    payload = b"".join(api.encode(f"c{i}", r) for i, r in enumerate(_requests(3)))
    status = await api.submit(payload, label="cancelled")
    assert (await api.cancel(status.batch_id)).state == "cancelling"
    assert (await _until_ended(api, status.batch_id))[-1] == "cancelled"
    await api.aclose()


@pytest.mark.parametrize(
    ("lines", "code"),
    [
        ([("a", "sim-small"), ("a", "sim-small")], "duplicate_custom_id"),
        ([("a", "sim-small"), ("b", "sim-large")], "mismatched_model"),
    ],
)
async def test_a_bad_input_file_fails_validation(
    emulator: EmulatorServer, lines: list[tuple[str, str]], code: str
) -> None:
    api = OpenAIBatchAPI("emu", base_url=emulator.base_url)
    payload = b"".join(api.encode(cid, _requests(1, model=model)[0]) for cid, model in lines)
    status = await api.submit(payload, label="bad")
    assert (await _until_ended(api, status.batch_id))[-1] == "failed"
    failed = await api.poll(status.batch_id)
    assert failed.error_code == code and failed.error_message
    await api.aclose()


@pytest.mark.parametrize(
    "emulator", [BatchEmulatorConfig(delay_s=5.0, queue_tokens=200)], indirect=True
)
async def test_the_enqueued_token_limit_fails_a_batch_that_would_pass_it(
    emulator: EmulatorServer,
) -> None:
    api = OpenAIBatchAPI("emu", base_url=emulator.base_url)
    payload = b"".join(api.encode(f"q{i}", r) for i, r in enumerate(_requests(10)))
    first = await api.submit(payload, label="first")
    await asyncio.sleep(0.1)
    assert (await api.poll(first.batch_id)).state == "in_progress"
    second = await api.submit(payload, label="second")
    assert (await _until_ended(api, second.batch_id))[-1] == "failed"
    assert (await api.poll(second.batch_id)).error_code == "token_limit_exceeded"
    await api.aclose()


async def test_find_recognises_a_batch_by_its_label(emulator: EmulatorServer) -> None:
    api = OpenAIBatchAPI("emu", base_url=emulator.base_url)
    payload = api.encode("x", _requests(1)[0])
    made = [await api.submit(payload, label=f"label-{i}") for i in range(3)]
    found = await api.find("label-0", since=time.time() - 60)
    assert found is not None and found.batch_id == made[0].batch_id
    assert await api.find("label-missing", since=time.time() - 60) is None
    await api.aclose()


def test_the_official_sdk_drives_the_emulated_batch_api(emulator: EmulatorServer) -> None:
    import io

    from openai import OpenAI

    with OpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0) as sdk:
        lines = [
            json.dumps(
                {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": "sim-small",
                        "max_tokens": 20,
                        "messages": [{"role": "user", "content": f"Summarize: n{i}"}],
                    },
                }
            )
            for i in range(3)
        ]
        upload = ("in.jsonl", io.BytesIO("\n".join(lines).encode()))
        file = sdk.files.create(file=upload, purpose="batch")
        batch = sdk.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert batch.status == "validating"
        deadline = time.monotonic() + 10
        while (batch := sdk.batches.retrieve(batch.id)).status != "completed":
            assert time.monotonic() < deadline, batch.status
            time.sleep(0.02)
        assert batch.request_counts is not None and batch.request_counts.completed == 3
        assert batch.output_file_id is not None
        out = [json.loads(x) for x in sdk.files.content(batch.output_file_id).text.splitlines()]
        assert sorted(x["custom_id"] for x in out) == ["r0", "r1", "r2"]
        assert [b.id for b in sdk.batches.list(limit=5)] == [batch.id]
        assert sdk.files.delete(file.id).deleted
