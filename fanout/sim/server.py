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
Size limits answer as the vendors do: a request larger than the tokens/min bucket can
ever hold gets OpenAI's "Request too large" 429 (with a ``retry-after`` that waiting
cannot satisfy), one over ``max_context_tokens`` a context-length 400, a body over
``max_body_bytes`` a 413. ``proxy_headers``: the rate-limit and retry headers arrive
as LiteLLM's proxy forwards them (``llm_provider-retry-after-ms``, ...).
``EmulatorServer.stop()`` then ``start()`` brings it back on the same port (an outage).
``GET /v1/models``; ``GET /stats`` gives accepted/limited counts per second
(``GET /stats/prompts``: calls answered per prompt, with ``record_prompts``);
``POST /stats/reset`` clears them and the buckets; ``POST /admin/faults`` with
``{"error_rate": 0.5, ...}`` changes fault rates while running. The Files and Batch
APIs (``/v1/files``, ``/v1/batches``) are :mod:`fanout.sim._batches`, Anthropic's
Message Batches (``/v1/messages/batches``) :mod:`fanout.sim._message_batches`.
``"stream": true`` answers as OpenAI streams (:mod:`fanout.sim._stream`): the first
event after ``latency_ms``, then a piece of text per event, ``latency_per_token_ms``
apart; ``cut_streams`` (config or ``/admin/faults``): that many streamed replies break
off half-way (``cut_at_piece``: after that many pieces of text instead; 0, before the
first). ``GET /stats`` counts ``streams_open``: streamed replies still being sent.
``POST /v1/embeddings`` answers hash-seeded unit vectors
(:mod:`fanout.sim._embed`) with usage, under the same buckets.
Anthropic, Azure
OpenAI, Bedrock Converse and Gemini are :mod:`fanout.sim._protocols` (same sim, same
buckets, their own credentials, headers and errors), each streamed as its vendor streams
(:mod:`fanout.sim._stream_routes`), their image blocks checked and counted by
:mod:`fanout.sim._media_blocks`, and their embeddings (Azure, Gemini
``batchEmbedContents``, Bedrock Titan and Cohere) :mod:`fanout.sim._embed_routes`;
``overload_streams``: that many of their streamed replies end half-way on the
protocol's overloaded error event. A long system prompt is reported as cached
(``prompt_tokens_details.cached_tokens``) from its second call on.
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
from dataclasses import dataclass, field
from typing import Any

import orjson

from fanout.errors import MissingExtra, ProviderError

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as exc:  # one clear error naming the extra, not a deep ImportError
    raise MissingExtra(
        "the provider emulator (fanout.sim.server)", extra="sim", module=exc.name or "starlette"
    ) from None
from fanout.limits import TokenBucket
from fanout.sim._batches import BatchEmulator, BatchEmulatorConfig
from fanout.sim._embed import DEFAULT_DIMENSIONS, sim_embeddings
from fanout.sim._embed_routes import EmbedRoutes, embed_route_of
from fanout.sim._message_batches import MessageBatchEmulator
from fanout.sim._protocols import PromptCache, ProtocolRoutes, dialect_of
from fanout.sim._provider import SimProvider
from fanout.sim._stream import stream_reply
from fanout.sim._text import MARKER, last_user_text
from fanout.sim._wire import (
    bearer,
    chat_request,
    read_body,
    respond,
    respond_error,
    unless_gone,
)
from fanout.types import ChatRequest, ChatResponse, EmbedRequest, Usage, estimate_prompt_tokens

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
    max_context_tokens: int | None = None  # larger requests: a context-length 400
    max_body_bytes: int | None = None  # larger bodies: a 413
    proxy_headers: bool = False  # limit and retry headers prefixed llm_provider- (LiteLLM)
    # the other protocols (fanout.sim._protocols): Anthropic, Azure, Bedrock, Gemini
    overloaded_rate: float = 0.0  # refused as overloaded (Anthropic's 529, a 503 elsewhere)
    throttle_rate: float = 0.0  # refused as rate limited whatever the buckets hold
    cache_min_tokens: int = 1024  # a system prompt this long is cached (every protocol)
    # /v1/batches and /v1/messages/batches
    batch: BatchEmulatorConfig = field(default_factory=BatchEmulatorConfig)
    cut_streams: int = 0  # this many streamed replies break off half-way (then none)
    # this many streamed Anthropic, Gemini or Bedrock replies end half-way on the
    # protocol's overloaded error event (after cut_streams' cuts; fanout.sim._stream_routes)
    overload_streams: int = 0
    cut_at_piece: int | None = None  # ... after this many pieces of text (None: half-way)
    embedding_dimensions: int = DEFAULT_DIMENSIONS  # vector size when a request names none
    max_embedding_inputs: int = 2048  # inputs one embeddings request may carry (OpenAI's)


