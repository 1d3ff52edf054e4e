"""``AnthropicBatchAPI`` over ``httpx.MockTransport``: the request it sends, how it reads
batch states, and how it reads each kind of result line (errors as the online path
classifies them; tool calls, cache usage and structured answers as online)."""

from __future__ import annotations

import json

import httpx
import orjson
import pytest
from pydantic import BaseModel

from fanout.errors import ProviderHTTPError, ProviderTimeout, RateLimited, RequestTooLarge
from fanout.providers import AnthropicBatchAPI, BatchStatus
from fanout.providers._anthropic_batch import batch_status
from fanout.types import ChatRequest, ToolSpec

KEY = "sk-ant-unit-0123456789abcdef"
BASE = "https://api.anthropic.test/v1"


def _message(content: list[dict[str, object]], stop: str = "end_turn") -> dict[str, object]:
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": content, "stop_reason": stop,
        "usage": {"input_tokens": 10, "output_tokens": 5,
                  "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7},
    }  # fmt: skip


def _errored(kind: str, message: str) -> dict[str, object]:
    return {"type": "errored",
            "error": {"type": "error", "error": {"type": kind, "message": message}}}  # fmt: skip


RESULTS = [
    {"custom_id": "ok", "result": {"type": "succeeded", "message": _message(
        [{"type": "text", "text": "Let me look."},
         {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "x"}}],
        "tool_use")}},
    {"custom_id": "long", "result": _errored(
        "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum")},
    {"custom_id": "limited", "result": _errored("rate_limit_error", "Rate limited")},
    {"custom_id": "busy", "result": _errored("overloaded_error", "Overloaded")},
    {"custom_id": "bad", "result": _errored("invalid_request_error", f"bad field; key {KEY}")},
    {"custom_id": "late", "result": {"type": "expired"}},
    {"custom_id": "stopped", "result": {"type": "canceled"}},
]  # fmt: skip


def _api(seen: list[httpx.Request], results_host: str = "api.anthropic.test") -> AnthropicBatchAPI:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/results"):
            body = b"".join(orjson.dumps(r) + b"\n" for r in RESULTS)
            return httpx.Response(200, content=body)
        return httpx.Response(200, json={
            "id": "msgbatch_1", "type": "message_batch", "processing_status": "ended",
            "request_counts": {"processing": 0, "succeeded": 1, "errored": 4, "canceled": 1,
                               "expired": 1},
            "created_at": "2024-08-20T18:37:24.100435Z", "ended_at": "2024-08-20T19:00:00Z",
            "expires_at": "2024-08-21T18:37:24.100435Z", "cancel_initiated_at": None,
            "results_url": f"https://{results_host}/v1/messages/batches/msgbatch_1/results",
        })  # fmt: skip

    return AnthropicBatchAPI(
        "claude", api_key=KEY, base_url=BASE, transport=httpx.MockTransport(handle)
    )


async def test_submit_sends_the_requests_as_messages_api_bodies() -> None:
    seen: list[httpx.Request] = []
    api = _api(seen)
    tool = ToolSpec("search", "Search the web.", {"type": "object", "properties": {}})
    request = ChatRequest(
        "claude-x",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        30,
        tools=(tool,),
    )
    payload = api.encode("a", request) + api.encode("b", request)
    status = await api.submit(payload, label="job")
    sent = json.loads(seen[0].content)
    assert seen[0].method == "POST" and seen[0].url.path == "/v1/messages/batches"
    assert seen[0].headers["x-api-key"] == KEY and seen[0].headers["anthropic-version"]
    assert [r["custom_id"] for r in sent["requests"]] == ["a", "b"]
    params = sent["requests"][0]["params"]
    assert params["system"] == [{"type": "text", "text": "Be brief."}]
    assert params["tools"][0]["input_schema"] == tool.parameters
    assert (params["model"], params["max_tokens"]) == ("claude-x", 30)
    assert status.state == "expired" and status.total == 7  # a line expired
    assert (status.completed, status.failed) == (1, 4)
    assert status.ended_at is not None and status.created_at is not None
    assert status.ended_at - status.created_at == pytest.approx(22 * 60 + 35.899565)
    await api.aclose()


async def test_each_result_line_reads_as_the_online_reply_or_error_would() -> None:
    seen: list[httpx.Request] = []
    api = _api(seen)
    status = await api.poll("msgbatch_1")
    results = {r.custom_id: r for r in await api.results(status)}
    ok = results["ok"].response
    assert ok is not None and ok.content == "Let me look." and ok.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in ok.tool_calls] == [("search", {"q": "x"})]
    # input counts the cache's reads and writes, as online
    assert (ok.usage.input_tokens, ok.usage.cached_input_tokens) == (117, 100)
    assert (ok.usage.cache_write_tokens, ok.usage.output_tokens) == (7, 5)
    assert isinstance(results["long"].error, RequestTooLarge)
    assert not results["long"].error.retryable
    assert isinstance(results["limited"].error, RateLimited)
    busy = results["busy"].error
    assert isinstance(busy, ProviderHTTPError) and busy.status_code == 529 and busy.retryable
    bad = results["bad"].error
    assert isinstance(bad, ProviderHTTPError) and bad.status_code == 400 and not bad.retryable
    assert KEY not in str(bad)
    for custom_id in ("late", "stopped"):
        assert isinstance(results[custom_id].error, ProviderTimeout)
    assert seen[-1].url.host == "api.anthropic.test"
    await api.aclose()


