"""The service's ASGI app (FastAPI): named DAGs over HTTP, with auth, deadlines and streaming.

``POST /v1/pipelines/{name}/runs`` runs one DAG and answers with its outputs and
per-node status (``stream: true``: server-sent events, a ``node`` event per finished
node, ``token`` events as streamed steps' replies arrive, then ``result``). A client
that disconnects cancels its run (its in-flight calls are cancelled and their budget
released). ``GET /v1/pipelines`` lists the DAGs and
their input schema; ``GET /healthz``; ``GET /metrics`` (Prometheus); ``GET
/openapi.json`` and ``/docs``. Bad input is a 4xx with the field and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException

from fanout.budget import Budget
from fanout.clock import SystemClock
from fanout.config import Config
from fanout.dag import DAG, Plan, input_types
from fanout.errors import ConfigError, ReviewBusy, ReviewNotFound, SessionBusy
from fanout.limits import LimiterState
from fanout.retry import HedgePolicy
from fanout.run import ChatResult, NodeResult, RunResult, TokenEvent
from fanout.service._auth import TokenStore
from fanout.service._gateway import Gateway, add_gateway_routes
from fanout.service._keys import KeyGate
from fanout.service._limits import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_DEPTH,
    BodyLimit,
    ShapeError,
    check_shape,
    parse_error,
)
from fanout.service._metrics import CONTENT_TYPE, ServiceMetrics
from fanout.service._schemas import (
    DecisionIn,
    ErrorBody,
    PipelineInfo,
    RunRequest,
    RunResponse,
    request_model,
    to_node_out,
    to_response,
)
from fanout.store import KeyStore, ReviewStatus, ReviewStore
from fanout.types import ChatRequest

__all__ = ["Runner", "TenantLimits", "build_app"]


class Runner(Protocol):
    """What the service runs DAGs on: :class:`fanout.Engine` (or one leasing its limits
    from the cluster's coordinators, on Ray Serve). A runner that also has ``config``
    and ``complete(alias, request, ...)`` (both of those do: :class:`ChatRunner`) serves
    the OpenAI-compatible gateway over its model aliases; another serves no models."""

    def validate(self, dag: DAG) -> Plan: ...

    async def run(
        self,
        dag: DAG,
        inputs: Mapping[str, object],
        *,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        deadline_s: float | None = None,
        request_id: str | None = None,
        interactive: bool = False,
        on_node: Callable[[NodeResult], None] | None = None,
    ) -> RunResult: ...

    def limiter_states(self) -> list[LimiterState]: ...

    def hedges(self) -> dict[str, HedgePolicy]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ChatRunner(Protocol):
    """A runner the gateway can call by model alias."""

    @property
    def config(self) -> Config: ...

    async def complete(
        self,
        alias: str,
        request: ChatRequest,
        *,
        budget: Budget | None = None,
        deadline_s: float | None = None,
        interactive: bool = True,
        record_key: str | None = None,
        on_token: Callable[[TokenEvent], None] | None = None,
    ) -> ChatResult: ...


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """Caps per tenant (a token's owner): runs in flight at once, and USD over the
    service's life (each run's budget is capped at what the tenant has left)."""

    max_concurrent: int | None = None
    budget_usd: float | None = None


@dataclass(slots=True)
class _Tenant:
    in_flight: int = 0
    spent_usd: float = 0.0


@dataclass(slots=True)
class _State:
    pipelines: dict[str, tuple[DAG, Plan]]
    runner: Runner
    tokens: TokenStore | None
    limits: TenantLimits
    metrics: ServiceMetrics
    tenants: dict[str, _Tenant] = field(default_factory=dict)
    max_depth: int = DEFAULT_MAX_DEPTH


class _Rejected(Exception):
    """A request refused with an HTTP status and a clear message."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers


def build_app(
    pipelines: Mapping[str, DAG],
    runner: Runner,
    *,
    tokens: TokenStore | None,
    tenant_limits: TenantLimits | None = None,
    title: str = "fanout service",
    close_runner: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    keys: KeyStore | str | None = None,
    key_cache_s: float = 1.0,
) -> FastAPI:
    """The app serving ``pipelines`` (by name) on ``runner``, and the OpenAI-compatible
    gateway over the runner's model aliases (:mod:`fanout.service._gateway`).

    ``tokens``: the accepted bearer tokens (``None``: no auth, for local use only).
    ``keys``: the gateway's virtual keys (a :class:`KeyStore` or its path), each with
    its tenant, budget, limit share and priority; a key is looked up again after
    ``key_cache_s`` (a revoked one is refused within that long). With neither tokens
    nor keys, nothing is authenticated.
    ``max_body_bytes``: a larger request body is answered 413 (before it is read whole);
    ``max_depth``: an input nesting deeper is a 400, as is a number JSON cannot carry
    (an integer beyond 64 bits, no finite value). Inputs are validated against the DAG's
    declared types (``dag.input(name, type=...)``): a value of another type is a 422
    naming the field.
    ``close_runner``: the app's lifespan closes ``runner`` at shutdown (its trace is
    written out), for servers that run the ASGI lifespan. Raises :class:`ConfigError`
    if a DAG is invalid for the runner's models.
    """
    plans = {name: (dag, runner.validate(dag)) for name, dag in pipelines.items()}
    state = _State(
        pipelines=plans,
        runner=runner,
        tokens=tokens,
        limits=tenant_limits or TenantLimits(),
        metrics=ServiceMetrics(runner.limiter_states, runner.hedges),
        max_depth=max_depth,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if close_runner:
            await runner.aclose()

    app = FastAPI(
        lifespan=lifespan,
        title=title,
        version="1",
        description="Runs named fanout DAGs: fan-out LLM and tool calls under deadlines.",
        responses={"4XX": {"model": ErrorBody, "description": "bad request, with the reason"}},
    )
    app.state.fanout = state
    key_store = KeyStore(keys) if isinstance(keys, str) else keys
    # one gate for both APIs: a virtual key opens the pipeline API too (as its tenant)
    gate = KeyGate(key_store, tokens, clock=SystemClock(), cache_s=key_cache_s)
    add_gateway_routes(app, _gateway(runner, plans, gate, state.metrics))
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    bearer = HTTPBearer(
        auto_error=False,
        description="a token from FANOUT_SERVICE_TOKENS, or a virtual key (fanout keys create)",
    )

    async def tenant_of(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> str:
        caller = await gate.caller(credentials.credentials if credentials else None)
        if caller is None:
            raise _Rejected(
                401,
                "unauthorized",
                "missing or invalid bearer token; send 'Authorization: Bearer TOKEN' with a "
                "token the service was started with, or a virtual key that is not revoked",
                {"WWW-Authenticate": "Bearer"},
            )
        return caller.tenant

    _install_errors(app, state)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "pipelines": sorted(state.pipelines)}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/pipelines", tags=["pipelines"], response_model=list[PipelineInfo])
    async def list_pipelines(tenant: str = Depends(tenant_of)) -> list[PipelineInfo]:
        return [_info(name, dag, plan) for name, (dag, plan) in sorted(state.pipelines.items())]

    for name in plans:
        _add_run_route(app, state, name, tenant_of)

    _add_review_routes(app, state, tenant_of)

    @app.post("/v1/pipelines/{name}/runs", tags=["pipelines"], include_in_schema=False)
    async def unknown_pipeline(name: str, tenant: str = Depends(tenant_of)) -> Response:
        known = ", ".join(sorted(state.pipelines)) or "none"
        raise _Rejected(
            404, "unknown_pipeline", f"no pipeline named {name!r}; this service runs: {known}"
        )

    return app


def _gateway(
    runner: Runner, plans: dict[str, tuple[DAG, Plan]], gate: KeyGate, metrics: ServiceMetrics
) -> Gateway:
    """The gateway's view of the runner: each alias's limiter and its configured pace."""
    models: dict[str, tuple[str, float | None]] = {}
    if not isinstance(runner, ChatRunner):
        return Gateway(runner, models, plans, gate, metrics)
    config = runner.config
    for alias, model in config.models.items():
        pcfg = config.providers[model.provider]
        rpm = model.requests_per_min or pcfg.requests_per_min
        models[alias] = (f"{model.provider}/{model.model}", rpm)
    return Gateway(runner, models, plans, gate, metrics)


def _add_review_routes(app: FastAPI, state: _State, tenant_of: Callable[..., Any]) -> None:
    """``GET /v1/reviews``; ``POST /v1/reviews/{id}/approve|reject|edit`` decide a review
    and resume its paused run (a pipeline this service serves), answering its result."""

    def store() -> ReviewStore:
        reviews = getattr(state.runner, "reviews", None)
        if not isinstance(reviews, ReviewStore):
            raise _Rejected(
                404,
                "no_reviews",
                "this service keeps no reviews; serve the pipeline on an Engine with a data_dir",
            )
        return reviews

    @app.get("/v1/reviews", tags=["reviews"])
    async def list_reviews(
        status: str | None = None, tenant: str = Depends(tenant_of)
    ) -> list[dict[str, object]]:
        reviews = await asyncio.to_thread(store().list, status=status)
        return [review.to_dict() for review in reviews]

    @app.post("/v1/reviews/{review_id}/{action}", tags=["reviews"])
    async def decide(
        review_id: str,
        action: str,
        decision: DecisionIn,
        tenant: str = Depends(tenant_of),
    ) -> dict[str, object]:
        statuses: dict[str, ReviewStatus] = {
            "approve": "approved",
            "reject": "rejected",
            "edit": "edited",
        }
        if action not in statuses:
            raise _Rejected(404, "not_found", f"no action {action!r}; use approve, reject or edit")
        if action == "edit" and "value" not in decision.model_fields_set:
            raise _Rejected(422, "invalid_request", "edit needs a 'value' (the corrected JSON)")
        reviews = store()
        try:
            review = await asyncio.to_thread(reviews.get, review_id)
        except ReviewNotFound as exc:
            raise _Rejected(404, "review_not_found", str(exc)) from None
        dags = [dag for dag, _ in state.pipelines.values() if dag.name == review.dag_name]
        resume = getattr(state.runner, "resume", None)
        if not dags or resume is None:
            raise _Rejected(
                409, "not_resumable", f"this service does not serve DAG {review.dag_name!r}"
            )
        try:
            review = await asyncio.to_thread(
                reviews.decide,
                review_id,
                statuses[action],
                value=decision.value,
                reason=decision.reason,
                by=decision.by or tenant,
            )
            result: RunResult = await resume(dags[0], review_id)
        except ReviewBusy as exc:  # another process is resuming the same run
            raise _Rejected(409, "review_busy", str(exc)) from None
        except ConfigError as exc:
            raise _Rejected(409, "review_decided", str(exc)) from None
        return {"review": review.to_dict(), "result": result.to_dict()}


def _request_model(name: str, dag: DAG, plan: Plan) -> type[RunRequest]:
    return request_model(name, input_types(plan), session=dag.session_spec is not None)


def _info(name: str, dag: DAG, plan: Plan) -> PipelineInfo:
    schema = _request_model(name, dag, plan).model_json_schema()
    inputs_schema = schema.get("$defs", {}).get(f"{_safe(name)}_inputs", {})
    return PipelineInfo(
        name=name,
        description=dag.description or "",
        inputs=list(plan.inputs),
        outputs=list(plan.outputs),
        input_schema=inputs_schema,
        runs_url=f"/v1/pipelines/{name}/runs",
    )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _add_run_route(app: FastAPI, state: _State, name: str, tenant_of: Callable[..., Any]) -> None:
    dag, plan = state.pipelines[name]
    model = _request_model(name, dag, plan)

    async def endpoint(request: Request, body: RunRequest, tenant: str) -> Response:
        return await _run(state, name, dag, request, body, tenant)

    # FastAPI reads the body's model and the auth dependency from the signature.
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("request", positional, annotation=Request),
            inspect.Parameter("body", positional, annotation=model),
            inspect.Parameter("tenant", positional, annotation=str, default=Depends(tenant_of)),
        ]
    )
    app.add_api_route(
        f"/v1/pipelines/{name}/runs",
        endpoint,
        methods=["POST"],
        tags=["pipelines"],
        name=f"run_{_safe(name)}",
        summary=f"Run {name}" + (f": {dag.description}" if dag.description else ""),
        response_model=RunResponse,
        responses={
            200: {
                "description": "the run's result (JSON), or with stream=true server-sent "
                "events: `node` per finished node, `token` per piece of a streamed step's "
                "reply (`tokens_discarded`: an attempt's pieces so far are void), then "
                "`result`",
                "content": {"text/event-stream": {}},
            }
        },
    )