@dataclass
class _Stats:
    started: float = field(default_factory=time.monotonic)
    accepted: int = 0
    limited: int = 0
    errors: int = 0
    cancelled: int = 0  # the client hung up while its call waited
    too_large: int = 0  # answered "Request too large" 429, 413 or context-length 400
    overloaded: int = 0  # refused as overloaded (overloaded_rate)
    tokens: int = 0
    streams: int = 0  # streamed replies begun
    streams_cut: int = 0  # ... of them broken off half-way
    streams_open: int = 0  # ... still being sent
    embedding_requests: int = 0
    embedding_inputs: int = 0
    media: Counter[str] = field(default_factory=Counter)  # image and audio blocks by kind
    media_tokens: int = 0  # ... and their prompt tokens, counted the vendor's way
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
        self.cuts_left = config.cut_streams
        self.overloads_left = config.overload_streams
        self.prompt_cache = PromptCache(config.cache_min_tokens)

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

    async def completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/chat/completions`` as a bare ASGI handler (no Request or Response
        objects: starlette's cost a call was most of the emulator's, and a benchmark's
        emulator must outrun the client it measures)."""
        cfg = self.config
        key = bearer(scope)
        if cfg.api_key is not None and key != cfg.api_key:
            # echoed, as OpenAI does: the client must keep it out of its errors
            await respond_error(send, 401, "invalid_api_key", f"Incorrect API key provided: {key}.")
            return
        raw = await read_body(receive)
        if cfg.max_body_bytes is not None and len(raw) > cfg.max_body_bytes:
            self.stats.too_large += 1
            await respond_error(
                send, 413, "request_too_large",
                f"Request body of {len(raw)} bytes exceeds the limit of {cfg.max_body_bytes}.",
            )  # fmt: skip
            return
        try:
            payload = orjson.loads(raw)
            chat = chat_request(payload)
        except (ValueError, KeyError, TypeError) as exc:
            await respond_error(send, 400, "invalid_request_error", f"bad request body: {exc}")
            return
        req, tok = self._buckets(key or "anonymous", chat.model)
        now = time.monotonic()
        prompt = estimate_prompt_tokens(chat.messages, chat.tools)
        cost = prompt + chat.max_tokens
        if await self._refused_too_large(send, chat, prompt, cost, tok):
            self.stats.too_large += 1
            self.stats.count(ok=False)
            return
        wait = 0.0
        if req is not None:
            wait = req.wait_s(1, now)
        if tok is not None:
            wait = max(wait, tok.wait_s(cost, now))
        if wait <= 0 and cfg.throttle_rate and self.rng.random() < cfg.throttle_rate:
            wait = 1.0  # throttled by the provider's shared capacity, not this key's bucket
        if wait > 0:
            self.stats.limited += 1
            self.stats.count(ok=False)
            headers = self._limit_headers(req, tok)
            headers["retry-after-ms"] = f"{wait * 1000:.0f}"
            headers["retry-after"] = str(math.ceil(wait))
            await respond_error(
                send, 429, "rate_limit_exceeded", "Rate limit reached; retry later.",
                self._proxied(headers),
            )  # fmt: skip
            return
        if req is not None:
            req.take(1, now)
        if tok is not None:
            tok.take(cost, now)
        self.stats.accepted += 1
        self.stats.count(ok=True)
        headers = self._proxied(self._limit_headers(req, tok))
        if cfg.overloaded_rate and self.rng.random() < cfg.overloaded_rate:
            self.stats.overloaded += 1
            await respond_error(send, 503, "server_overloaded", "The engine is overloaded.")
            return
        try:
            if MARKER in last_user_text(chat.messages):  # markers may make it slow
                replying = asyncio.ensure_future(self.sim.complete(chat))
                if not await unless_gone(receive, replying):
                    self.stats.cancelled += 1
                    await respond(send, 499, b"", {})  # nobody reads it: the client is gone
                    return
                reply = replying.result()
            else:  # no marker: the sim answers at once (no task to watch)
                reply = await self.sim.complete(chat)
        except ProviderError as exc:  # the sim's own fault markers
            self.stats.errors += 1
            await respond_error(send, exc.status_code or 500, "server_error", str(exc))
            return
        per_token_ms = cfg.latency_per_token_ms
        if chat.stream:  # the per-token part is spent between the events instead
            per_token_ms = 0.0
        latency_s = (cfg.latency_ms + per_token_ms * reply.usage.output_tokens) / 1000
        if cfg.jitter_sigma:
            latency_s *= self.rng.lognormvariate(0.0, cfg.jitter_sigma)
        if cfg.tail_rate and self.rng.random() < cfg.tail_rate:
            latency_s += cfg.tail_latency_ms / 1000
        if tok is not None:  # settle: the provider counts what was really produced
            tok.adjust(cost - reply.usage.total_tokens)
        draw = self.rng.random()
        wait_s = cfg.hang_s if draw < cfg.hang_rate else latency_s
        if wait_s > 0 and not await unless_gone(receive, asyncio.sleep(wait_s)):
            self.stats.cancelled += 1
            await respond(send, 499, b"", {})  # nobody reads it: the client is gone
            return
        draw -= cfg.hang_rate
        if 0 <= draw < cfg.error_rate:
            self.stats.errors += 1
            await respond_error(send, 500, "server_error",
                              "The server had an error processing the request.")  # fmt: skip
            return
        draw -= cfg.error_rate
        if 0 <= draw < cfg.malformed_rate:
            self.stats.errors += 1
            await respond(send, 200, b'{"id": "x", "choices": [', headers)
            return
        draw -= cfg.malformed_rate
        if 0 <= draw < cfg.truncate_rate:
            self.stats.errors += 1
            # Declares a longer body than it sends: the client sees the connection break.
            await respond(send, 200, b'{"id": "chatcmpl-x", "cho', headers, length=1000)
            return
        self.stats.tokens += reply.usage.total_tokens
        if cfg.record_prompts and chat.messages:  # answered in full: a call the caller paid
            self.stats.prompts[str(chat.messages[-1].get("content"))] += 1
        if chat.stream:
            await self._stream(send, chat, payload, reply, headers)
            return
        usage = reply.usage
        if chat.messages[0]["role"] == "system":  # OpenAI caches a long prompt unasked
            usage = self.prompt_cache.usage(key or "anonymous", chat, usage, marked=None)
        await respond(send, 200, self._completion(chat, reply, usage), headers)

    async def _stream(
        self,
        send: Send,
        chat: ChatRequest,
        payload: dict[str, Any],
        reply: ChatResponse,
        headers: dict[str, str],
    ) -> None:
        cut = self.cuts_left > 0
        self.stats.streams += 1
        if cut:
            self.cuts_left -= 1
            self.stats.streams_cut += 1
        options = payload.get("stream_options") or {}
        self.stats.streams_open += 1
        try:
            await stream_reply(
                send, reply, headers, model=chat.model,
                reply_id=f"chatcmpl-{self.stats.accepted}",
                include_usage=bool(options.get("include_usage")),
                per_token_s=self.config.latency_per_token_ms / 1000,
                cut=cut, cut_at=self.config.cut_at_piece,
            )  # fmt: skip
        finally:
            self.stats.streams_open -= 1

    async def embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/embeddings``: a vector per input, usage, the buckets' 429s."""
        cfg = self.config
        key = bearer(scope)
        if cfg.api_key is not None and key != cfg.api_key:
            await respond_error(send, 401, "invalid_api_key", "Incorrect API key provided.")
            return
        try:
            request = _embed_request(orjson.loads(await read_body(receive)), cfg)
        except (ValueError, KeyError, TypeError) as exc:
            await respond_error(send, 400, "invalid_request_error", f"bad request body: {exc}")
            return
        reply = sim_embeddings(request)
        tokens = reply.usage.input_tokens
        req, tok = self._buckets(key or "anonymous", request.model)
        now = time.monotonic()
        wait = max(
            req.wait_s(1, now) if req is not None else 0.0,
            tok.wait_s(tokens, now) if tok is not None else 0.0,
        )
        if wait > 0:
            self.stats.limited += 1
            headers = self._limit_headers(req, tok)
            headers["retry-after-ms"] = f"{wait * 1000:.0f}"
            headers["retry-after"] = str(math.ceil(wait))
            await respond_error(
                send, 429, "rate_limit_exceeded", "Rate limit reached; retry later.", headers
            )
            return
        if req is not None:
            req.take(1, now)
        if tok is not None:
            tok.take(tokens, now)
        self.stats.accepted += 1
        self.stats.embedding_requests += 1
        self.stats.embedding_inputs += len(request.inputs)
        self.stats.tokens += tokens
        if cfg.latency_ms > 0:
            await asyncio.sleep(cfg.latency_ms / 1000)
        body = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": list(v)}
                for i, v in enumerate(reply.vectors)
            ],
            "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        await respond(send, 200, orjson.dumps(body), self._limit_headers(req, tok))

    def _completion(self, chat: ChatRequest, reply: ChatResponse, usage: Usage) -> bytes:
        message: dict[str, object] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = [c.to_wire() for c in reply.tool_calls]
        return orjson.dumps(
            {
                "id": f"chatcmpl-{self.stats.accepted}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": chat.model,
                "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
                "usage": {
                    "prompt_tokens": usage.input_tokens,
                    "completion_tokens": usage.output_tokens,
                    "total_tokens": usage.total_tokens,
                    "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
                },
            }
        )

    async def _refused_too_large(
        self, send: Send, chat: ChatRequest, prompt: int, cost: int, tok: TokenBucket | None
    ) -> bool:
        """Answer a request no wait can admit as OpenAI does, and say so; else ``False``."""
        limit = self.config.max_context_tokens
        if limit is not None and cost > limit:
            await respond_error(
                send,
                400,
                "context_length_exceeded",
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {cost} tokens ({prompt} in the messages, {chat.max_tokens} in "
                "the completion). Please reduce the length of the messages or completion.",
                kind="invalid_request_error",
            )
            return True
        if tok is not None and cost > tok.capacity:
            # OpenAI sends a retry-after here too, though waiting cannot help
            await respond_error(
                send,
                429,
                "rate_limit_exceeded",
                f"Request too large for {chat.model} in organization org-emulator on tokens "
                f"per min (TPM): Limit {int(tok.capacity)}, Requested {cost}. The input or "
                "output tokens must be reduced in order to run successfully.",
                self._proxied({"retry-after": "60", "retry-after-ms": "60000"}),
                kind="tokens",
            )
            return True
        return False

    def _proxied(self, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` as LiteLLM's proxy forwards a provider's (with ``proxy_headers``)."""
        if not self.config.proxy_headers:
            return headers
        return {f"llm_provider-{name}": value for name, value in headers.items()}

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
                "too_large": s.too_large,
                "overloaded": s.overloaded,
                "tokens": s.tokens,
                "streams": s.streams,
                "streams_cut": s.streams_cut,
                "streams_open": s.streams_open,
                "embedding_requests": s.embedding_requests,
                "embedding_inputs": s.embedding_inputs,
                "media": dict(s.media),
                "media_tokens": s.media_tokens,
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
            "overloaded_rate",
            "throttle_rate",
        }
        if "cut_streams" in changes:  # a count, not a rate
            self.cuts_left = int(changes.pop("cut_streams"))
        if "overload_streams" in changes:
            self.overloads_left = int(changes.pop("overload_streams"))
        if "cut_at_piece" in changes:  # a position (or null: half-way)
            at = changes.pop("cut_at_piece")
            self.config = dataclasses.replace(
                self.config, cut_at_piece=None if at is None else int(at)
            )
        unknown = set(changes) - allowed
        if unknown:
            return _error(400, "invalid_request_error", f"unknown fields {sorted(unknown)}")
        rates: dict[str, Any] = {k: float(v) for k, v in changes.items()}
        self.config = dataclasses.replace(self.config, **rates)
        return JSONResponse({"ok": True})

    async def reset_stats(self, request: Request) -> Response:
        self.stats = _Stats()
        self.buckets.clear()
        self.prompt_cache = PromptCache(self.config.cache_min_tokens)
        return JSONResponse({"ok": True})


def _embed_request(body: dict[str, Any], cfg: EmulatorConfig) -> EmbedRequest:
    """An embeddings request as OpenAI checks it: text inputs, none empty, not too many."""
    raw = body["input"]
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs:
        raise ValueError("input must be a string or a non-empty list of strings")
    if not all(isinstance(text, str) and text for text in inputs):
        raise ValueError("every input must be a non-empty string")
    if len(inputs) > cfg.max_embedding_inputs:
        raise ValueError(f"{len(inputs)} inputs; at most {cfg.max_embedding_inputs} a request")
    dimensions = body.get("dimensions")
    return EmbedRequest(
        model=str(body["model"]),
        inputs=tuple(inputs),
        dimensions=int(dimensions) if dimensions else cfg.embedding_dimensions,
    )


def _error(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    kind: str | None = None,
) -> Response:
    body = {"error": {"message": message, "type": kind or code, "code": code}}
    return JSONResponse(body, status, headers=headers)


def build_app(config: EmulatorConfig) -> ASGIApp:
    """The emulator's ASGI app: completions straight to their handler, the rest via starlette."""
    emulator = _Emulator(config)
    batches = BatchEmulator(config.batch, emulator.sim, chat_request, api_key=config.api_key)
    message_batches = MessageBatchEmulator(
        config.batch, emulator.sim, api_key=config.api_key, cache=lambda: emulator.prompt_cache
    )
    rest = Starlette(
        routes=[
            *batches.routes(),
            *message_batches.routes(),
            Route("/v1/models", emulator.models, methods=["GET"]),
            Route("/stats", emulator.get_stats, methods=["GET"]),
            Route("/stats/reset", emulator.reset_stats, methods=["POST"]),
            Route("/stats/prompts", emulator.get_prompts, methods=["GET"]),
            Route("/admin/faults", emulator.set_faults, methods=["POST"]),
        ]
    )

    protocols = ProtocolRoutes(emulator)
    embeddings = EmbedRoutes(emulator, protocols)  # Azure's, Gemini's and Bedrock's

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions":
            if scope["method"] == "POST":
                await emulator.completions(scope, receive, send)
            else:
                await respond_error(send, 405, "method_not_allowed", "POST only")
            return
        if scope["type"] == "http" and scope["path"] == "/v1/embeddings":
            if scope["method"] == "POST":
                await emulator.embeddings(scope, receive, send)
            else:
                await respond_error(send, 405, "method_not_allowed", "POST only")
            return
        embed = embed_route_of(scope["path"]) if scope["type"] == "http" else None
        if embed is not None and scope["method"] == "POST":
            await embeddings.handle(*embed, scope, receive, send)
            return
        other = dialect_of(scope["path"]) if scope["type"] == "http" else None
        if other is not None and scope["method"] == "POST":
            await protocols.handle(*other, scope, receive, send)
            return
        await rest(scope, receive, send)

    return app


class EmulatorServer:
    """Runs the emulator in a background thread on 127.0.0.1 (tests, benchmarks, demos).

    ``with EmulatorServer(EmulatorConfig(requests_per_min=600)) as server:``
    then point a provider at ``server.base_url``. Port 0 picks a free port. ``stop()``
    and ``start()`` again bring it back on the same port with the same state (buckets,
    stats): a provider outage, for clients that keep their base URL.
    """

    def __init__(self, config: EmulatorConfig, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self._app = build_app(config)
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._port:
            return self._port
        raise RuntimeError("the emulator is not running")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> EmulatorServer:
        server = uvicorn.Server(
            uvicorn.Config(
                self._app,
                host=self._host,
                port=self._port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=1,
            )
        )
        self._thread = threading.Thread(target=server.run, name="fanout-emulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the emulator did not start on port {self._port} within 10 s")
            time.sleep(0.01)
        self._server = server
        self._port = server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop serving (connections are closed; the port is kept for :meth:`start`)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

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
