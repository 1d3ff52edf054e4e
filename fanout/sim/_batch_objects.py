"""The emulated Files and Batches objects, their wire views, input files and result lines."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fanout.errors import ProviderError
from fanout.types import ChatRequest, ChatResponse, estimate_prompt_tokens

__all__ = ["Batch", "File", "Line", "Parsed", "Problem", "new_id", "read_input", "result_line"]

Problem = tuple[str, str, int | None]
"""Why an input file is refused: (error code, message, line number or ``None``)."""


@dataclass
class File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def view(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class Line:
    custom_id: str
    body: dict[str, object]
    done: bool = False  # answered (output or error file)
    result: dict[str, object] | None = None  # the output- or error-file line
    ok: bool = False


@dataclass
class Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: float
    status: str = "validating"
    model: str = ""
    prompt_tokens: int = 0
    lines: list[Line] = field(default_factory=list)
    errors: list[dict[str, object]] | None = None
    times: dict[str, float] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None

    def view(self) -> dict[str, object]:
        done = [line for line in self.lines if line.done]
        ok = sum(line.ok for line in done)
        stamp = {name: _int(self.times.get(name)) for name in _STAMPS}
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model or None,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            **stamp,
            "request_counts": {
                "total": len(self.lines),
                "completed": ok,
                "failed": len(done) - ok,
            },
            "metadata": self.metadata,
        }


_STAMPS = (
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def _int(value: float | None) -> int | None:
    return int(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class Parsed:
    """A valid input file: its lines, its one model and their prompt tokens."""

    lines: list[Line]
    model: str
    tokens: int


def read_input(
    data: bytes,
    endpoint: str,
    parse: Callable[[dict[str, object]], ChatRequest],
    *,
    max_requests: int,
    max_bytes: int,
) -> Parsed | Problem:
    """A batch input file read, or what is wrong with it (for the batch's ``errors``)."""
    if len(data) > max_bytes:
        return ("file_too_large", f"the input file exceeds {max_bytes} bytes", None)
    lines: list[Line] = []
    seen: set[str] = set()
    models: set[str] = set()
    tokens = 0
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
            custom_id, body = str(entry["custom_id"]), entry["body"]
            method, url = entry.get("method"), entry.get("url")
            chat = parse(body)
        except (ValueError, KeyError, TypeError) as exc:
            return ("invalid_json_line", f"line {number} is not a valid request: {exc}", number)
        if method != "POST" or url != endpoint:
            return (
                "invalid_url",
                f"line {number}: method must be POST and url {endpoint!r} (the batch's endpoint)",
                number,
            )
        if custom_id in seen:
            return (
                "duplicate_custom_id",
                f"line {number}: custom_id {custom_id!r} is not unique",
                number,
            )
        seen.add(custom_id)
        models.add(chat.model)
        tokens += estimate_prompt_tokens(chat.messages, chat.tools)
        lines.append(Line(custom_id, body))
    if len(models) > 1:
        return (
            "mismatched_model",
            f"a batch's requests must all use one model (this file uses {sorted(models)})",
            None,
        )
    if len(lines) > max_requests:
        return (
            "too_many_requests",
            f"{len(lines)} requests; a batch may hold at most {max_requests}",
            None,
        )
    if not lines:
        return ("empty_file", "the input file has no requests", None)
    return Parsed(lines, next(iter(models)), tokens)


def result_line(
    custom_id: str, model: str, reply: ChatResponse | BaseException
) -> tuple[bool, dict[str, object]]:
    """(ok, the line of the output or error file) for one request's reply or failure."""
    request_id = new_id("req_")
    if isinstance(reply, BaseException):
        status = reply.status_code if isinstance(reply, ProviderError) else None
        status = status or 500
        body: dict[str, object] = {
            "error": {"message": str(reply), "type": "server_error", "param": None, "code": None}
        }
        return False, {
            "id": new_id("batch_req_"),
            "custom_id": custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": body},
            "error": None,
        }
    message: dict[str, object] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = [c.to_wire() for c in reply.tool_calls]
    body = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}
        ],
        "usage": {
            "prompt_tokens": reply.usage.input_tokens,
            "completion_tokens": reply.usage.output_tokens,
            "total_tokens": reply.usage.total_tokens,
        },
    }
    return True, {
        "id": new_id("batch_req_"),
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": request_id, "body": body},
        "error": None,
    }


def new_id(prefix: str) -> str:
    return prefix + random.getrandbits(96).to_bytes(12, "big").hex()