async def _run(
    state: _State, name: str, dag: DAG, request: Request, body: RunRequest, tenant_name: str
) -> Response:
    limits, metrics = state.limits, state.metrics
    tenant = state.tenants.setdefault(tenant_name, _Tenant())
    if limits.max_concurrent is not None and tenant.in_flight >= limits.max_concurrent:
        raise _Rejected(
            429,
            "tenant_concurrency",
            f"this token's tenant already has {tenant.in_flight} runs in flight (the cap is "
            f"{limits.max_concurrent}); retry when one finishes",
            {"Retry-After": "1"},
        )
    budget_usd = body.budget.usd if body.budget else None
    if limits.budget_usd is not None:
        left = limits.budget_usd - tenant.spent_usd
        if left <= 0:
            raise _Rejected(
                402,
                "tenant_budget_exhausted",
                f"this token's tenant has spent its budget of ${limits.budget_usd:g}",
            )
        budget_usd = left if budget_usd is None else min(budget_usd, left)
    inputs = body.inputs.model_dump() if hasattr(body.inputs, "model_dump") else body.inputs
    try:
        for input_name, value in inputs.items():
            check_shape(value, f"inputs.{input_name}", state.max_depth)
    except ShapeError as exc:
        raise _Rejected(400, "invalid_input", str(exc)) from None
    run_id = uuid.uuid4().hex
    options: dict[str, Any] = {
        "budget_usd": budget_usd,
        "budget_tokens": body.budget.tokens if body.budget else None,
        "deadline_s": body.deadline_ms / 1000 if body.deadline_ms is not None else None,
        "request_id": run_id,
        "interactive": body.priority == "interactive",
    }
    session_id = getattr(body, "session_id", None)  # offered only by DAGs with a session
    if session_id is not None:  # only then: a runner without sessions still serves
        if "session_id" not in inspect.signature(state.runner.run).parameters:
            raise _Rejected(
                422,
                "invalid_request",
                "this service's runner keeps no sessions (the local Engine does); "
                "drop session_id or serve the pipeline on an Engine with a data_dir",
            )
        options["session_id"] = session_id
    traceparent = request.headers.get("traceparent")
    if traceparent and _takes(state.runner, "traceparent"):  # the caller's trace, joined
        options["traceparent"] = traceparent
    tenant.in_flight += 1
    metrics.in_flight.labels(name).inc()
    started = time.perf_counter()

    def finished(result: RunResult | None, outcome: str = "disconnected") -> None:
        """Once per run: the tenant's and the metrics' books."""
        tenant.in_flight -= 1
        metrics.in_flight.labels(name).dec()
        if result is None:
            metrics.requests.labels(name, outcome).inc()
            if outcome == "disconnected":
                metrics.disconnects.labels(name).inc()
            return
        tenant.spent_usd += result.cost_usd
        metrics.requests.labels(name, str(result.status)).inc()
        metrics.latency.labels(name).observe(time.perf_counter() - started)
        metrics.cost.labels(name).inc(result.cost_usd)

    if body.stream:
        return EventSourceResponse(_events(state, name, dag, inputs, options, finished), ping=15)
    run = asyncio.ensure_future(state.runner.run(dag, inputs, **options))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((run, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not run.done():  # the client went away (or the server is stopping)
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    if run.cancelled():
        finished(None)
        return Response(status_code=499)  # nobody is listening
    try:
        result = run.result()
    except ConfigError as exc:
        finished(None, "invalid_request")
        raise _Rejected(422, "invalid_request", str(exc)) from None
    except SessionBusy as exc:
        finished(None, "session_busy")
        raise _Rejected(409, "session_busy", str(exc), {"Retry-After": "1"}) from None
    finished(result)
    return JSONResponse(to_response(name, result).model_dump(mode="json"))


async def _events(
    state: _State,
    name: str,
    dag: DAG,
    inputs: Mapping[str, object],
    options: dict[str, Any],
    finished: Callable[[RunResult | None, str], None],
) -> AsyncIterator[ServerSentEvent]:
    """``node`` events as nodes finish (then one for each node the deadline cut), then
    ``result``; ``token`` events as streamed steps' replies arrive (``tokens_discarded``
    when an attempt that sent some failed and is tried again); the run is cancelled if
    the client leaves."""
    queue: asyncio.Queue[NodeResult | TokenEvent] = asyncio.Queue()
    if "on_token" in inspect.signature(state.runner.run).parameters:
        options = {**options, "on_token": queue.put_nowait}  # a runner that streams tokens
    run = asyncio.ensure_future(state.runner.run(dag, inputs, on_node=queue.put_nowait, **options))
    result: RunResult | None = None
    reported: set[str] = set()
    outcome = "disconnected"
    try:
        while not run.done() or not queue.empty():
            if queue.empty():
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait((run, getter), return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                node = getter.result()
            else:
                node = queue.get_nowait()
            if isinstance(node, TokenEvent):
                if node.tool_call is None:  # tool calls reach the pipeline's caller whole
                    yield _token_event(node)
                continue
            reported.add(node.node_id)
            yield ServerSentEvent(to_node_out(node).model_dump_json(), event="node")
        try:
            result = run.result()
        except (ConfigError, SessionBusy) as exc:
            kind = "session_busy" if isinstance(exc, SessionBusy) else "invalid_request"
            error = {"error": {"type": kind, "message": str(exc), "fields": []}}
            yield ServerSentEvent(json.dumps(error), event="error")
            outcome = kind
            return
        for node in result.nodes.values():  # cancelled at the deadline: never "finished"
            if node.node_id not in reported:
                yield ServerSentEvent(to_node_out(node).model_dump_json(), event="node")
        yield ServerSentEvent(to_response(name, result).model_dump_json(), event="result")
    finally:
        # sse-starlette cancels this generator through an anyio cancel scope, which
        # cancels every await in it again: shield the run's own cancellation.
        with anyio.CancelScope(shield=True):
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
            finished(result, outcome)


def _token_event(token: TokenEvent) -> ServerSentEvent:
    body = {"node": token.node_id, "attempt": token.attempt, "map_index": token.map_index}
    if token.discard:
        return ServerSentEvent(json.dumps(body), event="tokens_discarded")
    return ServerSentEvent(json.dumps({**body, "text": token.text}), event="token")


_TAKES: dict[tuple[type, str], bool] = {}


def _takes(runner: object, parameter: str) -> bool:
    """Whether the runner's ``run`` has this keyword (a custom runner may not)."""
    key = (type(runner), parameter)
    found = _TAKES.get(key)
    if found is None:
        found = _TAKES[key] = parameter in inspect.signature(runner.run).parameters  # type: ignore[attr-defined]
    return found


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body is read: nothing else comes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _install_errors(app: FastAPI, state: _State) -> None:
    """Every error is an :class:`ErrorBody`; bad JSON is a 400, a bad field a 422."""

    def body(
        status: int,
        kind: str,
        message: str,
        fields: list[dict[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> JSONResponse:
        payload = {"error": {"type": kind, "message": message, "fields": fields or []}}
        return JSONResponse(payload, status_code=status, headers=headers)

    @app.exception_handler(_Rejected)
    async def rejected(request: Request, exc: _Rejected) -> JSONResponse:
        _count_rejection(state, request, exc.kind)
        return body(exc.status, exc.kind, exc.message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(
            tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), str | bytes)
            for e in errors
        ):
            _count_rejection(state, request, "invalid_json")
            return body(
                400,
                "invalid_json",
                "the request body must be a JSON object sent as Content-Type: application/json",
            )
        bad_json = [e for e in errors if e.get("type") == "json_invalid"]
        if bad_json:
            _count_rejection(state, request, "invalid_json")
            reason = (bad_json[0].get("ctx") or {}).get("error", "not valid JSON")
            position = bad_json[0].get("loc", ("body", "?"))[-1]
            return body(
                400,
                "invalid_json",
                f"the request body is not valid JSON: {reason} (at character {position})",
            )
        fields = [{"field": _field(e.get("loc", ())), "reason": _reason(e)} for e in errors]
        _count_rejection(state, request, "invalid_request")
        summary = "; ".join(f"{f['field']}: {f['reason']}" for f in fields[:5])
        return body(422, "invalid_request", f"invalid request: {summary}", fields)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        kind = kinds.get(exc.status_code, "http_error")
        reason = parse_error(exc.__cause__) if exc.status_code == 400 else None
        if reason is not None:  # the JSON parser's own limits: say which
            _count_rejection(state, request, "invalid_json")
            return body(400, "invalid_json", reason)
        if exc.status_code == 413:
            _count_rejection(state, request, kind)
        return body(exc.status_code, kind, str(exc.detail), headers=exc.headers)


def _count_rejection(state: _State, request: Request, kind: str) -> None:
    parts = request.url.path.split("/")
    if len(parts) == 5 and parts[1:3] == ["v1", "pipelines"] and parts[4] == "runs":
        pipeline = parts[3] if parts[3] in state.pipelines else "(unknown)"
        state.metrics.requests.labels(pipeline, kind).inc()


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "(body)"


def _reason(error: Mapping[str, Any]) -> str:
    kind = error.get("type")
    if kind == "missing":
        return "required; add it"
    if kind == "extra_forbidden":
        return "not a known field; remove it or check its spelling"
    return str(error.get("msg", "invalid"))
