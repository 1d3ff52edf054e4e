"""What the simulated model says and counts: reply text, sentiment, token counts, usage."""

from __future__ import annotations

import re

from fanout.types import Message, Usage, content_text, media_tokens

__all__ = [
    "MARKER",
    "fit_tokens",
    "last_user_text",
    "reply_text",
    "sentiment",
    "sim_usage",
    "subject",
    "token_count",
]

MARKER = "[sim:"
_MARKERS = re.compile(r"\[sim:[^\]]*\]\s*")
_WORD = re.compile(r"[a-z']+")
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
_HARD_WORDS = 25  # a triage prompt's subject longer than this is "hard"
_ECHO_WORDS = 8
_SUMMARY_WORDS = 12
_MIN_OUTPUT_TOKENS = 3  # a real reply also spends tokens on framing and end-of-turn
_MAX_REPLY_CHARS = 160  # keeps a plain reply within 40 tokens
_TOKENS_PER_MESSAGE = 3


def token_count(text: str) -> int:
    """Tokens in ``text`` as the simulated model counts them: one per four characters."""
    return -(-len(text) // 4)


def sim_usage(messages: list[Message], output_tokens: int) -> Usage:
    """Usage as the simulated provider reports it.

    Near, on purpose not equal to, ``fanout.types.estimate_prompt_tokens``: the
    engine reserves by its estimate and must settle by what the provider reports.
    """
    count = 0
    for message in messages:
        count += _TOKENS_PER_MESSAGE
        content = message.get("content")
        if content:
            count += -(-len(content_text(content)) // 4) + media_tokens(content)
        calls = message.get("tool_calls")
        if calls:
            count += 8 * len(calls)
    return Usage(count, output_tokens)


def last_user_text(messages: list[Message]) -> str:
    """The content of the last user message ("" if there is none)."""
    for message in reversed(messages):
        if message["role"] == "user":
            return content_text(message.get("content"))
    return ""


def subject(prompt: str) -> str:
    """What a prompt is about: markers removed, and the text after the first colon, if any."""
    if MARKER in prompt:
        prompt = _MARKERS.sub("", prompt)
    head, colon, tail = prompt.partition(":")
    return (tail if colon and tail.strip() else head).strip()


def sentiment(text: str) -> str:
    """``positive``, ``negative`` or ``neutral``, by counting keywords in ``text``."""
    words = _WORD.findall(text.lower())
    score = 0
    for word in words:
        if word in _NEGATIVE:
            score -= 1
        elif word in _POSITIVE:
            score += 1
    if score < 0:
        return "negative"
    if score > 0:
        return "positive"
    return "neutral"


def reply_text(prompt: str) -> str:
    """What the simulated model answers to ``prompt`` (the last user message).

    A prompt that mentions "sentiment" gets ``positive``/``negative``/``neutral``;
    one that asks "easy or hard" gets ``hard`` when its subject has more than 25
    words or asks more than one question, else ``easy`` (a stand-in for a triage
    classifier: long, many-part requests are the hard ones); one that asks to
    "summar..." gets ``Summary: `` and the first words of its subject; anything
    else gets ``sim reply: `` and its first words.
    """
    lower = prompt.lower()
    about = subject(prompt)
    if "sentiment" in lower:
        return sentiment(about)
    if "easy or hard" in lower:
        hard = len(about.split()) > _HARD_WORDS or about.count("?") > 1
        return "hard" if hard else "easy"
    if "summar" in lower:
        words = about.split()
        more = " ..." if len(words) > _SUMMARY_WORDS else ""
        return ("Summary: " + " ".join(words[:_SUMMARY_WORDS]) + more)[:_MAX_REPLY_CHARS]
    words = (_MARKERS.sub("", prompt) if MARKER in prompt else prompt).split()
    return ("sim reply: " + " ".join(words[:_ECHO_WORDS]))[:_MAX_REPLY_CHARS]


def fit_tokens(text: str, max_tokens: int) -> tuple[str, int, str]:
    """``(text, output_tokens, finish_reason)`` for a reply limited to ``max_tokens``.

    A reply that fits reports at least 3 tokens (framing; plain replies are at
    most 40 by construction); a longer one is cut to ``max_tokens`` with finish
    reason ``length``.
    """
    natural = token_count(text)
    if natural > max_tokens:
        return text[: max_tokens * 4], max_tokens, "length"
    return text, min(max(natural, _MIN_OUTPUT_TOKENS), max_tokens), "stop"
