"""The provider emulator: an OpenAI-compatible HTTP server with real limits, latency and faults.

``POST /v1/chat/completions`` answers like a provider: per (key, model) buckets for
requests/min and tokens/min (prompt estimate + ``max_tokens``, as OpenAI counts
them) answer 429 with ``retry-after``/``retry-after-ms`` and ``x-ratelimit-*``
headers; accepted calls wait a lognormal latency, then get the simulated
provider's deterministic reply with ``usage``; ``tail_rate`` of them wait
``tail_latency_ms`` more (a heavy tail, drawn per call). A client that hangs up
while its call waits is counted as ``cancelled`` (the call stops there). Faults:
5xx, truncated bodies (the connection breaks mid-response), hangs and malformed
bodies, each at a rate.
``GET /v1/models``; ``GET /stats`` gives accepted/limited counts per second
(``GET /stats/prompts``: calls answered per prompt, with ``record_prompts``);
``POST /stats/reset`` clears them and the buckets; ``POST /admin/faults`` with
``{"error_rate": 0.5, ...}`` changes fault rates while running. The Files and Batch
APIs (``/v1/files``, ``/v1/batches``) are :mod:`fanout.sim._batches`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from fanout.errors import MissingExtra, ProviderError

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from starlette.types import Receive, Scope, Send
except ImportError as exc:  # one clear error naming the extra, not a deep ImportError
    raise MissingExtra(
        "the provider emulator (fanout.sim.server)", extra="sim", module=exc.name or "starlette"
    ) from None
from fanout.limits import TokenBucket
from fanout.sim._batches import BatchEmulator, BatchEmulatorConfig
from fanout.sim._provider import SimProvider
from fanout.types import ChatRequest, Message, ToolSpec, estimate_prompt_tokens

__all__ = ["BatchEmulatorConfig", "EmulatorConfig", "EmulatorServer", "build_app"]


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """What the emulated provider allows and how it behaves. ``None`` limits are unlimited."""

    requests_per_min: float | None = None
    tokens_per_min: float | None = None
    burst_s: float = 1.0  # bucket capacity, in seconds of refill
    latency_ms: float = 0.0
    latency_per_token_ms: float = 0.0
    jitter_sigma: float = 0.0
    tail_rate: float = 0.0  # share of calls that wait tail_latency_ms more
    tail_latency_ms: float = 0.0
    error_rate: float = 0.0  # 500s
    truncate_rate: float = 0.0  # the connection breaks mid-body
    hang_rate: float = 0.0  # no answer for hang_s
    malformed_rate: float = 0.0  # 200 with a body that is not a valid completion
    hang_s: float = 3600.0
    send_limit_headers: bool = True  # x-ratelimit-limit-* (real providers send them)
    api_key: str | None = None  # when set, requests must carry it as a bearer token
    seed: int = 0
    record_prompts: bool = False  # count answered calls per prompt (GET /stats/prompts)
    batch: BatchEmulatorConfig = field(default_factory=BatchEmulatorConfig)  # /v1/batches


@dataclass
class _Stats:
    started: float = field(default_factory=time.monotonic)
    accepted: int = 0
    limited: int = 0
    errors: int = 0
    cancelled: int = 0  # the client hung up while its call waited
    tokens: int = 0
    by_second: dict[int, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    prompts: Counter[str] = field(default_factory=Counter)  # with record_prompts

    def count(self, *, ok: bool) -> None:
        second = int(time.monotonic() - self.started)
        self.by_second[second][0 if ok else 1] += 1


class _Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.sim = SimProvider("emulator", latency_ms=0.0, jitter_sigma=0.0, seed=config.seed)
        self.rng = random.Random(config.seed)
        self.buckets: dict[tuple[str, str], tuple[TokenBucket | None, TokenBucket | None]] = {}
        self.stats = _Stats()

    def _buckets(self, key: str, model: str) -> tuple[TokenBucket | None, TokenBucket | None]:
        found = self.buckets.get((key, model))
        if found is None:
            cfg, now = self.config, time.monotonic()
            req = tok = None
            if cfg.requests_per_min:
                rate = cfg.requests_per_min / 60
                req = TokenBucket(rate, max(1.0, rate * cfg.burst_s), now)
            if cfg.tokens_per_min:
                rate = cfg.tokens_per_min / 60
                tok = TokenBucket(rate, max(1.0, rate * cfg.burst_s), now)
            found = self.buckets[(key, model)] = (req, tok)
        return found

    def _limit_headers(self, req: TokenBucket | None, tok: TokenBucket | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        cfg = self.config
        if req is not None and cfg.requests_per_min:
            if cfg.send_limit_headers:
                headers["x-ratelimit-limit-requests"] = str(int(cfg.requests_per_min))
            headers["x-ratelimit-remaining-requests"] = str(max(0, int(req.level)))
            reset = max(0.0, (req.capacity - req.level) / req.rate)
            headers["x-ratelimit-reset-requests"] = f"{reset * 1000:.0f}ms"
        if tok is not None and cfg.tokens_per_min:
            if cfg.send_limit_headers:
                headers["x-ratelimit-limit-tokens"] = str(int(cfg.tokens_per_min))
            headers["x-ratelimit-remaining-tokens"] = str(max(0, int(tok.level)))
            reset = max(0.0, (tok.capacity - tok.level) / tok.rate)
            headers["x-ratelimit-reset-tokens"] = f"{reset * 1000:.0f}ms"
        return headers

    async def completions(self, request: Request) -> Response:
        cfg = self.config
        key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if cfg.api_key is not None and key != cfg.api_key:
            return _error(401, "invalid_api_key", "Incorrect API key provided.")
        try:
            body = json.loads(await request.body())
            chat = _chat_request(body)
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, "invalid_request_error", f"bad request body: {exc}")
        req, tok = self._buckets(key or "anonymous", chat.model)
        now = time.monotonic()
        cost = estimate_prompt_tokens(chat.messages, chat.tools) + chat.max_tokens
        wait = 0.0
        if req is not None:
            wait = req.wait_s(1, now)
        if tok is not None:
            wait = max(wait, tok.wait_s(cost, now))
        if wait > 0:
            self.stats.limited += 1
            self.stats.count(ok=False)
            headers = self._limit_headers(req, tok)
            headers["retry-after-ms"] = f"{wait * 1000:.0f}"
            headers["retry-after"] = str(math.ceil(wait))
            return _error(429, "rate_limit_exceeded", "Rate limit reached; retry later.", headers)
        if req is not None:
            req.take(1, now)
        if tok is not None:
            tok.take(cost, now)
        self.stats.accepted += 1
        self.stats.count(ok=True)
        headers = self._limit_headers(req, tok)
        replying = asyncio.ensure_future(self.sim.complete(chat))  # markers may make it slow
        if not await _unless_gone(request, replying):
            self.stats.cancelled += 1
            return Response(status_code=499)  # nobody reads it: the client is gone
        try:
            reply = replying.result()
        except ProviderError as exc:  # the sim's own fault markers
            self.stats.errors += 1
            return _error(exc.status_code or 500, "server_error", str(exc))
        latency_s = (cfg.latency_ms + cfg.latency_per_token_ms * reply.usage.output_tokens) / 1000
        if cfg.jitter_sigma:
            latency_s *= self.rng.lognormvariate(0.0, cfg.jitter_sigma)
        if cfg.tail_rate and self.rng.random() < cfg.tail_rate:
            latency_s += cfg.tail_latency_ms / 1000
        if tok is not None:  # settle: the provider counts what was really produced
            tok.adjust(cost - reply.usage.total_tokens)
        draw = self.rng.random()
        wait_s = cfg.hang_s if draw < cfg.hang_rate else latency_s
        if wait_s > 0 and not await _unless_gone(request, asyncio.sleep(wait_s)):
            self.stats.cancelled += 1
            return Response(status_code=499)  # nobody reads it: the client is gone
        draw -= cfg.hang_rate
        if 0 <= draw < cfg.error_rate:
            self.stats.errors += 1
            return _error(500, "server_error", "The server had an error processing the request.")
        draw -= cfg.error_rate
        if 0 <= draw < cfg.malformed_rate:
            self.stats.errors += 1
            return Response(b'{"id": "x", "choices": [', 200, headers, "application/json")
        draw -= cfg.malformed_rate
        if 0 <= draw < cfg.truncate_rate:
            self.stats.errors += 1
            return _Truncated(headers)
        self.stats.tokens += reply.usage.total_tokens
        if cfg.record_prompts and chat.messages:  # answered in full: a call the caller paid
            self.stats.prompts[str(chat.messages[-1].get("content"))] += 1
        message: dict[str, object] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = [c.to_wire() for c in reply.tool_calls]
        payload = {
            "id": f"chatcmpl-{self.stats.accepted}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.model,
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
            "usage": {
                "prompt_tokens": reply.usage.input_tokens,
                "completion_tokens": reply.usage.output_tokens,
                "total_tokens": reply.usage.total_tokens,
            },
        }
        return Response(json.dumps(payload), 200, headers, "application/json")

    async def models(self, request: Request) -> Response:
        data = [
            {"id": m, "object": "model", "owned_by": "fanout-emulator"}
            for m in ("sim-small", "sim-large")
        ]
        return JSONResponse({"object": "list", "data": data})

    async def get_stats(self, request: Request) -> Response:
        s = self.stats
        elapsed = time.monotonic() - s.started
        per_second = [
            {"second": k, "accepted": v[0], "limited": v[1]} for k, v in sorted(s.by_second.items())
        ]
        return JSONResponse(
            {
                "elapsed_s": elapsed,
                "accepted": s.accepted,
                "limited": s.limited,
                "errors": s.errors,
                "cancelled": s.cancelled,
                "tokens": s.tokens,
                "per_second": per_second,
            }
        )

    async def get_prompts(self, request: Request) -> Response:
        """Calls answered per prompt (the last message's text), with ``record_prompts``."""
        return JSONResponse(dict(self.stats.prompts))

    async def set_faults(self, request: Request) -> Response:
        changes = json.loads(await request.body())
        allowed = {
            "error_rate",
            "truncate_rate",
            "hang_rate",
            "malformed_rate",
            "latency_ms",
            "tail_rate",
            "tail_latency_ms",
        }
        unknown = set(changes) - allowed
        if unknown:
            return _error(400, "invalid_request_error", f"unknown fields {sorted(unknown)}")
        rates: dict[str, Any] = {k: float(v) for k, v in changes.items()}
        self.config = dataclasses.replace(self.config, **rates)
        return JSONResponse({"ok": True})

    async def reset_stats(self, request: Request) -> Response:
        self.stats = _Stats()
        self.buckets.clear()
        return JSONResponse({"ok": True})


async def _unless_gone(request: Request, work: Awaitable[object]) -> bool:
    """Await ``work``; ``False`` (and ``work`` cancelled) if the client disconnected first.

    The body has been read, so the server's next ASGI message is ``http.disconnect``
    when the connection closes (and nothing before that).
    """
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    return task.done() and not task.cancelled()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _Truncated(Response):
    """Declares a longer body than it sends: the client sees the connection break."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__(b"", 200, headers, "application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [(k.encode(), v.encode()) for k, v in self.headers.items() if k != "content-length"]
        raw.append((b"content-length", b"1000"))
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await send(
            {"type": "http.response.body", "body": b'{"id": "chatcmpl-x", "cho', "more_body": False}
        )


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": code, "code": code}}
    return JSONResponse(body, status, headers=headers)


def _chat_request(body: dict[str, object]) -> ChatRequest:
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    tools = []
    for tool in body.get("tools") or ():  # type: ignore[attr-defined]
        fn = tool["function"]
        tools.append(ToolSpec(fn["name"], fn.get("description", ""), fn.get("parameters", {})))
    schema = None
    name = "output"
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt["json_schema"]["schema"]
        name = fmt["json_schema"].get("name", "output")
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 256
    return ChatRequest(
        model=str(body["model"]),
        messages=[_message(m) for m in messages],
        max_tokens=int(max_tokens),  # type: ignore[call-overload]
        temperature=float(body.get("temperature") or 0.0),  # type: ignore[arg-type]
        tools=tuple(tools),
        response_schema=schema,
        response_schema_name=name,
    )


def _message(raw: object) -> Message:
    if not isinstance(raw, dict) or raw.get("role") not in ("system", "user", "assistant", "tool"):
        raise ValueError("each message needs a role of system, user, assistant or tool")
    return raw  # type: ignore[return-value]  # checked above; the rest is passed through


def build_app(config: EmulatorConfig) -> Starlette:
    emulator = _Emulator(config)
    batches = BatchEmulator(config.batch, emulator.sim, _chat_request, api_key=config.api_key)
    app = Starlette(
        routes=[
            *batches.routes(),
            Route("/v1/chat/completions", emulator.completions, methods=["POST"]),
            Route("/v1/models", emulator.models, methods=["GET"]),
            Route("/stats", emulator.get_stats, methods=["GET"]),
            Route("/stats/reset", emulator.reset_stats, methods=["POST"]),
            Route("/stats/prompts", emulator.get_prompts, methods=["GET"]),
            Route("/admin/faults", emulator.set_faults, methods=["POST"]),
        ]
    )
    app.state.emulator = emulator
    return app


class EmulatorServer:
    """Runs the emulator in a background thread on 127.0.0.1 (tests, benchmarks, demos).

    ``with EmulatorServer(EmulatorConfig(requests_per_min=600)) as server:``
    then point a provider at ``server.base_url``. Port 0 picks a free port.
    """

    def __init__(self, config: EmulatorConfig, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self._server = uvicorn.Server(
            uvicorn.Config(
                build_app(config),
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=1,
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        servers = self._server.servers
        if not servers:
            raise RuntimeError("the emulator is not running")
        port: int = servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(
            target=self._server.run, name="fanout-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the emulator did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(config: EmulatorConfig, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the emulator in the foreground (``fanout sim-server``) until interrupted."""
    uvicorn.run(
        build_app(config),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
