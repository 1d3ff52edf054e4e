"""Each protocol's token estimate of an image or audio part, for the reservation before a
call: Anthropic's (Bedrock's Claude models count as Anthropic), Gemini's; OpenAI's is
the default of :func:`fanout.types.estimate_prompt_tokens`."""

from __future__ import annotations

from collections.abc import Callable

from fanout._media import audio_tokens, claude_image_tokens, gemini_image_tokens, image_size
from fanout.types import ContentPart

__all__ = ["GEMINI_AUDIO_TOKENS_PER_S", "claude_media_tokens", "gemini_media_tokens",
           "media_estimator"]  # fmt: skip

GEMINI_AUDIO_TOKENS_PER_S = 32  # "each second of audio is 32 tokens"

MediaTokens = Callable[[ContentPart], int]


def _size(part: ContentPart) -> tuple[int | None, int | None]:
    image = part.get("image_url") or {}
    url = str(image.get("url") or "")  # type: ignore[attr-defined]
    found = image_size(url)
    return found if found is not None else (None, None)


def claude_media_tokens(part: ContentPart) -> int:
    """An image part by Anthropic's formula (``width * height / 750``, at most 1,600);
    other parts (which Anthropic refuses before a call) count nothing."""
    if part.get("type") == "image_url":
        return claude_image_tokens(*_size(part))
    return 0


def gemini_media_tokens(part: ContentPart) -> int:
    """An image part by Gemini's tiles (258 tokens each), audio at 32 tokens a second."""
    kind = part.get("type")
    if kind == "image_url":
        return gemini_image_tokens(*_size(part))
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        data = str(audio.get("data") or "")  # type: ignore[attr-defined]
        fmt = str(audio.get("format") or "")  # type: ignore[attr-defined]
        return audio_tokens(data, fmt, GEMINI_AUDIO_TOKENS_PER_S)
    return 0


def media_estimator(provider: object) -> MediaTokens | None:
    """The provider's own estimate of a media part (its ``media_tokens``), if it has one."""
    found = getattr(provider, "media_tokens", None)
    return found if callable(found) else None
