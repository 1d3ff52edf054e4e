"""``KeyStore``: keys by digest only, revocation, spend per period, and what it refuses."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fanout.errors import ConfigError
from fanout.store import KEY_PREFIX, KeyStore, period_bounds


def test_a_key_is_found_by_itself_and_kept_only_as_a_digest(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    record, plain = store.create("acme", budget_usd=2.5, share=0.5, priority="batch")
    assert plain.startswith(KEY_PREFIX)
    assert store.lookup(plain) == record
    assert store.lookup(plain + "x") is None and store.lookup("not-a-key") is None
    assert plain.encode() not in (tmp_path / "keys.db").read_bytes()
    other, plain2 = store.create("acme")
    assert plain2 != plain and other.key_id != record.key_id
    store.revoke(record.key_id)
    assert store.lookup(plain) is None and store.lookup(plain2) == other
    assert [k.key_id for k in store.list()] == [other.key_id]
    assert len(store.list(include_revoked=True)) == 2
    assert store.revoke(record.key_id).revoked_at is not None  # idempotent


def test_spend_adds_up_per_period(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    record, _ = store.create("acme", period="day")
    start = period_bounds("day", datetime(2026, 3, 4, 15, 0, tzinfo=UTC).timestamp())[0]
    store.add_spend(record.key_id, start, usd=0.5, tokens=100)
    store.add_spend(record.key_id, start, usd=0.25, tokens=50)
    store.add_spend(record.key_id, start + 86_400, usd=1.0, tokens=1)
    assert store.spent(record.key_id, start) == (0.75, 150, 2)
    assert store.spent(record.key_id, start + 86_400) == (1.0, 1, 1)


def test_period_bounds() -> None:
    at = datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    day = period_bounds("day", at)
    month = period_bounds("month", at)
    assert day == (datetime(2026, 12, 31, tzinfo=UTC).timestamp(),
                   datetime(2027, 1, 1, tzinfo=UTC).timestamp())  # fmt: skip
    assert month == (datetime(2026, 12, 1, tzinfo=UTC).timestamp(),
                     datetime(2027, 1, 1, tzinfo=UTC).timestamp())  # fmt: skip
    assert period_bounds("total", at) == (0.0, None)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"tenant": " "}, "tenant"),
        ({"tenant": "a", "budget_usd": -1}, "budget_usd"),
        ({"tenant": "a", "share": 0}, "share"),
        ({"tenant": "a", "period": "week"}, "period"),
        ({"tenant": "a", "priority": "urgent"}, "priority"),
    ],
)
def test_bad_keys_are_refused(tmp_path: Path, kwargs: dict[str, object], words: str) -> None:
    store = KeyStore(tmp_path / "keys.db")
    with pytest.raises(ConfigError, match=words):
        store.create(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no key"):
        store.get("key_missing")
