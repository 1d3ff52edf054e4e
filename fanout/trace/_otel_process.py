"""Live export off the job's process: rows handed to an exporter process of its own.

Mapping a row to OpenTelemetry attributes, encoding it and posting it cost ~15-25 µs a
span of Python; on a thread of the job's process that time is taken from the event
loop (one GIL): a fifth of a busy engine's throughput. Here the loop only encodes the
row's values as JSON (orjson, ~0.5 µs) into a bounded queue; a hand-off thread writes
batches of them down a pipe; a child process (``python -m fanout.trace._otel_child``,
at a lower priority) maps, encodes and exports them, on any core the machine has free.
The child exports what it was given when the job's process closes the pipe, or dies.

The frames on the pipes are a 4-byte little-endian length, a byte and the message:
``R`` and a JSON array of rows (each row's set columns), or ``P`` and a pickled tuple.
Parent to child: ``("start", settings, pid)`` first (the settings, headers included,
never go on a command line), then rows, ``("flush",)`` and ``("close",)``. Child to
parent, for ``flush`` and ``close``: ``("stats", exported, failed, cpu_s, rows)``,
``rows`` the rows it was given so far.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from fanout.trace._otel import OtelSettings
    from fanout.trace._span import Span

__all__ = ["Batcher", "ExportStats", "ExporterProcess", "pickled", "read_frame", "write_frame"]

_log = logging.getLogger("fanout.trace.otel")
HEAD = struct.Struct("<I")


@dataclass
class ExportStats:
    """Spans exported and failed (each row is itself plus its waits), rows dropped
    before export (the queue full, or the exporter gone), the CPU seconds the exporter
    process spent exporting (its start, the imports, not counted)."""

    exported: int = 0
    failed: int = 0
    dropped: int = 0
    cpu_s: float = 0.0


class Batcher:
    """A bounded queue of items and a thread that hands them on in batches.

    ``put`` is what the event loop pays: a length check and an append (a full queue
    drops the item and counts it). The thread wakes every ``delay_s``, or when a batch
    is full, and calls ``deliver`` with up to ``batch`` items at a time.
    """

    def __init__(
        self,
        deliver: Callable[[list[Any]], object],
        *,
        max_queue: int,
        batch: int,
        delay_s: float,
        name: str,
    ) -> None:
        self._deliver, self._max, self._batch, self._delay = deliver, max_queue, batch, delay_s
        self._queue: deque[Any] = deque()
        self.dropped = 0
        self._wake = threading.Event()
        self.lock = threading.Lock()  # one delivery at a time
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        queue = self._queue
        if len(queue) >= self._max:
            self.dropped += 1
            return
        queue.append(item)
        if len(queue) == self._batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self._delay)
            self._wake.clear()
            try:
                self.drain()
            except Exception:  # the export must never end the job
                _log.exception("live trace export: handing rows on failed")

    def drain(self) -> None:
        """Deliver everything queued now (on the caller's thread)."""
        with self.lock:
            queue, pop = self._queue, self._queue.popleft
            while queue:
                self._deliver([pop() for _ in range(min(len(queue), self._batch))])

    def stop(self, timeout_s: float) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout_s)


