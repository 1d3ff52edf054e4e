"""Guards of llm nodes: the verdicts a guard returns, and the ``Guard`` wrapper the DAG keeps.

A guard is a plain function, sync or async, of one value. An *input* guard sees
the node's rendered messages before any provider call; an *output* guard sees the
node's answer (the text, or the validated ``output`` model) before it is accepted.
Each returns one verdict:

- ``None`` or :class:`Accept` — the value passes unchanged;
- :class:`Reject` ``(reason)`` — an output is retried with the reason fed back to
  the model (then the fallback models, then the escalation queue); an input is
  refused: the node fails with ``InputRefused`` and no provider call is made;
- :class:`Repair` ``(value)`` — the value is replaced (an output corrected, or
  the messages masked) and the next guard sees the new value.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from fanout.errors import ConfigError
from fanout.types import Content, ContentPart, Message, content_text

__all__ = [
    "Accept",
    "Guard",
    "GuardFn",
    "Reject",
    "Repair",
    "Verdict",
    "make_guards",
    "mask_pii",
    "max_prompt_chars",
]


@dataclass(frozen=True, slots=True)
class Accept:
    """The value passes unchanged (returning ``None`` means the same)."""


@dataclass(frozen=True, slots=True)
class Reject:
    """The value is not acceptable; ``reason`` is fed back to the model (or traced)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Repair:
    """Replace the value: a corrected output, or masked input messages."""

    value: object


Verdict = Accept | Reject | Repair | None
GuardFn = Callable[[object], Verdict | Awaitable[Verdict]]
"""``fn(value)``, sync or async, returning a verdict. Sync guards run on the event loop."""


@dataclass(frozen=True, slots=True)
class Guard:
    """A guard function with the name its trace rows and errors carry."""

    name: str
    fn: Callable[..., object]
    is_async: bool


def make_guards(guards: Sequence[object], *, where: str, what: str) -> tuple[Guard, ...]:
    """Wrap ``guards`` (functions), or raise a :class:`ConfigError` naming the node and the fix."""
    if isinstance(guards, str | bytes) or not isinstance(guards, Sequence):
        raise ConfigError(
            f"{where}: {what} must be a list of functions, e.g. {what}=[check]; got {guards!r}"
        )
    made: list[Guard] = []
    for fn in guards:
        if isinstance(fn, Guard):
            made.append(fn)
            continue
        if not callable(fn):
            raise ConfigError(
                f"{where}: {what} entry {fn!r} is not callable; pass a function of one value "
                "returning None, Accept(), Reject(reason) or Repair(value)"
            )
        name = getattr(fn, "__name__", type(fn).__name__).strip("<>")
        made.append(Guard(name, fn, inspect.iscoroutinefunction(fn)))
    return tuple(made)


# -- ready guards --------------------------------------------------------------------


def max_prompt_chars(limit: int) -> GuardFn:
    """An input guard that refuses a prompt whose messages hold more than ``limit`` characters."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise ConfigError(
            f"max_prompt_chars: limit must be a positive whole number (got {limit!r})"
        )

    def max_prompt_chars(messages: object) -> Verdict:
        size = sum(len(content_text(m.get("content"))) for m in _messages(messages))
        if size > limit:
            return Reject(f"the prompt has {size} characters, over the limit of {limit}")
        return None

    return max_prompt_chars


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Phone-like: 7 or more digits, optionally led by +, with spaces, dots, dashes or brackets.
_PHONE = re.compile(r"(?<![\w+])\+?\d(?:[\s.()-]*\d){6,}(?!\w)")


def mask_pii(messages: object) -> Verdict:
    """An input guard that masks e-mail addresses and phone-like numbers in user messages.

    A regular-expression masker: it catches the common shapes (``a.b@example.com``,
    ``+44 20 7946 0958``), not every form of personal data; use a dedicated detector
    where that matters. Returns ``None`` when there is nothing to mask.
    """
    changed = False
    masked: list[Message] = []
    for message in _messages(messages):
        content = message.get("content")
        if message["role"] == "user" and content:
            new = _masked(content)
            if new != content:
                changed = True
                message = {**message, "content": new}
        masked.append(message)
    return Repair(masked) if changed else None


def _masked(content: Content) -> Content:
    """The content with e-mail addresses and phone numbers masked (in its text parts)."""
    if isinstance(content, str):
        return _PHONE.sub("[phone]", _EMAIL.sub("[email]", content))
    parts: list[ContentPart] = []
    for part in content:
        if part.get("type") == "text":
            text = str(part.get("text") or "")
            part = {"type": "text", "text": _PHONE.sub("[phone]", _EMAIL.sub("[email]", text))}
        parts.append(part)
    return parts


def _messages(value: object) -> list[Message]:
    if not isinstance(value, list):
        raise TypeError(f"an input guard receives the list of messages, got {type(value).__name__}")
    return value
