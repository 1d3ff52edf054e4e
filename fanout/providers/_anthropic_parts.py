"""Content parts on Anthropic's Messages API: text blocks, and ``image`` blocks whose
source is ``base64`` (``media_type`` and ``data``, from a data URI) or ``url``. Images
are JPEG, PNG, GIF or WebP; the API takes no audio. Estimated by Anthropic's formula."""

from __future__ import annotations

from fanout._media import data_uri_b64
from fanout.providers._media_tokens import claude_media_tokens
from fanout.types import ContentPart

__all__ = ["IMAGE_MEDIA_TYPES", "AnthropicParts", "anthropic_block", "image_problem"]

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


class AnthropicParts:
    """What the Messages API takes beside text: images (no audio)."""

    accepts: frozenset[str] = frozenset({"text", "image"})

    @staticmethod
    def media_tokens(part: ContentPart) -> int:
        return claude_media_tokens(part)

    @staticmethod
    def part_problem(part: ContentPart) -> str | None:
        """Why this protocol cannot send ``part`` as it is (``None``: it can)."""
        return image_problem(part, urls=True)


def image_problem(part: ContentPart, *, urls: bool) -> str | None:
    """What is wrong with an image part for a protocol that takes JPEG, PNG, GIF and WebP
    data URIs (and http(s) URLs where ``urls``)."""
    if part.get("type") != "image_url":
        return None
    url = str((part.get("image_url") or {}).get("url") or "")  # type: ignore[attr-defined]
    found = data_uri_b64(url)
    if found is None:
        if urls and url.startswith(("https://", "http://")):
            return None
        taken = "a base64 data URI or an http(s) URL" if urls else "a base64 data URI"
        return f"an image must be {taken} (got {url[:40]!r})"
    if found[0] not in IMAGE_MEDIA_TYPES:
        return f"an image must be JPEG, PNG, GIF or WebP (got {found[0]!r})"
    return None


def anthropic_block(part: ContentPart) -> dict[str, object]:
    """A content part as a Messages API block (text or image)."""
    if part.get("type") == "image_url":
        url = str(part["image_url"]["url"])  # type: ignore[typeddict-item]
        found = data_uri_b64(url)
        if found is None:
            return {"type": "image", "source": {"type": "url", "url": url}}
        return {"type": "image",
                "source": {"type": "base64", "media_type": found[0], "data": found[1]}}  # fmt: skip
    if part.get("type") == "text":
        return {"type": "text", "text": str(part.get("text") or "")}
    raise ValueError(f"anthropic: cannot send a content part of type {part.get('type')!r}")
