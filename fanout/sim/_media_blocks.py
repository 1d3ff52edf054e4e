"""The emulator's reading of image and audio blocks on the other protocols: each block's
shape checked as the vendor checks it (a bad one is a 400), and its prompt tokens
counted the vendor's way, apart from the clients' estimates (see
:mod:`fanout.sim._dialect`: the emulator must not share the clients' code).

Anthropic ``image`` blocks (``base64`` or ``url`` sources) and Bedrock Converse
``image`` blocks (``format`` and ``source.bytes``) count as Claude does: scaled to a
long edge of 1568 px and to at most 1.15 megapixels, then ``width * height / 750``.
Gemini ``inlineData`` and ``fileData`` parts count 258 tokens an image within 384 x
384, else 258 per 768 x 768 tile, and audio 32 tokens a second. An image the emulator
cannot see (a URL) counts as a photo of 1,600 x 1,200 would.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fanout._media import image_size

__all__ = ["Media", "anthropic_media", "bedrock_media", "gemini_media"]

_IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
_GEMINI_IMAGES = {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}
_MAGIC = {"png": b"\x89PNG", "jpeg": b"\xff\xd8", "gif": b"GIF8", "webp": b"RIFF"}
_UNSEEN = (1600, 1200)  # an image behind a URL, which the emulator does not fetch


@dataclass
class Media:
    """What a request's media blocks came to: their kinds ("anthropic:base64", ...) and
    their prompt tokens."""

    kinds: list[str] = field(default_factory=list)
    tokens: int = 0


def _decoded(data: Any, what: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise ValueError(f"{what} must be a non-empty base64 string")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None


def _size(media_type: str, raw: bytes) -> tuple[int, int]:
    found = image_size(f"data:{media_type};base64,{base64.b64encode(raw[:65536]).decode()}")
    if found is None:
        raise ValueError(f"the image data is not a readable {media_type}")
    return found


def claude_count(width: int, height: int) -> int:
    w, h = float(width), float(height)
    if max(w, h) > 1568:
        w, h = w * 1568 / max(w, h), h * 1568 / max(w, h)
    if w * h > 1_150_000:
        scale = math.sqrt(1_150_000 / (w * h))
        w, h = w * scale, h * scale
    return math.ceil(w * h / 750)


def gemini_count(width: int, height: int) -> int:
    if width <= 384 and height <= 384:
        return 258
    return 258 * math.ceil(width / 768) * math.ceil(height / 768)


def _audio_seconds(mime: str, raw: bytes) -> float:
    """A clip's length: a WAV's data chunk over its byte rate; other formats at 16 kbit/s."""
    if mime in ("audio/wav", "audio/x-wav") and raw[:4] == b"RIFF" and raw[8:12] == b"WAVE":
        at, byte_rate = 12, 0
        while at + 8 <= len(raw):
            chunk, size = raw[at : at + 4], struct.unpack("<I", raw[at + 4 : at + 8])[0]
            if chunk == b"fmt ":
                byte_rate = struct.unpack("<I", raw[at + 16 : at + 20])[0]
            elif chunk == b"data" and byte_rate:
                return float(min(size, len(raw) - at - 8)) / byte_rate
            at += 8 + size + (size & 1)
        raise ValueError("inlineData.data is not a readable WAV")
    return len(raw) / 2000


def _blocks(messages: Any) -> Iterable[dict[str, Any]]:
    for message in messages or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            yield from (b for b in content if isinstance(b, dict))


def anthropic_media(messages: Any) -> Media:
    """Check and count the ``image`` blocks of a Messages API request."""
    media = Media()
    for block in _blocks(messages):
        if block.get("type") != "image":
            continue
        source = block.get("source")
        kind = source.get("type") if isinstance(source, dict) else None
        if kind == "base64":
            media_type = source.get("media_type")  # type: ignore[union-attr]
            if media_type not in _IMAGE_TYPES:
                raise ValueError(f"image source media_type must be one of {sorted(_IMAGE_TYPES)}")
            raw = _decoded(source.get("data"), "image source data")  # type: ignore[union-attr]
            media.tokens += claude_count(*_size(str(media_type), raw))
        elif kind == "url":
            url = source.get("url")  # type: ignore[union-attr]
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise ValueError("image source url must be an http(s) URL")
            media.tokens += claude_count(*_UNSEEN)
        else:
            raise ValueError("image source type must be base64, url or file")
        media.kinds.append(f"anthropic:{kind}")
    return media


def bedrock_media(messages: Any) -> Media:
    """Check and count the ``image`` blocks of a Converse request."""
    media = Media()
    for block in _blocks(messages):
        if "image" not in block:
            continue
        image = block["image"]
        fmt = image.get("format") if isinstance(image, dict) else None
        if fmt not in _MAGIC:
            raise ValueError("image.format must be one of png, jpeg, gif, webp")
        source = image.get("source") or {}
        if set(source) != {"bytes"}:
            raise ValueError("image.source must hold exactly one of bytes or s3Location")
        raw = _decoded(source["bytes"], "image.source.bytes")
        if not raw.startswith(_MAGIC[str(fmt)]):
            raise ValueError(f"image.source.bytes is not a {fmt} image")
        media.tokens += claude_count(*_size(f"image/{fmt}", raw))
        media.kinds.append("bedrock:bytes")
    return media


def gemini_media(contents: Any) -> Media:
    """Check and count the ``inlineData`` and ``fileData`` parts of generateContent."""
    media = Media()
    for content in contents or ():
        for part in (content.get("parts") if isinstance(content, dict) else None) or ():
            if "inlineData" in part:
                blob = part["inlineData"]
                mime = str(blob.get("mimeType") or "")
                raw = _decoded(blob.get("data"), "inlineData.data")
                if mime.startswith("audio/"):
                    media.tokens += math.ceil(32 * _audio_seconds(mime, raw))
                    media.kinds.append("gemini:inlineData:audio")
                    continue
                if mime not in _GEMINI_IMAGES:
                    raise ValueError(f"inlineData.mimeType {mime!r} is not supported")
                media.tokens += gemini_count(*_size(mime, raw))
                media.kinds.append("gemini:inlineData")
            elif "fileData" in part:
                data = part["fileData"]
                if not data.get("mimeType") or not data.get("fileUri"):
                    raise ValueError("fileData needs mimeType and fileUri")
                media.tokens += gemini_count(*_UNSEEN)
                media.kinds.append("gemini:fileData")
    return media
