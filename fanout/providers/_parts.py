"""Content parts as a protocol maps them: each part of a message, and an image's source
(a URL, or the media type and bytes of a data URI) for protocols that want bytes
(Anthropic ``image`` blocks, Gemini ``inlineData``)."""

from __future__ import annotations

from dataclasses import dataclass

from fanout._media import data_uri
from fanout.types import Content, ContentPart, ImagePart

__all__ = ["ImageSource", "image_source", "parts_of"]


def parts_of(content: Content | None) -> list[ContentPart]:
    """A message's content as parts: text is one text part; ``None`` is none."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content)


@dataclass(frozen=True, slots=True)
class ImageSource:
    """Where an image part's pixels are: ``url`` (an http(s) URL), or ``media_type`` and
    ``data`` (decoded from a data URI); ``detail`` as the part asked."""

    url: str | None
    media_type: str | None
    data: bytes | None
    detail: str


def image_source(part: ImagePart) -> ImageSource:
    image = part["image_url"]
    url = image["url"]
    detail = image.get("detail") or "auto"
    decoded = data_uri(url)
    if decoded is None:
        return ImageSource(url, None, None, detail)
    return ImageSource(None, decoded[0], decoded[1], detail)
