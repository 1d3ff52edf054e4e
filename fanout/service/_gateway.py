"""The OpenAI-compatible gateway: ``/v1/chat/completions`` and ``/v1/models`` on the engine.

``model`` names a model alias of the config (its fallbacks, retries, circuit, hedging
and limiter apply: the call is :meth:`fanout.Engine.complete`, the path every llm step's
call takes) or a pipeline served as a model (``pipeline/NAME``: the last user message
is its input). The caller's virtual key decides the tenant, the budget (a call that
would pass it is a 429 ``insufficient_quota`` with ``retry-after`` at the period's end),
the share of each provider limit (over it, a 429 ``rate_limit_exceeded``) and the
priority at the limiters. A provider's 429 is never passed through: the limiter paces
calls under the limit, retries wait and fallbacks answer within the caller's timeout
(``x-stainless-read-timeout``, as the openai SDK sends it, or ``x-fanout-deadline-ms``);
only when all of that ran out is it a 503 with ``retry-after``.

``stream: true`` on a model alias streams the upstream's tokens as they arrive
(:mod:`fanout.service._gateway_stream`: retries and fallbacks before the first token,
an error chunk if the upstream breaks off after it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from fanout.dag import DAG, Plan
from fanout.errors import (
    BudgetExceeded,
    CircuitOpen,
    ConfigError,
    DeadlineExceeded,
    ProviderError,
    ProviderHTTPError,
    RateLimited,
    RequestTooLarge,
)
from fanout.run import TokenEvent
from fanout.service._embeddings import embedding_body, embedding_dag, parse_embedding
from fanout.service._gateway_stream import Answer, Relay
from fanout.service._keys import Caller, KeyBudget, KeyGate
from fanout.service._metrics import ServiceMetrics
from fanout.service._openai_stream import answer_deltas, sse_chunks
from fanout.service._openai_wire import (
    ChatCompletionIn,
    OpenAIError,
    completion_body,
    completion_id,
    now_s,
    parse_chat,
    to_chat_request,
)
from fanout.types import ChatRequest, ChatResponse, Usage, text_of

__all__ = ["PIPELINE_PREFIX", "Gateway", "add_gateway_routes"]

PIPELINE_PREFIX = "pipeline/"
T = TypeVar("T")
_MAX_WAIT_S = 600.0


@dataclass(slots=True)
class Gateway:
    """What the routes need: the runner, its models' limiters, the pipelines, the keys."""

    runner: Any  # fanout.service._app.Runner with complete()
    models: Mapping[str, tuple[str, float | None]]  # alias -> (limiter name, requests/min)
    pipelines: Mapping[str, tuple[DAG, Plan]]
    gate: KeyGate
    metrics: ServiceMetrics

    def model_ids(self) -> list[str]:
        return [*sorted(self.models), *(PIPELINE_PREFIX + n for n in sorted(self.pipelines))]


def add_gateway_routes(app: FastAPI, gw: Gateway) -> None:
    """``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``GET /v1/models[/{id}]``;
    other OpenAI routes answer a 404 that says what is served."""

    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.get("/v1/models", tags=["openai"])
    async def list_models(request: Request) -> dict[str, object]:
        await _caller(gw, request)
        return {"object": "list", "data": [_model(m) for m in gw.model_ids()]}

    @app.get("/v1/models/{model_id:path}", tags=["openai"])
    async def get_model(model_id: str, request: Request) -> dict[str, object]:
        await _caller(gw, request)
        if model_id not in gw.model_ids():
            raise _unknown_model(gw, model_id)
        return _model(model_id)

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat(request: Request) -> Response:
        return await _chat(gw, request)

    @app.post("/v1/embeddings", tags=["openai"])
    async def embeddings(request: Request) -> Response:
        return await _embeddings(gw, request)

    for path in ("/v1/completions", "/v1/responses"):
        app.add_api_route(path, _not_served, methods=["POST"], include_in_schema=False)


async def _not_served(request: Request) -> Response:
    raise OpenAIError(
        404, f"{request.url.path} is not served; use /v1/chat/completions",
        code="not_implemented",
    )  # fmt: skip


def _model(model_id: str) -> dict[str, object]:
    owner = "fanout-pipeline" if model_id.startswith(PIPELINE_PREFIX) else "fanout"
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owner}


def _unknown_model(gw: Gateway, model: str) -> OpenAIError:
    known = ", ".join(gw.model_ids()) or "none"
    return OpenAIError(
        404, f"The model {model!r} does not exist here; this gateway serves: {known}",
        code="model_not_found", param="model",
    )  # fmt: skip


