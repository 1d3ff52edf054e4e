"""``OpenAIBatchAPI``: OpenAI's Files and Batch APIs (``/v1/files``, ``/v1/batches``) over httpx.

A payload is a JSON Lines file, one ``{"custom_id", "method": "POST", "url":
"/v1/chat/completions", "body": {...}}`` per request, uploaded with purpose
``batch`` (at most 50,000 requests and 200 MB, one model); the batch is created on
it with ``completion_window="24h"`` and ``metadata={"fanout_batch": LABEL}``, which
is how :meth:`OpenAIBatchAPI.find` recognises it again. Results are the batch's
output file (``response.status_code`` and ``response.body``, in any order) and
error file (failed lines, and ``batch_expired`` for those an expired batch never ran).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from fanout.errors import (
    ConfigError,
    InvalidResponse,
    ProviderError,
    ProviderHTTPError,
    ProviderTimeout,
    RateLimited,
)
from fanout.providers._batch_api import BatchStatus, LineResult
from fanout.providers._batch_http import BatchHttp
from fanout.providers._openai import _request_body
from fanout.types import ChatRequest, ChatResponse, ToolCall, Usage

__all__ = ["OpenAIBatchAPI"]

ENDPOINT = "/v1/chat/completions"
LABEL_KEY = "fanout_batch"
_PAGE = 100


class OpenAIBatchAPI(BatchHttp):
    """The Batch API of an OpenAI-compatible ``base_url`` (OpenAI itself, or the emulator).

    ``transport`` replaces the network (``httpx.MockTransport`` in tests). The key is
    held privately and scrubbed from every error message.
    """

    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        super().__init__(
            name, base_url, headers=headers, secrets=(api_key,), timeout_s=timeout_s,
            transport=transport,
        )  # fmt: skip

    @classmethod
    def from_env(
        cls,
        name: str,
        *,
        base_url: str,
        api_key_env: str | None,
        environ: Mapping[str, str] | None = None,
    ) -> OpenAIBatchAPI:
        env = os.environ if environ is None else environ
        key = None
        if api_key_env:
            key = env.get(api_key_env)
            if not key:
                raise ConfigError(
                    f"providers.{name}.api_key_env = {api_key_env!r}, but that environment "
                    "variable is not set; export it (the key never goes in the config file)"
                )
        return cls(name, base_url=base_url, api_key=key)

    def encode(self, custom_id: str, request: ChatRequest) -> bytes:
        line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT,
                "body": _request_body(request)}  # fmt: skip
        # A copy: orjson's own bytes keep a ~4 KB buffer, and a batch job holds a line per
        # waiting call (a quarter of a waiting record's memory, measured with tracemalloc).
        return bytes(memoryview(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)))

    async def submit(self, payload: bytes, *, label: str) -> BatchStatus:
        files = {"file": (f"{label}.jsonl", payload, "application/jsonl")}
        uploaded = await self._json("POST", "/files", files=files, data={"purpose": "batch"})
        batch = await self._json(
            "POST",
            "/batches",
            json={
                "input_file_id": uploaded["id"],
                "endpoint": ENDPOINT,
                "completion_window": "24h",
                "metadata": {LABEL_KEY: label},
            },
        )
        return _status(batch)

    async def find(self, label: str, *, since: float, payload: bytes = b"") -> BatchStatus | None:
        after: str | None = None
        while True:  # newest first: stop at the first batch older than ``since``
            params: dict[str, str | int] = {"limit": _PAGE}
            if after is not None:
                params["after"] = after
            page = await self._json("GET", "/batches", params=params)
            for batch in page.get("data") or ():
                if (batch.get("metadata") or {}).get(LABEL_KEY) == label:
                    return _status(batch)
                if float(batch.get("created_at") or 0) < since:
                    return None
            if not page.get("has_more") or not page.get("data"):
                return None
            after = str(page["data"][-1]["id"])

    async def poll(self, batch_id: str) -> BatchStatus:
        return _status(await self._json("GET", f"/batches/{batch_id}"))

    def answer(self, request: ChatRequest, response: ChatResponse) -> ChatResponse:
        return response  # structured output is response_format here: the content already

    async def cancel(self, batch_id: str) -> BatchStatus:
        return _status(await self._json("POST", f"/batches/{batch_id}/cancel"))

    async def results(self, status: BatchStatus) -> list[LineResult]:
        found: list[LineResult] = []
        for ref in (status.output_ref, status.error_ref):
            if ref:
                raw = await self._send("GET", f"/files/{ref}/content")
                found.extend(self._line(line) for line in raw.splitlines() if line.strip())
        return found

    def _line(self, raw: bytes) -> LineResult:
        """One line of an output or error file."""
        try:
            entry = orjson.loads(raw)
            custom_id = str(entry["custom_id"])
        except (ValueError, KeyError, TypeError):
            raise InvalidResponse(
                f"{self.name}: a batch result line is not JSON with a custom_id ({raw[:80]!r})",
                provider=self.name,
            ) from None
        response, error = entry.get("response"), entry.get("error")
        if isinstance(response, dict) and response.get("status_code") == 200:
            try:
                return LineResult(custom_id, response=_chat_response(response["body"]))
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                bad = InvalidResponse(
                    f"{self.name}: malformed reply in a batch result: {exc}", provider=self.name
                )
                return LineResult(custom_id, error=bad)
        if isinstance(response, dict):  # the request itself failed: its status and body
            status = int(response.get("status_code") or 500)
            body = response.get("body") if isinstance(response.get("body"), dict) else {}
            return LineResult(custom_id, error=self._http_error(status, body or {}))
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if code == "batch_expired":
            timeout = ProviderTimeout(
                f"{self.name}: the batch expired before this request ran; it is sent again",
                provider=self.name,
            )
            return LineResult(custom_id, error=timeout)
        failed = ProviderHTTPError(
            self._scrub(f"{self.name}: batch request failed: {code}: {message}"),
            provider=self.name,
            status_code=500,
        )
        return LineResult(custom_id, error=failed)

    def _http_error(self, status: int, body: dict[str, Any]) -> ProviderError:
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        detail = str(error.get("message") or error)[:300] if isinstance(error, dict) else ""
        code = error.get("code") or error.get("type") if isinstance(error, dict) else None
        text = self._scrub(f"{self.name}: HTTP {status}: {detail}")
        if status == 429:
            return RateLimited(text, provider=self.name)
        return ProviderHTTPError(
            text, provider=self.name, status_code=status, content_filter=code == "content_filter"
        )

    def _refused(self, response: httpx.Response) -> ProviderError:
        try:
            body = orjson.loads(response.content)
        except ValueError:
            body = {"error": {"message": response.text[:200]}}
        return self._http_error(response.status_code, body if isinstance(body, dict) else {})


def _status(batch: dict[str, Any]) -> BatchStatus:
    counts = batch.get("request_counts") or {}
    state = str(batch.get("status") or "")
    errors = (batch.get("errors") or {}).get("data") or []
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    ended = batch.get(f"{state}_at")
    return BatchStatus(
        batch_id=str(batch["id"]),
        state=state,
        total=int(counts.get("total") or 0),
        completed=int(counts.get("completed") or 0),
        failed=int(counts.get("failed") or 0),
        created_at=float(batch["created_at"]) if batch.get("created_at") else None,
        ended_at=float(ended) if ended else None,
        error_code=first.get("code"),
        error_message=first.get("message"),
        output_ref=batch.get("output_file_id"),
        error_ref=batch.get("error_file_id"),
    )


def _chat_response(body: dict[str, Any]) -> ChatResponse:
    choice = body["choices"][0]
    message = choice["message"]
    usage = body["usage"]
    calls = tuple(
        ToolCall(
            str(c["id"]), str(c["function"]["name"]), str(c["function"].get("arguments") or "{}")
        )
        for c in message.get("tool_calls") or ()
    )
    content = message.get("content")
    return ChatResponse(
        content=content if isinstance(content, str) else None,
        usage=Usage(int(usage["prompt_tokens"]), int(usage.get("completion_tokens") or 0)),
        finish_reason=str(choice.get("finish_reason") or "stop"),
        tool_calls=calls,
        model=str(body.get("model") or ""),
        id=str(body.get("id") or ""),
    )