class ExporterProcess:
    """The parent's side: a :class:`Batcher` whose deliveries go down the child's pipe.

    A child that died counts what it did not confirm as dropped.
    """

    def __init__(self, settings: OtelSettings) -> None:
        self.settings = settings
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "fanout.trace._otel_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            # the child imports what this process imports (a Ray worker's sys.path holds
            # its runtime_env's directories, which are not in the environment)
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        self.pid = self._proc.pid
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._pipe: IO[bytes] = self._proc.stdin
        _widen(self._pipe.fileno())
        self._replies = self._proc.stdout.fileno()
        self.stats = ExportStats()
        self._sent = self._taken = 0  # rows sent down the pipe / the child said it took
        self._send(("start", settings, os.getpid()))
        self._batcher = Batcher(
            self._send_rows,
            max_queue=settings.max_queue_size,
            batch=settings.max_export_batch_size,
            delay_s=settings.schedule_delay_ms / 1000,
            name="fanout-otel-handoff",
        )

    def _write(self, data: bytes) -> bool:
        if self._pipe.closed:
            return False
        try:
            write_frame(self._pipe, data)
        except (BrokenPipeError, OSError, ValueError):
            if not self._pipe.closed:
                _log.warning("live trace export: the exporter process (pid %s) ended", self.pid)
                with contextlib.suppress(OSError, ValueError):
                    self._pipe.close()
            return False
        return True

    def put(self, span: Span) -> None:
        """Queue the row as JSON (its set columns: a row made by ``new_span`` holds only
        those). Encoding it here, ~0.5 µs, keeps the queue free of objects the
        collector would sweep again and again while they wait."""
        values = span.__dict__
        try:
            item = orjson.dumps(values)
        except TypeError:  # a caller's own value that JSON lacks: as its text
            item = orjson.dumps(values, default=str)
        self._batcher.put(item)

    def _send_rows(self, rows: list[bytes]) -> None:
        self._sent += len(rows)
        self._write(b"R[" + b",".join(rows) + b"]")

    def _send(self, message: tuple[Any, ...]) -> bool:
        return self._write(pickled(message))

    def flush(self, timeout_s: float) -> bool:
        """Hand on what is queued and wait until the child has exported it."""
        self._batcher.drain()
        with self._batcher.lock:
            failed = self.stats.failed
            return self._ask(("flush",), timeout_s) and self.stats.failed == failed

    def _ask(self, message: tuple[Any, ...], timeout_s: float) -> bool:
        if not self._send(message):
            return False
        reply = read_frame(self._replies, time.monotonic() + timeout_s)
        if reply is None or reply[0] != "stats":
            return False
        self.stats.exported, self.stats.failed, self.stats.cpu_s, self._taken = reply[1:5]
        return True

    def close(self, timeout_s: float) -> ExportStats:
        """Hand on the rest, let the child export it, and end the child."""
        self._batcher.stop(timeout_s)
        self._batcher.drain()
        with self._batcher.lock:
            self._ask(("close",), timeout_s)
            with contextlib.suppress(OSError, ValueError):
                self._pipe.close()
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        assert self._proc.stdout is not None
        self._proc.stdout.close()
        # rows the child did not confirm: lost with it (a child killed mid-export may
        # have sent some of them: counted as dropped all the same)
        self.stats.dropped = self._batcher.dropped + self._sent - self._taken
        return self.stats


def pickled(message: tuple[Any, ...]) -> bytes:
    """A ``P`` frame's payload."""
    return b"P" + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def write_frame(out: IO[bytes], payload: bytes) -> None:
    """One frame: the payload's length, then the payload."""
    out.write(HEAD.pack(len(payload)) + payload)
    out.flush()


def _widen(fd: int) -> None:
    """A pipe of 1 MiB (Linux; the default 64 KiB makes a batch's write wake the child
    a dozen times): a batch goes down in one copy. Best effort."""
    with contextlib.suppress(ImportError, AttributeError, OSError):
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)


def read_frame(fd: int, deadline: float | None) -> Any:
    """One frame from ``fd`` (``None`` at EOF, or when ``deadline`` passes first)."""
    head = _read_exact(fd, HEAD.size, deadline)
    if head is None:
        return None
    body = _read_exact(fd, HEAD.unpack(head)[0], deadline)
    if body is None:
        return None
    if body[:1] == b"R":
        return ("rows", orjson.loads(body[1:]))
    return pickle.loads(body[1:])


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes | None:
    parts, left = [], size
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                return None
        data = os.read(fd, min(left, 1 << 20))
        if not data:
            return None
        parts.append(data)
        left -= len(data)
    return b"".join(parts)
