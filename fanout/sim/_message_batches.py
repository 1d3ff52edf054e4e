"""The emulator's Anthropic Message Batches API (``/v1/messages/batches``), as documented.

``POST /v1/messages/batches`` takes ``{"requests": [{"custom_id", "params"}]}`` (at most
``anthropic_max_requests`` requests and ``anthropic_max_bytes`` bytes; custom ids of
1-64 ``[A-Za-z0-9_-]``, unique): the batch is ``in_progress`` at once. Its lines
complete evenly over ``delay_s`` (the same knob as the OpenAI emulation), each answered
by the simulated model exactly as ``POST /v1/messages`` answers it (``[sim:fail]``
markers and ``line_error_rate`` make ``errored`` lines; a ``params`` that is not a valid
Messages request is ``errored`` too, as Anthropic validates them asynchronously). It
ends once every line is done, or at ``expires_at`` (``created_at + expire_s``: the
lines not done are ``expired``), or ``cancel_s`` after a cancel (``canceling``, then the
rest ``canceled``). As Anthropic's, ``request_counts`` shows every line ``processing``
until the batch ends, and ``results_url`` (JSON Lines, in no particular order) exists
only then.

``GET /stats/messages/batches`` counts batches created, by status (``in_progress`` or
``canceling``, and for ended ones how they ended: ``completed``, ``expired``,
``cancelled``, as the OpenAI emulation names them) and by ``processing_status``, lines
by result, lines submitted and the distinct requests among them (a request submitted
twice shows as ``lines > distinct``) and the usage billed (input tokens including the
cache's reads and writes, as fanout counts them).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fanout.errors import ProviderError
from fanout.sim._batch_objects import new_id
from fanout.sim._batches import BatchEmulatorConfig
from fanout.sim._protocols import DIALECTS, PromptCache
from fanout.sim._provider import SimProvider
from fanout.types import ChatResponse

__all__ = ["MessageBatchEmulator"]

_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_COUNTERS = (
    "batches_created", "lines_completed", "lines_failed", "lines_expired", "lines_canceled",
    "billed_input_tokens", "billed_output_tokens", "billed_cache_read_tokens",
    "billed_cache_write_tokens",
)  # fmt: skip
_LINE_TIMEOUT_S = 1.0  # a hung line ([sim:timeout]) fails after this, not an hour
_ANTHROPIC = DIALECTS["anthropic"]


@dataclass
class _Request:
    custom_id: str
    result: dict[str, object]  # the results line's "result", decided when created
    usage: dict[str, int] | None = None  # a succeeded line's, billed when it is revealed
    outcome: str | None = None  # its result type once done


@dataclass
class _Batch:
    id: str
    created_at: float
    expires_at: float
    requests: list[_Request]
    status: str = "in_progress"
    cancel_at: float | None = None
    ended_at: float | None = None
    ended_as: str | None = None  # completed, expired or cancelled
    order: list[int] = field(default_factory=list)  # the results file's line order

    def view(self, base_url: str) -> dict[str, object]:
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if self.status == "ended":
            counts.update(Counter(str(r.outcome) for r in self.requests))
        else:
            counts["processing"] = len(self.requests)
        ended = self.status == "ended"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": counts,
            "ended_at": _stamp(self.ended_at),
            "created_at": _stamp(self.created_at),
            "expires_at": _stamp(self.expires_at),
            "archived_at": None,
            "cancel_initiated_at": _stamp(self.cancel_at),
            "results_url": f"{base_url}v1/messages/batches/{self.id}/results" if ended else None,
        }


class MessageBatchEmulator:
    """The Message Batches endpoints over the emulator's simulated model."""

    def __init__(
        self,
        config: BatchEmulatorConfig,
        sim: SimProvider,
        *,
        api_key: str | None = None,
        cache: Callable[[], PromptCache] | None = None,
    ) -> None:
        self.config = config
        self.sim = sim
        self.api_key = api_key
        self.cache = cache  # the emulator's prompt cache, as online (it is replaced on reset)
        self.rng = random.Random(config.seed)
        self.batches: dict[str, _Batch] = {}
        self.stats: Counter[str] = Counter(dict.fromkeys(_COUNTERS, 0))
        self.requests: Counter[str] = Counter()  # submissions per request body
        self._serial = 0

    def routes(self) -> list[Route]:
        return [
            Route("/v1/messages/batches", self.create, methods=["POST"]),
            Route("/v1/messages/batches", self.list_batches, methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", self.retrieve, methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", self.delete, methods=["DELETE"]),
            Route("/v1/messages/batches/{batch_id}/cancel", self.cancel, methods=["POST"]),
            Route("/v1/messages/batches/{batch_id}/results", self.results, methods=["GET"]),
            Route("/stats/messages/batches", self.get_stats, methods=["GET"]),
        ]

    # -- the endpoints -----------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        key, denied = self._denied(request)
        if denied is not None:
            return denied
        raw = await request.body()
        cfg = self.config
        if len(raw) > cfg.anthropic_max_bytes:
            too_big = f"request of {len(raw)} bytes exceeds {cfg.anthropic_max_bytes}"
            return _error(413, "request_too_large", too_big)
        try:
            entries = json.loads(raw)["requests"]
            if not isinstance(entries, list):
                raise TypeError("requests must be an array")
            pairs = [(str(e["custom_id"]), e["params"]) for e in entries]
        except (ValueError, KeyError, TypeError) as exc:
            return _bad(f"bad request body: {exc}")
        problem = _envelope_problem([c for c, _ in pairs], cfg.anthropic_max_requests)
        if problem is not None:
            return _bad(problem)
        now = time.time()
        lines = await self._answer(key, pairs)
        batch = _Batch(new_id("msgbatch_"), now, now + cfg.expire_s, lines)
        batch.order = list(range(len(lines)))
        self.rng.shuffle(batch.order)  # results come in no particular order
        self.batches[batch.id] = batch
        self.stats["batches_created"] += 1
        return JSONResponse(batch.view(str(request.base_url)))

    async def retrieve(self, request: Request) -> Response:
        batch = self._batch(request)
        return batch if isinstance(batch, Response) else JSONResponse(
            batch.view(str(request.base_url))
        )

    async def cancel(self, request: Request) -> Response:
        batch = self._batch(request)
        if isinstance(batch, Response):
            return batch
        if batch.status != "in_progress":
            return _bad(f"batch {batch.id} is {batch.status}; only in_progress can be canceled")
        batch.status, batch.cancel_at = "canceling", time.time()
        return JSONResponse(batch.view(str(request.base_url)))

    async def delete(self, request: Request) -> Response:
        batch = self._batch(request)
        if isinstance(batch, Response):
            return batch
        if batch.status != "ended":
            return _bad(f"batch {batch.id} is {batch.status}; cancel it before deleting it")
        del self.batches[batch.id]
        return JSONResponse({"id": batch.id, "type": "message_batch_deleted"})

    async def results(self, request: Request) -> Response:
        batch = self._batch(request)
        if isinstance(batch, Response):
            return batch
        if batch.status != "ended":
            return _bad(f"batch {batch.id} is {batch.status}: results exist once it ends")
        body = b"".join(
            orjson.dumps({"custom_id": r.custom_id, "result": _final(r)},
                         option=orjson.OPT_APPEND_NEWLINE)
            for r in (batch.requests[i] for i in batch.order)
        )  # fmt: skip
        return Response(body, 200, media_type="application/binary")

    async def list_batches(self, request: Request) -> Response:
        _, denied = self._denied(request)
        if denied is not None:
            return denied
        query = request.query_params
        try:
            limit = max(1, min(1000, int(query.get("limit", "20"))))
        except ValueError:
            return _bad("limit must be an integer")
        newest = list(reversed(self.batches.values()))
        ids = [b.id for b in newest]
        if (after := query.get("after_id")) is not None:
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        elif (before := query.get("before_id")) is not None:
            newest = newest[: ids.index(before)][-limit:] if before in ids else []
        now = time.time()
        for batch in newest[:limit]:
            self._advance(batch, now)
        page = [b.view(str(request.base_url)) for b in newest[:limit]]
        return JSONResponse({
            "data": page, "has_more": len(newest) > limit,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        })  # fmt: skip

    async def get_stats(self, request: Request) -> Response:
        now = time.time()
        for batch in self.batches.values():
            self._advance(batch, now)
        return JSONResponse({
            **self.stats,
            "batches_by_status": dict(Counter(b.ended_as or b.status
                                              for b in self.batches.values())),
            "batches_by_processing_status": dict(Counter(b.status
                                                         for b in self.batches.values())),
            "lines_submitted": sum(self.requests.values()),
            "distinct_requests": len(self.requests),
        })  # fmt: skip

    def _batch(self, request: Request) -> _Batch | Response:
        _, denied = self._denied(request)
        if denied is not None:
            return denied
        batch_id = request.path_params["batch_id"]
        batch = self.batches.get(batch_id)
        if batch is None:
            return _error(404, "not_found_error", f"no message batch {batch_id!r}")
        self._advance(batch, time.time())
        return batch

    def _denied(self, request: Request) -> tuple[str, Response | None]:
        # x-api-key, as the API documents it; a bearer token, as newer official SDKs send it
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        key = request.headers.get("x-api-key") or bearer
        if "anthropic-version" not in request.headers:
            return key, _bad("anthropic-version: header is required")
        if self.api_key is not None and key != self.api_key:
            # echoed, as the emulator's other 401s: the client must keep it out of its errors
            return key, _error(401, "authentication_error", f"invalid x-api-key: {key}")
        return key, None

    # -- answers and the lifecycle -------------------------------------------------------

    async def _answer(self, key: str, pairs: list[tuple[str, object]]) -> list[_Request]:
        """Each request's result, decided now (revealed as the batch's time passes)."""
        lines: list[_Request] = []
        for start in range(0, len(pairs), 1000):
            chunk = pairs[start : start + 1000]
            lines.extend(await asyncio.gather(*(self._line(key, c, p) for c, p in chunk)))
        return lines

    async def _line(self, key: str, custom_id: str, params: object) -> _Request:
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
        self.requests[digest] += 1
        try:
            parsed = _ANTHROPIC.parse(params, "")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return _Request(custom_id, _errored("bad_request", f"invalid params: {exc}"))
        try:
            reply: ChatResponse = await self.sim.complete(parsed.chat, timeout_s=_LINE_TIMEOUT_S)
            if self.config.line_error_rate and self.rng.random() < self.config.line_error_rate:
                raise ProviderError("Internal server error", status_code=500)
        except ProviderError as exc:
            kind = "server" if (exc.status_code or 500) >= 500 else "bad_request"
            return _Request(custom_id, _errored(kind, str(exc)))
        usage = reply.usage
        if self.cache is not None:
            usage = self.cache().usage(key or "anonymous", parsed.chat, usage,
                                       marked=parsed.cacheable)  # fmt: skip
        self._serial += 1
        message = orjson.loads(_ANTHROPIC.reply(parsed, reply, usage, self._serial))
        message["id"] = f"msg_batch{self._serial:08d}"
        return _Request(custom_id, {"type": "succeeded", "message": message}, message["usage"])

    def _advance(self, batch: _Batch, now: float) -> None:
        """Reveal the lines done by ``now``; end the batch when it is due."""
        if batch.status == "ended":
            return
        stop = min(now, batch.expires_at, batch.cancel_at or now)
        n, delay = len(batch.requests), self.config.delay_s
        done = n if delay <= 0 else min(n, int(n * max(0.0, stop - batch.created_at) / delay))
        for line in batch.requests[:done]:
            if line.outcome is None:
                self._reveal(line)
        if done == n:
            self._end(batch, "completed", batch.created_at + delay if delay > 0 else now)
        elif now >= batch.expires_at:
            self._end(batch, "expired", batch.expires_at, rest="expired")
        elif batch.cancel_at is not None and now >= batch.cancel_at + self.config.cancel_s:
            self._end(batch, "cancelled", batch.cancel_at + self.config.cancel_s, rest="canceled")

    def _reveal(self, line: _Request) -> None:
        line.outcome = str(line.result["type"])
        if line.usage is None:
            self.stats["lines_failed"] += 1
            return
        usage = line.usage
        read = int(usage.get("cache_read_input_tokens") or 0)
        written = int(usage.get("cache_creation_input_tokens") or 0)
        self.stats["lines_completed"] += 1
        self.stats["billed_input_tokens"] += int(usage["input_tokens"]) + read + written
        self.stats["billed_output_tokens"] += int(usage["output_tokens"])
        self.stats["billed_cache_read_tokens"] += read
        self.stats["billed_cache_write_tokens"] += written

    def _end(self, batch: _Batch, how: str, at: float, rest: str | None = None) -> None:
        for line in batch.requests:
            if line.outcome is None:
                line.outcome = rest or "expired"
                self.stats[f"lines_{line.outcome}"] += 1
        batch.status, batch.ended_as, batch.ended_at = "ended", how, min(at, time.time())


