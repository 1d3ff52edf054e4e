"""``CallJournal``: completed provider calls by idempotency key, so none is paid for twice.

A call's key is a hash of what makes it the same call (DESIGN.md): the provider, the
model and the whole request (the node's prompt rendered from its resolved inputs,
its parameters, tools and output schema). Each process appends the calls it
completes to its own JSON Lines file in a shared directory, one line per call,
written through to the OS as it completes (a killed process loses none it
finished). A process that opens the directory — a restarted Ray worker, one that
takes over a dead worker's requests, a resumed job — reads every file and answers
those calls from the journal instead of the provider.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TextIO

from fanout.errors import ConfigError
from fanout.types import ChatRequest, ChatResponse, ToolCall, Usage

__all__ = ["CallJournal", "call_key"]

_log = logging.getLogger(__name__)


def call_key(provider: str, request: ChatRequest) -> str:
    """The idempotency key of one provider call."""
    identity = [
        provider,
        request.model,
        request.messages,
        request.max_tokens,
        request.temperature,
        [t.to_wire() for t in request.tools],
        request.response_schema,
        request.response_schema_name,
    ]
    text = json.dumps(identity, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class CallJournal:
    """Completed calls of a job, shared by the processes that run it (one file each)."""

    def __init__(self, directory: str | Path, *, writer_id: str) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._file: TextIO | None = open(  # noqa: SIM115  # held open: appended per call
                self.directory / f"{writer_id}.jsonl", "a", encoding="utf-8", buffering=1
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot use call journal directory {str(self.directory)!r}: "
                f"{exc.strerror or exc}; pick a writable directory"
            ) from None
        self._calls: dict[str, ChatResponse] = {}
        self.replayed = 0  # calls answered from the journal
        self.reload()

    def reload(self) -> int:
        """Read every process's file again (what a dead one finished); returns the calls known."""
        for path in sorted(self.directory.glob("*.jsonl")):
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                _log.warning("call journal: cannot read %s: %s", path, exc)
                continue
            for line in text.splitlines():
                entry = _parse(line)
                if entry is not None:
                    self._calls[entry[0]] = entry[1]
        return len(self._calls)

    def get(self, key: str) -> ChatResponse | None:
        response = self._calls.get(key)
        if response is not None:
            self.replayed += 1
        return response

    def put(self, key: str, response: ChatResponse) -> None:
        self._calls[key] = response
        if self._file is None:
            return
        record = {
            "key": key,
            "content": response.content,
            "finish_reason": response.finish_reason,
            "tool_calls": [[c.id, c.name, c.arguments] for c in response.tool_calls],
            "model": response.model,
            "usage": [response.usage.input_tokens, response.usage.output_tokens],
        }
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")  # line-buffered

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __len__(self) -> int:
        return len(self._calls)

    def __repr__(self) -> str:
        return f"CallJournal({str(self.directory)!r}, calls={len(self._calls)}, pid={os.getpid()})"


def _parse(line: str) -> tuple[str, ChatResponse] | None:
    """One journal line, or ``None`` for a torn or foreign one (a killed writer's last)."""
    try:
        record = json.loads(line)
        usage = record["usage"]
        response = ChatResponse(
            content=record["content"],
            usage=Usage(int(usage[0]), int(usage[1])),
            finish_reason=str(record["finish_reason"]),
            tool_calls=tuple(ToolCall(str(i), str(n), str(a)) for i, n, a in record["tool_calls"]),
            model=str(record["model"]),
        )
        return str(record["key"]), response
    except (ValueError, KeyError, TypeError, IndexError):
        return None
