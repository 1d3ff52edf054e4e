"""Durable state: conversation sessions (SQLite by default, behind ``SessionStore``)."""

from fanout.store._protocol import SessionRecord, SessionStore
from fanout.store._sqlite import SQLiteStore

__all__ = ["SQLiteStore", "SessionRecord", "SessionStore"]