def _final(line: _Request) -> dict[str, object]:
    """A done line's ``result``: its answer, or why it never ran."""
    if line.outcome in ("expired", "canceled"):
        return {"type": line.outcome}
    return line.result


def _errored(kind: str, message: str) -> dict[str, object]:
    _, body, _ = _ANTHROPIC.error(kind, message)
    return {"type": "errored", "error": orjson.loads(body)}


def _envelope_problem(custom_ids: list[str], max_requests: int) -> str | None:
    """What is wrong with a create request's list of requests, if anything."""
    if not custom_ids:
        return "requests: at least one request is required"
    if len(custom_ids) > max_requests:
        return f"requests: {len(custom_ids)} requests; a batch may hold at most {max_requests}"
    seen: set[str] = set()
    for i, custom_id in enumerate(custom_ids):
        if not _CUSTOM_ID.fullmatch(custom_id):
            return f"requests.{i}.custom_id: 1-64 letters, digits, '_' or '-' (got {custom_id!r})"
        if custom_id in seen:
            return f"requests.{i}.custom_id: {custom_id!r} is not unique in the batch"
        seen.add(custom_id)
    return None


def _stamp(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, kind: str, message: str) -> Response:
    return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status)


def _bad(message: str) -> Response:
    return _error(400, "invalid_request_error", message)
