"""A batch job's batch lines and sent batches, as the batching client tracks them, and the
errors of lines a batch never answered."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from dataclasses import dataclass

from fanout.errors import ProviderError, ProviderHTTPError, ProviderTimeout
from fanout.providers import BatchStatus
from fanout.types import BatchRef, ChatResponse

__all__ = ["BatchStats", "Line", "Sent", "copy_error", "not_run"]


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What the progress line shows of batch mode: batches by state (``buffered`` calls
    wait for a batch to be cut), and lines answered of those submitted."""

    batches: Mapping[str, int]
    lines_answered: int
    lines_submitted: int
    buffered: int


class Line:
    """One request in (or on its way to) a batch."""

    __slots__ = ("answer", "custom_id", "future", "label", "model", "payload", "ref", "tokens")

    def __init__(self, custom_id: str, model: str, payload: bytes | None, tokens: int) -> None:
        self.custom_id = custom_id
        self.model = model
        # None for a line an earlier run submitted, or one dropped before it was sent
        self.payload = payload
        self.tokens = tokens
        self.label: str | None = None  # the batch it was cut into
        self.future: asyncio.Future[ChatResponse] | None = None  # the call waiting for it
        self.answer: ChatResponse | None = None  # answered, waiting to be claimed
        self.ref: BatchRef | None = None


class Sent:
    """A submitted batch until it ends."""

    __slots__ = (
        "batch_id",
        "interval_s",
        "label",
        "lines",
        "model",
        "next_poll",
        "polled",
        "status",
        "submitted_at",
        "tokens",
    )

    def __init__(self, label: str, model: str, lines: list[Line], tokens: int) -> None:
        self.label, self.model, self.lines, self.tokens = label, model, lines, tokens
        self.batch_id = ""
        self.submitted_at: float | None = None  # epoch s
        self.status: BatchStatus | None = None
        self.next_poll = 0.0
        self.interval_s = 0.0
        self.polled = False  # polled since it was submitted (a detached run waits for that)


def not_run(name: str, sent: Sent, status: BatchStatus | None) -> ProviderError:
    """The error of a line its batch never answered."""
    if status is not None and status.state == "failed":
        return ProviderHTTPError(
            f"{name}: batch {sent.batch_id} failed validation: {status.error_code}: "
            f"{status.error_message}",
            provider=name,
            status_code=400,
            retryable=False,
            fallback_ok=True,
        )
    state = status.state if status is not None else "turned away"
    return ProviderTimeout(
        f"{name}: batch {sent.batch_id} ended {state} before this request ran; it is sent again",
        provider=name,
    )


def copy_error(error: ProviderError) -> ProviderError:
    """A fresh instance per call (an exception object carries one traceback)."""
    return copy.copy(error)  # through FanoutError.__reduce__: the same type and attributes