async def test_a_results_url_on_another_host_is_not_sent_the_key() -> None:
    seen: list[httpx.Request] = []
    api = _api(seen, results_host="elsewhere.test")
    await api.results(await api.poll("msgbatch_1"))
    assert seen[-1].url.host == "api.anthropic.test"
    assert seen[-1].url.path == "/v1/messages/batches/msgbatch_1/results"
    await api.aclose()


class Verdict(BaseModel):
    label: str


def test_a_structured_answer_through_the_output_tool_becomes_the_content() -> None:
    from fanout.providers._anthropic import message_response

    api = AnthropicBatchAPI("claude", api_key=KEY, base_url=BASE)
    request = ChatRequest(
        "claude-x", [{"role": "user", "content": "rate"}], 30,
        response_schema=Verdict.model_json_schema(), response_schema_name="Verdict",
    )  # fmt: skip
    body = json.loads(api.encode("s", request))["params"]
    assert body["tool_choice"] == {"type": "tool", "name": "Verdict"}
    reply = message_response(_message(
        [{"type": "tool_use", "id": "t", "name": "Verdict", "input": {"label": "good"}}],
        "tool_use",
    ))  # fmt: skip
    answer = api.answer(request, reply)
    assert json.loads(answer.content or "") == {"label": "good"}
    assert answer.finish_reason == "stop" and not answer.tool_calls
    plain = ChatRequest("claude-x", [{"role": "user", "content": "hi"}], 30)
    assert api.answer(plain, reply) is reply


@pytest.mark.parametrize(
    ("processing", "extra", "state"),
    [
        ("in_progress", {}, "in_progress"),
        ("canceling", {}, "cancelling"),
        ("ended", {}, "completed"),
        ("ended", {"expired": 2}, "expired"),
        ("ended", {"cancel_initiated_at": "2024-08-20T18:40:00Z"}, "cancelled"),
    ],
)
def test_processing_status_maps_onto_the_neutral_states(
    processing: str, extra: dict[str, object], state: str
) -> None:
    counts = {"processing": 0, "succeeded": 3, "errored": 0, "canceled": 0, "expired": 0}
    counts.update({k: v for k, v in extra.items() if k in counts})  # type: ignore[misc]
    batch = {"id": "b", "processing_status": processing, "request_counts": counts,
             "created_at": "2024-08-20T18:37:24Z",
             **{k: v for k, v in extra.items() if k not in counts}}  # fmt: skip
    status: BatchStatus = batch_status(batch)
    assert status.state == state
    assert status.ended == (processing == "ended")


async def test_from_config_sends_the_providers_headers_and_scrubs_their_secrets() -> None:
    from fanout import parse_config
    from fanout.config import AnthropicProviderConfig

    config = parse_config({
        "providers": {"claude": {"kind": "anthropic", "base_url": BASE, "api_key_env": "K",
                                 "headers": {"anthropic-beta": "b1",
                                             "x-gateway-token": {"env": "GATEWAY"}},
                                 "query": {"tenant": "t1"}}},
        "models": {"m": {"provider": "claude", "model": "claude-x"}},
    })  # fmt: skip
    cfg = config.providers["claude"]
    assert isinstance(cfg, AnthropicProviderConfig)
    gateway = "gw-secret-token-value-42"
    seen: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        echo = f"token {request.headers['x-gateway-token']} refused"
        return httpx.Response(403, json={"type": "error", "error": {
            "type": "permission_error", "message": echo}})  # fmt: skip

    api = AnthropicBatchAPI.from_config(
        "claude", cfg, environ={"K": KEY, "GATEWAY": gateway},
        transport=httpx.MockTransport(refuse),
    )  # fmt: skip
    with pytest.raises(ProviderHTTPError) as caught:
        await api.poll("msgbatch_1")
    sent = seen[0]
    assert sent.headers["anthropic-beta"] == "b1" and sent.headers["x-api-key"] == KEY
    assert sent.url.params["tenant"] == "t1"
    assert caught.value.status_code == 403 and gateway not in str(caught.value)
    from fanout.errors import ConfigError

    with pytest.raises(ConfigError, match="'GATEWAY'"):
        AnthropicBatchAPI.from_config("claude", cfg, environ={"K": KEY})
    await api.aclose()
