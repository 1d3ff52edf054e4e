"""One SQLite file shared by the stores (sessions, reviews, keys): where it lives, WAL
mode, a connection kept per thread and short ``BEGIN IMMEDIATE`` transactions."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import weakref
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
    EXISTS`` statements. Each thread keeps a connection of its own (opened on its first
    operation, in this process: a forked child opens its own). Between operations it is
    in autocommit with no statement open, so it holds no lock and several processes
    share the file. Kept, not opened per operation: the last connection of a file to
    close checkpoints its WAL, so a connection per operation cost each write several
    times its own CPU (a gateway's spend per call; ``benchmarks/key_spend.py``).
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
        self._open()
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
        """This thread's connection (opened on its first use)."""
        held: tuple[int, sqlite3.Connection] | None = getattr(self._local, "conn", None)
        if held is None or held[0] != os.getpid():
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None,
                check_same_thread=False,  # used by its thread only; closed by close()
            )  # fmt: skip
            self._conns.append(conn)
            held = self._local.conn = (os.getpid(), conn)
        yield held[1]

    def _open(self) -> None:
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._closer = weakref.finalize(self, _close_all, self._conns)

    def close(self) -> None:
        """Close every thread's connection (done when the store is collected, too);
        a later operation opens a new one."""
        self._closer()
        self._open()

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        for name in ("_local", "_conns", "_closer"):  # connections stay with their process
            del state[name]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._open()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")  # take the write lock now, not at the first write
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # the connection is kept: never left mid-transaction
                    conn.execute("ROLLBACK")
                raise


def _close_all(conns: list[sqlite3.Connection]) -> None:
    for conn in conns:
        conn.close()
    conns.clear()
