"""``SQLiteStore``: the embedded session store, one SQLite file in WAL mode.

Safe for several processes on one machine: every operation is one short
``BEGIN IMMEDIATE`` transaction on its own connection (SQLite serialises writers;
``busy_timeout_s`` is how long a writer waits for another), and a session is leased
by a row's ``lease_owner``/``lease_until`` (UTC seconds, so the expiry means the same
in every process; a crashed run's lease lapses after its ttl).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

from fanout.clock import Clock
from fanout.errors import SessionBusy
from fanout.store._db import SQLiteFile
from fanout.store._protocol import SessionRecord
from fanout.types import Message

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id  TEXT PRIMARY KEY,
    version     INTEGER NOT NULL DEFAULT 0,
    messages    TEXT NOT NULL DEFAULT '[]',
    state       TEXT,
    updated_at  REAL,
    lease_owner TEXT,
    lease_until REAL
)
"""


class SQLiteStore(SQLiteFile):
    """Sessions in ``path`` (a ``.db`` file; a directory gets ``sessions.db`` inside)."""

    def __init__(
        self, path: str | Path, *, clock: Clock | None = None, busy_timeout_s: float = 30.0
    ) -> None:
        super().__init__(
            path,
            what="session store",
            schema=(_SCHEMA,),
            clock=clock,
            busy_timeout_s=busy_timeout_s,
        )

    def acquire(self, session_id: str, owner: str, ttl_s: float) -> SessionRecord:
        now = self._now()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT messages, state, version, lease_owner, lease_until FROM sessions "
                "WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO sessions (session_id, lease_owner, lease_until) VALUES (?, ?, ?)",
                    (session_id, owner, now + ttl_s),
                )
                return SessionRecord(session_id)
            messages, state, version, lease_owner, lease_until = row
            if lease_owner not in (None, owner) and lease_until is not None and lease_until > now:
                raise SessionBusy(
                    f"session {session_id!r} is in use by another run; retry when it finishes "
                    "(one run per session at a time)",
                    session_id=session_id,
                )
            conn.execute(
                "UPDATE sessions SET lease_owner = ?, lease_until = ? WHERE session_id = ?",
                (owner, now + ttl_s, session_id),
            )
            return SessionRecord(session_id, _messages(messages), state, version)

    def save(
        self,
        session_id: str,
        owner: str,
        *,
        messages: list[Message],
        state_json: str | None,
        version: int,
    ) -> int:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT version, lease_owner FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            if row is None or row[1] != owner or row[0] != version:
                raise SessionBusy(
                    f"session {session_id!r} changed while this run held it (its lease "
                    "expired and another run took it); this turn was not saved",
                    session_id=session_id,
                )
            conn.execute(
                "UPDATE sessions SET version = ?, messages = ?, state = ?, updated_at = ?, "
                "lease_owner = NULL, lease_until = NULL WHERE session_id = ?",
                (
                    version + 1,
                    json.dumps(messages, ensure_ascii=False),
                    state_json,
                    self._now(),
                    session_id,
                ),
            )
        return version + 1

    def release(self, session_id: str, owner: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE sessions SET lease_owner = NULL, lease_until = NULL "
                "WHERE session_id = ? AND lease_owner = ?",
                (session_id, owner),
            )

    def load(self, session_id: str) -> SessionRecord:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT messages, state, version FROM sessions WHERE session_id = ?",
                (session_id,),
            ).fetchone()
        if row is None:
            return SessionRecord(session_id)
        return SessionRecord(session_id, _messages(row[0]), row[1], row[2])

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"


def _messages(text: str) -> list[Message]:
    return cast(list[Message], json.loads(text))