async def _caller(gw: Gateway, request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    caller = await gw.gate.caller(token.strip() if scheme.lower() == "bearer" else None)
    if caller is None:
        raise OpenAIError(
            401, "Incorrect API key provided: send 'Authorization: Bearer KEY' with a key "
            "from `fanout keys create` that is not revoked",
            code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    return caller


def _deadline_s(request: Request) -> float | None:
    """The caller's timeout: ``x-fanout-deadline-ms``, else the openai SDK's own header."""
    for name, scale in (("x-fanout-deadline-ms", 1000.0), ("x-stainless-read-timeout", 1.0)):
        value = request.headers.get(name)
        if value:
            try:
                seconds = float(value) / scale
            except ValueError:
                raise OpenAIError(400, f"header {name}: not a number ({value[:20]!r})") from None
            if math.isfinite(seconds) and seconds > 0:
                return min(seconds, _MAX_WAIT_S)
    return None


async def _chat(gw: Gateway, request: Request) -> Response:
    caller = await _caller(gw, request)
    body = parse_chat(await request.body())
    deadline_s = _deadline_s(request)
    held = await gw.gate.budget(caller)
    if held is not None and held.exhausted():
        raise _quota_spent(gw, held, caller)
    call = to_chat_request(body)
    if body.model in gw.models:
        limiter, rpm = gw.models[body.model]
        wait = gw.gate.share_wait_s(caller, limiter, rpm)
        if wait > 0:
            raise _share_spent(gw, caller, limiter, wait)
        if body.stream:
            return await _stream(gw, request, caller, body, call, held, deadline_s)
        work: Awaitable[Answer] = _complete(gw, caller, body, call, held, deadline_s)
    elif body.model.removeprefix(PIPELINE_PREFIX) in gw.pipelines:
        work = _pipeline(gw, caller, body, call, held, deadline_s)
    else:
        raise _unknown_model(gw, body.model)
    answer = await _unless_gone(request, work, gw, caller, held)
    if answer is None:
        return Response(status_code=499)  # nobody is listening
    gw.metrics.key_spend(caller.tenant, caller.key_id, body.model, answer.usage, answer.cost_usd)
    spend = BackgroundTask(gw.gate.record, caller, held, answer.cost_usd, answer.usage.total_tokens)
    headers = {"x-fanout-model-alias": answer.alias, "x-fanout-cost-usd": f"{answer.cost_usd:.8f}"}
    id_, created = completion_id(), now_s()
    if body.stream:
        usage = (lambda: answer.usage) if body.include_usage else None
        chunks = sse_chunks(
            answer_deltas(answer.answers), id_=id_, model=body.model, created=created, usage=usage
        )
        return StreamingResponse(
            chunks, media_type="text/event-stream", headers=headers, background=spend
        )
    payload = completion_body(body.model, answer.answers, answer.usage, id_=id_, created=created)
    return Response(
        orjson.dumps(payload), media_type="application/json", headers=headers, background=spend
    )


async def _stream(
    gw: Gateway,
    request: Request,
    caller: Caller,
    body: ChatCompletionIn,
    call: ChatRequest,
    held: KeyBudget | None,
    deadline_s: float | None,
) -> Response:
    """A model alias's reply as its tokens arrive: the response starts at the first one
    (an error before it is an HTTP status); see :mod:`fanout.service._gateway_stream`."""
    relay = Relay(body.n)
    streamed = dataclasses.replace(call, stream=True)
    work = asyncio.ensure_future(
        _complete(gw, caller, body, streamed, held, deadline_s, relay.listener)
    )
    try:
        started = await _unless_gone(request, relay.started(work), gw, caller, held)
    except BaseException:
        work.cancel()
        raise
    if started is None:  # nobody is listening
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        return Response(status_code=499)
    failed = None if started else work.exception()
    if failed is not None:  # before any token: an HTTP status, as for a call that does not stream
        raise _as_openai(gw, failed, caller, held)

    async def settle() -> None:  # the key's spend, once the stream went out whole
        answer = relay.answer
        if answer is not None:
            gw.metrics.key_spend(
                caller.tenant, caller.key_id, body.model, answer.usage, answer.cost_usd
            )
            await asyncio.to_thread(
                gw.gate.record, caller, held, answer.cost_usd, answer.usage.total_tokens
            )

    usage = None
    if body.include_usage:
        usage = lambda: relay.answer.usage if relay.answer is not None else Usage()  # noqa: E731
    fail = functools.partial(_as_openai, gw, caller=caller, held=held)
    chunks = sse_chunks(
        relay.deltas(work, fail), id_=completion_id(), model=body.model, created=now_s(),
        usage=usage,
    )  # fmt: skip
    return StreamingResponse(
        chunks, media_type="text/event-stream", background=BackgroundTask(settle)
    )


async def _embeddings(gw: Gateway, request: Request) -> Response:
    """A model alias's embeddings: one ``dag.embed`` step through the engine."""
    caller = await _caller(gw, request)
    model, texts, dimensions, encoding = parse_embedding(await request.body())
    if model not in gw.models:
        raise _unknown_model(gw, model)
    held = await gw.gate.budget(caller)
    if held is not None and held.exhausted():
        raise _quota_spent(gw, held, caller)
    limiter, rpm = gw.models[model]
    wait = gw.gate.share_wait_s(caller, limiter, rpm)
    if wait > 0:
        raise _share_spent(gw, caller, limiter, wait)
    try:
        result = await gw.runner.run(
            embedding_dag(model, dimensions), {"texts": texts},
            budget=held.budget if held is not None else None, deadline_s=_deadline_s(request),
            interactive=caller.interactive, record_key=caller.key_id,
        )  # fmt: skip
    except Exception as exc:  # refused before any call: a config or budget error
        raise _as_openai(gw, exc, caller, held) from None
    status = str(result.status)
    if status == "budget_exceeded":
        raise _as_openai(gw, BudgetExceeded(result.error_message or "budget"), caller, held)
    if status != "ok":
        raise OpenAIError(
            502, f"embeddings ended {status}: {result.error_type}: {result.error_message}",
            kind="server_error", code=f"embeddings_{status}",
        )  # fmt: skip
    vectors = result.outputs["vectors"]
    assert isinstance(vectors, list)
    gw.metrics.key_spend(caller.tenant, caller.key_id, model, result.usage, result.cost_usd)
    spend = BackgroundTask(
        gw.gate.record, caller, held, result.cost_usd, result.usage.total_tokens
    )
    payload = embedding_body(model, vectors, result.usage.input_tokens, encoding)
    headers = {"x-fanout-model-alias": model, "x-fanout-cost-usd": f"{result.cost_usd:.8f}"}
    return Response(
        orjson.dumps(payload), media_type="application/json", headers=headers, background=spend
    )


async def _complete(
    gw: Gateway,
    caller: Caller,
    body: ChatCompletionIn,
    call: ChatRequest,
    held: KeyBudget | None,
    deadline_s: float | None,
    listen: Callable[[int], Callable[[TokenEvent], None]] | None = None,
) -> Answer:
    """``n`` calls of the alias at once (each a sample of its own), through the engine;
    ``listen(i)``: the ``on_token`` of choice ``i``'s call (a streamed call)."""

    async def one(index: int) -> Any:
        return await gw.runner.complete(
            body.model,
            call,
            budget=held.budget if held is not None else None,
            deadline_s=deadline_s,
            interactive=caller.interactive,
            record_key=caller.key_id,
            **({"on_token": listen(index)} if listen is not None else {}),
        )

    if body.n == 1:
        results = [await one(0)]
    else:
        done = await asyncio.gather(*(one(i) for i in range(body.n)), return_exceptions=True)
        failed = [r for r in done if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        results = list(done)
    usage = Usage()
    for result in results:
        usage = usage + result.usage
    return Answer(
        [r.response for r in results], usage, sum(r.cost_usd for r in results), results[0].alias
    )


async def _pipeline(
    gw: Gateway,
    caller: Caller,
    body: ChatCompletionIn,
    call: ChatRequest,
    held: KeyBudget | None,
    deadline_s: float | None,
) -> Answer:
    """A pipeline as a model: the last user message is its one input (or a JSON object of
    its inputs); its one output is the reply (several: a JSON object of them)."""
    name = body.model.removeprefix(PIPELINE_PREFIX)
    dag, plan = gw.pipelines[name]
    text = next((text_of(m.get("content")) for m in reversed(call.messages)
                 if m["role"] == "user"), "")  # fmt: skip
    inputs = _pipeline_inputs(name, plan, text)
    left_usd = None
    if held is not None and held.budget.usd is not None:
        b = held.budget
        left_usd = max(0.0, b.usd - b.spent_usd - b.held_usd)  # type: ignore[operator]
    try:
        result = await gw.runner.run(
            dag, inputs, budget_usd=left_usd, deadline_s=deadline_s,
            request_id=None, interactive=caller.interactive,
        )  # fmt: skip
    except ConfigError as exc:
        raise OpenAIError(400, str(exc), param="messages") from None
    if held is not None:
        held.budget.charge(tokens=result.usage.total_tokens, usd=result.cost_usd)
    if str(result.status) != "ok":
        raise OpenAIError(
            502, f"pipeline {name!r} ended {result.status}: "
            f"{result.error_message or 'see its trace'}",
            kind="server_error", code=f"pipeline_{result.status}",
        )  # fmt: skip
    outputs = result.outputs
    value = next(iter(outputs.values())) if len(outputs) == 1 else outputs
    content = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    answer = ChatResponse(content=content, usage=result.usage, model=body.model)
    return Answer([answer] * body.n, result.usage, result.cost_usd, body.model)


def _pipeline_inputs(name: str, plan: Plan, text: str) -> dict[str, object]:
    if len(plan.inputs) == 1:
        return {plan.inputs[0]: text}
    try:
        inputs = orjson.loads(text)
    except orjson.JSONDecodeError:
        inputs = None
    if not isinstance(inputs, dict):
        raise OpenAIError(
            400, f"pipeline {name!r} takes inputs {list(plan.inputs)}: send them as a JSON "
            "object in the last user message", param="messages",
        )  # fmt: skip
    return inputs


async def _unless_gone(
    request: Request,
    work: Awaitable[T],
    gw: Gateway,
    caller: Caller,
    held: KeyBudget | None,
) -> T | None:
    """``work``'s answer, or ``None`` if the client hung up first (the calls are then
    cancelled, their budget released); errors as OpenAI's."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return None
    try:
        return task.result()
    except OpenAIError:
        raise
    except BaseException as exc:
        raise _as_openai(gw, exc, caller, held) from None


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _as_openai(
    gw: Gateway, exc: BaseException, caller: Caller, held: KeyBudget | None
) -> OpenAIError:
    """What the caller is told of an error the engine raised."""
    if isinstance(exc, BudgetExceeded) and held is not None:
        return _quota_spent(gw, held, caller, detail=str(exc))
    if isinstance(exc, BudgetExceeded):
        return OpenAIError(429, str(exc), kind="insufficient_quota", code="insufficient_quota")
    if isinstance(exc, ConfigError):
        return OpenAIError(400, str(exc))
    if isinstance(exc, DeadlineExceeded):
        return OpenAIError(
            504, "no answer within the caller's timeout; raise it (or x-fanout-deadline-ms)",
            kind="server_error", code="timeout",
        )  # fmt: skip
    if isinstance(exc, RequestTooLarge):
        return OpenAIError(400, str(exc), code="context_length_exceeded", param="messages")
    if isinstance(exc, ProviderHTTPError) and exc.status_code == 400:
        return OpenAIError(400, str(exc), code="upstream_invalid_request")
    if isinstance(exc, RateLimited | CircuitOpen):
        retry = getattr(exc, "retry_after_s", None) or 1.0
        return OpenAIError(
            503, f"the upstream is saturated or down and no fallback answered: {exc}",
            kind="server_error", code="upstream_unavailable",
            headers={"retry-after": str(math.ceil(retry))},
        )  # fmt: skip
    if isinstance(exc, ProviderError):
        return OpenAIError(502, f"the upstream failed: {exc}", kind="server_error",
                           code="upstream_error")  # fmt: skip
    return OpenAIError(500, f"internal error: {type(exc).__name__}", kind="server_error")


def _quota_spent(
    gw: Gateway, held: KeyBudget, caller: Caller, detail: str | None = None
) -> OpenAIError:
    gw.metrics.key_refused(caller.tenant, caller.key_id, "insufficient_quota")
    headers: dict[str, str] = {}
    when = "for good (its period is the key's life)"
    if held.end is not None:
        left_s = max(1, math.ceil(held.end - gw.gate.clock.wall().timestamp()))
        headers["retry-after"] = str(left_s)
        when = f"until its period ends in {left_s} s"
    message = (
        f"You exceeded your current quota: key {caller.key_id} has spent its budget {when}; "
        "raise it with a new key (`fanout keys create`)"
    )
    if detail:
        message += f" ({detail})"
    return OpenAIError(
        429, message, kind="insufficient_quota", code="insufficient_quota", headers=headers
    )


def _share_spent(gw: Gateway, caller: Caller, limiter: str, wait_s: float) -> OpenAIError:
    gw.metrics.key_refused(caller.tenant, caller.key_id, "share")
    share = caller.key.share if caller.key is not None else None
    return OpenAIError(
        429, f"Rate limit reached for key {caller.key_id}: its share ({share}) of {limiter}'s "
        f"limit is in use; retry in {wait_s:.2f} s",
        kind="requests", code="rate_limit_exceeded",
        headers={"retry-after": str(max(1, math.ceil(wait_s))),
                 "retry-after-ms": str(max(1, math.ceil(wait_s * 1000)))},
    )  # fmt: skip

