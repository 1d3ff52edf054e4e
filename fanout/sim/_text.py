"""Deterministic reply text for the simulated provider: sentiment, summaries, echoes."""

from __future__ import annotations

import re

__all__ = ["reply_text", "sentiment", "token_count"]

_NEGATIVE = frozenset(
    {
        *("bad", "broken", "terrible", "awful", "angry", "refund", "late", "worst", "poor"),
        *("hate", "disappointed", "never", "cancel", "rude", "slow", "damaged", "wrong"),
        *("missing", "useless", "horrible"),
    }
)
_POSITIVE = frozenset(
    {
        *("great", "love", "excellent", "good", "happy", "thanks", "thank", "amazing"),
        *("perfect", "fast", "wonderful", "recommend", "best", "nice", "helpful", "pleased"),
    }
)
_WORD = re.compile(r"[a-z']+")
_MARKER = re.compile(r"\[sim:[^\]]*\]\s*")


def sentiment(text: str) -> str:
    words = _WORD.findall(text.lower())
    neg = sum(w in _NEGATIVE for w in words)
    pos = sum(w in _POSITIVE for w in words)
    if neg > pos:
        return "negative"
    if pos > neg:
        return "positive"
    return "neutral"


def token_count(text: str) -> int:
    return -(-len(text) // 4)


def reply_text(prompt: str) -> str:
    """What the simulated model says to ``prompt`` (the last user message)."""
    clean = _MARKER.sub("", prompt).strip()
    lower = clean.lower()
    subject = clean.split(":", 1)[1].strip() if ":" in clean else clean
    if "sentiment" in lower:
        return sentiment(subject)
    if "summar" in lower:
        words = subject.split()
        return "Summary: " + " ".join(words[:12]) + (" ..." if len(words) > 12 else "")
    words = clean.split()
    return "sim reply: " + " ".join(words[:8])
