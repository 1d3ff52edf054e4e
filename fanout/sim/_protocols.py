"""The emulator's routes for the other wire protocols, and its prompt cache.

Anthropic ``/v1/messages``, Azure ``/openai/deployments/{d}/chat/completions``, Bedrock
``/model/{id}/converse`` (``/converse-stream``) and Gemini
``/v1beta/models/{m}:generateContent`` (``:streamGenerateContent``) answer from
the same simulated provider and the same per (key, model) buckets as the OpenAI route,
each with its protocol's credentials, rate-limit headers and errors (:mod:`._dialect`).
Bedrock's credential is a SigV4 ``Authorization`` header, checked for its form (the
algorithm, a credential scope of ``bedrock``, the signed headers, a 64-hex signature,
an ``x-amz-date`` of the scope's day); it is not verified against a secret.

Faults beside the OpenAI route's ``error_rate`` and ``hang_rate``: ``overloaded_rate``
of calls are refused as overloaded (Anthropic's 529 ``overloaded_error``, a 503
elsewhere) and ``throttle_rate`` as rate limited whatever the buckets hold (Gemini's 429
``RESOURCE_EXHAUSTED`` with a ``RetryInfo`` delay, Bedrock's ``ThrottlingException``);
``[sim:filtered]`` in the prompt is refused by the content filter.

The prompt cache: a system prompt of at least ``cache_min_tokens`` tokens is cached
per (key, model) — automatically for OpenAI, Azure and Gemini (a later call reports
it as cached input tokens), and where the request marks it (``cache_control``,
``cachePoint``) for Anthropic and Bedrock, whose first call reports it written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import urllib.parse
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
from starlette.types import Receive, Scope, Send

from fanout.errors import ProviderError
from fanout.sim._dialect import Dialect, Parsed
from fanout.sim._stream_routes import send_stream, wants_stream
from fanout.sim._text import MARKER, last_user_text
from fanout.sim._wire import read_body, respond, unless_gone
from fanout.sim._wire_anthropic import Anthropic
from fanout.sim._wire_azure import Azure
from fanout.sim._wire_bedrock import Bedrock
from fanout.sim._wire_gemini import Gemini
from fanout.types import ChatRequest, Usage, estimate_prompt_tokens

if TYPE_CHECKING:
    from fanout.sim.server import _Emulator

__all__ = ["DIALECTS", "PromptCache", "ProtocolRoutes", "dialect_of", "sigv4_problem"]

_SIGV4 = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]{16,128})/(?P<day>\d{8})/[a-z0-9-]+/"
    r"bedrock/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?Signature=[0-9a-f]{64}"
)
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_MAX_CACHED = 100_000
DIALECTS: dict[str, Dialect] = {d.name: d for d in (Anthropic(), Azure(), Bedrock(), Gemini())}
"""The emulator's other protocols, by name."""
_STREAM_PATHS = (
    ("/model/", "/converse-stream", "bedrock"),
    ("/v1beta/models/", ":streamGenerateContent", "gemini"),
)


def dialect_of(path: str) -> tuple[Dialect, str] | None:
    """The protocol a POST to ``path`` speaks and the model its path names ("" if the
    body names it), or ``None`` for a path of none of them."""
    if path == "/v1/messages":
        return DIALECTS["anthropic"], ""
    if path.startswith("/openai/deployments/") and path.endswith("/chat/completions"):
        return DIALECTS["azure"], path[len("/openai/deployments/") : -len("/chat/completions")]
    if path.startswith("/model/") and path.endswith("/converse"):
        return DIALECTS["bedrock"], urllib.parse.unquote(path[len("/model/") : -len("/converse")])
    if path.startswith("/v1beta/models/") and path.endswith(":generateContent"):
        return DIALECTS["gemini"], path[len("/v1beta/models/") : -len(":generateContent")]
    for prefix, suffix, name in _STREAM_PATHS:  # streamed (fanout.sim._stream_routes)
        if path.startswith(prefix) and path.endswith(suffix):
            return DIALECTS[name], urllib.parse.unquote(path[len(prefix) : -len(suffix)])
    return None


