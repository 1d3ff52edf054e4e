"""Which protocols the emulator streams besides OpenAI's, and the streamed answer's send."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.types import Send

from fanout.sim._dialect import Parsed
from fanout.sim._stream import stream_reply
from fanout.sim._stream_anthropic import anthropic_script
from fanout.sim._stream_bedrock import bedrock_script
from fanout.sim._stream_gemini import gemini_script
from fanout.sim._stream_protocols import Script, play, stream_fault, wants_stream
from fanout.types import ChatResponse, Usage

if TYPE_CHECKING:
    from fanout.sim.server import _Emulator

__all__ = ["STREAMED", "send_stream", "wants_stream"]

STREAMED: dict[str, Callable[[Parsed, ChatResponse, Usage, int], Script]] = {
    "anthropic": anthropic_script,
    "gemini": gemini_script,
    "bedrock": bedrock_script,
}
"""The protocols the emulator streams in their own shape, by name: their writers (Azure
streams OpenAI's chunks)."""


async def send_stream(
    emulator: _Emulator, protocol: str, send: Send, parsed: Parsed, reply: ChatResponse,
    usage: Usage, headers: dict[str, str],
) -> None:  # fmt: skip
    """Answer a streamed request of ``protocol``, with the emulator's stream faults.
    Azure streams as OpenAI does (:mod:`fanout.sim._stream`), cut but never overloaded."""
    per_token_s = emulator.config.latency_per_token_ms / 1000
    if protocol == "azure":
        cut = stream_fault(emulator, overloads=False) == "cut"
        await stream_reply(
            send, reply, headers, model=parsed.chat.model, include_usage=True, cut=cut,
            reply_id=f"chatcmpl-{emulator.stats.accepted}", per_token_s=per_token_s,
        )  # fmt: skip
        return
    script = STREAMED[protocol](parsed, reply, usage, emulator.stats.accepted)
    fault = stream_fault(emulator)
    await play(send, script, headers, per_token_s=per_token_s, fault=fault)
