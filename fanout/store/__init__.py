"""Durable state: conversation sessions (SQLite by default, behind ``SessionStore``),
human reviews with the checkpoints of the runs they paused, and the gateway's virtual
API keys with their spend."""

from fanout.store._keys import KEY_PREFIX, ApiKey, KeyPeriod, KeyPriority, KeyStore, period_bounds
from fanout.store._protocol import SessionRecord, SessionStore
from fanout.store._reviews import Checkpoint, Review, ReviewStatus, ReviewStore
from fanout.store._sqlite import SQLiteStore

__all__ = [
    "KEY_PREFIX",
    "ApiKey",
    "Checkpoint",
    "KeyPeriod",
    "KeyPriority",
    "KeyStore",
    "Review",
    "ReviewStatus",
    "ReviewStore",
    "SQLiteStore",
    "SessionRecord",
    "SessionStore",
    "period_bounds",
]
