"""What every non-OpenAI protocol does to fanout's OpenAI-style conversation first.

The system prompt is lifted out (Anthropic, Bedrock and Gemini take it as a field of
its own), tool results are paired with the calls they answer, and consecutive turns
of one role are merged (those APIs want user and model turns to alternate; OpenAI
sends each tool result as a message of its own). Structured output with tools goes
through an *output tool*: one more tool whose input schema is the output's, which the
model is made to call when it is done (``tool_choice`` "any"); without tools that
tool is forced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from fanout.types import (
    ChatRequest,
    ChatResponse,
    ContentPart,
    JSONSchema,
    Message,
    ToolSpec,
    text_of,
)

__all__ = ["Turn", "answered", "arguments_of", "output_tool", "system_text", "turns"]

_TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class Turn:
    """One turn of a conversation, in a protocol's own blocks."""

    role: str  # "user" or "assistant"
    blocks: list[dict[str, object]] = field(default_factory=list)


def system_text(messages: list[Message]) -> str:
    """The system messages' texts, joined by a blank line ("" without one)."""
    return "\n\n".join(
        text_of(m.get("content")) for m in messages if m["role"] == "system" and m.get("content")
    )


def arguments_of(text: str) -> dict[str, object]:
    """A tool call's arguments as an object: the APIs take JSON, not the model's text.

    Text that is not a JSON object (a model's malformed call, sent back in the
    transcript) is kept under ``_raw`` rather than dropped."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"_raw": text}


def turns(
    messages: list[Message],
    *,
    text: Callable[[str], dict[str, object]],
    call: Callable[[str, str, dict[str, object]], dict[str, object]],
    result: Callable[[str, str, str], dict[str, object]],
    part: Callable[[ContentPart], dict[str, object]] | None = None,
) -> list[Turn]:
    """The conversation less its system messages, as alternating turns of blocks.

    ``text(content)``, ``call(id, name, arguments)`` and ``result(call id, tool name,
    content)`` make a protocol's blocks; a tool result is a user turn's block. With
    ``part``, a user message's content parts become a block each (images, audio);
    without, their text is joined into one text block."""
    names: dict[str, str] = {}
    out: list[Turn] = []
    for message in messages:
        role = message["role"]
        if role == "system":
            continue
        blocks: list[dict[str, object]] = []
        content = message.get("content")
        if role == "tool":
            call_id = message.get("tool_call_id", "")
            name = message.get("name") or names.get(call_id, "tool")
            blocks.append(result(call_id, name, text_of(content)))
        elif part is not None and role == "user" and isinstance(content, list):
            blocks.extend(part(p) for p in content)
        else:
            if content:
                blocks.append(text(text_of(content)))
            for wire in message.get("tool_calls") or ():
                function = wire.get("function")
                if not isinstance(function, dict):
                    continue
                call_id, name = str(wire.get("id")), str(function.get("name"))
                names[call_id] = name
                blocks.append(call(call_id, name, arguments_of(str(function.get("arguments")))))
        turn_role = "assistant" if role == "assistant" else "user"
        if not blocks:
            continue
        if out and out[-1].role == turn_role:
            out[-1].blocks.extend(blocks)
        else:
            out.append(Turn(turn_role, blocks))
    return out


def output_tool(request: ChatRequest) -> ToolSpec | None:
    """The output tool of a structured request (``None`` without a schema)."""
    schema: JSONSchema | None = request.response_schema
    if schema is None:
        return None
    name = _TOOL_NAME.sub("_", request.response_schema_name)[:64] or "output"
    if any(t.name == name for t in request.tools):
        name = f"{name[:57]}_output"
    return ToolSpec(name, "Give the final answer, in this form, when done.", schema)


def answered(response: ChatResponse, output_name: str) -> ChatResponse:
    """A reply that called the output tool: its arguments are the answer (the document
    a response schema asks for), not a tool call to run."""
    for call in response.tool_calls:
        if call.name == output_name:
            return ChatResponse(
                content=call.arguments,
                usage=response.usage,
                finish_reason="stop" if response.finish_reason == "tool_calls"
                else response.finish_reason,
                model=response.model,
                headers=response.headers,
            )  # fmt: skip
    return response
