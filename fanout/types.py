"""Value types shared by every layer: chat messages, tool calls, requests, responses, usage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Required, TypedDict

__all__ = [
    "BatchRef",
    "ChatRequest",
    "ChatResponse",
    "JSONSchema",
    "Message",
    "NodeStatus",
    "RunStatus",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "estimate_prompt_tokens",
]

JSONSchema = dict[str, object]
"""A JSON Schema document, as a plain dict."""


class Message(TypedDict, total=False):
    """One OpenAI-style chat message."""

    role: Required[Literal["system", "user", "assistant", "tool"]]
    content: str | None
    tool_calls: list[dict[str, object]]  # OpenAI wire form: {"id", "type", "function": {...}}
    tool_call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the model asked for; ``arguments`` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> dict[str, object]:
        """The arguments as a dict; raises ``ValueError`` if the model wrote bad JSON."""
        value = json.loads(self.arguments or "{}")
        if not isinstance(value, dict):
            raise ValueError(f"tool call {self.name!r}: arguments are not a JSON object")
        return value

    def to_wire(self) -> dict[str, object]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call, in the standard (OpenAI) tool-calling schema."""

    name: str
    description: str
    parameters: JSONSchema

    def to_wire(self) -> dict[str, object]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the provider reported them."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )

    def __reduce__(self) -> tuple[type[Usage], tuple[int, int]]:
        # by position (see fanout.run._result): fewer bytes, less time than by field name
        return Usage, (self.input_tokens, self.output_tokens)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat-completion call, provider-neutral.

    ``response_schema``: when set, the reply must be a JSON document valid against
    it (sent as ``response_format={"type": "json_schema", ...}``). ``options``: other
    OpenAI chat parameters passed through as given (``tool_choice``, ``stop``, ``top_p``,
    ``seed``, a ``json_object`` response format: the gateway's callers send them).
    """

    model: str
    messages: list[Message]
    max_tokens: int = 256
    temperature: float = 0.0
    tools: tuple[ToolSpec, ...] = ()
    response_schema: JSONSchema | None = None
    response_schema_name: str = "output"
    options: dict[str, object] | None = None


@dataclass(frozen=True, slots=True)
class BatchRef:
    """The provider batch that answered a call: its id, when it was submitted and when it
    ended (seconds since the epoch)."""

    batch_id: str
    submitted_at: float | None = None
    completed_at: float | None = None


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """A provider's answer: content and/or tool calls, finish reason, usage.

    ``batch``: the provider batch it came from (a call of a batch job in batch mode).
    """

    content: str | None
    usage: Usage
    finish_reason: str = "stop"
    tool_calls: tuple[ToolCall, ...] = ()
    model: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    batch: BatchRef | None = None


class NodeStatus(StrEnum):
    """What happened to one node of one request."""

    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"  # a route did not take this branch
    CANCELLED = "cancelled"  # the deadline passed, or the request was cancelled
    MAX_STEPS_EXCEEDED = "max_steps_exceeded"  # a tool loop hit max_steps (a failure)
    WAITING_FOR_REVIEW = "waiting_for_review"  # a review step (or what needs it) awaits a person


class RunStatus(StrEnum):
    """What happened to one request, in order of precedence when several apply."""

    OK = "ok"
    ERROR = "error"
    BUDGET_EXCEEDED = "budget_exceeded"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CANCELLED = "cancelled"
    WAITING_FOR_REVIEW = "waiting_for_review"  # paused: an output needs a person's decision


_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4


def estimate_prompt_tokens(messages: list[Message], tools: tuple[ToolSpec, ...] = ()) -> int:
    """A cheap, slightly pessimistic prompt-token estimate (chars/4 plus framing).

    Used to reserve rate-limit and budget capacity before a call; the provider's
    reported usage settles the difference afterwards.
    """
    chars = 0
    for message in messages:
        content = message.get("content")
        if content:
            chars += len(content)
        calls = message.get("tool_calls")
        if calls:
            chars += len(json.dumps(calls))
    for tool in tools:
        chars += len(tool.name) + len(tool.description) + len(json.dumps(tool.parameters))
    return -(-chars // _CHARS_PER_TOKEN) + _TOKENS_PER_MESSAGE * len(messages) + 2
