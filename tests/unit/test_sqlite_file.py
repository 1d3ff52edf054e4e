"""``SQLiteFile``'s kept connections: one per thread, none left mid-transaction, each
writer's commits seen at once by another store on the file, dropped by pickling."""

from __future__ import annotations

import pickle
import sqlite3
import threading
from pathlib import Path

import pytest

from fanout.store import KeyStore


def test_a_thread_keeps_one_connection_and_another_thread_gets_its_own(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    record, _ = store.create("acme")
    for _ in range(20):
        store.add_spend(record.key_id, 0.0, usd=0.01, tokens=1)
        store.spent(record.key_id, 0.0)
    assert len(store._conns) == 1  # the creating thread's, kept

    def elsewhere() -> None:
        store.add_spend(record.key_id, 0.0, usd=0.01, tokens=1)

    worker = threading.Thread(target=elsewhere)
    worker.start()
    worker.join()
    assert len(store._conns) == 2
    assert store.spent(record.key_id, 0.0)[1:] == (21, 21)


def test_a_commit_by_one_store_is_read_at_once_by_another(tmp_path: Path) -> None:
    """Two stores on one file stand for two processes: kept connections hold no
    snapshot between operations, so neither reads stale rows."""
    one, two = KeyStore(tmp_path / "keys.db"), KeyStore(tmp_path / "keys.db")
    record, plain = one.create("acme")
    assert two.lookup(plain) == record
    for n in range(1, 4):
        two.add_spend(record.key_id, 0.0, usd=1.0, tokens=1)
        assert one.spent(record.key_id, 0.0) == (float(n), n, n)
    one.revoke(record.key_id)
    assert two.lookup(plain) is None


def _orphan(store: KeyStore) -> None:
    """A write whose deferred foreign key fails only at COMMIT."""
    with store._transaction() as conn:
        conn.execute("INSERT INTO child VALUES ('nobody')")


def test_a_failed_commit_is_rolled_back_and_the_connection_goes_on(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    record, _ = store.create("acme")
    with store._connect() as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("CREATE TABLE parent (id TEXT PRIMARY KEY)")
        conn.execute(
            "CREATE TABLE child (parent TEXT REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
    with pytest.raises(sqlite3.IntegrityError):
        _orphan(store)
    (conn,) = store._conns
    assert not conn.in_transaction  # else every later write: "transaction within a transaction"
    store.add_spend(record.key_id, 0.0, usd=0.5, tokens=5)
    assert store.spent(record.key_id, 0.0) == (0.5, 5, 1)


def test_close_and_pickling_leave_connections_behind(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    record, plain = store.create("acme")
    (kept,) = store._conns
    copy = pickle.loads(pickle.dumps(store))
    assert copy._conns == [] and copy.lookup(plain) == record  # opens its own
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):  # closed
        kept.execute("SELECT 1")
    assert store.lookup(plain) == record  # a new connection after close()
