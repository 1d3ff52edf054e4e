"""``ReviewStore``: pending human reviews and the checkpoints of the runs they paused.

Kept in the same SQLite file as sessions (``sessions.db`` under the data dir), with
the same discipline: a connection kept per thread, one short ``BEGIN IMMEDIATE``
transaction per write, WAL mode, so several processes (the run that paused, the
``fanout review`` command, the run that resumes) share it safely.

A paused run's checkpoint is its DAG name, inputs and the outputs of the nodes that
finished (as JSON); each review is one row: the node, the value to review, the
instructions, and once decided the decision (``approved``/``edited``/``rejected``),
the edited value or the reason, who and when.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from fanout.clock import Clock
from fanout.errors import ConfigError, ReviewBusy, ReviewNotFound
from fanout.store._db import SQLiteFile

__all__ = ["Checkpoint", "Review", "ReviewStatus", "ReviewStore"]

ReviewStatus = Literal["pending", "approved", "rejected", "edited"]
_DECISIONS = ("approved", "rejected", "edited")

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS review_runs (
        run_id     TEXT PRIMARY KEY,
        dag_name   TEXT NOT NULL,
        inputs     TEXT NOT NULL,
        outputs    TEXT NOT NULL,
        status     TEXT NOT NULL,
        result     TEXT,
        updated_at REAL,
        resumed_by   TEXT,
        resume_until REAL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS reviews (
        review_id    TEXT PRIMARY KEY,
        run_id       TEXT NOT NULL,
        node_id      TEXT NOT NULL,
        dag_name     TEXT NOT NULL,
        instructions TEXT NOT NULL,
        value        TEXT NOT NULL,
        status       TEXT NOT NULL,
        decision     TEXT,
        reason       TEXT,
        decided_by   TEXT,
        decided_at   REAL,
        created_at   REAL NOT NULL,
        UNIQUE (run_id, node_id)
    )
    """,
)
_COLUMNS = (
    "review_id, run_id, node_id, dag_name, instructions, value, status, decision, reason, "
    "decided_by, decided_at, created_at"
)


@dataclass(frozen=True, slots=True)
class Review:
    """One review: what a person is asked to decide, and (once decided) the decision.

    ``value``: the value under review (JSON); ``edited_value``: the reviewer's value
    (status ``edited``); ``decided_at``: UTC seconds."""

    review_id: str
    run_id: str
    node_id: str
    dag_name: str
    instructions: str
    value: object
    status: ReviewStatus
    edited_value: object = None
    reason: str | None = None
    decided_by: str | None = None
    decided_at: float | None = None
    created_at: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "review_id": self.review_id,
            "run_id": self.run_id,
            "node": self.node_id,
            "dag": self.dag_name,
            "instructions": self.instructions,
            "value": self.value,
            "status": self.status,
            "edited_value": self.edited_value,
            "reason": self.reason,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a paused run needs to go on: its DAG, inputs and finished nodes' outputs.

    ``status``: the run's status when last run (``waiting_for_review`` until a resume
    finishes it); ``result``: the last run's result as JSON."""

    run_id: str
    dag_name: str
    inputs: dict[str, object]
    outputs: dict[str, object]
    status: str
    result: dict[str, object] | None = None


