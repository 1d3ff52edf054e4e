"""Value types shared by every layer: chat messages, tool calls, requests, responses, usage."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Required, TypedDict

from fanout._media import audio_tokens, image_size, image_tokens

__all__ = [
    "MODALITIES",
    "AudioPart",
    "BatchRef",
    "ChatRequest",
    "ChatResponse",
    "Content",
    "ContentPart",
    "EmbedRequest",
    "EmbedResponse",
    "ImagePart",
    "JSONSchema",
    "Message",
    "Modality",
    "NodeStatus",
    "RunStatus",
    "TextPart",
    "ToolCall",
    "ToolCallDelta",
    "ToolSpec",
    "Usage",
    "content_text",
    "estimate_prompt_tokens",
    "estimate_text_tokens",
    "media_tokens",
    "modalities_of",
    "text_of",
]

JSONSchema = dict[str, object]
"""A JSON Schema document, as a plain dict."""


class TextPart(TypedDict):
    """A content part of text: ``{"type": "text", "text": "..."}``."""

    type: Literal["text"]
    text: str


class ImageURL(TypedDict, total=False):
    url: Required[str]  # an https URL or a data URI (data:image/png;base64,...)
    detail: Literal["auto", "low", "high"]


class ImagePart(TypedDict):
    """An image: ``{"type": "image_url", "image_url": {"url": ..., "detail": "auto"}}``."""

    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(TypedDict):
    data: str  # base64
    format: str  # "wav" or "mp3"


class AudioPart(TypedDict):
    """Audio: ``{"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}}``."""

    type: Literal["input_audio"]
    input_audio: InputAudio


ContentPart = TextPart | ImagePart | AudioPart
"""One OpenAI-style content part of a message."""
Content = str | list[ContentPart]
"""A message's content: text, or a list of content parts (text, images, audio)."""

Modality = Literal["text", "image", "audio"]
MODALITIES: tuple[Modality, ...] = ("text", "image", "audio")
_PART_MODALITY: dict[str, Modality] = {
    "text": "text",
    "image_url": "image",
    "input_audio": "audio",
}


class Message(TypedDict, total=False):
    """One OpenAI-style chat message; ``content`` is text or a list of content parts."""

    role: Required[Literal["system", "user", "assistant", "tool"]]
    content: Content | None
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
class ToolCallDelta:
    """A piece of a streamed tool call, as OpenAI's chunks carry it: the call's position
    in the reply (``index``), its ``id`` and ``name`` (on its first piece; ``None`` on
    the others) and a fragment of its ``arguments`` (the pieces joined are the JSON)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


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
    """Token counts as the provider reported them.

    ``input_tokens`` counts every prompt token, cached or not (OpenAI's and Gemini's
    prompt count; Anthropic's and Bedrock's input plus their cache reads and writes):
    rate limits and budgets count them all. ``cached_input_tokens`` of them were read
    from the provider's prompt cache and ``cache_write_tokens`` written to it (Anthropic,
    Bedrock), each priced at its own rate (:meth:`fanout.config.ModelConfig.cost_usd`).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        # frozen, so a zero side may be shared: most sums in a run add to or add a zero
        if not (other.input_tokens or other.output_tokens or other.cached_input_tokens
                or other.cache_write_tokens):  # fmt: skip
            return self
        if not (self.input_tokens or self.output_tokens or self.cached_input_tokens
                or self.cache_write_tokens):  # fmt: skip
            return other
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )

    def __reduce__(self) -> tuple[type[Usage], tuple[int, ...]]:
        # by position (see fanout.run._result): fewer bytes, less time than by field name
        if self.cached_input_tokens or self.cache_write_tokens:
            return Usage, (
                self.input_tokens, self.output_tokens,
                self.cached_input_tokens, self.cache_write_tokens,
            )  # fmt: skip
        return Usage, (self.input_tokens, self.output_tokens)


