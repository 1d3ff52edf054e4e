"""``SQLiteStore``: leases, versions and what survives reopening the file."""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path

import pytest

from fanout import ConfigError, SessionBusy, SessionStore, SQLiteStore
from fanout.sim import FakeClock


def test_a_new_session_is_empty_and_a_save_releases_it(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    assert isinstance(store, SessionStore)
    assert store.path == tmp_path / "sessions.db"
    record = store.acquire("s", "run-1", 60.0)
    assert (record.messages, record.state_json, record.version) == ([], None, 0)
    saved = store.save(
        "s", "run-1", messages=[{"role": "user", "content": "hi"}], state_json='{"n": 1}', version=0
    )
    assert saved == 1
    again = store.acquire("s", "run-2", 60.0)  # released by the save
    assert (again.messages, again.state_json, again.version) == (
        [{"role": "user", "content": "hi"}],
        '{"n": 1}',
        1,
    )


def test_a_held_session_is_refused_to_another_owner_in_another_connection(
    tmp_path: Path,
) -> None:
    SQLiteStore(tmp_path).acquire("s", "run-1", 60.0)
    other = SQLiteStore(tmp_path / "sessions.db")  # another store on the same file
    with pytest.raises(SessionBusy) as caught:
        other.acquire("s", "run-2", 60.0)
    err = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(err, SessionBusy) and err.session_id == "s"
    other.acquire("t", "run-2", 60.0)  # a different session is free
    other.release("s", "run-2")  # not the holder: nothing happens
    with pytest.raises(SessionBusy):
        other.acquire("s", "run-2", 60.0)
    SQLiteStore(tmp_path).release("s", "run-1")
    assert other.acquire("s", "run-2", 60.0).version == 0


async def test_an_expired_lease_can_be_taken_over_and_the_old_holder_cannot_save(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    store = SQLiteStore(tmp_path, clock=clock)
    store.acquire("s", "crashed", 10.0)
    await clock.advance(5.0)
    with pytest.raises(SessionBusy):
        store.acquire("s", "next", 10.0)
    await clock.advance(6.0)
    record = store.acquire("s", "next", 10.0)
    with pytest.raises(SessionBusy, match="this turn was not saved"):
        store.save("s", "crashed", messages=[], state_json=None, version=record.version)
    assert store.save("s", "next", messages=[], state_json=None, version=record.version) == 1
    await clock.aclose()


def test_a_save_at_a_stale_version_is_refused(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    store.acquire("s", "a", 60.0)
    store.save("s", "a", messages=[], state_json=None, version=0)
    store.acquire("s", "a", 60.0)
    with pytest.raises(SessionBusy):
        store.save("s", "a", messages=[], state_json=None, version=0)


def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "x.db")
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_an_unusable_path_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"cannot create .* set data_dir to a writable"):
        SQLiteStore(tmp_path / "file" / "sessions.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a usable SQLite file"):
        SQLiteStore(junk)
