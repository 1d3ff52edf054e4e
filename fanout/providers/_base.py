"""The Provider protocol: one async chat-completion call, OpenAI message and tool schema;
and the optional seams a protocol fills in: streaming, embeddings, content kinds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from fanout.types import (
    MODALITIES,
    ChatRequest,
    ChatResponse,
    EmbedRequest,
    EmbedResponse,
    ToolCallDelta,
)

__all__ = [
    "EmbeddingProvider",
    "Provider",
    "StreamingProvider",
    "ToolCallListener",
    "accepted_modalities",
]


@runtime_checkable
class Provider(Protocol):
    """A chat-completion backend.

    ``complete`` returns the reply or raises a :class:`fanout.errors.ProviderError`
    subclass; it must be cancellable (a cancelled call releases whatever it holds).
    ``timeout_s`` is the time left for this call (the request's deadline included).

    A provider may also have ``accepts``, the set of content kinds it takes
    (``"text"``, ``"image"``, ``"audio"``: see :func:`accepted_modalities`); a message
    with a part of another kind is refused before any call. Beside it, optionally:
    ``media_tokens(part) -> int``, the protocol's own token estimate of an image or audio
    part (else OpenAI's formulas), and ``part_problem(part) -> str | None``, why a part of
    a kind it takes cannot go as it is (an image URL to a protocol that reads bytes).
    """

    name: str

    async def complete(
        self, request: ChatRequest, *, timeout_s: float | None = None
    ) -> ChatResponse: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class StreamingProvider(Protocol):
    """A provider that can stream a reply: ``on_delta`` hears each piece of text as it
    arrives; the return value is the whole reply, as :meth:`Provider.complete`'s.

    A stream that breaks off before its end raises :class:`fanout.errors.StreamCut`
    (retryable; what arrived is discarded by the caller). Usage comes from the
    protocol's final event (OpenAI: ``stream_options.include_usage``).

    Tool calls may stream too: when ``on_delta`` is a :class:`ToolCallListener` (it has
    a ``tool_call`` method), a provider that reads tool calls piece by piece passes each
    piece to it as a :class:`fanout.types.ToolCallDelta`. A provider that does not lets
    them come whole in the reply it returns; its callers handle both.
    """

    name: str

    async def stream(
        self,
        request: ChatRequest,
        *,
        on_delta: Callable[[str], None],
        timeout_s: float | None = None,
    ) -> ChatResponse: ...


@runtime_checkable
class ToolCallListener(Protocol):
    """An ``on_delta`` that also hears tool calls as they stream (see
    :class:`StreamingProvider`)."""

    def __call__(self, text: str) -> None: ...

    def tool_call(self, piece: ToolCallDelta) -> None: ...


@runtime_checkable
class EmbeddingProvider(Protocol):
    """A provider with an embeddings endpoint: one vector per input, in order, and the
    request's usage. ``max_inputs`` caps the inputs one request may carry; a protocol
    whose models differ may also have ``max_inputs_for(model) -> int``, and
    ``embed_problem(model) -> str | None`` to refuse a model when a run starts."""

    name: str
    max_inputs: int

    async def embed(
        self, request: EmbedRequest, *, timeout_s: float | None = None
    ) -> EmbedResponse: ...


_EVERY = frozenset(MODALITIES)


def accepted_modalities(provider: object) -> frozenset[str]:
    """The content kinds ``provider`` takes: its ``accepts``, or every kind if it says none."""
    accepts = getattr(provider, "accepts", None)
    return frozenset(accepts) if accepts is not None else _EVERY