NO_USAGE = Usage()  # the shared zero (frozen): a default that costs no construction


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
    # streamed: the reply arrives as server-sent events (not part of the call's identity)
    stream: bool = False
    options: dict[str, object] | None = None


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    """One embeddings call: many inputs packed in one request (``dimensions``: shorten
    the vectors, for models that allow it)."""

    model: str
    inputs: tuple[str, ...]
    dimensions: int | None = None


@dataclass(frozen=True, slots=True)
class EmbedResponse:
    """The vectors, one per input in order, and the request's usage (input tokens)."""

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage
    model: str = ""
    headers: dict[str, str] = field(default_factory=dict)


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
    ``id``: the provider's id of the reply, where it gives one.
    """

    content: str | None
    usage: Usage
    finish_reason: str = "stop"
    tool_calls: tuple[ToolCall, ...] = ()
    model: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    batch: BatchRef | None = None
    id: str = ""  # the provider's id of this reply (OpenAI's "chatcmpl-..."), if it gave one


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


def content_text(content: Content | None) -> str:
    """The text of a message's content (its text parts joined, for a list of parts)."""
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(p["text"] for p in content if p.get("type") == "text")  # type: ignore[typeddict-item]


def modalities_of(messages: list[Message]) -> frozenset[str]:
    """The kinds of content the messages carry beyond text (``"image"``, ``"audio"``; an
    unknown part type as ``"unknown:TYPE"``); empty for text-only messages."""
    found: set[str] = set()
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                modality = _PART_MODALITY.get(str(kind))
                if modality is None:
                    found.add(f"unknown:{kind}")
                elif modality != "text":
                    found.add(modality)
    return frozenset(found)


def estimate_text_tokens(text: str) -> int:
    """A text's tokens as the estimates count them (chars/4, rounded up)."""
    return -(-len(text) // _CHARS_PER_TOKEN)


def _part_tokens(part: ContentPart) -> tuple[int, int]:
    """``(chars, tokens)`` of one content part: text by its length, media by formula."""
    kind = part.get("type")
    if kind == "text":
        return len(part.get("text") or ""), 0  # type: ignore[arg-type]
    if kind == "image_url":
        image = part.get("image_url") or {}
        url = str(image.get("url") or "")  # type: ignore[attr-defined]
        width, height = image_size(url) or (None, None)
        detail = str(image.get("detail") or "auto")  # type: ignore[attr-defined]
        return 0, image_tokens(width, height, detail=detail)
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        data = str(audio.get("data") or "")  # type: ignore[attr-defined]
        return 0, audio_tokens(data, str(audio.get("format") or ""))  # type: ignore[attr-defined]
    return len(str(part)), 0


def media_tokens(content: Content | None) -> int:
    """The tokens of a content's images and audio (by formula; text parts count 0)."""
    if not isinstance(content, list):
        return 0
    return sum(_part_tokens(part)[1] for part in content)


def estimate_prompt_tokens(
    messages: list[Message],
    tools: tuple[ToolSpec, ...] = (),
    media: Callable[[ContentPart], int] | None = None,
) -> int:
    """A cheap, slightly pessimistic prompt-token estimate (chars/4 plus framing; images
    by OpenAI's tile formula, audio by its length, or each image and audio part by
    ``media``: a protocol's own formula).

    Used to reserve rate-limit and budget capacity before a call; the provider's
    reported usage settles the difference afterwards.
    """
    own = media
    chars = 0
    media_total = 0
    for message in messages:
        content = message.get("content")
        if content:
            if isinstance(content, str):
                chars += len(content)
            else:
                for part in content:
                    if own is not None and part.get("type") != "text":
                        media_total += own(part)
                        continue
                    part_chars, part_tokens = _part_tokens(part)
                    chars += part_chars
                    media_total += part_tokens
        calls = message.get("tool_calls")
        if calls:
            chars += len(json.dumps(calls))
    for tool in tools:
        chars += len(tool.name) + len(tool.description) + len(json.dumps(tool.parameters))
    return -(-chars // _CHARS_PER_TOKEN) + media_total + _TOKENS_PER_MESSAGE * len(messages) + 2


def text_of(content: object) -> str:
    """A message's text: the content itself, or its text parts joined (for a wire or a
    caller that takes text only)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    return ""
