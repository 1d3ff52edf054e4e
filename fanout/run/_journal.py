"""``CallJournal``: completed provider calls by idempotency key, so none is paid for twice.

A call's key is a hash of what makes it the same call (docs/architecture.md): the provider, the
model and the whole request (the node's prompt rendered from its resolved inputs,
its parameters, tools and output schema). Each process appends the calls it
completes to its own JSON Lines file in a shared directory, one line per call,
written through to the OS as it completes (a killed process loses none it
finished). A process that opens the directory — a restarted Ray worker, one that
takes over a dead worker's requests, a resumed job — reads every file and answers
those calls from the journal instead of the provider.

Memory stays bounded: a journal keeps no response in memory, only an index of the
calls in the files when it first looked (or reloaded): 16 bytes a call (a sorted
array of key digests and one of file offsets; a million calls take 16 MB), and a
call found there is read back from its file. Calls it writes are not indexed (another
process, or a later run, reads them). Each line names the record its call was for,
so a resumed batch job first drops, with :func:`compact_journal`, the calls of
records that already have their final row: what is left is the work the killed run
had in flight.

The journal is also the job's account of what it spent (:func:`journal_spend`): each
line carries its call's cost, a call that went out and timed out is written as a
``spent`` line at its estimate (the provider may have billed it), and compaction carries
the totals of the lines it drops in the header line of the file it writes. A resumed
job counts that against its ``--job-budget-*`` and reports it as spent by earlier runs.
Files a compacted file supersedes (a kill came before they were removed) are ignored.
"""

from __future__ import annotations

import hashlib
import logging
import os
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

import orjson

from fanout.errors import ConfigError
from fanout.types import ChatRequest, ChatResponse, ToolCall, Usage

__all__ = [
    "CallJournal",
    "Spend",
    "call_key",
    "compact_journal",
    "journal_spend",
    "response_entry",
    "response_from",
]

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
    if request.options:  # only then: the keys of calls without options stay as they were
        identity.append(request.options)
    # Not sorted: messages and tool schemas are built in a fixed order, and a key
    # that differed by order would only cost a journal miss, never a wrong answer.
    text = orjson.dumps(identity, default=str, option=orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(text).hexdigest()


def response_entry(response: ChatResponse) -> dict[str, object]:
    """A reply as a JSON-able dict (the journal's, the batch log's and the cache's lines)."""
    return {
        "content": response.content,
        "finish_reason": response.finish_reason,
        "tool_calls": [[c.id, c.name, c.arguments] for c in response.tool_calls],
        "model": response.model,
        "usage": _usage_entry(response.usage),
    }


def _usage_entry(usage: Usage) -> list[int]:
    """``[in, out]``, with ``cached, written`` after them when the prompt cache was used."""
    if usage.cached_input_tokens or usage.cache_write_tokens:
        return [
            usage.input_tokens, usage.output_tokens,
            usage.cached_input_tokens, usage.cache_write_tokens,
        ]  # fmt: skip
    return [usage.input_tokens, usage.output_tokens]


def response_from(entry: dict[str, object]) -> ChatResponse:
    """The reply :func:`response_entry` wrote; raises ``KeyError``/``TypeError``/``ValueError``
    on an entry that is not one."""
    usage = entry["usage"]
    calls = entry["tool_calls"]
    return ChatResponse(
        content=entry["content"],  # type: ignore[arg-type]
        usage=Usage(*(int(n) for n in usage)),  # type: ignore[attr-defined]
        finish_reason=str(entry["finish_reason"]),
        tool_calls=tuple(ToolCall(str(i), str(n), str(a)) for i, n, a in calls),  # type: ignore[attr-defined]
        model=str(entry["model"]),
    )


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
        self._index: _Index | None = None  # built on the first lookup
        self.replayed = 0  # calls answered from the journal

    def reload(self) -> int:
        """Index every process's file again (what a dead one finished); returns the calls known."""
        if self._index is not None:
            self._index.close()
        self._index = _Index(self.directory)
        return len(self._index)

    def get(self, key: str) -> ChatResponse | None:
        found = self.get_paid(key)
        return found[0] if found is not None else None

    def get_paid(self, key: str) -> tuple[ChatResponse, float | None] | None:
        """The call's response and what it cost when it was made (``None``: not written
        down, a journal of an older version), if the journal has it."""
        if self._index is None:
            self.reload()
        assert self._index is not None
        entry = self._index.find(key)
        if entry is None:
            return None
        self.replayed += 1
        return entry.response, entry.cost_usd

    def put(
        self,
        key: str,
        response: ChatResponse,
        *,
        record: str | None = None,
        cost_usd: float | None = None,
    ) -> None:
        """Record a completed call (for ``record``, a batch record's key) and its cost in
        this process's file; it is not kept in memory (another process, or a later run,
        reads it)."""
        entry = {"key": key, "record": record, **response_entry(response), "usd": cost_usd}
        self._write(entry)

    def spend(self, *, usd: float, tokens: int, record: str | None = None) -> None:
        """Record spending that has no response to replay: a call that went out and timed
        out (the provider may have billed it), counted at its estimate."""
        self._write({"spent": usd, "tokens": tokens, "record": record})

    def _write(self, entry: Mapping[str, object]) -> None:
        if self._closed:
            return
        if self._fd is None:  # held open, appended per call
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # one write per call, unbuffered: a killed process loses no call it finished
        os.write(self._fd, orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))

    def close(self) -> None:
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._index is not None:
            self._index.close()

    def __len__(self) -> int:
        """Calls indexed from the directory (0 until the first lookup or :meth:`reload`)."""
        return len(self._index) if self._index is not None else 0

    def __repr__(self) -> str:
        return f"CallJournal({str(self.directory)!r}, calls={len(self)}, pid={os.getpid()})"


