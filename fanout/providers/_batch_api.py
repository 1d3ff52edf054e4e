"""The Batch API seam: submit a file of requests, poll it, fetch its results, cancel it.

A provider's Batch API (OpenAI ``/v1/batches``, Anthropic Message Batches) runs many
requests asynchronously at a discount and answers within a window (24 h). Behind
:class:`BatchAPI` each vendor is one small class: it encodes a request as a line of
its batch payload, submits a payload under a label (so a submit whose answer was
lost can be found again, and never made twice; an API without labels, Anthropic's,
matches the payload's requests instead), reports a batch's state in the
provider-neutral :class:`BatchStatus`, and turns its results into one
:class:`LineResult` per request. :class:`BatchingProvider` marks a
:class:`~fanout.providers.Provider` whose calls go through such an API, so the
engine knows to route them past its online limiter and timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fanout.errors import ProviderError
from fanout.providers._base import Provider
from fanout.types import ChatRequest, ChatResponse

__all__ = ["ENDED_STATES", "BatchAPI", "BatchStatus", "BatchingProvider", "LineResult"]

ENDED_STATES = frozenset({"completed", "failed", "expired", "cancelled"})
"""States after which a batch changes no more (OpenAI's names; other vendors map to them)."""


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """Where one batch stands, in OpenAI's vocabulary (``validating``, ``in_progress``,
    ``finalizing``, ``completed``, ``failed``, ``expired``, ``cancelling``, ``cancelled``).

    ``completed``/``failed`` count lines answered so far. ``error_code`` and
    ``error_message``: why a ``failed`` batch failed as a whole (``token_limit_exceeded``:
    the model's enqueued-token limit; anything else: its payload is invalid).
    Times are seconds since the epoch; ``output_ref``/``error_ref`` locate the results.
    """

    batch_id: str
    state: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    created_at: float | None = None
    ended_at: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    output_ref: str | None = None
    error_ref: str | None = None

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES


@dataclass(frozen=True, slots=True)
class LineResult:
    """One request's outcome in a finished batch: its reply, or the error it met."""

    custom_id: str
    response: ChatResponse | None = None
    error: ProviderError | None = None


class BatchAPI(Protocol):
    """One vendor's Batch API. Every method raises a :class:`ProviderError` on failure
    (an outage, a refusal); the caller decides to wait or give up.

    ``max_requests`` and ``max_bytes``: what one batch may hold.
    """

    name: str
    max_requests: int
    max_bytes: int

    def encode(self, custom_id: str, request: ChatRequest) -> bytes:
        """The request as one line of a batch payload (with its newline)."""
        ...

    async def submit(self, payload: bytes, *, label: str) -> BatchStatus:
        """Submit the lines in ``payload`` as one batch tagged ``label``."""
        ...

    async def find(self, label: str, *, since: float, payload: bytes) -> BatchStatus | None:
        """The batch submitted with ``label`` (and ``payload``) no earlier than ``since``
        (epoch s), if any: how a submit whose answer was lost (a kill mid-call) is
        recovered, not repeated. An API without labels matches on the payload."""
        ...

    async def poll(self, batch_id: str) -> BatchStatus: ...

    async def results(self, status: BatchStatus) -> list[LineResult]:
        """Every answered line of an ended batch (a line that never ran is absent)."""
        ...

    async def cancel(self, batch_id: str) -> BatchStatus: ...

    def answer(self, request: ChatRequest, response: ChatResponse) -> ChatResponse:
        """A line's reply as the call that sent ``request`` gets it (Anthropic: a
        structured answer given through its output tool becomes the content)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class BatchingProvider(Provider, Protocol):
    """A provider whose ``complete()`` goes through a Batch API: it answers when the
    batch holding the call has finished, minutes or hours later. ``online`` is the
    same provider's online client, for the models that do not batch."""

    online: Provider