def sigv4_problem(headers: dict[str, str]) -> tuple[str | None, str]:
    """``(problem, access key id)``: what is wrong with a SigV4 signature's form, if anything."""
    auth = headers.get("authorization", "")
    if not auth:
        return "Missing Authentication Token", ""
    found = _SIGV4.fullmatch(auth.strip())
    if found is None:
        return "Authorization header is not a SigV4 (AWS4-HMAC-SHA256) signature for bedrock", ""
    signed = found.group("signed").split(";")
    date = headers.get("x-amz-date", "")
    if "host" not in signed or "x-amz-date" not in signed:
        return "the signature must sign the host and x-amz-date headers", ""
    if not _AMZ_DATE.fullmatch(date) or not date.startswith(found.group("day")):
        return "x-amz-date is missing or not the day of the credential scope", ""
    return None, found.group("key")


class PromptCache:
    """Which system prompts each (key, model) has cached (see the module's docstring)."""

    def __init__(self, min_tokens: int) -> None:
        self.min_tokens = min_tokens
        self._seen: set[int] = set()

    def usage(self, key: str, chat: ChatRequest, usage: Usage, *, marked: bool | None) -> Usage:
        """``usage`` with its cached and cache-written tokens; ``marked``: ``None`` for
        automatic caching, else whether the request marked its prompt cacheable."""
        if marked is False:
            return usage
        system = next((m for m in chat.messages if m["role"] == "system"), None)
        text = (system.get("content") if system is not None else None) or ""
        tokens = 3 + -(-len(text) // 4)  # the simulated provider's count of that message
        if not text or tokens < self.min_tokens:
            return usage
        digest = hash((key, chat.model, text, tuple(t.name for t in chat.tools)))
        if digest in self._seen:
            return Usage(usage.input_tokens, usage.output_tokens, tokens, 0)
        if len(self._seen) >= _MAX_CACHED:
            self._seen.clear()
        self._seen.add(digest)
        written = tokens if marked else 0  # automatic caches report no writes
        return Usage(usage.input_tokens, usage.output_tokens, 0, written)


class ProtocolRoutes:
    """Answers the other protocols' calls from the emulator's sim, buckets and faults."""

    def __init__(self, emulator: _Emulator) -> None:
        self.emulator = emulator

    async def handle(
        self, dialect: Dialect, model: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        em = self.emulator
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        key, refusal = self.credential(dialect.name, headers, query)
        if refusal is not None:
            await self._error(send, dialect, *refusal)
            return
        raw = await read_body(receive)
        try:
            data = orjson.loads(raw)
            parsed = dialect.parse(data, model)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            await self._error(send, dialect, "bad_request", f"bad request body: {exc}")
            return
        if await self._refused(dialect, key, parsed.chat, send):
            return
        em.stats.accepted += 1
        em.stats.count(ok=True)
        em.stats.media.update(parsed.media)
        stream = wants_stream(dialect.name, scope["path"], data)
        await self._answer(dialect, key, parsed, receive, send, stream=stream)

    def credential(
        self, protocol: str, headers: dict[str, str], query: dict[str, list[str]]
    ) -> tuple[str, tuple[str, str] | None]:
        """``(key, refusal)``: the caller's key, or why it is refused (kind, message)."""
        expected = self.emulator.config.api_key
        if protocol == "bedrock":
            problem, key = sigv4_problem(headers)
            return key, (("auth", problem) if problem else None)
        if protocol == "anthropic":
            key = headers.get("x-api-key", "")
            if "anthropic-version" not in headers:
                return key, ("bad_request", "anthropic-version: header is required")
        elif protocol == "azure":
            key = headers.get("api-key") or headers.get("authorization", "").removeprefix("Bearer ")
            if not query.get("api-version"):
                return key, ("not_found", "Resource not found (no api-version query parameter)")
        else:
            key = headers.get("x-goog-api-key") or (query.get("key") or [""])[0]
        if expected is not None and key != expected:
            # echoed as OpenAI's 401 does: the client must keep it out of its errors
            return key, ("auth", f"invalid API key provided: {key}")
        return key, None

    async def _refused(self, dialect: Dialect, key: str, chat: ChatRequest, send: Send) -> bool:
        """Answer a call the buckets (or an injected throttle) refuse; else ``False``."""
        em, cfg = self.emulator, self.emulator.config
        req, tok = em._buckets(key or "anonymous", chat.model)
        now = time.monotonic()
        cost = estimate_prompt_tokens(chat.messages, chat.tools) + chat.max_tokens
        wait = req.wait_s(1, now) if req is not None else 0.0
        if tok is not None:
            wait = max(wait, tok.wait_s(cost, now))
        if wait <= 0 and cfg.throttle_rate and em.rng.random() < cfg.throttle_rate:
            wait = 1.0  # throttled by the provider's shared capacity, not by this key's bucket
        if wait > 0:
            em.stats.limited += 1
            em.stats.count(ok=False)
            status, body, extra = dialect.error("rate_limited", "Rate limit exceeded.", wait)
            await respond(send, status, body, {**self._limit_headers(dialect, req, tok), **extra})
            return True
        if req is not None:
            req.take(1, now)
        if tok is not None:
            tok.take(cost, now)
        return False

    async def _answer(
        self, dialect: Dialect, key: str, parsed: Parsed, receive: Receive, send: Send,
        *, stream: bool = False,
    ) -> None:  # fmt: skip
        em, cfg, chat = self.emulator, self.emulator.config, parsed.chat
        prompt = last_user_text(chat.messages)
        if cfg.overloaded_rate and em.rng.random() < cfg.overloaded_rate:
            em.stats.overloaded += 1
            await self._error(send, dialect, "overloaded", "Overloaded")
            return
        if MARKER in prompt and "[sim:filtered]" in prompt:
            await self._error(send, dialect, "filtered", "The prompt was filtered.")
            return
        try:
            if MARKER in prompt:  # markers may make it slow: watch for the client leaving
                replying = asyncio.ensure_future(em.sim.complete(chat))
                if not await unless_gone(receive, replying):
                    em.stats.cancelled += 1
                    await respond(send, 499, b"", {})  # nobody reads it: the client is gone
                    return
                reply = replying.result()
            else:  # the sim answers at once (no task to watch), as on the OpenAI route
                reply = await em.sim.complete(chat)
        except ProviderError as exc:  # the sim's own fault markers
            em.stats.errors += 1
            kind = "server" if (exc.status_code or 500) >= 500 else "bad_request"
            await self._error(send, dialect, kind, str(exc))
            return
        req, tok = em._buckets(key or "anonymous", chat.model)
        if tok is not None:  # settle: the provider counts what was really produced
            tok.adjust(estimate_prompt_tokens(chat.messages, chat.tools) + chat.max_tokens
                       - reply.usage.total_tokens)  # fmt: skip
        wait_s = cfg.latency_ms / 1000
        draw = em.rng.random()
        if draw < cfg.hang_rate:
            wait_s = cfg.hang_s
        if wait_s > 0 and not await unless_gone(receive, asyncio.sleep(wait_s)):
            em.stats.cancelled += 1
            await respond(send, 499, b"", {})
            return
        if 0 <= draw - cfg.hang_rate < cfg.error_rate:
            em.stats.errors += 1
            await self._error(send, dialect, "server", "The server had an error.")
            return
        marked = None if dialect.automatic_cache else parsed.cacheable
        usage = em.prompt_cache.usage(key or "anonymous", chat, reply.usage, marked=marked)
        if parsed.media_tokens:  # images and audio, counted the vendor's way
            em.stats.media_tokens += parsed.media_tokens
            usage = dataclasses.replace(
                usage, input_tokens=usage.input_tokens + parsed.media_tokens
            )
        em.stats.tokens += usage.total_tokens
        if stream:
            headers = self._limit_headers(dialect, req, tok)
            await send_stream(em, dialect.name, send, parsed, reply, usage, headers)
            return
        body = dialect.reply(parsed, reply, usage, em.stats.accepted)
        await respond(send, 200, body, self._limit_headers(dialect, req, tok))

    def _limit_headers(self, dialect: Dialect, req: object, tok: object) -> dict[str, str]:
        cfg = self.emulator.config
        limits: dict[str, tuple[float, float, float]] = {}
        for what, bucket, per_min in (("requests", req, cfg.requests_per_min),
                                      ("tokens", tok, cfg.tokens_per_min)):  # fmt: skip
            if bucket is not None and per_min and cfg.send_limit_headers:
                level, capacity, rate = bucket.level, bucket.capacity, bucket.rate  # type: ignore[attr-defined]
                limits[what] = (per_min, level, max(0.0, (capacity - level) / rate))
        return dialect.limit_headers(limits, datetime.now(UTC)) if limits else {}

    async def _error(self, send: Send, dialect: Dialect, kind: str, message: str) -> None:
        status, body, headers = dialect.error(kind, message)
        await respond(send, status, body, headers)
