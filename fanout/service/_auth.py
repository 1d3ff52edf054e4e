"""Bearer tokens: who may call the service, and which tenant each token belongs to.

Tokens come from an environment variable or a file, one ``tenant:token`` (or bare
``token``) per entry; only their SHA-256 digests are kept, and a presented token is
compared with every one of them in constant time, so neither the time taken nor a
repr, log or error reveals which token, or how much of one, matched.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from fanout.errors import ConfigError

__all__ = ["TOKENS_ENV", "TokenStore"]

TOKENS_ENV = "FANOUT_SERVICE_TOKENS"
_DEFAULT_TENANT = "default"


class TokenStore:
    """Digests of the accepted bearer tokens, each with its tenant."""

    __slots__ = ("_entries",)

    def __init__(self, entries: dict[str, str]) -> None:
        """``entries``: token -> tenant. The tokens themselves are not kept."""
        if not entries:
            raise ConfigError("no service tokens given; give at least one bearer token")
        self._entries = tuple((_digest(token), tenant) for token, tenant in entries.items())

    @classmethod
    def parse(cls, text: str, *, source: str) -> TokenStore:
        """Entries separated by newlines or commas: ``tenant:token`` or ``token``.

        Blank entries and ``#`` comment lines are skipped. Errors name ``source`` and
        the entry's position, never its text.
        """
        entries: dict[str, str] = {}
        raw = [e.strip() for line in text.splitlines() for e in line.split(",")]
        for position, entry in enumerate((e for e in raw if e and not e.startswith("#")), 1):
            tenant, sep, token = entry.rpartition(":")
            tenant = tenant.strip() if sep else _DEFAULT_TENANT
            token = token.strip()
            if not token or not tenant:
                raise ConfigError(
                    f"{source}: entry {position} is not 'tenant:token' or 'token'; fix it"
                )
            if len(token) < 16:
                raise ConfigError(
                    f"{source}: entry {position} has a token shorter than 16 characters; "
                    "use a long random one (e.g. python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))')"
                )
            entries[token] = tenant
        return cls(entries)

    @classmethod
    def from_env(cls, name: str = TOKENS_ENV) -> TokenStore | None:
        """The tokens in environment variable ``name`` (``None`` if unset or empty)."""
        value = os.environ.get(name, "").strip()
        return cls.parse(value, source=f"environment variable {name}") if value else None

    @classmethod
    def from_file(cls, path: str | Path) -> TokenStore:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"tokens file {str(path)!r} cannot be read ({exc.strerror or exc}); check the path"
            ) from None
        return cls.parse(text, source=f"tokens file {str(path)!r}")

    def tenant(self, token: str | None) -> str | None:
        """The tenant of ``token``, or ``None`` if it is not accepted (constant time)."""
        if not token:
            return None
        presented = _digest(token)
        found: str | None = None
        for digest, tenant in self._entries:  # no early exit: every entry is compared
            if hmac.compare_digest(presented, digest):
                found = tenant
        return found

    @property
    def tenants(self) -> frozenset[str]:
        return frozenset(tenant for _, tenant in self._entries)

    def __repr__(self) -> str:
        return f"TokenStore({len(self._entries)} tokens, tenants={sorted(self.tenants)})"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()