class _Index:
    """Where each call in a journal directory's files is, by key: a sorted array of
    64-bit key digests and, in the same order, one of (file number, offset) locations."""

    __slots__ = ("_digests", "_files", "_locations", "_open")

    def __init__(self, directory: Path) -> None:
        self._files = _live_files(directory)
        digests, locations = array("Q"), array("Q")
        for number, path in enumerate(self._files):
            for offset, key in _keys_at(path):
                digests.append(_digest(key))
                locations.append(number << _OFFSET_BITS | offset)
        order = sorted(range(len(digests)), key=digests.__getitem__)
        self._digests = array("Q", (digests[i] for i in order))
        self._locations = array("Q", (locations[i] for i in order))
        self._open: dict[int, BinaryIO] = {}

    def find(self, key: str) -> _Entry | None:
        digests, digest = self._digests, _digest(key)
        at = bisect_left(digests, digest)
        while at < len(digests) and digests[at] == digest:
            entry = self._read(self._locations[at])
            if entry is not None and entry.key == key:  # not another key of the same digest
                return entry
            at += 1
        return None

    def _read(self, location: int) -> _Entry | None:
        number, offset = location >> _OFFSET_BITS, location & _OFFSET_MASK
        try:
            file = self._open.get(number)
            if file is None:
                file = self._open[number] = self._files[number].open("rb")
            file.seek(offset)
            return _parse(file.readline())
        except OSError as exc:  # compacted away since: a miss, the call is made again
            _log.warning("call journal: cannot read %s: %s", self._files[number], exc)
            return None

    def close(self) -> None:
        for file in self._open.values():
            file.close()
        self._open.clear()

    def __len__(self) -> int:
        return len(self._digests)


_OFFSET_BITS = 40  # a file of up to 1 TiB; 2^24 files
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1
_KEY_PREFIX = b'{"key":"'


def _digest(key: str) -> int:
    """64 bits of a call key (itself a SHA-256 in hex)."""
    try:
        return int(key[:16], 16)
    except ValueError:  # not one of ours: hash it
        return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def _keys_at(path: Path) -> Iterator[tuple[int, str]]:
    """(offset, key) of each line of a journal file that names a key."""
    try:
        with path.open("rb") as lines:
            offset = 0
            for line in lines:
                end = line.find(b'"', len(_KEY_PREFIX))
                if line.startswith(_KEY_PREFIX) and end > 0:  # as put() writes them
                    yield offset, line[len(_KEY_PREFIX) : end].decode("utf-8", "replace")
                else:  # written otherwise (an older version), or torn: parse it
                    entry = _parse(line)
                    if entry is not None:
                        yield offset, entry.key
                offset += len(line)
    except OSError as exc:
        _log.warning("call journal: cannot read %s: %s", path, exc)


