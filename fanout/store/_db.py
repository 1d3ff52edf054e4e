"""One SQLite file shared by the stores (sessions, reviews): where it lives, WAL mode,
a connection per operation and short ``BEGIN IMMEDIATE`` transactions."""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from fanout.clock import Clock, SystemClock
from fanout.errors import ConfigError

__all__ = ["DB_FILE", "SQLiteFile"]

DB_FILE = "sessions.db"
"""The file a directory given as a store gets (sessions, checkpoints and reviews)."""


@contextmanager
def _init_lock(db: Path) -> Iterator[None]:
    with open(db.with_name(db.name + ".init-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


class SQLiteFile:
    """``path`` (a ``.db`` file; a directory gets ``sessions.db`` inside), its tables made.

    ``what`` names the store in error messages; ``schema`` is its ``CREATE ... IF NOT
    EXISTS`` statements. A connection per operation: nothing is shared between threads
    or held open between a run's start and its end, so several processes can share it.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        what: str,
        schema: Sequence[str],
        clock: Clock | None = None,
        busy_timeout_s: float = 30.0,
    ) -> None:
        target = Path(path)
        if target.is_dir() or not target.suffix:
            target = target / DB_FILE
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"{what}: cannot create {target.parent} ({exc}); set data_dir to a "
                "writable directory"
            ) from None
        self.path = target
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.busy_timeout_s = busy_timeout_s
        try:
            # Switching a new file to WAL takes an exclusive lock without waiting for it
            # (SQLite's busy timeout does not cover it): two processes opening one new
            # file at once would see "database is locked". One at a time, by a lock file.
            with _init_lock(target), self._connect() as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                for statement in schema:
                    conn.execute(statement)
        except sqlite3.Error as exc:
            raise ConfigError(
                f"{what}: {target} is not a usable SQLite file ({exc}); point data_dir elsewhere"
            ) from None

    def _now(self) -> float:
        return self.clock.wall().timestamp()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")  # take the write lock now, not at the first write
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
