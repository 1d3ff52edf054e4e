"""The emulator's streamed replies for Anthropic, Gemini and Bedrock, and their faults.

Each protocol's writer (``_stream_anthropic.py``, ``_stream_gemini.py``,
``_stream_bedrock.py``) turns the simulated reply into a :class:`Script`: the events
before the text, one event per piece of text, the events after it (tool calls, the
finish, the usage) and the protocol's overloaded error event. :func:`play` sends it:
the first event at once (the latency was spent before), each piece of text
``latency_per_token_ms`` a token after the one before; ``cut``: half the pieces, then a
body that ends there (no finish, no usage); ``overloaded``: half the pieces, then the
error event, as a vendor under load sends after its 200.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.types import Send

from fanout.sim._text import token_count

if TYPE_CHECKING:
    from fanout.sim.server import _Emulator

__all__ = ["Script", "play", "stream_fault", "wants_stream"]


@dataclass(slots=True)
class Script:
    """A streamed reply's bytes, in the order they go."""

    content_type: str
    opening: list[bytes] = field(default_factory=list)
    pieces: list[tuple[str, bytes]] = field(default_factory=list)  # (text, its event)
    closing: list[bytes] = field(default_factory=list)
    overloaded: bytes = b""  # the error event of an overloaded model, mid-stream
    cut_tail: bytes = b""  # what a cut stream ends on (Bedrock: half a frame)


def wants_stream(protocol: str, path: str, body: Any) -> bool:
    """Whether a request asks for a streamed reply: Anthropic's and Azure's
    ``"stream": true``, or
    Gemini's ``:streamGenerateContent`` and Bedrock's ``/converse-stream`` paths."""
    if protocol in ("anthropic", "azure"):
        return isinstance(body, dict) and body.get("stream") is True
    if protocol == "gemini":
        return path.endswith(":streamGenerateContent")
    if protocol == "bedrock":
        return path.endswith("/converse-stream")
    return False


def stream_fault(emulator: _Emulator, *, overloads: bool = True) -> str | None:
    """Count a stream begun and say its fault: ``"cut"`` while ``cut_streams`` last,
    then (``overloads``: the protocol has an error event) ``"overloaded"`` while
    ``overload_streams`` last, else ``None``."""
    stats = emulator.stats
    stats.streams += 1
    if emulator.cuts_left > 0:
        emulator.cuts_left -= 1
        stats.streams_cut += 1
        return "cut"
    if overloads and emulator.overloads_left > 0:
        emulator.overloads_left -= 1
        stats.overloaded += 1
        return "overloaded"
    return None


async def play(
    send: Send, script: Script, headers: dict[str, str], *, per_token_s: float,
    fault: str | None,
) -> None:  # fmt: skip
    """Send ``script`` as a 200 whose body arrives event by event."""
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-type", script.content_type.encode()))
    await send({"type": "http.response.start", "status": 200, "headers": raw})

    async def emit(body: bytes) -> None:
        await send({"type": "http.response.body", "body": body, "more_body": True})

    for event in script.opening:
        await emit(event)
    pieces = script.pieces
    if fault is not None:
        pieces = pieces[: max(1, len(pieces) // 2)] if pieces else []
    for text, event in pieces:
        if per_token_s > 0:
            await asyncio.sleep(per_token_s * token_count(text))
        await emit(event)
    if fault == "cut":
        last = script.cut_tail
    elif fault == "overloaded":
        last = script.overloaded
    else:
        last = b"".join(script.closing)
    await send({"type": "http.response.body", "body": last, "more_body": False})
