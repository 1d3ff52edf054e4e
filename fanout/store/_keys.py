"""``KeyStore``: the gateway's virtual API keys and what each spent, per period (SQLite).

A key is shown once, when it is created; the store keeps only its SHA-256 digest (a
key is 256 random bits, so a digest is all a lookup needs, and the file gives no key
away). Each key has a tenant, a USD and/or token budget per period (a day, a month,
or ``total``: the key's life), a share of each provider's limit and a priority. Spend
is added by every replica of the gateway with one short transaction per call, so
several processes on one machine share one file.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, get_args

from fanout.clock import Clock
from fanout.errors import ConfigError
from fanout.store._db import SQLiteFile

__all__ = ["KEY_PREFIX", "ApiKey", "KeyPeriod", "KeyPriority", "KeyStore", "period_bounds"]

KEY_PREFIX = "sk-fo-"
KeyPeriod = Literal["day", "month", "total"]
KeyPriority = Literal["interactive", "batch"]

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id        TEXT PRIMARY KEY,
    digest        TEXT NOT NULL UNIQUE,
    tenant        TEXT NOT NULL,
    name          TEXT NOT NULL DEFAULT '',
    budget_usd    REAL,
    budget_tokens INTEGER,
    period        TEXT NOT NULL DEFAULT 'month',
    share         REAL,
    priority      TEXT NOT NULL DEFAULT 'interactive',
    created_at    REAL NOT NULL,
    revoked_at    REAL
)
""",
    """
CREATE TABLE IF NOT EXISTS api_key_spend (
    key_id       TEXT NOT NULL,
    period_start REAL NOT NULL,
    usd          REAL NOT NULL DEFAULT 0,
    tokens       INTEGER NOT NULL DEFAULT 0,
    requests     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, period_start)
)
""",
)
_COLUMNS = (
    "key_id, tenant, name, budget_usd, budget_tokens, period, share, priority, "
    "created_at, revoked_at"
)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A virtual key as stored (never the key itself): its id, owner and limits."""

    key_id: str
    tenant: str
    name: str = ""
    budget_usd: float | None = None
    budget_tokens: int | None = None
    period: KeyPeriod = "month"
    share: float | None = None  # of each provider limit (None: no cap of its own)
    priority: KeyPriority = "interactive"
    created_at: float = 0.0
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def period_bounds(period: KeyPeriod, at: float) -> tuple[float, float | None]:
    """The period holding ``at`` (UTC seconds): its start, and its end (``None``: never)."""
    if period == "total":
        return 0.0, None
    now = datetime.fromtimestamp(at, UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.timestamp(), (start + timedelta(days=1)).timestamp()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return start.timestamp(), following.timestamp()


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStore(SQLiteFile):
    """Virtual keys in ``path`` (a ``.db`` file; a directory gets ``sessions.db``)."""

    def __init__(self, path: str | Path, *, clock: Clock | None = None) -> None:
        super().__init__(path, what="key store", schema=_SCHEMA, clock=clock)

    def create(
        self,
        tenant: str,
        *,
        name: str = "",
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        period: KeyPeriod = "month",
        share: float | None = None,
        priority: KeyPriority = "interactive",
    ) -> tuple[ApiKey, str]:
        """A new key: its record, and the key itself (to show once; it is not kept)."""
        _check(tenant, budget_usd, budget_tokens, period, share, priority)
        key_id = f"key_{secrets.token_hex(6)}"
        plain = f"{KEY_PREFIX}{secrets.token_urlsafe(32)}"
        record = ApiKey(
            key_id, tenant, name, budget_usd, budget_tokens, period, share, priority,
            created_at=self._now(),
        )  # fmt: skip
        with self._transaction() as conn:
            conn.execute(
                f"INSERT INTO api_keys (digest, {_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (digest(plain), *_row(record)),
            )
        return record, plain

    def lookup(self, key: str) -> ApiKey | None:
        """The active key ``key`` is, or ``None`` (unknown or revoked)."""
        if not key.startswith(KEY_PREFIX):
            return None
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE digest = ? AND revoked_at IS NULL",
                (digest(key),),
            ).fetchone()
        return _key(row) if row is not None else None

    def get(self, key_id: str) -> ApiKey:
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
        if row is None:
            raise ConfigError(f"no key {key_id!r}; `fanout keys list` shows the keys")
        return _key(row)

    def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY created_at, key_id"
            ).fetchall()
        return [_key(row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke ``key_id`` (idempotent); a :class:`ConfigError` if there is no such key."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (self._now(), key_id),
            )
        return self.get(key_id)

    def add_spend(self, key_id: str, period_start: float, *, usd: float, tokens: int) -> None:
        """Add one call's spend to ``key_id``'s period starting at ``period_start``."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO api_key_spend (key_id, period_start, usd, tokens, requests) "
                "VALUES (?, ?, ?, ?, 1) ON CONFLICT (key_id, period_start) DO UPDATE SET "
                "usd = usd + excluded.usd, tokens = tokens + excluded.tokens, "
                "requests = requests + 1",
                (key_id, period_start, usd, tokens),
            )

    def spent(self, key_id: str, period_start: float) -> tuple[float, int, int]:
        """USD, tokens and requests of ``key_id`` in the period starting ``period_start``."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT usd, tokens, requests FROM api_key_spend "
                "WHERE key_id = ? AND period_start = ?",
                (key_id, period_start),
            ).fetchone()
        return (float(row[0]), int(row[1]), int(row[2])) if row is not None else (0.0, 0, 0)

    def spend_now(self) -> Iterator[tuple[ApiKey, float, int, int]]:
        """Each key with what it spent in its current period (USD, tokens, requests)."""
        now = self._now()
        for key in self.list(include_revoked=True):
            yield (key, *self.spent(key.key_id, period_bounds(key.period, now)[0]))

    def __repr__(self) -> str:
        return f"KeyStore({str(self.path)!r})"


def _check(
    tenant: str,
    budget_usd: float | None,
    budget_tokens: int | None,
    period: str,
    share: float | None,
    priority: str,
) -> None:
    if not tenant.strip():
        raise ConfigError("a key needs a tenant (--tenant NAME)")
    if budget_usd is not None and budget_usd < 0:
        raise ConfigError(f"budget_usd must be >= 0 (got {budget_usd})")
    if budget_tokens is not None and budget_tokens < 0:
        raise ConfigError(f"budget_tokens must be >= 0 (got {budget_tokens})")
    if period not in get_args(KeyPeriod):
        raise ConfigError(f"period {period!r}: use one of {', '.join(get_args(KeyPeriod))}")
    if share is not None and not 0 < share <= 1:
        raise ConfigError(f"share {share} is not in (0, 1]: it is a fraction of each limit")
    if priority not in get_args(KeyPriority):
        raise ConfigError(f"priority {priority!r}: use interactive or batch")


def _row(key: ApiKey) -> tuple[object, ...]:
    return (
        key.key_id, key.tenant, key.name, key.budget_usd, key.budget_tokens, key.period,
        key.share, key.priority, key.created_at, key.revoked_at,
    )  # fmt: skip


def _key(row: sqlite3.Row | tuple[object, ...]) -> ApiKey:
    (key_id, tenant, name, usd, tokens, period, share, priority, created, revoked) = row
    return ApiKey(
        str(key_id), str(tenant), str(name),
        float(usd) if usd is not None else None,  # type: ignore[arg-type]
        int(tokens) if tokens is not None else None,  # type: ignore[arg-type]
        period,  # type: ignore[arg-type]
        float(share) if share is not None else None,  # type: ignore[arg-type]
        priority,  # type: ignore[arg-type]
        float(created),  # type: ignore[arg-type]
        float(revoked) if revoked is not None else None,  # type: ignore[arg-type]
    )  # fmt: skip