@dataclass(frozen=True, slots=True)
class Spend:
    """What a job's calls cost so far: USD, tokens and calls (the provider billed them,
    or may have: a call that timed out after it went out counts at its estimate)."""

    usd: float = 0.0
    tokens: int = 0
    calls: int = 0

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.usd + other.usd, self.tokens + other.tokens, self.calls + other.calls)


def journal_spend(directory: str | Path) -> Spend:
    """Everything the job whose journal is in ``directory`` spent, over all its runs."""
    folder = Path(directory)
    total = Spend()
    for path in _live_files(folder) if folder.is_dir() else []:
        with path.open("rb") as lines:
            for line in lines:
                total += _line_spend(line)
    return total


def _line_spend(line: bytes | str) -> Spend:
    """What one journal line spent (a call, a ``spent`` line, a compacted header)."""
    try:
        entry = orjson.loads(line)
    except ValueError:
        return Spend()  # torn: a killed writer's last line
    if not isinstance(entry, dict):
        return Spend()
    carried = entry.get("carried")
    if isinstance(carried, dict):
        return Spend(float(carried.get("usd", 0)), int(carried.get("tokens", 0)),
                     int(carried.get("calls", 0)))  # fmt: skip
    if "spent" in entry:
        return Spend(float(entry["spent"] or 0), int(entry.get("tokens") or 0), 1)
    usage = entry.get("usage")
    if isinstance(usage, list) and len(usage) == 2:
        return Spend(float(entry.get("usd") or 0), int(usage[0]) + int(usage[1]), 1)
    return Spend()


_COMPACTED = b'{"compacted":'


def _live_files(folder: Path) -> list[Path]:
    """The journal's files, less those a compacted file lists as replaced (a kill came
    between writing it and removing them): their calls and spending are in it."""
    files = sorted(folder.glob("*.jsonl"))
    replaced: set[str] = set()
    for path in files:
        with path.open("rb") as lines:
            head = lines.readline()
        if head.startswith(_COMPACTED):
            try:
                replaced.update(str(name) for name in orjson.loads(head)["compacted"])
            except (ValueError, KeyError, TypeError):
                continue
    return [path for path in files if path.name not in replaced]


def compact_journal(directory: str | Path, keep: Callable[[str], bool]) -> tuple[int, int]:
    """Rewrite the journal in ``directory`` keeping only the calls of records ``keep``
    accepts (and calls made for no record); returns (calls kept, calls dropped).

    The kept calls go to one new file whose first line names the files it replaces and
    carries what the dropped lines spent; it is published before the old files are
    removed, and a kill in between leaves them ignored (and removed the next time).
    """
    folder = Path(directory)
    everything = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    live = set(_live_files(folder)) if everything else set()
    if not everything:
        return 0, 0
    kept = dropped = 0
    carried = Spend()
    target = folder / f"compacted-{os.getpid()}-{os.urandom(4).hex()}.jsonl"
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        body: list[str] = []
        for path in everything:
            if path not in live:
                continue  # replaced by a compacted file that is itself read here
            with path.open(encoding="utf-8") as lines:
                for line in lines:
                    entry = _parse(line)
                    if entry is None:  # a header, a spend line or torn: its spending stays
                        carried += _line_spend(line)
                        continue
                    if entry.record is None or keep(entry.record):
                        body.append(line if line.endswith("\n") else line + "\n")
                        kept += 1
                    else:
                        carried += _line_spend(line)
                        dropped += 1
        header = {
            "compacted": [path.name for path in everything],
            "carried": {"usd": carried.usd, "tokens": carried.tokens, "calls": carried.calls},
        }
        out.write(orjson.dumps(header).decode() + "\n")
        out.writelines(body)
    os.replace(tmp, target)
    for path in everything:
        path.unlink(missing_ok=True)
    return kept, dropped


class _Entry(NamedTuple):
    record: str | None
    key: str
    response: ChatResponse
    cost_usd: float | None


def _parse(line: str | bytes) -> _Entry | None:
    """One journal line's call, or ``None`` for a torn or foreign one (a killed writer's
    last), a compacted file's header or a ``spent`` line."""
    try:
        entry = orjson.loads(line)
        response = response_from(entry)
        record = entry.get("record")
        usd = entry.get("usd")
        return _Entry(
            str(record) if record is not None else None,
            str(entry["key"]),
            response,
            float(usd) if usd is not None else None,
        )
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
