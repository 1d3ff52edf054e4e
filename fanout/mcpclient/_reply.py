"""What fanout keeps of MCP replies: a tool's listing, and a call's result as text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fanout.types import JSONSchema

__all__ = ["McpReply", "McpToolInfo", "reply_of"]


@dataclass(frozen=True, slots=True)
class McpToolInfo:
    """One tool a server lists: its name, description and JSON schema of its arguments."""

    name: str
    description: str
    input_schema: JSONSchema


@dataclass(frozen=True, slots=True)
class McpReply:
    """A tool call's result as the model will read it; ``is_error``: the tool failed."""

    text: str
    is_error: bool = False


def reply_of(result: Any) -> McpReply:
    """A ``CallToolResult`` as text: its text blocks (what the server wrote for a model),
    else its structured content as JSON; other blocks (images, resources) are named."""
    parts: list[str] = []
    for block in result.content or ():
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {getattr(block, 'mime_type', '')}]")
        elif kind == "resource_link":
            parts.append(f"[resource {getattr(block, 'uri', '')}]")
        elif kind == "resource":
            resource = block.resource
            parts.append(getattr(resource, "text", None) or f"[resource {resource.uri}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    return McpReply("\n".join(parts), bool(result.is_error))
