"""``CallJournal``: completed provider calls by idempotency key, so none is paid for twice.

A call's key is a hash of what makes it the same call (DESIGN.md): the provider, the
model and the whole request (the node's prompt rendered from its resolved inputs,
its parameters, tools and output schema). Each process appends the calls it
completes to its own JSON Lines file in a shared directory, one line per call,
written through to the OS as it completes (a killed process loses none it
finished). A process that opens the directory — a restarted Ray worker, one that
takes over a dead worker's requests, a resumed job — reads every file and answers
those calls from the journal instead of the provider.

Memory stays bounded: a journal holds only the calls it read when opened (or
reloaded), not those it writes. Each line names the record its call was for, so a
resumed batch job first drops, with :func:`compact_journal`, the calls of records
that already have their final row: what is left is the work the killed run had in
flight.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from fanout.errors import ConfigError
from fanout.types import ChatRequest, ChatResponse, ToolCall, Usage

__all__ = ["CallJournal", "call_key", "compact_journal"]

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
    # Not sorted: messages and tool schemas are built in a fixed order, and a key
    # that differed by order would only cost a journal miss, never a wrong answer.
    text = orjson.dumps(identity, default=str, option=orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(text).hexdigest()


class CallJournal:
    """Completed calls of a job, shared by the processes that run it (one file each).

    Nothing is read or written until the first call: a journal made when a worker
    starts does not touch the directory before the job has prepared it (a resumed
    job compacts it first).
    """

    def __init__(self, directory: str | Path, *, writer_id: str) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            writable = os.access(self.directory, os.W_OK)
        except OSError as exc:
            raise ConfigError(
                f"cannot use call journal directory {str(self.directory)!r}: "
                f"{exc.strerror or exc}; pick a writable directory"
            ) from None
        if not writable:
            raise ConfigError(
                f"cannot write to call journal directory {str(self.directory)!r}; "
                "pick a writable directory"
            )
        self._path = self.directory / f"{writer_id}.jsonl"
        self._fd: int | None = None  # opened on the first completed call
        self._closed = False
        self._calls: dict[str, ChatResponse] | None = None  # read on the first lookup
        self.replayed = 0  # calls answered from the journal

    def reload(self) -> int:
        """Read every process's file again (what a dead one finished); returns the calls known."""
        calls = self._calls if self._calls is not None else {}
        for _record, key, response in _entries(self.directory):
            calls[key] = response
        self._calls = calls
        return len(calls)

    def get(self, key: str) -> ChatResponse | None:
        if self._calls is None:
            self.reload()
        assert self._calls is not None
        response = self._calls.get(key)
        if response is not None:
            self.replayed += 1
        return response

    def put(self, key: str, response: ChatResponse, *, record: str | None = None) -> None:
        """Record a completed call (for ``record``, a batch record's key) in this process's
        file; it is not kept in memory (another process, or a later run, reads it)."""
        if self._closed:
            return
        if self._fd is None:  # held open, appended per call
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        entry = {
            "key": key,
            "record": record,
            "content": response.content,
            "finish_reason": response.finish_reason,
            "tool_calls": [[c.id, c.name, c.arguments] for c in response.tool_calls],
            "model": response.model,
            "usage": [response.usage.input_tokens, response.usage.output_tokens],
        }
        # one write per call, unbuffered: a killed process loses no call it finished
        os.write(self._fd, orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))

    def close(self) -> None:
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __len__(self) -> int:
        """Calls read from the directory (0 until the first lookup or :meth:`reload`)."""
        return len(self._calls) if self._calls is not None else 0

    def __repr__(self) -> str:
        return f"CallJournal({str(self.directory)!r}, calls={len(self)}, pid={os.getpid()})"


def _entries(directory: Path) -> Iterator[tuple[str | None, str, ChatResponse]]:
    """(record, key, response) of every readable line of the journal's files, streamed."""
    for path in sorted(directory.glob("*.jsonl")):
        try:
            with path.open(encoding="utf-8") as lines:
                for line in lines:
                    entry = _parse(line)
                    if entry is not None:
                        yield entry
        except OSError as exc:
            _log.warning("call journal: cannot read %s: %s", path, exc)


def compact_journal(directory: str | Path, keep: Callable[[str], bool]) -> tuple[int, int]:
    """Rewrite the journal in ``directory`` keeping only the calls of records ``keep``
    accepts (and calls made for no record); returns (calls kept, calls dropped).

    The kept calls go to one new file, published before the old files are removed:
    a kill midway leaves some calls twice, which is harmless.
    """
    folder = Path(directory)
    old = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not old:
        return 0, 0
    kept = dropped = 0
    target = folder / f"compacted-{os.getpid()}-{os.urandom(4).hex()}.jsonl"
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for path in old:
            with path.open(encoding="utf-8") as lines:
                for line in lines:
                    entry = _parse(line)
                    if entry is None:
                        continue
                    if entry[0] is None or keep(entry[0]):
                        out.write(line if line.endswith("\n") else line + "\n")
                        kept += 1
                    else:
                        dropped += 1
    os.replace(tmp, target)
    for path in old:
        path.unlink(missing_ok=True)
    return kept, dropped


def _parse(line: str) -> tuple[str | None, str, ChatResponse] | None:
    """One journal line, or ``None`` for a torn or foreign one (a killed writer's last)."""
    try:
        entry = orjson.loads(line)
        usage = entry["usage"]
        response = ChatResponse(
            content=entry["content"],
            usage=Usage(int(usage[0]), int(usage[1])),
            finish_reason=str(entry["finish_reason"]),
            tool_calls=tuple(ToolCall(str(i), str(n), str(a)) for i, n, a in entry["tool_calls"]),
            model=str(entry["model"]),
        )
        record = entry.get("record")
        return (str(record) if record is not None else None), str(entry["key"]), response
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
