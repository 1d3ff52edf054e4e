"""``ResponseCache``: replies kept across jobs and services, content-addressed by call key.

A call's key (:func:`fanout.run.call_key`: provider, model, messages, tools,
parameters, output schema) names its file, ``DIR/ab/cd/<key>.json``, so any number
of jobs and services pointing at one directory share it. A reply is written to a
temporary file and renamed into place: concurrent writers of the same key each
publish a whole file (the same reply, or an equally valid one), and a reader never
sees half of one. A hit touches the file's time, so eviction drops the least
recently used first: once this process has written a tenth of ``max_bytes`` since
it last looked, a background thread totals the directory and, if it holds more than
``max_bytes``, deletes the oldest files down to 90% of it (one process at a time,
under a lock file; the others skip their turn).

Calls with ``temperature > 0`` ask for a fresh sample each time, so they are cached
only with ``sampled=True``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from pathlib import Path

import orjson

from fanout.errors import ConfigError
from fanout.run._journal import response_entry, response_from
from fanout.types import ChatRequest, ChatResponse

__all__ = ["ResponseCache"]

_log = logging.getLogger(__name__)

_LOW_WATER = 0.9


class ResponseCache:
    """A directory of replies by call key (see the module docstring)."""

    def __init__(
        self, directory: str | Path, *, max_bytes: int = 10 * 1024**3, sampled: bool = False
    ) -> None:
        if max_bytes <= 0:
            raise ConfigError(f"cache max_bytes must be positive (got {max_bytes})")
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot use cache directory {str(self.directory)!r}: {exc.strerror or exc}; "
                "pick a writable directory"
            ) from None
        self.max_bytes = max_bytes
        self.sampled = sampled
        self.hits = self.misses = self.writes = 0
        self._written = 0  # bytes since the last size check
        self._evicting = threading.Lock()

    def cacheable(self, request: ChatRequest) -> bool:
        return request.temperature <= 0 or self.sampled

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / key[2:4] / f"{key}.json"

    def get(self, key: str) -> ChatResponse | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:  # not cached (or evicted meanwhile)
            self.misses += 1
            return None
        try:
            entry = orjson.loads(data)
            if entry.get("key") != key:
                raise ValueError("another key")
            response = response_from(entry)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            _log.warning("response cache: ignoring unreadable %s", path)
            self.misses += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: evicted last
        self.hits += 1
        return response

    def put(self, key: str, response: ChatResponse) -> None:
        path = self._path(key)
        data = orjson.dumps({"key": key, **response_entry(response)})
        tmp = path.with_name(f".{key}.{os.getpid()}.{threading.get_ident():x}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:  # a full or read-only disk must not fail the call
            _log.warning("response cache: cannot write %s: %s", path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        self.writes += 1
        self._written += len(data)
        if self._written >= self.max_bytes // 10 and not self._evicting.locked():
            self._written = 0
            threading.Thread(target=self.evict, name="fanout-cache-evict", daemon=True).start()

    def evict(self) -> int:
        """Delete least recently used replies while the cache holds more than
        ``max_bytes``; returns the files deleted (0 if another process is at it)."""
        if not self._evicting.acquire(blocking=False):
            return 0
        try:
            with (self.directory / ".evict.lock").open("w") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return 0  # another process evicts now
                return self._evict_locked()
        finally:
            self._evicting.release()

    def _evict_locked(self) -> int:
        files: list[tuple[float, int, str]] = []
        total = 0
        for first in _dirs(self.directory):
            for second in _dirs(Path(first.path)):
                with os.scandir(second.path) as entries:
                    for entry in entries:
                        if entry.name.endswith(".json"):
                            with contextlib.suppress(OSError):
                                stat = entry.stat()
                                files.append((stat.st_mtime, stat.st_size, entry.path))
                                total += stat.st_size
        if total <= self.max_bytes:
            return 0
        files.sort()
        deleted = 0
        target = self.max_bytes * _LOW_WATER
        for _, size, path in files:
            if total <= target:
                break
            with contextlib.suppress(OSError):
                os.unlink(path)
                total -= size
                deleted += 1
        _log.info("response cache: evicted %d replies (now %d bytes)", deleted, total)
        return deleted

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.directory)!r}, max_bytes={self.max_bytes})"


def _dirs(path: Path) -> list[os.DirEntry[str]]:
    with os.scandir(path) as entries:
        return [e for e in entries if e.is_dir() and len(e.name) == 2]
