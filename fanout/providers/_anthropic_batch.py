"""``AnthropicBatchAPI``: Anthropic's Message Batches API (``/v1/messages/batches``) over httpx.

A batch is one ``POST /v1/messages/batches`` of ``{"requests": [{"custom_id", "params"}]}``
(``params``: a Messages API body, written by :func:`messages_body` as online; at most
100,000 requests and 256 MB). ``GET /v1/messages/batches/{id}`` reports
``processing_status`` (``in_progress``, ``canceling``, ``ended``) and ``request_counts``
(``processing`` until the whole batch ends, then ``succeeded``/``errored``/``canceled``/
``expired``); once ended, ``results_url`` serves JSON Lines of ``{"custom_id", "result":
{"type": "succeeded", "message"} | {"type": "errored", "error"} | {"type": "expired"} |
{"type": "canceled"}}``, in any order. ``errored`` lines are classified as the online
path classifies the same error response (:func:`~fanout.providers._errors.error_for`).

Anthropic keeps no label on a batch, so :meth:`AnthropicBatchAPI.find` (a submit whose
answer was lost) lists the batches created since the journal's ``open`` event that hold
as many requests as the payload: an ended one whose results carry the payload's
``custom_id`` is it; else the oldest still running is taken (its results, matched by
``custom_id``, which carries a random tag of the submitting process, tell if it was not:
then its calls are sent again). See docs/batch-api.md for the guarantee.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
import orjson

from fanout.config import AnthropicProviderConfig
from fanout.errors import (
    InvalidResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
)
from fanout.providers._anthropic import message_response, messages_body
from fanout.providers._batch_api import BatchStatus, LineResult
from fanout.providers._batch_http import BatchHttp
from fanout.providers._build import env_secret, secret_values
from fanout.providers._errors import error_for
from fanout.providers._turns import answered, output_tool
from fanout.types import ChatRequest, ChatResponse

__all__ = ["AnthropicBatchAPI", "batch_status"]

_PAGE = 1000  # the most a page of the list may hold
_ENVELOPE = 64  # bytes of '{"requests":[' ... ']}' around the lines, with room to spare
# an errored line's error type and the HTTP status the same error has online
_STATUS_OF = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicBatchAPI(BatchHttp):
    """The Message Batches API at ``base_url`` (Anthropic's, or the emulator's).

    ``cache_prompt`` marks each request's system prompt and tools cacheable, as the
    online provider does. ``transport`` replaces the network (``httpx.MockTransport``
    in tests). The key is held privately and scrubbed from every error message.
    """

    max_requests = 100_000
    max_bytes = 256 * 1024 * 1024 - _ENVELOPE

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        base_url: str = "https://api.anthropic.com/v1",
        anthropic_version: str = "2023-06-01",
        cache_prompt: bool = False,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        secrets: tuple[str, ...] = (),
        timeout_s: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.cache_prompt = cache_prompt
        sent = {"x-api-key": api_key, "anthropic-version": anthropic_version, **(headers or {})}
        super().__init__(
            name, base_url, headers=sent, query=query, secrets=(api_key, *secrets),
            timeout_s=timeout_s, transport=transport,
        )  # fmt: skip

    @classmethod
    def from_config(
        cls,
        name: str,
        cfg: AnthropicProviderConfig,
        *,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> AnthropicBatchAPI:
        """The Batch API of the provider ``cfg`` describes, with the online provider's
        key, version, headers and query (secrets read from the environment here)."""
        env = os.environ if environ is None else environ
        secrets: list[str] = []
        headers = secret_values(name, "headers", cfg.headers, env, secrets)
        query = secret_values(name, "query", cfg.query, env, secrets)
        return cls(
            name, api_key=env_secret(name, "api_key_env", cfg.api_key_env, env),
            base_url=cfg.base_url, anthropic_version=cfg.anthropic_version,
            cache_prompt=cfg.cache_prompt, headers=headers, query=query, secrets=tuple(secrets),
            transport=transport,
        )  # fmt: skip

    def encode(self, custom_id: str, request: ChatRequest) -> bytes:
        line = {"custom_id": custom_id,
                "params": messages_body(request, cache_prompt=self.cache_prompt)}  # fmt: skip
        # a copy: orjson's own bytes keep a ~4 KB buffer (see OpenAIBatchAPI.encode)
        return bytes(memoryview(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)))

    async def submit(self, payload: bytes, *, label: str) -> BatchStatus:
        """One batch of the payload's lines (``label`` is journaled only: Anthropic keeps
        no metadata on a batch)."""
        lines = [line for line in payload.splitlines() if line.strip()]
        body = b'{"requests":[' + b",".join(lines) + b"]}"
        headers = {"content-type": "application/json"}
        batch = await self._json("POST", "/messages/batches", content=body, headers=headers)
        return batch_status(batch)

    async def find(self, label: str, *, since: float, payload: bytes) -> BatchStatus | None:
        ids = {_custom_id(line) for line in payload.splitlines() if line.strip()}
        candidates = await self._same_size(len(ids), since)
        running = []
        for batch in reversed(candidates):  # oldest first: ours followed its "open" at once
            status = batch_status(batch)
            if not status.ended:
                running.append(status)
            elif await self._first_result_id(status) in ids:
                return status
        return running[0] if running else None

    async def _same_size(self, n: int, since: float) -> list[dict[str, Any]]:
        """The batches created since ``since`` holding ``n`` requests, newest first."""
        found: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": _PAGE}
            if after is not None:
                params["after_id"] = after
            page = await self._json("GET", "/messages/batches", params=params)
            for batch in page.get("data") or ():
                if _epoch(batch.get("created_at")) < since:
                    return found
                if sum(int(v or 0) for v in (batch.get("request_counts") or {}).values()) == n:
                    found.append(batch)
            if not page.get("has_more") or not page.get("data"):
                return found
            after = str(page.get("last_id") or page["data"][-1]["id"])

    async def _first_result_id(self, status: BatchStatus) -> str | None:
        """The ``custom_id`` of an ended batch's first result line (read no further)."""
        try:
            async with self._client.stream("GET", self._results_path(status)) as response:
                if response.status_code != 200:
                    return None
                async for line in response.aiter_lines():
                    if line.strip():
                        return _custom_id(line.encode())
        except httpx.HTTPError as exc:
            raise ProviderConnectionError(
                f"{self.name}: batch results: {self._scrub(type(exc).__name__)}",
                provider=self.name,
            ) from None
        return None

    async def poll(self, batch_id: str) -> BatchStatus:
        return batch_status(await self._json("GET", f"/messages/batches/{batch_id}"))

    async def cancel(self, batch_id: str) -> BatchStatus:
        return batch_status(await self._json("POST", f"/messages/batches/{batch_id}/cancel"))

    async def results(self, status: BatchStatus) -> list[LineResult]:
        raw = await self._send("GET", self._results_path(status))
        return [self._line(line) for line in raw.splitlines() if line.strip()]

    def answer(self, request: ChatRequest, response: ChatResponse) -> ChatResponse:
        out = output_tool(request)
        return response if out is None else answered(response, out.name)

    def _results_path(self, status: BatchStatus) -> str:
        """``results_url`` when it is on the API's own host (the key goes nowhere else),
        else the documented path."""
        url = status.output_ref
        if url and urllib.parse.urlsplit(url).netloc == urllib.parse.urlsplit(self.base_url).netloc:
            return url
        return f"/messages/batches/{status.batch_id}/results"

    def _line(self, raw: bytes) -> LineResult:
        """One line of a results file."""
        try:
            entry = orjson.loads(raw)
            custom_id, result = str(entry["custom_id"]), entry["result"]
            kind = result["type"]
        except (ValueError, KeyError, TypeError):
            raise InvalidResponse(
                f"{self.name}: a batch result line is not JSON with a custom_id and result "
                f"({raw[:80]!r})",
                provider=self.name,
            ) from None
        if kind == "succeeded":
            try:
                return LineResult(custom_id, response=message_response(result["message"]))
            except (KeyError, IndexError, TypeError, ValueError, AssertionError) as exc:
                bad = InvalidResponse(
                    f"{self.name}: malformed reply in a batch result: {self._scrub(str(exc))}",
                    provider=self.name,
                )
                return LineResult(custom_id, error=bad)
        if kind == "errored":
            return LineResult(custom_id, error=self._errored(result.get("error")))
        state = "expired" if kind == "expired" else "was canceled"
        timeout = ProviderTimeout(
            f"{self.name}: the batch {state} before this request ran; it is sent again",
            provider=self.name,
        )
        return LineResult(custom_id, error=timeout)

    def _errored(self, error: object) -> ProviderError:
        """An errored line's error, as the same error response online would be."""
        inner = error.get("error") if isinstance(error, dict) else None
        kind = inner.get("type") if isinstance(inner, dict) else None
        status = _STATUS_OF.get(str(kind), 500)
        return error_for(self.name, status, orjson.dumps(error), {}, scrub=self._scrub)

