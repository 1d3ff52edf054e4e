"""The emulator's OpenAI Files and Batch APIs: ``/v1/files`` and ``/v1/batches``, as documented.

A batch goes ``validating`` → ``in_progress`` → ``finalizing`` → ``completed``, or to
``failed`` (its input file did not validate, or the model's enqueued-token limit was
reached: ``token_limit_exceeded``), ``expired`` (it did not finish by ``expires_at``:
lines done by then are in the output file, the rest in the error file as
``batch_expired``) or ``cancelling`` → ``cancelled`` (partial results in the output
file). Time drives the states, read whenever a batch is looked at: validation takes
``validate_s``, the lines complete evenly over ``delay_s`` (``request_counts`` grows
as they do), finalizing takes ``finalize_s``. Each line is answered by the same
simulated model as ``/v1/chat/completions`` (its ``[sim:fail]`` markers make failed
lines, its replies are the same), plus ``line_error_rate`` of random 500s.

``GET /stats/batches`` counts files, batches by status, lines submitted, distinct
requests among them (a request submitted twice shows as ``lines > distinct``) and
the usage billed for completed lines.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fanout.errors import ProviderError
from fanout.sim._batch_objects import (
    Batch,
    File,
    Parsed,
    Problem,
    new_id,
    read_input,
    result_line,
)
from fanout.sim._provider import SimProvider
from fanout.types import ChatRequest, ChatResponse

__all__ = ["BatchEmulator", "BatchEmulatorConfig"]

ENDPOINTS = ("/v1/chat/completions",)
_COUNTERS = (
    "files_created",
    "batches_created",
    "lines_completed",
    "lines_failed",
    "lines_expired",
    "billed_input_tokens",
    "billed_output_tokens",
)
_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
_LINE_TIMEOUT_S = 1.0  # a hung line ([sim:timeout]) fails after this, not an hour


@dataclass(frozen=True, slots=True)
class BatchEmulatorConfig:
    """How the emulated Batch APIs behave (the limits default to the documented ones).
    The timing and fault knobs apply to OpenAI's and Anthropic's alike."""

    validate_s: float = 0.05
    delay_s: float = 1.0  # in_progress: the lines complete evenly over this long
    finalize_s: float = 0.05
    cancel_s: float = 0.05  # cancelling -> cancelled
    expire_s: float = 86_400.0  # expires_at = created_at + this (OpenAI: the 24h window)
    line_error_rate: float = 0.0  # share of lines answered 500, drawn per line
    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    # Anthropic's Message Batches (fanout.sim._message_batches): its documented limits
    anthropic_max_requests: int = 100_000
    anthropic_max_bytes: int = 256 * 1024 * 1024
    queue_tokens: int | None = None  # enqueued prompt tokens allowed per model
    seed: int = 0


class BatchEmulator:
    """The Files and Batches endpoints over one simulated model (the emulator's own)."""

    def __init__(
        self,
        config: BatchEmulatorConfig,
        sim: SimProvider,
        parse: Callable[[dict[str, object]], ChatRequest],
        *,
        api_key: str | None = None,
    ) -> None:
        self.config = config
        self.sim = sim
        self.parse = parse  # a chat-completions body as a ChatRequest (the emulator's parser)
        self.api_key = api_key
        self.rng = random.Random(config.seed)
        self.files: dict[str, File] = {}
        self.batches: dict[str, Batch] = {}
        self.stats: Counter[str] = Counter(dict.fromkeys(_COUNTERS, 0))
        self.requests: Counter[str] = Counter()  # submissions per request body
        self._lock = asyncio.Lock()  # one batch advances at a time (its lines are computed once)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/files", self.upload, methods=["POST"]),
            Route("/v1/files", self.list_files, methods=["GET"]),
            Route("/v1/files/{file_id}", self.get_file, methods=["GET"]),
            Route("/v1/files/{file_id}", self.delete_file, methods=["DELETE"]),
            Route("/v1/files/{file_id}/content", self.file_content, methods=["GET"]),
            Route("/v1/batches", self.create, methods=["POST"]),
            Route("/v1/batches", self.list_batches, methods=["GET"]),
            Route("/v1/batches/{batch_id}", self.retrieve, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self.cancel, methods=["POST"]),
            Route("/stats/batches", self.get_stats, methods=["GET"]),
        ]

    # -- files ---------------------------------------------------------------------

    async def upload(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            form = await request.form(max_part_size=self.config.max_bytes + 1)
        except Exception as exc:  # a body that is not multipart/form-data
            return _error(400, "invalid_request_error", f"expected multipart/form-data: {exc}")
        try:
            upload, purpose = form.get("file"), form.get("purpose")
            if upload is None or isinstance(upload, str):
                return _error(400, "invalid_request_error", "missing required parameter: 'file'")
            if purpose not in ("batch", "fine-tune", "assistants", "vision", "user_data", "evals"):
                return _error(400, "invalid_request_error", f"invalid purpose {purpose!r}")
            data = await upload.read()
            filename = upload.filename or "upload.jsonl"
        finally:
            await form.close()  # its spooled temporary files
        if purpose == "batch" and len(data) > self.config.max_bytes:
            return _error(
                400,
                "invalid_request_error",
                f"file of {len(data)} bytes exceeds the {self.config.max_bytes} bytes allowed "
                "for batch input",
            )
        file = File(new_id("file-"), filename, str(purpose), data, int(time.time()))
        self.files[file.id] = file
        self.stats["files_created"] += 1
        return JSONResponse(file.view())

    async def list_files(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        data = [f.view() for f in self.files.values()]
        return JSONResponse({"object": "list", "data": data, "has_more": False})

    async def get_file(self, request: Request) -> Response:
        file = self._file(request)
        return file if isinstance(file, Response) else JSONResponse(file.view())

    async def delete_file(self, request: Request) -> Response:
        file = self._file(request)
        if isinstance(file, Response):
            return file
        del self.files[file.id]
        return JSONResponse({"id": file.id, "object": "file", "deleted": True})

    async def file_content(self, request: Request) -> Response:
        file = self._file(request)
        if isinstance(file, Response):
            return file
        return Response(file.data, 200, media_type="application/octet-stream")

    def _file(self, request: Request) -> File | Response:
        if (denied := self._denied(request)) is not None:
            return denied
        file_id = request.path_params["file_id"]
        file = self.files.get(file_id)
        if file is None:
            return _error(404, "invalid_request_error", f"No such File object: {file_id}")
        return file

    # -- batches -------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            body = json.loads(await request.body())
            input_file_id = str(body["input_file_id"])
            endpoint = str(body["endpoint"])
            window = str(body["completion_window"])
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, "invalid_request_error", f"bad request body: {exc}")
        if endpoint not in ENDPOINTS:
            return _error(
                400,
                "invalid_request_error",
                f"endpoint {endpoint!r} is not supported here (only {ENDPOINTS})",
            )
        if window != "24h":
            return _error(
                400, "invalid_request_error", f"completion_window must be '24h' (got {window!r})"
            )
        file = self.files.get(input_file_id)
        if file is None:
            return _error(404, "invalid_request_error", f"No such File object: {input_file_id}")
        if file.purpose != "batch":
            return _error(
                400,
                "invalid_request_error",
                f"file {input_file_id} has purpose {file.purpose!r}, not 'batch'",
            )
        metadata = body.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or any(len(str(k)) > 64 or len(str(v)) > 512 for k, v in metadata.items())
        ):
            return _error(
                400,
                "invalid_request_error",
                "metadata: at most 16 pairs, keys up to 64 and values up to 512 chars",
            )
        now = time.time()
        batch = Batch(new_id("batch_"), input_file_id, endpoint, window, metadata, now)
        batch.times["expires_at"] = now + self.config.expire_s
        self.batches[batch.id] = batch
        self.stats["batches_created"] += 1
        return JSONResponse(batch.view())

    async def retrieve(self, request: Request) -> Response:
        batch = await self._batch(request)
        return batch if isinstance(batch, Response) else JSONResponse(batch.view())

    async def cancel(self, request: Request) -> Response:
        batch = await self._batch(request)
        if isinstance(batch, Response):
            return batch
        if batch.status in _ENDED or batch.status == "cancelling":
            return _error(
                409, "invalid_request_error", f"Cannot cancel a batch with status '{batch.status}'."
            )
        batch.status = "cancelling"
        batch.times["cancelling_at"] = time.time()
        return JSONResponse(batch.view())

    async def list_batches(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            limit = max(1, min(100, int(request.query_params.get("limit", "20"))))
        except ValueError:
            return _error(400, "invalid_request_error", "limit must be an integer")
        after = request.query_params.get("after")
        newest = list(reversed(self.batches.values()))
        if after is not None:
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        async with self._lock:
            for batch in newest[:limit]:
                await self._advance(batch, time.time())
        page = [b.view() for b in newest[:limit]]
        return JSONResponse(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(newest) > limit,
            }
        )

    async def get_stats(self, request: Request) -> Response:
        by_status = Counter(b.status for b in self.batches.values())
        return JSONResponse(
            {
                **self.stats,
                "batches_by_status": dict(by_status),
                "lines_submitted": sum(self.requests.values()),
                "distinct_requests": len(self.requests),
            }
        )

    async def _batch(self, request: Request) -> Batch | Response:
        if (denied := self._denied(request)) is not None:
            return denied
        batch_id = request.path_params["batch_id"]
        batch = self.batches.get(batch_id)
        if batch is None:
            return _error(404, "invalid_request_error", f"No such Batch object: {batch_id}")
        async with self._lock:
            await self._advance(batch, time.time())
        return batch

    def _denied(self, request: Request) -> Response | None:
        if self.api_key is None:
            return None
        key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if key != self.api_key:
            return _error(401, "invalid_api_key", "Incorrect API key provided.")
        return None

    # -- the lifecycle -------------------------------------------------------------

    async def _advance(self, batch: Batch, now: float) -> None:
        """Move ``batch`` to the state it has reached by ``now``."""
        cfg, times = self.config, batch.times
        if batch.status == "validating":
            validated_at = batch.created_at + cfg.validate_s
            if now < validated_at:
                return
            if not self._validate(batch, validated_at):
                return
            await self._answer(batch)
            batch.status = "in_progress"
            times["in_progress_at"] = validated_at
        if batch.status in ("in_progress", "cancelling"):
            started = times.get("in_progress_at", now)
            stop = min(now, times["expires_at"], times.get("cancelling_at", now))
            self._reveal(batch, started, stop)
            if batch.status == "cancelling":
                if now >= times["cancelling_at"] + cfg.cancel_s:
                    self._end(batch, "cancelled", times["cancelling_at"] + cfg.cancel_s)
                return
            if all(line.done for line in batch.lines):
                batch.status = "finalizing"
                times["finalizing_at"] = started + cfg.delay_s
            elif now >= times["expires_at"]:
                self._expire(batch)
                return
        if batch.status == "finalizing" and now >= times["finalizing_at"] + cfg.finalize_s:
            self._end(batch, "completed", times["finalizing_at"] + cfg.finalize_s)

    def _validate(self, batch: Batch, at: float) -> bool:
        """Read the input file into lines; ``False`` (and the batch failed) if it is bad."""
        cfg = self.config
        read = read_input(
            self.files[batch.input_file_id].data,
            batch.endpoint,
            self.parse,
            max_requests=cfg.max_requests,
            max_bytes=cfg.max_bytes,
        )
        if not isinstance(read, Parsed):
            return self._refuse(batch, read, at)
        lines, model, tokens = read.lines, read.model, read.tokens
        if cfg.queue_tokens is not None:
            queued = sum(
                b.prompt_tokens
                for b in self.batches.values()
                if b.model == model and b.status in ("in_progress", "finalizing")
            )
            if queued + tokens > cfg.queue_tokens:
                limit = (
                    "token_limit_exceeded",
                    f"Enqueued token limit reached for {model}: {queued} enqueued, this "
                    f"batch adds {tokens}, the limit is {cfg.queue_tokens}. Please try "
                    "again once some in_progress batches have been completed.",
                    None,
                )
                return self._refuse(batch, limit, at)
        batch.lines, batch.model, batch.prompt_tokens = lines, model, tokens
        for entry in lines:
            digest = hashlib.sha256(json.dumps(entry.body, sort_keys=True).encode()).hexdigest()
            self.requests[digest] += 1
        return True

    def _refuse(self, batch: Batch, problem: Problem, at: float) -> bool:
        code, message, line = problem
        batch.errors = [{"code": code, "message": message, "param": None, "line": line}]
        self._end(batch, "failed", at)
        return False

    async def _answer(self, batch: Batch) -> None:
        """Each line's output- or error-file line, computed once (revealed as time passes)."""
        for start in range(0, len(batch.lines), 1000):
            chunk = batch.lines[start : start + 1000]
            replies = await asyncio.gather(
                *(self._reply(self.parse(line.body)) for line in chunk), return_exceptions=True
            )
            for line, reply in zip(chunk, replies, strict=True):
                line.ok, line.result = result_line(line.custom_id, batch.model, reply)

    async def _reply(self, chat: ChatRequest) -> ChatResponse:
        reply = await self.sim.complete(chat, timeout_s=_LINE_TIMEOUT_S)
        if self.config.line_error_rate and self.rng.random() < self.config.line_error_rate:
            raise ProviderError("The server had an error processing the request.", status_code=500)
        return reply

    def _reveal(self, batch: Batch, started: float, until: float) -> None:
        """Mark done the lines that completed by ``until`` (evenly over ``delay_s``)."""
        n = len(batch.lines)
        delay = self.config.delay_s
        done = n if delay <= 0 else min(n, int(n * max(0.0, until - started) / delay))
        for line in batch.lines[:done]:
            if not line.done:
                line.done = True
                if line.ok:
                    usage = line.result["response"]["body"]["usage"]  # type: ignore[index]
                    self.stats["billed_input_tokens"] += usage["prompt_tokens"]
                    self.stats["billed_output_tokens"] += usage["completion_tokens"]
                    self.stats["lines_completed"] += 1
                else:
                    self.stats["lines_failed"] += 1

    def _expire(self, batch: Batch) -> None:
        for line in batch.lines:
            if not line.done:
                line.done, line.ok = True, False
                line.result = {
                    "id": new_id("batch_req_"),
                    "custom_id": line.custom_id,
                    "response": None,
                    "error": {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the completion "
                        "window expired.",
                    },
                }
                self.stats["lines_expired"] += 1
        self._end(batch, "expired", batch.times["expires_at"])

    def _end(self, batch: Batch, status: str, at: float) -> None:
        """Final state: the output file (answered lines) and error file (failed ones)."""
        batch.status = status
        batch.times[f"{status}_at"] = at
        done = [line for line in batch.lines if line.done and line.result is not None]
        for ok, purpose in ((True, "output"), (False, "error")):
            chosen = [line.result for line in done if line.ok is ok]
            if not chosen:
                continue
            data = b"".join(json.dumps(r).encode() + b"\n" for r in chosen)
            file = File(
                new_id("file-"), f"batch_{batch.id}_{purpose}.jsonl", "batch_output", data, int(at)
            )
            self.files[file.id] = file
            if ok:
                batch.output_file_id = file.id
            else:
                batch.error_file_id = file.id


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse(
        {"error": {"message": message, "type": code, "param": None, "code": code}}, status
    )
