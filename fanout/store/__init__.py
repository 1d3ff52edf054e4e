"""Durable state: conversation sessions (SQLite by default, behind ``SessionStore``),
and human reviews with the checkpoints of the runs they paused."""

from fanout.store._protocol import SessionRecord, SessionStore
from fanout.store._reviews import Checkpoint, Review, ReviewStatus, ReviewStore
from fanout.store._sqlite import SQLiteStore

__all__ = [
    "Checkpoint",
    "Review",
    "ReviewStatus",
    "ReviewStore",
    "SQLiteStore",
    "SessionRecord",
    "SessionStore",
]