class ReviewStore(SQLiteFile):
    """Reviews and checkpoints in ``path`` (a ``.db`` file; a directory gets
    ``sessions.db`` inside: the session store's file)."""

    def __init__(
        self, path: str | Path, *, clock: Clock | None = None, busy_timeout_s: float = 30.0
    ) -> None:
        super().__init__(
            path, what="review store", schema=_SCHEMA, clock=clock, busy_timeout_s=busy_timeout_s
        )
        with self._transaction() as conn:  # a file made before resumes were claimed
            have = {row[1] for row in conn.execute("PRAGMA table_info(review_runs)")}
            for column, kind in (("resumed_by", "TEXT"), ("resume_until", "REAL")):
                if column not in have:
                    conn.execute(f"ALTER TABLE review_runs ADD COLUMN {column} {kind}")

    # -- checkpoints -------------------------------------------------------------

    def checkpoint(
        self,
        run_id: str,
        dag_name: str,
        *,
        inputs: Mapping[str, object],
        outputs: Mapping[str, object],
        status: str,
        result: Mapping[str, object],
        pending: list[tuple[str, object, str]],
    ) -> list[Review]:
        """Write the run's checkpoint and a pending review per ``(node, value,
        instructions)`` not reviewed yet; return the run's reviews for those nodes."""
        now = self._now()
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO review_runs (run_id, dag_name, inputs, outputs, status, result, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET "
                "outputs = excluded.outputs, status = excluded.status, "
                "result = excluded.result, updated_at = excluded.updated_at",
                (run_id, dag_name, _dump(inputs), _dump(outputs), status, _dump(result), now),
            )
            for node_id, value, instructions in pending:
                conn.execute(
                    "INSERT OR IGNORE INTO reviews (review_id, run_id, node_id, dag_name, "
                    "instructions, value, status, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                    (
                        uuid.uuid4().hex[:12],
                        run_id,
                        node_id,
                        dag_name,
                        instructions,
                        _dump(value),
                        now,
                    ),
                )
            nodes = {node_id for node_id, _, _ in pending}
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM reviews WHERE run_id = ? ORDER BY created_at, node_id",
                (run_id,),
            ).fetchall()
        return [r for r in map(_review, rows) if r.node_id in nodes]

    def load_checkpoint(self, run_id: str) -> Checkpoint:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT run_id, dag_name, inputs, outputs, status, result FROM review_runs "
                "WHERE run_id = ?",
                (run_id,),
            ).fetchone()
        if row is None:
            raise ReviewNotFound(f"no paused run {run_id!r} in {self.path}")
        result = json.loads(row[5]) if row[5] is not None else None
        return Checkpoint(row[0], row[1], json.loads(row[2]), json.loads(row[3]), row[4], result)

    def claim_resume(self, run_id: str, owner: str, lease_s: float) -> None:
        """Take the paused run ``run_id`` for one resume by ``owner``, for ``lease_s``
        seconds (a crashed resumer's claim lapses then). Raises :class:`ReviewBusy`
        while another owner holds it, :class:`ConfigError` if the run no longer waits
        for a review (a resume finished it): two resumes never run it twice."""
        now = self._now()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT status, resumed_by, resume_until FROM review_runs WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                raise ReviewNotFound(f"no paused run {run_id!r} in {self.path}")
            status, holder, until = row
            if status != "waiting_for_review":
                raise ConfigError(
                    f"run {run_id!r} already resumed and ended {status}; nothing to resume"
                )
            if holder is not None and holder != owner and until is not None and until > now:
                raise ReviewBusy(
                    f"run {run_id!r} is being resumed by another process (for up to "
                    f"{until - now:.0f} s more); wait for it to finish"
                )
            conn.execute(
                "UPDATE review_runs SET resumed_by = ?, resume_until = ? WHERE run_id = ?",
                (owner, now + lease_s, run_id),
            )

    def release_resume(self, run_id: str, owner: str) -> None:
        """Give up ``owner``'s claim on ``run_id`` (its resume ended or paused again)."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE review_runs SET resumed_by = NULL, resume_until = NULL "
                "WHERE run_id = ? AND resumed_by = ?",
                (run_id, owner),
            )

    # -- reviews -------------------------------------------------------------------

    def get(self, review_id: str) -> Review:
        """The review ``review_id``; raises :class:`ReviewNotFound` (a ``ConfigError``)."""
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM reviews WHERE review_id = ?", (review_id,)
            ).fetchone()
        if row is None:
            raise ReviewNotFound(
                f"no review {review_id!r} in {self.path}; `fanout review list` shows the ids"
            )
        return _review(row)

    def list(self, *, status: str | None = None, run_id: str | None = None) -> list[Review]:
        """Reviews, oldest first; only those with ``status`` / of ``run_id`` if given."""
        query, args = f"SELECT {_COLUMNS} FROM reviews WHERE 1=1", list[str]()
        if status is not None:
            query, args = query + " AND status = ?", [*args, status]
        if run_id is not None:
            query, args = query + " AND run_id = ?", [*args, run_id]
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY created_at, review_id", args).fetchall()
        return [_review(row) for row in rows]

    def decide(
        self,
        review_id: str,
        status: ReviewStatus,
        *,
        value: object = None,
        reason: str | None = None,
        by: str | None = None,
    ) -> Review:
        """Record a person's decision on a pending review; a decided one is not changed
        (raises :class:`ConfigError`)."""
        if status not in _DECISIONS:
            raise ConfigError(f"review decision must be one of {list(_DECISIONS)}, not {status!r}")
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT status FROM reviews WHERE review_id = ?", (review_id,)
            ).fetchone()
            if row is None:
                raise ReviewNotFound(
                    f"no review {review_id!r} in {self.path}; `fanout review list` shows the ids"
                )
            if row[0] != "pending":
                raise ConfigError(f"review {review_id!r} was already {row[0]}; it is final")
            conn.execute(
                "UPDATE reviews SET status = ?, decision = ?, reason = ?, decided_by = ?, "
                "decided_at = ? WHERE review_id = ?",
                (
                    status,
                    _dump(value) if status == "edited" else None,
                    reason,
                    by,
                    self._now(),
                    review_id,
                ),
            )
        return self.get(review_id)

    def __repr__(self) -> str:
        return f"ReviewStore({str(self.path)!r})"


def _dump(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _review(row: tuple[object, ...]) -> Review:
    (
        review_id,
        run_id,
        node_id,
        dag_name,
        instructions,
        value,
        status,
        decision,
        reason,
        decided_by,
        decided_at,
        created_at,
    ) = row
    return Review(
        review_id=str(review_id),
        run_id=str(run_id),
        node_id=str(node_id),
        dag_name=str(dag_name),
        instructions=str(instructions),
        value=json.loads(str(value)),
        status=cast(ReviewStatus, status),
        edited_value=json.loads(str(decision)) if decision is not None else None,
        reason=str(reason) if reason is not None else None,
        decided_by=str(decided_by) if decided_by is not None else None,
        decided_at=float(cast(float, decided_at)) if decided_at is not None else None,
        created_at=float(cast(float, created_at)),
    )