def batch_status(batch: dict[str, Any]) -> BatchStatus:
    """A ``message_batch`` object in the provider-neutral vocabulary: ``in_progress``,
    ``cancelling``, and once ended ``cancelled`` (a cancel ended it), ``expired`` (lines
    expired) or ``completed``. Counts are zero until it ends, as Anthropic reports them."""
    counts = batch.get("request_counts") or {}
    n = {k: int(counts.get(k) or 0) for k in ("processing", "succeeded", "errored",
                                               "canceled", "expired")}  # fmt: skip
    processing = str(batch.get("processing_status") or "")
    if processing == "ended":
        state = "cancelled" if batch.get("cancel_initiated_at") else (
            "expired" if n["expired"] else "completed"
        )
    else:
        state = {"canceling": "cancelling"}.get(processing, processing)
    ended = batch.get("ended_at")
    return BatchStatus(
        batch_id=str(batch["id"]),
        state=state,
        total=sum(n.values()),
        completed=n["succeeded"],
        failed=n["errored"],
        created_at=_epoch(batch.get("created_at")) or None,
        ended_at=_epoch(ended) if ended else None,
        output_ref=batch.get("results_url"),
    )


def _epoch(stamp: object) -> float:
    """An RFC 3339 time (``2024-08-20T18:37:24.100435Z``) in seconds since the epoch."""
    if not isinstance(stamp, str) or not stamp:
        return 0.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _custom_id(line: bytes) -> str:
    try:
        return str(orjson.loads(line)["custom_id"])
    except (ValueError, KeyError, TypeError):
        return ""
