"""Record keys: a chosen column, else a hash of the record's content; and a compact set of them."""

from __future__ import annotations

import hashlib
import json
from array import array
from bisect import bisect_left
from collections.abc import Iterable

__all__ = ["KeySet", "content_key"]


def content_key(data: object) -> str:
    """A stable key for a record without a key column: a hash of its canonical JSON.

    The same record gets the same key whatever file, format or position it comes
    from (field order and whitespace do not matter), so a re-split input resumes.
    """
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _digest(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


class KeySet:
    """The keys a job has finished, in 8 bytes each (a sorted array of 64-bit digests).

    A million keys take 8 MB rather than the ~100 MB of a set of strings. Two
    different keys share a digest with probability ~n²/2⁶⁵ (3e-8 at a million keys).
    """

    __slots__ = ("_digests",)

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._digests = array("Q", sorted({_digest(key) for key in keys}))

    @classmethod
    def build(cls, chunks: Iterable[Iterable[str]]) -> KeySet:
        """From keys that arrive in chunks (a column per Parquet part), sorted once."""
        digests = array("Q")
        for chunk in chunks:
            digests.extend(_digest(key) for key in chunk)
        return cls._of(digests)

    @classmethod
    def _of(cls, digests: array[int]) -> KeySet:
        keys = cls()
        keys._digests = array("Q", sorted(set(digests)))
        return keys

    def union(self, keys: Iterable[str]) -> KeySet:
        """A new set: these keys and ``keys``."""
        merged = array("Q", self._digests)
        merged.extend(_digest(key) for key in keys)
        return KeySet._of(merged)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        digests = self._digests
        digest = _digest(key)
        at = bisect_left(digests, digest)
        return at < len(digests) and digests[at] == digest

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"KeySet({len(self._digests)} keys)"
