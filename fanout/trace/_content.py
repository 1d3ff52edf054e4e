"""What a trace keeps of prompts and replies: an HMAC (default), the text, or nothing."""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable
from typing import Literal, Protocol

from fanout.trace._span import Span

__all__ = ["ContentMode", "ContentPolicy", "Redactor"]

ContentMode = Literal["hmac", "full", "none"]
Redactor = Callable[[str], str]
"""Masks PII in a text before anything of it is hashed or written."""

_log = logging.getLogger(__name__)


@functools.cache
def _process_key() -> bytes:
    """This process's random HMAC key, the same for every policy (as documented: digests
    compare within the process, across its engines)."""
    return secrets.token_bytes(32)


class _Mac(Protocol):
    def copy(self) -> _Mac: ...
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


class ContentPolicy:
    """Fills a span's content columns.

    - ``hmac``: HMAC-SHA256 of the (redacted) text under a secret key, and its size. Equal
      texts have equal digests (joins and dedup work), but without the key a short value
      cannot be guessed by hashing candidates. Set the key with ``key`` or in the
      environment variable ``key_env``; without one, a random key per process is used
      (digests then compare only within that process) and a warning says so.
    - ``full``: the (redacted) texts themselves.
    - ``none``: sizes only.

    ``redact`` runs on every text and error message before any of the above.
    """

    __slots__ = ("_mac", "mode", "redact")

    def __init__(
        self,
        mode: ContentMode = "hmac",
        *,
        key: bytes | str | None = None,
        key_env: str | None = "FANOUT_TRACE_KEY",
        redact: Redactor | None = None,
    ) -> None:
        if mode not in ("hmac", "full", "none"):
            raise ValueError(f"trace content mode must be hmac, full or none (got {mode!r})")
        self.mode: ContentMode = mode
        self.redact = redact
        if key is None and key_env:
            key = os.environ.get(key_env) or None
        if key is None and mode == "hmac":
            _log.warning(
                "traces: no HMAC key set (%s); using a random key for this process, so "
                "content digests compare only within it",
                key_env or "key=",
            )
            key = _process_key()
        raw = key.encode() if isinstance(key, str) else (key or b"")
        # keyed once: each digest copies the keyed state (half the cost of hmac.digest,
        # which sets the key up again on every call); OpenSSL's HMAC object where the
        # hmac module wraps one (its Python wrapper costs a third of a digest)
        mac = hmac.new(raw, digestmod=hashlib.sha256)
        self._mac: _Mac = getattr(mac, "_hmac", None) or mac

    def digest(self, text: str) -> str:
        mac = self._mac.copy()
        mac.update(text.encode())
        return mac.hexdigest()

    def scrub(self, message: str | None) -> str | None:
        """An error message as it may be written (redacted)."""
        if message is None or self.redact is None:
            return message
        return self.redact(message)

    def fill(self, span: Span, input_text: str | None, output_text: str | None) -> None:
        if input_text is not None:
            span.input_chars = len(input_text)
        if output_text is not None:
            span.output_chars = len(output_text)
        if self.mode == "none":
            return
        if self.redact is not None:
            input_text = self.redact(input_text) if input_text is not None else None
            output_text = self.redact(output_text) if output_text is not None else None
        if self.mode == "full":
            span.input_text, span.output_text = input_text, output_text
            return
        if input_text is not None:
            span.input_hmac = self.digest(input_text)
        if output_text is not None:
            span.output_hmac = self.digest(output_text)

    def __repr__(self) -> str:  # never the key
        return f"ContentPolicy(mode={self.mode!r}, redact={self.redact is not None})"
